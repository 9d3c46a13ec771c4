"""The resources the lab's API server serves, and what each does on write.

Services get the real API server's defaults and allocations: a ClusterIP
from the service CIDR, nodePorts from 30000-32767 for NodePort and
LoadBalancer services, the same 422 messages for a port out of range, an
unknown protocol, an IP outside the range or already allocated.  Pods
bound to a node are deleted gracefully (deletionTimestamp first; the
node's kubelet finishes the deletion), as the real API does.
"""
import dataclasses
import ipaddress
from typing import Tuple

from topologies.apiserver import errors

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
        self.net = ipaddress.ip_network(service_cidr)
        self.ips = {}             # ip -> "ns/name"
        self.ports = {}           # (protocol, port) -> "ns/name"

    def _free_ip(self):
        # .1 is the kubernetes service in a real cluster; keep it out of the pool.
        for host in self.net.hosts():
            ip = str(host)
            if host != self.net.network_address + 1 and ip not in self.ips:
                return ip
        return None

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
        causes = []
        old_spec = old_spec or {}
        if old_spec.get("clusterIP") and not spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]      # kept across updates
        elif old_spec.get("clusterIP") and spec["clusterIP"] != old_spec["clusterIP"]:
            causes.append(("spec.clusterIPs[0]", f'Invalid value: ["{spec["clusterIP"]}"]: '
                           "may not change once set"))
        ip = spec.get("clusterIP")
        new_ips = {}
        if spec.get("type") == "ExternalName" or ip == "None":
            pass
        elif ip:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                addr = None
                causes.append(("spec.clusterIPs[0]",
                               f'Invalid value: "{ip}": must be a valid IP address'))
            if addr is not None and addr not in self.net:
                causes.append(("spec.clusterIPs", f'Invalid value: ["{ip}"]: failed to '
                               f"allocate IP {ip}: the provided IP ({ip}) is not in the "
                               f"valid range. The range of valid IPs is {self.net}"))
            elif addr is not None and self.ips.get(ip, owner) != owner:
                causes.append(("spec.clusterIPs", f'Invalid value: ["{ip}"]: failed to '
                               f"allocate IP {ip}: provided IP is already allocated"))
            new_ips[ip] = owner
        else:
            ip = self._free_ip()
            if ip is None:
                raise errors.ApiError(500, "InternalError", "range is full")
            spec["clusterIP"] = ip
            new_ips[ip] = owner
        if ip and ip != "None":
            spec["clusterIPs"] = [spec["clusterIP"]]
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
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
