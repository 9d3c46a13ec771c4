"""What a bridge is, read from OVSDB external_ids (the CNI's conventions).

Pure functions from OVSDB row contents to a frozen :class:`BridgeContext`;
the python-ovs monitor (ovsdb_monitor.py) feeds them.  The docs/ovsdb.md
 section documents the keys.
"""
import functools
import ipaddress
import logging
import zlib
import dataclasses
from dataclasses import dataclass
from typing import List, Optional, Tuple

LOG = logging.getLogger(__name__)

PREFIX = "nsx-proxy-"
ROLE = PREFIX + "role"             # bridge: node | gateway; interface: pod | uplink
NODE = PREFIX + "node"             # bridge: Kubernetes node name
POD_CIDR = PREFIX + "pod-cidr"     # bridge: this node's pod subnets (IPv4[,IPv6])
CT_ZONE = PREFIX + "ct-zone"       # bridge: conntrack zone Z (optional); Z+1 is for SNAT
FABRIC_GATEWAY = PREFIX + "fabric-gateway"  # node bridge: the gateway router's fabric IP
FABRIC_IP = PREFIX + "fabric-ip"   # gateway bridge: its own IP on the fabric
NEXT_HOP_MAC = PREFIX + "next-hop-mac"      # external interface: the upstream router's MAC
# Interface keys for pods follow the names CNI plugins already use.
POD_NAMESPACE = "pod-namespace"
POD_NAME = "pod-name"
POD_IP = "ip-address"              # IPv4[/len][,IPv6[/len]]: a dual-stack pod has both
POD_MAC = "attached-mac"

ROLE_NODE = "node"
ROLE_GATEWAY = "gateway"
ROLE_POD = "pod"
ROLE_UPLINK = "uplink"
ROLE_EXTERNAL = "external"         # gateway interface towards the Internet
ROLE_HOST = "host"                 # the node's own network stack (an internal port)
# Interface types that make an uplink a tunnel (``options:remote_ip=flow``):
# the overlay mode, where each frame to another node names that node's
# InternalIP as its tunnel destination.
TUNNEL_TYPES = frozenset({"geneve", "vxlan"})
HOST_NAMESPACE = "host"            # such a port is addressed like a pod: host/IFNAME
# NodePorts that reach a node's own address from off the node are DNATed by
# the node (nftables, controller/node_setup.py) to this link-local address,
# routed into the bridge by the host port; the bridge serves it as one more
# address of the node's nodePorts, and sends the replies back the same way
# (Antrea's "virtual NodePort DNAT IP" is 169.254.0.252 too).
NODE_PORT_STEER_IP = "169.254.0.252"
NODE_PORT_STEER_IP6 = "fc01::aabb:ccdd:eeff"   # the same for IPv6 (Antrea's too)


class BadBridge(ValueError):
    pass


@functools.lru_cache(maxsize=4096)      # every flow of a bridge asks for it
def router_mac(pod_cidr: str) -> str:
    """The MAC a node bridge routes with: 0a:58 + its gateway IP.

    Derived rather than configured (OVN-Kubernetes does the same for pods),
    so every node can address every other node's router with no ARP on the
    fabric and no extra convention.
    """
    return ip_mac(gateway_ip(pod_cidr))


def ip_mac(ip: str) -> str:
    """0a:58 + an IPv4 address (validated upstream): the MAC our routers use
    for that address."""
    return "0a:58:" + ":".join(f"{int(b):02x}" for b in ip.split("."))


@functools.lru_cache(maxsize=4096)
def gateway_ip(pod_cidr: str) -> str:
    return str(next(ipaddress.ip_network(pod_cidr).hosts()))


