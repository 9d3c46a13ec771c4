"""Kubernetes API objects (plain JSON dicts) -> the frozen model.

Pure functions: no client, no I/O.  The watch keeps the raw JSON the API
server sent (decoding it into the client's model classes costs more than
everything else the proxy does), and this module reads the fields the
proxy implements, the way kube-proxy reads them:

* a Service with ``clusterIP: None`` (headless) or ``type: ExternalName``
  has no VIP and is ignored, not rejected;
* a dual-stack Service has a cluster IP of each family (``clusterIPs``,
  the primary first); a single-stack one, of either family, has one;
* endpoints come from its EndpointSlices (slices.py), IPv4 and IPv6.

Anything the proxy cannot implement raises :class:`validate.Invalid` (the
whole object) or is reported through ``reject`` (one port or endpoint).
"""
import sys
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from nsx_proxy import model
from nsx_proxy import validate
from nsx_proxy.rawjson import annotations, as_list, as_map, field, key, labels, text
# SERVICE_NAME_LABEL and slice_service are read from here by the cache and tests
from nsx_proxy.slices import (SERVICE_NAME_LABEL, merge_slices, object_name,  # noqa: F401
                              slice_service)
from nsx_proxy.validate import Invalid

ZONE_LABEL = "topology.kubernetes.io/zone"
# Topology-aware routing is asked for by annotation (Auto) or, since 1.30,
# by spec.trafficDistribution: PreferClose.
TOPOLOGY_ANNOTATIONS = ("service.kubernetes.io/topology-mode",
                        "service.kubernetes.io/topology-aware-hints")
DEFAULT_AFFINITY_TIMEOUT = 10800
FLOATING_IP_ANNOTATION = "nsx-proxy.io/floating-ip"
GATEWAY_NODE_LABEL = "nsx-proxy.io/gateway"    # "true": the gateway host's Node

Reject = Callable[[str, str, str], None]          # (kind, name, reason)


# A Service labelled with this belongs to another service proxy (kube-proxy
# watches Services with the selector "!service.kubernetes.io/service-proxy-name").
SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
# Set on a headless Service's EndpointSlices (and honoured on Services too,
# as kube-proxy's label selector does): no VIP, nothing to proxy.
HEADLESS_LABEL = "service.kubernetes.io/headless"


def ignored_reason(svc) -> Optional[str]:
    """Why a Service legitimately has no proxy rules, or None."""
    spec = as_map(field(svc, "spec"))
    if SERVICE_PROXY_NAME_LABEL in labels(svc):
        return "another service proxy's"
    if HEADLESS_LABEL in labels(svc):
        return "labelled headless"
    if spec.get("type") == "ExternalName":
        return "ExternalName"
    if spec.get("clusterIP") in ("None", ""):
        return "headless"
    return None


def _cluster_ips(name, spec, reject: Reject) -> Tuple[str, ...]:
    """(the primary cluster IP[, the other family's]): spec.clusterIPs,
    which a dual-stack service (ipFamilyPolicy PreferDualStack or
    RequireDualStack) fills with one address of each family, primary first;
    or clusterIP.  A bad second address costs that family only."""
    ips = as_list(spec.get("clusterIPs")) or [spec.get("clusterIP")]
    primary = validate.ip(ips[0], "clusterIP")
    if len(ips) < 2:
        return (primary,)
    try:
        secondary = validate.ip(ips[1], "clusterIPs[1]")
        if (":" in secondary) == (":" in primary) or len(ips) > 2:
            raise Invalid(f"clusterIPs {ips!r:.80} is not one address of each family")
    except Invalid as exc:
        reject("service", name, f"{exc}; serving {primary} only")
        return (primary,)
    return primary, secondary


