"""The resources the lab's API server serves, and what each does on write.

Services get the real API server's defaults and allocations: cluster IPs
from the service ranges (of one family or, dual-stack, of both:
cluster_ips.py), nodePorts from 30000-32767 for NodePort and
LoadBalancer services, the same 422 messages for a port out of range, an
unknown protocol, an IP outside the range or already allocated.  Pods
bound to a node are deleted gracefully (deletionTimestamp first; the
node's kubelet finishes the deletion), as the real API does.
"""
import dataclasses
from typing import Tuple

from topologies.apiserver import errors
from topologies.apiserver.cluster_ips import ClusterIPs

PROTOCOLS = ("SCTP", "TCP", "UDP")
NODE_PORT_RANGE = (30000, 32767)


@dataclasses.dataclass(frozen=True)
class Resource:
    name: str                 # plural, as in the URL
    kind: str
    group: str = ""
    version: str = "v1"
    namespaced: bool = True
    short: Tuple[str, ...] = ()
    status: bool = False      # has a /status subresource

    @property
    def api_version(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self):
        return self.kind.lower()


RESOURCES = {r.name: r for r in (
    Resource("namespaces", "Namespace", namespaced=False, short=("ns",), status=True),
    Resource("nodes", "Node", namespaced=False, short=("no",), status=True),
    Resource("pods", "Pod", short=("po",), status=True),
    Resource("services", "Service", short=("svc",), status=True),
    Resource("events", "Event", short=("ev",)),
    Resource("endpointslices", "EndpointSlice", group="discovery.k8s.io"),
    Resource("leases", "Lease", group="coordination.k8s.io"),
)}


class Allocator:
    """ClusterIPs and nodePorts in use; rebuilt from the store, never persisted."""

    def __init__(self, service_cidr="10.96.0.0/12"):
        self.cluster_ips = ClusterIPs(service_cidr)   # one range, or one per family
        self.ports = {}           # (protocol, port) -> "ns/name"

    @property
    def ips(self):
        return self.cluster_ips.ips

    def _free_port(self, proto, taken=()):
        for port in range(NODE_PORT_RANGE[0], NODE_PORT_RANGE[1] + 1):
            if (proto, port) not in self.ports and (proto, port) not in taken:
                return port
        return None

    def release(self, owner):
        for table in (self.ips, self.ports):
            for key in [k for k, v in table.items() if v == owner]:
                del table[key]

    def claim(self, kind_name, owner, spec, old_spec):
        """Default, validate and allocate; raises 422 without changing anything."""
        old_spec = old_spec or {}
        new_ips, causes = self.cluster_ips.claim(spec, old_spec, owner)
        wants_node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
        old_ports = {(p.get("protocol"), p.get("port")): p.get("nodePort")
                     for p in old_spec.get("ports") or ()}
        new_ports = {}
        for i, p in enumerate(spec.get("ports") or ()):
            if not wants_node_ports:
                p.pop("nodePort", None)          # released when the type changes
                continue
            if not p.get("nodePort"):
                p["nodePort"] = old_ports.get((p.get("protocol"), p.get("port")))
            number = p.get("nodePort")
            if number is None:
                number = p["nodePort"] = self._free_port(p["protocol"], taken=new_ports)
            elif not NODE_PORT_RANGE[0] <= number <= NODE_PORT_RANGE[1]:
                causes.append((f"spec.ports[{i}].nodePort", f"Invalid value: {number}: "
                               "provided port is not in the valid range. The range of "
                               "valid ports is %d-%d" % NODE_PORT_RANGE))
            elif (self.ports.get((p["protocol"], number), owner) != owner
                  or new_ports.get((p["protocol"], number), owner) != owner):
                causes.append((f"spec.ports[{i}].nodePort",
                               f"Invalid value: {number}: provided port is already allocated"))
            new_ports[(p["protocol"], number)] = owner
        # A LoadBalancer with externalTrafficPolicy Local gets a health-check
        # port from the same range (kept across updates, gone with the policy).
        if spec.get("type") == "LoadBalancer" and \
                spec.get("externalTrafficPolicy") == "Local":
            number = spec.get("healthCheckNodePort") or old_spec.get("healthCheckNodePort")
            if number is None:
                number = self._free_port("TCP", taken=new_ports)
            elif not NODE_PORT_RANGE[0] <= number <= NODE_PORT_RANGE[1]:
                causes.append(("spec.healthCheckNodePort", f"Invalid value: {number}: "
                               "provided port is not in the valid range. The range of "
                               "valid ports is %d-%d" % NODE_PORT_RANGE))
            elif (self.ports.get(("TCP", number), owner) != owner
                  or new_ports.get(("TCP", number), owner) != owner):
                causes.append(("spec.healthCheckNodePort",
                               f"Invalid value: {number}: provided port is already allocated"))
            spec["healthCheckNodePort"] = number
            new_ports[("TCP", number)] = owner
        else:
            spec.pop("healthCheckNodePort", None)
        if causes:
            raise errors.invalid("Service", kind_name, causes)
        self.release(owner)
        self.ips.update(new_ips)
        self.ports.update(new_ports)


def validate_service_ports(name, spec):
    """Defaults and the field checks of a Service's ports; 422 on failure."""
    causes = []
    spec.setdefault("type", "ClusterIP")
    if spec["type"] not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        causes.append(("spec.type", f'Unsupported value: "{spec["type"]}": supported values: '
                       '"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"'))
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    ports = spec.get("ports") or []
    if not ports and spec["type"] != "ExternalName" and spec.get("clusterIP") != "None":
        causes.append(("spec.ports", "Required value"))
    seen = set()
    for i, p in enumerate(ports):
        if not isinstance(p, dict):
            causes.append((f"spec.ports[{i}]", "Invalid value: must be an object"))
            continue
        p.setdefault("protocol", "TCP")
        port = p.get("port")
        if p["protocol"] not in PROTOCOLS:
            causes.append((f"spec.ports[{i}].protocol", f'Unsupported value: "{p["protocol"]}": '
                           'supported values: "SCTP", "TCP", "UDP"'))
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            causes.append((f"spec.ports[{i}].port",
                           f"Invalid value: {port}: must be between 1 and 65535, inclusive"))
        p.setdefault("targetPort", port)
        if len(ports) > 1 and not p.get("name"):
            causes.append((f"spec.ports[{i}].name", "Required value"))
        if (p["protocol"], port) in seen:
            causes.append((f"spec.ports[{i}]", f'Duplicate value: {{"port":{port}, '
                           f'"protocol":"{p["protocol"]}"}}'))
        seen.add((p["protocol"], port))
    if causes:
        raise errors.invalid("Service", name, causes)
