"""A lab's addresses and its OVSDB labels: plain data, no Mininet, no client.

Every topology of this project - the bundled lab (lab.py), the multi-host
lab (hosts.py) and the ``mn --custom`` topology (nsx_topo.py) - plans its
nodes and pods here and labels bridges and ports with these functions, so a
topology of your own labels them the same way (docs/ovsdb.md
).  Standard library and controller/bridges.py only: nsx_topo.py
is loaded by Mininet's ``mn``, which runs Debian's python3 without the venv.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from controller import bridges as B
from controller.bridges import ip_mac

TCP_TARGET = 8080                        # every pod serves HTTP here (podserver.py)
UDP_TARGET = 5353                        # and UDP here
INET_IP = "203.0.113.10"                 # the Internet host
INET_GW = "203.0.113.1"                  # br-gw's address on the Internet side
INET_IP6 = "2001:db8:113::10"            # the same in a dual-stack lab (documentation
INET_GW6 = "2001:db8:113::1"             # prefix, RFC 3849)
GATEWAY_FABRIC_IP = "192.168.100.254"    # br-gw's address on the fabric
GATEWAY_FABRIC_IP6 = "fd00:100::fe"      # the multi-host lab's gateway host's, in IPv6


@dataclass
class PodSpec:
    name: str
    node: str
    ip: str
    labels: Dict[str, str] = field(default_factory=lambda: {"app": "web"})
    namespace: str = "default"
    ip6: Optional[str] = None            # a dual-stack lab's pods have both

    @property
    def ips(self) -> List[str]:
        return [self.ip] + ([self.ip6] if self.ip6 else [])

    @property
    def mac(self) -> str:
        return ip_mac(self.ip)


@dataclass
class NodeSpec:
    name: str
    index: int
    bridge: str
    internal_ip: str
    pod_cidr: str
    pods: List[PodSpec] = field(default_factory=list)
    pod_cidr6: Optional[str] = None      # a dual-stack lab's nodes have both
    internal_ip6: Optional[str] = None   # ...and an IPv6 InternalIP (the fabric's)

    @property
    def internal_ips(self) -> List[str]:
        """Node.status.addresses' InternalIPs: IPv4 first."""
        return [self.internal_ip] + ([self.internal_ip6] if self.internal_ip6 else [])

    @property
    def pod_cidrs(self) -> List[str]:
        """Node.spec.podCIDRs: IPv4 first."""
        return [self.pod_cidr] + ([self.pod_cidr6] if self.pod_cidr6 else [])

    @property
    def zone(self) -> str:
        """Each compute node is its own zone (topology.kubernetes.io/zone)."""
        return f"zone-{self.index}"

    @property
    def gateway_ip(self) -> str:
        return B.gateway_ip(self.pod_cidr)


def node_spec(k: int, dual_stack=False) -> NodeSpec:
    """Node k: bridge br-nodeK, InternalIP 192.168.100.K, podCIDR 10.1.K.0/24
    (dual-stack: and fd00:100::K, fd00:10:1:K::/64)."""
    return NodeSpec(name=f"node{k}", index=k, bridge=f"br-node{k}",
                    internal_ip=f"192.168.100.{k}", pod_cidr=f"10.1.{k}.0/24",
                    pod_cidr6=f"fd00:10:1:{k}::/64" if dual_stack else None,
                    internal_ip6=f"fd00:100::{k:x}" if dual_stack else None)


def pod_spec(node: NodeSpec, name: str) -> PodSpec:
    """The node's next pod: the first free address after the gateway (.1),
    in each family (host-local hands them out in this order)."""
    n = len(node.pods) + 2
    pod = PodSpec(name=name, node=node.name, ip=f"10.1.{node.index}.{n}",
                  ip6=f"fd00:10:1:{node.index}::{n:x}" if node.pod_cidr6 else None)
    node.pods.append(pod)
    return pod