def default_zone(bridge_name: str) -> int:
    """A per-bridge conntrack zone.

    Bridges on one datapath share one conntrack table (all netdev bridges do,
    and so does every kernel bridge of a host), so two bridges that both see
    a connection must not use the same zone.  A zone derived from the name
    avoids that without configuration; ``nsx-proxy-ct-zone`` overrides it.
    The zone is even: the next one is the bridge's hairpin SNAT zone.
    """
    return 1000 + 2 * (zlib.crc32(bridge_name.encode()) % 30000)


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    ip: str
    mac: str
    ofport: int
    ip6: Optional[str] = None          # a dual-stack pod's IPv6 address

    @property
    def full_name(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ExternalPort:
    """The gateway's Internet-facing port: its address there (and its IPv6
    address, if the outside world has IPv6) and the next hop."""
    ofport: int
    ip: str
    prefix: int
    next_hop_mac: str
    ip6: Optional[str] = None

    @property
    def mac(self) -> str:
        return ip_mac(self.ip)


@dataclass(frozen=True)
class BridgeContext:
    name: str
    dpid: int
    role: str
    ct_zone: int
    node: Optional[str] = None
    pod_cidr: Optional[str] = None
    pod_cidr6: Optional[str] = None    # a dual-stack node's IPv6 pod subnet
    uplink: Optional[int] = None       # ofport of the fabric uplink, or of the tunnel
    tunnel: bool = False               # the uplink is a tunnel port (overlay mode)
    pods: Tuple[Pod, ...] = ()
    datapath_type: str = ""            # OVSDB Bridge.datapath_type: "" or system = kernel
    fabric_gateway: Optional[str] = None   # node: where non-cluster traffic is routed
    fabric_ip: Optional[str] = None    # gateway: its address on the fabric
    external: Optional["ExternalPort"] = None   # gateway: the Internet-facing port
    # nodeport_addresses (kube-proxy's --nodeport-addresses): the CIDRs a
    # node address must be in to serve nodePorts; empty: every address.
    node_port_cidrs: Tuple[str, ...] = ()

    @property
    def host_pod(self) -> Optional[Pod]:
        """The node's own stack on this bridge (the ``host`` port), if any."""
        return next((p for p in self.pods if p.namespace == HOST_NAMESPACE), None)

    @property
    def routes_ipv6(self) -> bool:
        """Whether this bridge carries IPv6 at all: a node bridge with an
        IPv6 pod CIDR, a gateway with an IPv6 address outside."""
        return self.pod_cidr6 is not None or \
            (self.external is not None and self.external.ip6 is not None)

    def serves_node_ports(self, ip: str) -> bool:
        return not self.node_port_cidrs or _in_cidrs(ip, self.node_port_cidrs)

    def programmed_by(self, node_name: str, gateway: bool) -> bool:
        """In agent mode: the agent of ``node_name`` programs its node's
        bridges, and the gateway bridge if it is told to be the gateway."""
        return (self.role == ROLE_NODE and self.node == node_name) or \
            (self.role == ROLE_GATEWAY and gateway)

    @staticmethod
    def programmed_here(contexts, node_name, gateway, node_port_cidrs=()):
        """({dpid: context} this controller programs, {dpid: context} it
        leaves alone): all of them centrally (``node_name`` empty), else
        what ``programmed_by`` says; each with the NodePort CIDRs set."""
        if node_port_cidrs:
            contexts = {d: dataclasses.replace(c, node_port_cidrs=node_port_cidrs)
                        for d, c in contexts.items()}
        if not node_name:
            return contexts, {}
        mine = {d: c for d, c in contexts.items() if c.programmed_by(node_name, gateway)}
        return mine, {d: c for d, c in contexts.items() if d not in mine}

    @property
    def nats_sctp(self) -> bool:
        """Kernel conntrack NATs SCTP ports; OVS 3.1's userspace conntrack does not."""
        return self.datapath_type in ("", "system")

    @property
    def snat_zone(self) -> int:
        return self.ct_zone + 1

    @property
    def gateway_ip(self) -> str:
        return gateway_ip(self.pod_cidr)

    @property
    def gateway_ip6(self) -> Optional[str]:
        """The pods' IPv6 gateway (the subnet's first address), if dual-stack."""
        return gateway_ip(self.pod_cidr6) if self.pod_cidr6 else None

    @property
    def router_mac(self) -> str:
        return router_mac(self.pod_cidr)


def _mac(value: str) -> str:
    parts = value.lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 and int(p, 16) >= 0 for p in parts):
        raise ValueError
    return ":".join(parts)