def service_ports(name, raw_ports, reject: Reject) -> List[model.ServicePort]:
    """A service's listeners (without endpoints); bad or repeated ports are
    reported one by one and skipped.  Shared by every state source."""
    ports, seen = [], set()
    if raw_ports is not None and not isinstance(raw_ports, list):
        raise Invalid(f"ports is not a list: {raw_ports!r:.40}")
    for raw in raw_ports or ():
        if not isinstance(raw, dict):
            reject("service", name, f"a port is not an object: {raw!r:.40}; skipped")
            continue
        label = f"{name} port {raw.get('name') or raw.get('port')}"
        try:
            sport = model.ServicePort(
                name=sys.intern(str(raw.get("name") or "")),    # few: http, dns, ...
                protocol=validate.protocol(raw.get("protocol")),
                port=validate.port(raw.get("port")),
                target_port=validate.target_port(raw.get("targetPort", raw.get("port"))),
                node_port=(validate.port(raw["nodePort"], "nodePort")
                           if raw.get("nodePort") else None))
            if (sport.protocol, sport.port) in seen:
                raise Invalid(f"{sport.protocol}/{sport.port} is listed twice")
        except Invalid as exc:
            reject("service port", label, str(exc))
            continue
        seen.add((sport.protocol, sport.port))
        ports.append(sport)
    return ports


def _ingress_ips(name, svc, reject: Reject) -> Tuple[str, ...]:
    """The load-balancer IPs the proxy answers on itself.

    Like kube-proxy, not those with ``ipMode: Proxy``: that load balancer
    proxies to the nodes itself, so traffic to its IP - from inside the
    cluster too - must go out to it, not be short-circuited to the endpoints.
    """
    ips = []
    for ingress in as_list(field(svc, "status", "loadBalancer", "ingress")):
        if not isinstance(ingress, dict):
            reject("service", name, "status.loadBalancer.ingress holds an item that is not "
                   f"an object: {ingress!r:.40}; skipped")
            continue
        ip = ingress.get("ip")
        if not ip:
            continue                       # hostname-only ingress: nothing to NAT
        if ingress.get("ipMode") == "Proxy":
            continue
        try:
            ips.append(validate.ip(ip, "load-balancer ingress IP"))
        except Invalid as exc:
            reject("service", name, str(exc))
    return tuple(dict.fromkeys(ips))


def _of_families(name, what, ips, cluster_ips, reject: Reject) -> Tuple[str, ...]:
    """The outside IPs of a family the service has a cluster IP of: those
    are what its endpoints of that family serve (kube-proxy's proxier of the
    other family never sees the service either)."""
    families = {":" in ip for ip in cluster_ips}
    out = []
    for ip in dict.fromkeys(ips):
        if (":" in ip) in families:
            out.append(ip)
        else:
            family = "IPv6" if ":" in ip else "IPv4"
            reject("service", name, f"{what} {ip} is {family} and the service has no "
                   f"{family} cluster IP (spec.ipFamilies); ignoring it")
    return tuple(out)


def _open_families(name, outside_ips, source_ranges, reject: Reject) -> None:
    """Source ranges filter each family by that family's ranges, as
    kube-proxy does; say so when a family of LB IPs has none, so that
    "restricted" is never silently "open to all" for the other family."""
    if not source_ranges:
        return
    for v6, family in ((False, "IPv4"), (True, "IPv6")):
        if any((":" in ip) == v6 for ip in outside_ips) and \
                not any((":" in r) == v6 for r in source_ranges):
            reject("service", name, f"loadBalancerSourceRanges has no {family} range: its "
                   f"{family} load-balancer IPs accept every source (as with kube-proxy)")


