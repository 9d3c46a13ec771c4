"""The desired-state model: what the cluster wants, independent of OpenFlow.

Every source (the Kubernetes API, or a YAML file for demos) produces a
:class:`ClusterState`; the controller compiles it into flows.  All classes are
frozen and hashable, so an unchanged object can be recognised by identity and
its compiled flows reused.  Values are already validated (see validate.py):
IPs parse, ports are in range, protocols are known.
"""
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, NamedTuple, Optional, Tuple

TCP = "TCP"
UDP = "UDP"
SCTP = "SCTP"
PROTOCOLS = (TCP, UDP, SCTP)

CLUSTER_IP = "ClusterIP"
NODE_PORT = "NodePort"
LOAD_BALANCER = "LoadBalancer"
SERVICE_TYPES = (CLUSTER_IP, NODE_PORT, LOAD_BALANCER)

CLUSTER = "Cluster"                  # traffic policies
LOCAL = "Local"
TRAFFIC_POLICIES = (CLUSTER, LOCAL)


class ServiceKey(NamedTuple):
    """namespace/name; a tuple so hashing it (done per object per sync) is C-fast."""
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class Endpoint(NamedTuple):
    """One backend of one service port, as an EndpointSlice describes it.

    ``port`` is already resolved: a named targetPort becomes the number the
    slice (or the pod's container port) gives for this particular endpoint.
    A named tuple where the other values are frozen dataclasses: there are
    50,000 of these at 10,000 services, and a tuple is built in a third of
    the time a frozen dataclass takes (which sets each field through
    ``object.__setattr__``).
    """
    ip: str
    port: int
    node: Optional[str] = None
    pod: Optional[str] = None          # "namespace/name" of the target pod
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    zones: Tuple[str, ...] = ()        # topology hints: zones this endpoint serves
    node_hints: Tuple[str, ...] = ()   # hints.forNodes (trafficDistribution PreferSameNode)


@dataclass(frozen=True, slots=True)
class ServicePort:
    """A listener: one (protocol, port) of a service and its pool."""
    name: str
    protocol: str
    port: int
    target_port: object                # int, or a port name (str)
    endpoints: Tuple[Endpoint, ...] = ()
    node_port: Optional[int] = None

    def ready_endpoints(self) -> Tuple[Endpoint, ...]:
        """Endpoints that may receive new connections.

        Like kube-proxy: ready ones; if none is ready, the serving-but-
        terminating ones (KEP-1669), so a rolling update never blackholes.
        Sorted so that group buckets come out in a stable order.
        """
        ready = [e for e in self.endpoints if e.ready]
        if not ready:
            ready = [e for e in self.endpoints if e.serving and e.terminating]
        return tuple(sorted(ready, key=lambda e: (e.ip, e.port)))


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    cluster_ip: str
    ports: Tuple[ServicePort, ...]
    type: str = CLUSTER_IP
    external_ips: Tuple[str, ...] = ()
    load_balancer_ips: Tuple[str, ...] = ()
    affinity_timeout: Optional[int] = None   # seconds, with sessionAffinity ClientIP
    internal_traffic_policy: str = CLUSTER
    topology_aware: bool = False             # use endpoints' zone hints
    external_traffic_policy: str = CLUSTER   # NodePort, LB and external IPs
    source_ranges: Tuple[str, ...] = ()      # loadBalancerSourceRanges (CIDRs)
    health_check_node_port: Optional[int] = None   # externalTrafficPolicy Local's
    # dual-stack: the other family's cluster IP (spec.clusterIPs[1]); each
    # family's cluster IP is served by that family's endpoints
    secondary_cluster_ip: Optional[str] = None

    @property
    def cluster_ips(self) -> Tuple[str, ...]:
        """Every cluster IP: the primary (either family), then the other."""
        if self.secondary_cluster_ip is None:
            return (self.cluster_ip,)
        return (self.cluster_ip, self.secondary_cluster_ip)

    @property
    def outside_ips(self) -> Tuple[str, ...]:
        """externalIPs and load-balancer IPs: addresses reached from outside."""
        return self.external_ips + self.load_balancer_ips

    @property
    def frontend_ips(self) -> Tuple[str, ...]:
        """Every address the service answers on (the cluster IPs first)."""
        return self.cluster_ips + self.outside_ips

    @property
    def node_ports(self) -> bool:
        return self.type in (NODE_PORT, LOAD_BALANCER) and any(
            p.node_port for p in self.ports)

    @property
    def key(self) -> ServiceKey:
        return ServiceKey(self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Node:
    """A Kubernetes node: where its pods live and how to reach it."""
    name: str
    internal_ip: str
    pod_cidr: str
    zone: Optional[str] = None               # topology.kubernetes.io/zone
    # labelled nsx-proxy.io/gateway=true: the gateway host, which has no node
    # bridge, so it serves no Service traffic and no pod routes lead to it
    gateway: bool = False
    pod_cidr6: Optional[str] = None          # a dual-stack node's IPv6 podCIDR
    internal_ip6: Optional[str] = None       # ...and its IPv6 InternalIP (NodePorts,
    #                                          IPv6 masquerade), if it has one

    @property
    def dual_stack(self) -> bool:
        """An IPv6 podCIDR and an IPv6 InternalIP: the node serves IPv6 from
        outside (masqueraded to that address) and its own stack has IPv6."""
        return self.pod_cidr6 is not None and self.internal_ip6 is not None

    @property
    def compute(self) -> bool:
        """Whether this node has a node bridge (pods, Service endpoints)."""
        return not self.gateway


@dataclass(frozen=True, slots=True)
class FloatingIP:
    """A pod's own public address: 1:1 NAT in both directions (Contrail's FIP)."""
    ip: str
    pod_ip: str
    node: str
    pod: str                                 # namespace/name


def _frozen(mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class ClusterState:
    """Everything the proxy must implement, keyed for cheap diffing."""
    services: Mapping[ServiceKey, Service] = field(default_factory=dict)
    nodes: Mapping[str, Node] = field(default_factory=dict)
    floating_ips: Mapping[str, FloatingIP] = field(default_factory=dict)

    @classmethod
    def build(cls, services=(), nodes=(), floating_ips=()) -> "ClusterState":
        return cls(services=_frozen((s.key, s) for s in services),
                   nodes=_frozen((n.name, n) for n in nodes),
                   floating_ips=_frozen((f.ip, f) for f in floating_ips))