def parse_pod(ifname: str, ofport, ids) -> Optional[Pod]:
    """A pod from an Interface row, or None (logged) when it is incomplete."""
    try:
        if not isinstance(ofport, int) or ofport <= 0:
            return None            # not attached yet; OVS fills ofport in later
        ip, ip6 = _dual_stack(ids[POD_IP], ipaddress.ip_interface, lambda i: str(i.ip))
        return Pod(namespace=ids.get(POD_NAMESPACE, "default"), name=ids[POD_NAME],
                   ip=ip, mac=_mac(ids[POD_MAC]), ofport=ofport, ip6=ip6)
    except KeyError as exc:
        LOG.warning("interface %s: pod without external_ids:%s; ignored",
                    ifname, exc.args[0])
    except ValueError:
        LOG.warning("interface %s: pod with a malformed IP or MAC %r; ignored",
                    ifname, {k: ids.get(k) for k in (POD_IP, POD_MAC)})
    return None


def parse_bridge(name: str, dpid: int, ids, interfaces, datapath_type="") -> BridgeContext:
    """Build a BridgeContext from a Bridge's external_ids and its interfaces.

    ``interfaces`` is an iterable of ``(name, ofport, external_ids)`` or
    ``(name, ofport, external_ids, type)`` (the Interface's OVSDB type).
    Raises BadBridge for a bridge that claims a role but cannot serve it.
    """
    role = ids.get(ROLE)
    if role not in (ROLE_NODE, ROLE_GATEWAY):
        raise BadBridge(f"external_ids:{ROLE} is {role!r}, not node or gateway")
    try:
        zone = int(ids.get(CT_ZONE) or default_zone(name))
        if not 1 <= zone <= 65534:
            raise ValueError
    except ValueError:
        raise BadBridge(f"external_ids:{CT_ZONE} {ids.get(CT_ZONE)!r} is not 1-65534")
    pod_cidr = pod_cidr6 = None
    if role == ROLE_NODE:
        if not ids.get(NODE):
            raise BadBridge(f"node bridge without external_ids:{NODE}")
        try:
            pod_cidr, pod_cidr6 = _dual_stack(ids.get(POD_CIDR, ""), ipaddress.ip_network)
        except ValueError:
            raise BadBridge(f"external_ids:{POD_CIDR} {ids.get(POD_CIDR)!r} is not an "
                            "IPv4 network, or one IPv4 and one IPv6 network") from None
    uplink, tunnel, pods, external = None, False, [], None
    for ifname, ofport, if_ids, *if_type in interfaces:
        if_role = if_ids.get(ROLE)
        if if_role == ROLE_UPLINK and isinstance(ofport, int) and ofport > 0:
            uplink, tunnel = ofport, bool(if_type) and if_type[0] in TUNNEL_TYPES
        elif if_role == ROLE_EXTERNAL and role == ROLE_GATEWAY and \
                isinstance(ofport, int) and ofport > 0:
            external = parse_external(ifname, ofport, if_ids)
        elif if_role in (ROLE_POD, ROLE_HOST) and role == ROLE_NODE:
            if if_role == ROLE_HOST:
                # The node's own stack is wired like a pod whose IP is the
                # node's: health checks and anything else sent to the node
                # IP that no Service claims reach it, and it reaches out.
                if_ids = dict(if_ids, **{POD_NAMESPACE: HOST_NAMESPACE, POD_NAME: ifname})
            pod = parse_pod(ifname, ofport, if_ids)
            if pod is not None:
                pods.append(pod)
    pods.sort(key=lambda p: (p.namespace, p.name))
    return BridgeContext(name=name, dpid=dpid, role=role, ct_zone=zone,
                         node=ids.get(NODE), pod_cidr=pod_cidr, pod_cidr6=pod_cidr6,
                         uplink=uplink, tunnel=tunnel,
                         pods=tuple(pods), datapath_type=datapath_type or "",
                         fabric_gateway=_optional_ip(ids, FABRIC_GATEWAY),
                         fabric_ip=_optional_ip(ids, FABRIC_IP), external=external)