def service(svc, slices: Iterable[dict], reject: Reject) -> model.Service:
    """Translate one Service and its EndpointSlices (the caller skips ignored ones)."""
    name = object_name(svc)
    namespace, svc_name = key(svc)
    if not svc_name or not namespace:
        raise Invalid("has no namespace/name")
    meta, spec = as_map(field(svc, "metadata")), validate.json_object(svc, "spec")
    cluster_ips = _cluster_ips(name, spec, reject)
    stype = validate.service_type(spec.get("type"))
    external_ips = []
    for ip in validate.json_list(spec, "externalIPs"):
        try:
            external_ips.append(validate.ip(ip, "externalIP"))
        except Invalid as exc:
            reject("service", name, str(exc))
    external_ips = _of_families(name, "externalIP", external_ips, cluster_ips, reject)
    lb_ips = _of_families(name, "load-balancer IP", _ingress_ips(name, svc, reject),
                          cluster_ips, reject) if stype == model.LOAD_BALANCER else ()
    source_ranges = _source_ranges(name, spec, reject)
    _open_families(name, lb_ips, source_ranges, reject)
    ports = service_ports(name, spec.get("ports"), reject)
    by_port = merge_slices(name, ports, slices, reject)
    return model.Service(
        affinity_timeout=_affinity(name, spec, reject),
        internal_traffic_policy=_policy(name, spec, "internalTrafficPolicy", reject),
        external_traffic_policy=_policy(name, spec, "externalTrafficPolicy", reject),
        source_ranges=source_ranges,
        health_check_node_port=_health_check_node_port(name, spec, stype, reject),
        topology_aware=_topology_aware(meta, spec),
        namespace=namespace, name=svc_name, cluster_ip=cluster_ips[0],
        secondary_cluster_ip=cluster_ips[1] if len(cluster_ips) > 1 else None,
        ports=tuple(model.ServicePort(
            name=p.name, protocol=p.protocol, port=p.port, target_port=p.target_port,
            node_port=p.node_port, endpoints=by_port[p]) for p in ports),
        type=stype, external_ips=external_ips, load_balancer_ips=lb_ips)


def _affinity(name, spec, reject: Reject) -> Optional[int]:
    """sessionAffinity ClientIP's timeout in seconds, or None without affinity."""
    if spec.get("sessionAffinity", "None") in ("None", None):
        return None
    if spec["sessionAffinity"] != "ClientIP":
        reject("service", name, f"sessionAffinity {spec['sessionAffinity']!r} is not "
               "None or ClientIP; no affinity")
        return None
    timeout = field(spec, "sessionAffinityConfig", "clientIP", "timeoutSeconds")
    if timeout is None:
        timeout = DEFAULT_AFFINITY_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, int) or \
            not 0 < timeout <= 86400:
        reject("service", name, f"session affinity timeoutSeconds {timeout!r} is not "
               "in 1-86400; using the default 10800")
        return DEFAULT_AFFINITY_TIMEOUT
    return timeout


def _health_check_node_port(name, spec, stype, reject: Reject) -> Optional[int]:
    """spec.healthCheckNodePort, served by each node's agent (as kube-proxy
    does) for a NodePort or LoadBalancer service with externalTrafficPolicy
    Local; ignored otherwise, like kube-proxy."""
    port = spec.get("healthCheckNodePort")
    if port in (None, 0) or stype not in (model.NODE_PORT, model.LOAD_BALANCER) or \
            spec.get("externalTrafficPolicy") != model.LOCAL:
        return None
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        reject("service", name, f"healthCheckNodePort {port!r} is not a port (1-65535); "
               "no health check served")
        return None
    return port


def _source_ranges(name, spec, reject: Reject) -> Tuple[str, ...]:
    out = []
    ranges = spec.get("loadBalancerSourceRanges")
    if ranges is not None and not isinstance(ranges, list):
        reject("service", name, f"loadBalancerSourceRanges is not a list: {ranges!r:.40}; "
               "ignored")
    for value in as_list(ranges):
        try:
            out.append(validate.source_range(value))
        except Invalid as exc:
            reject("service", name, f"{exc}; range ignored")
    return tuple(dict.fromkeys(out))


def floating_ip(pod) -> Optional[model.FloatingIP]:
    """A pod's floating IP from its annotation, or None (raises Invalid if bad)."""
    meta = as_map(field(pod, "metadata"))
    wanted = annotations(pod).get(FLOATING_IP_ANNOTATION)
    if not wanted:
        return None
    status, spec = as_map(field(pod, "status")), as_map(field(pod, "spec"))
    node_name = text(spec.get("nodeName"))
    if not status.get("podIP") or not node_name:
        return None                            # not running yet: nothing to NAT to
    if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    return model.FloatingIP(ip=validate.ipv4(wanted, "floating IP"),
                            pod_ip=validate.ipv4(status["podIP"], "podIP"),
                            node=node_name, pod=object_name(pod))