def plan_nodes(node_count: int, pods_per_node: int, dual_stack=False) -> List[NodeSpec]:
    """Names and addresses: node k has 10.1.k.0/24 (and fd00:10:1:k::/64),
    pods are numbered globally."""
    nodes, n = [], 0
    for k in range(1, node_count + 1):
        node = node_spec(k, dual_stack)
        for _ in range(pods_per_node):
            n += 1
            pod_spec(node, f"pod{n}")
        nodes.append(node)
    return nodes


def pod_labels(ifname: str, pod: PodSpec) -> List[str]:
    """ovs-vsctl arguments labelling one pod's port (what a CNI plugin writes)."""
    return ["--", "set", "interface", ifname,
            f"external_ids:{B.ROLE}={B.ROLE_POD}",
            f"external_ids:{B.POD_NAMESPACE}={pod.namespace}",
            f"external_ids:{B.POD_NAME}={pod.name}",
            f"external_ids:{B.POD_IP}={B.dual_stack_text(pod.ip, pod.ip6)}",
            f"external_ids:{B.POD_MAC}={pod.mac}"]


def node_labels(node: NodeSpec, uplink: str, pods) -> List[str]:
    """ovs-vsctl arguments labelling a node's bridge, its uplink and its pods'
    ports (``pods``: [(interface name, PodSpec)]), as docs/ovsdb.md
     say a CNI plugin would."""
    cmds = ["--", "set", "bridge", node.bridge,
            f"external_ids:{B.ROLE}={B.ROLE_NODE}",
            f"external_ids:{B.NODE}={node.name}",
            f"external_ids:{B.POD_CIDR}={B.dual_stack_text(node.pod_cidr, node.pod_cidr6)}",
            f"external_ids:{B.FABRIC_GATEWAY}={GATEWAY_FABRIC_IP}",
            "--", "set", "interface", uplink, f"external_ids:{B.ROLE}={B.ROLE_UPLINK}"]
    for ifname, pod in pods:
        cmds += pod_labels(ifname, pod)
    return cmds


def gateway_labels(bridge: str, uplink: str, external: str, ipv6=False) -> List[str]:
    """ovs-vsctl arguments labelling the gateway router bridge and its ports
    (``ipv6``: the external port has an IPv6 address too)."""
    address = B.dual_stack_text(f"{INET_GW}/24", f"{INET_GW6}/64" if ipv6 else None)
    return ["--", "set", "bridge", bridge, f"external_ids:{B.ROLE}={B.ROLE_GATEWAY}",
            f"external_ids:{B.FABRIC_IP}={GATEWAY_FABRIC_IP}",
            "--", "set", "interface", uplink, f"external_ids:{B.ROLE}={B.ROLE_UPLINK}",
            "--", "set", "interface", external,
            f"external_ids:{B.ROLE}={B.ROLE_EXTERNAL}",
            f"external_ids:{B.POD_IP}={address}",
            f"external_ids:{B.NEXT_HOP_MAC}={ip_mac(INET_IP)}"]


def state_document(nodes: List[NodeSpec], vip="10.96.0.10", port=80):
    """A ``source = file`` state (nsx_proxy/yaml_source.py) for these nodes:
    the nodes, and one Service ``web`` on ``vip`` over every pod (TCP
    ``port`` -> 8080, UDP 53 -> 5353)."""
    pods = [p for n in nodes for p in n.pods]
    return {
        "nodes": [{"name": n.name, "internalIP": n.internal_ip, "podCIDR": n.pod_cidr}
                  for n in nodes],
        "services": [{
            "namespace": "default", "name": "web", "clusterIP": vip,
            "ports": [{"name": "http", "protocol": "TCP", "port": port,
                       "targetPort": TCP_TARGET},
                      {"name": "dns", "protocol": "UDP", "port": 53,
                       "targetPort": UDP_TARGET}],
            "endpoints": [{"ip": p.ip, "node": p.node, "pod": f"{p.namespace}/{p.name}",
                           "ready": True} for p in pods]}]}