def dual_stack_text(ipv4: str, ipv6: Optional[str] = None) -> str:
    """The value of a dual-stack key (``ip-address``, ``nsx-proxy-pod-cidr``):
    "IPv4" or "IPv4,IPv6", as node setup, the CNI plugin and the labs write it."""
    return ipv4 if ipv6 is None else f"{ipv4},{ipv6}"


def dual_stack_items(text: Optional[str]) -> List[str]:
    """The items of such a value, as a writer's tools read it back (blanks
    dropped); :func:`parse_bridge` reads it strictly instead."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _dual_stack(text: str, parse, show=str) -> Tuple[str, Optional[str]]:
    """(IPv4, IPv6 or None) from "IPv4[,IPv6]", each parsed with ``parse``
    and written with ``show``; raises ValueError otherwise.  IPv4 comes
    first and is required: the router MAC is derived from the IPv4 gateway."""
    items = [parse(t.strip()) for t in text.split(",")]
    if not 1 <= len(items) <= 2 or items[0].version != 4 or \
            (len(items) == 2 and items[1].version != 6):
        raise ValueError(text)
    return show(items[0]), (show(items[1]) if len(items) == 2 else None)


@functools.lru_cache(maxsize=4096)      # asked for every nodePort service compiled
def _in_cidrs(ip: str, cidrs: Tuple[str, ...]) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(addr in net for net in map(ipaddress.ip_network, cidrs)
               if net.version == addr.version)


def parse_nodeport_addresses(text: str) -> Tuple[str, ...]:
    """kube-proxy's --nodeport-addresses: comma-separated CIDRs of either
    family, and ``primary`` for the node's primary IPs.  The only node
    addresses nodePorts are served on here are the InternalIPs - the primary
    ones - so ``primary`` (alone or with CIDRs) and an empty value both mean
    no restriction: ().  As with kube-proxy, CIDRs of one family only leave
    the other family's InternalIP without nodePorts.  Raises ValueError
    naming a bad entry."""
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    out = []
    for item in items:
        if item == "primary":
            continue
        try:
            out.append(str(ipaddress.ip_network(item)))
        except ValueError:
            raise ValueError(f"nodeport_addresses: {item!r} is not a CIDR or "
                             "'primary'") from None
    return () if "primary" in items else tuple(out)


def _optional_ip(ids, key) -> Optional[str]:
    if not ids.get(key):
        return None
    try:
        return str(ipaddress.IPv4Address(ids[key]))
    except ValueError:
        raise BadBridge(f"external_ids:{key} {ids[key]!r} is not an IPv4 address") from None


def parse_external(ifname, ofport, ids) -> Optional[ExternalPort]:
    """The external port from ``ip-address`` "IPv4/len[,IPv6/len]" and
    ``nsx-proxy-next-hop-mac`` (the upstream router, for both families)."""
    try:
        iface, iface6 = _dual_stack(ids[POD_IP], ipaddress.ip_interface, lambda i: i)
        return ExternalPort(ofport=ofport, ip=str(iface.ip), prefix=iface.network.prefixlen,
                            next_hop_mac=_mac(ids[NEXT_HOP_MAC]),
                            ip6=str(iface6.ip) if iface6 is not None else None)
    except KeyError as exc:
        LOG.warning("interface %s: external port without external_ids:%s; ignored",
                    ifname, exc.args[0])
    except ValueError:
        LOG.warning("interface %s: external port with a malformed address or MAC; ignored",
                    ifname)
    return None