def _policy(name, spec, field, reject: Reject) -> str:
    value = spec.get(field) or model.CLUSTER
    if value not in model.TRAFFIC_POLICIES:
        reject("service", name, f"{field} {value!r} is not Cluster or Local; using Cluster")
        return model.CLUSTER
    return value


# trafficDistribution values that ask for hints: PreferClose (1.31) and its
# newer name PreferSameZone, and PreferSameNode (1.33; node hints first).
TRAFFIC_DISTRIBUTIONS = ("PreferClose", "PreferSameZone", "PreferSameNode")


def _topology_aware(meta, spec) -> bool:
    notes = as_map(meta.get("annotations"))
    return spec.get("trafficDistribution") in TRAFFIC_DISTRIBUTIONS or any(
        str(notes.get(a, "")).lower() == "auto" for a in TOPOLOGY_ANNOTATIONS)


def node(raw, reject: Optional[Reject] = None) -> model.Node:
    """A Node: its IPv4 InternalIP and podCIDR (required), and a dual-stack
    node's IPv6 podCIDR and IPv6 InternalIP (a bad one is reported and left
    out: the node keeps its IPv4 side)."""
    name = key(raw)[1]
    if not name:
        raise Invalid("has no name")
    spec = as_map(field(raw, "spec"))
    addresses = as_list(field(raw, "status", "addresses"))
    internal = [a.get("address") for a in addresses
                if isinstance(a, dict) and a.get("type") == "InternalIP"]
    internal6 = next((ip for ip in internal if isinstance(ip, str) and ":" in ip), None)
    internal = [ip for ip in internal if isinstance(ip, str) and ":" not in ip] or internal
    if not internal:
        raise Invalid("has no InternalIP address yet")
    if internal6 is not None:
        try:
            internal6 = validate.ip(internal6, "IPv6 InternalIP")
        except Invalid as exc:
            if reject is not None:
                reject("node", name, f"{exc}; no IPv6 NodePorts on it")
            internal6 = None
    cidrs = as_list(spec.get("podCIDRs")) or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    cidrs4 = [c for c in cidrs if ":" not in str(c)]
    if not cidrs4:
        raise Invalid("has no IPv4 podCIDR yet")
    cidr6 = next((c for c in cidrs if ":" in str(c)), None)
    if cidr6 is not None:
        try:
            cidr6 = validate.pod_cidr(cidr6, "podCIDRs IPv6", 6)
        except Invalid as exc:
            if reject is not None:
                reject("node", name, f"{exc}; no IPv6 pod routes to it")
            cidr6 = None
    return model.Node(name=name,
                      internal_ip=validate.ipv4(internal[0], "InternalIP"),
                      pod_cidr=validate.pod_cidr(cidrs4[0], "podCIDR"), pod_cidr6=cidr6,
                      internal_ip6=internal6,
                      zone=text(labels(raw).get(ZONE_LABEL)) or None,
                      gateway=labels(raw).get(GATEWAY_NODE_LABEL) == "true")


def cluster_state(services, slices, nodes, rejects: validate.RejectLog) -> model.ClusterState:
    """One-shot translation of whole lists (the lab and tools; the proxy is incremental)."""
    reject = rejects.reject
    by_service: Dict[model.ServiceKey, List[dict]] = {}
    for raw in slices:
        owner = slice_service(raw)
        if owner is not None:
            by_service.setdefault(owner, []).append(raw)
    out = []
    for raw in services:
        if ignored_reason(raw):
            continue
        try:
            out.append(service(raw, by_service.get(model.ServiceKey(*key(raw)), ()), reject))
        except Invalid as exc:
            reject("service", object_name(raw), str(exc))
    good_nodes = []
    for raw in nodes:
        try:
            good_nodes.append(node(raw, reject))
        except Invalid as exc:
            reject("node", object_name(raw), str(exc))
    return model.ClusterState.build(validate.claim_frontends(out, rejects), good_nodes)
