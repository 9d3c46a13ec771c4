"""Compile (cluster state, bridge context) into flows and groups.

Pure: no Ryu, no I/O.  The output is a :data:`BridgeState`, a mapping from a
fragment key (which object) to a :class:`Fragment` (that object's flows and
groups).  Fragments never share a flow key, so the diff can work object by
object, and a :class:`Compiler` reuses the fragment of every object that did
not change, which keeps a one-endpoint change at 10,000 services cheap.
"""
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Hashable, Mapping

from controller import cookies
from controller import flows as F
from controller import pipeline as P
from controller.bridges import BridgeContext, Pod, ROLE_NODE, ip_mac, router_mac
from nsx_proxy import endpoint_selection, model

LOG = logging.getLogger(__name__)
REJECT = (F.Meter(P.REJECT_METER), F.Controller(128))

PRIO_HIGH = 200
PRIO_MID = 190
PRIO_LOW = 180
PRIO_FALLBACK = 10
PRIO_MISS = 0


@dataclass(frozen=True)
class Fragment:
    flows: FrozenSet[F.Flow] = field(default_factory=frozenset)
    groups: FrozenSet[F.SelectGroup] = field(default_factory=frozenset)


BridgeState = Mapping[Hashable, Fragment]


# Fragment keys are strings: their hash is cached, so diffing and copying a
# 20,000-fragment state costs dictionary walks, not re-hashing tuples.
def service_key(key: model.ServiceKey) -> str:
    return f"service/{key.namespace}/{key.name}"


def vip_key(ip: str) -> str:
    return f"vip/{ip}"


def _arp_reply(ip: str, mac: str) -> tuple:
    """Turn an ARP request for ``ip`` into the reply 'ip is at mac'."""
    return (F.Move("eth_src", "eth_dst"), F.SetField("eth_src", mac),
            F.SetField("arp_op", 2),
            F.Move("arp_sha", "arp_tha"), F.SetField("arp_sha", mac),
            F.Move("arp_spa", "arp_tpa"), F.SetField("arp_spa", ip),
            F.Output(F.IN_PORT))


def _arp_flow(ip, mac, priority, cookie) -> F.Flow:
    return F.flow(P.ARP_RESPONDER, priority, _arp_reply(ip, mac), cookie,
                  eth_type=F.ETH_ARP, arp_op=1, arp_tpa=ip)


# --- fragments -------------------------------------------------------------

def pipeline_fragment(ctx: BridgeContext) -> Fragment:
    """Table skeleton: misses, conntrack, the gateway's ARP, the uplink."""
    c = cookies.make(cookies.KIND_PIPELINE, 0)
    zone = ctx.ct_zone
    out = [F.flow(t, PRIO_MISS, (), c) for t in P.TABLES   # miss = drop, never flood
           if t is not P.HAIRPIN_UNSNAT]
    out += [
        F.flow(P.HAIRPIN_UNSNAT, PRIO_MISS, (F.GotoTable(P.CONNTRACK_ZONE.id),), c),
        F.flow(P.AFFINITY_LEARN, PRIO_FALLBACK, (F.GotoTable(P.SERVICE_MASQUERADE.id),), c),
        F.flow(P.SERVICE_MASQUERADE, PRIO_FALLBACK, (F.GotoTable(P.L3_FORWARDING.id),), c),
        F.flow(P.CONNTRACK_ZONE, PRIO_HIGH,
               (F.Ct(zone=zone, table=P.CONNTRACK_STATE.id, nat=F.Nat()),), c,
               eth_type=F.ETH_IP),
        F.flow(P.CONNTRACK_STATE, PRIO_HIGH, (), c,
               ct_state=(F.CT_INV | F.CT_TRK, F.CT_INV | F.CT_TRK)),
        F.flow(P.CONNTRACK_STATE, PRIO_MID, (F.GotoTable(P.SERVICE_MASQUERADE.id),), c,
               eth_type=F.ETH_IP, ct_state=(F.CT_TRK, F.CT_TRK | F.CT_NEW)),
        F.flow(P.CONNTRACK_STATE, PRIO_LOW, (F.GotoTable(P.SERVICE_LB.id),), c,
               eth_type=F.ETH_IP, ct_state=(F.CT_TRK | F.CT_NEW, F.CT_TRK | F.CT_NEW)),
        # Not a service: commit as is, so replies are +est on this bridge too.
        F.flow(P.SERVICE_LB, PRIO_FALLBACK,
               (F.Ct(zone=zone, table=P.L3_FORWARDING.id, commit=True),), c,
               eth_type=F.ETH_IP),
    ]
    if ctx.role == ROLE_NODE:
        out.append(_arp_flow(ctx.gateway_ip, ctx.router_mac, PRIO_HIGH, c))
        # Hairpin replies are addressed to the gateway IP: un-SNAT them first.
        out.append(F.flow(P.HAIRPIN_UNSNAT, PRIO_HIGH,
                          (F.Ct(zone=ctx.snat_zone, table=P.CONNTRACK_ZONE.id,
                                nat=F.Nat()),), c,
                          eth_type=F.ETH_IP, ipv4_dst=ctx.gateway_ip))
        if ctx.uplink is not None:
            # Only frames addressed to this router: a learning fabric floods
            # unknown unicast, and routing those twice would duplicate them.
            out.append(F.flow(P.CLASSIFIER, PRIO_HIGH,
                              (F.GotoTable(P.HAIRPIN_UNSNAT.id),), c,
                              in_port=ctx.uplink, eth_type=F.ETH_IP,
                              eth_dst=ctx.router_mac))
    return Fragment(flows=frozenset(out))


def pod_fragment(ctx: BridgeContext, pod: Pod) -> Fragment:
    c = cookies.for_name(cookies.KIND_POD, pod.full_name)
    to_pod = (F.SetField("eth_src", ctx.router_mac), F.SetField("eth_dst", pod.mac))
    new = (F.CT_TRK | F.CT_NEW, F.CT_TRK | F.CT_NEW)
    old = (F.CT_TRK, F.CT_TRK | F.CT_NEW)
    return Fragment(flows=frozenset([
        F.flow(P.CLASSIFIER, PRIO_HIGH, (F.GotoTable(P.HAIRPIN_UNSNAT.id),), c,
               in_port=pod.ofport, eth_type=F.ETH_IP, eth_src=pod.mac, ipv4_src=pod.ip),
        F.flow(P.CLASSIFIER, PRIO_HIGH, (F.GotoTable(P.ARP_RESPONDER.id),), c,
               in_port=pod.ofport, eth_type=F.ETH_ARP, eth_src=pod.mac, arp_spa=pod.ip),
        _arp_flow(pod.ip, pod.mac, PRIO_MID, c),
        F.flow(P.L3_FORWARDING, PRIO_HIGH, to_pod + (F.Output(pod.ofport),), c,
               eth_type=F.ETH_IP, ipv4_dst=pod.ip),
        # Hairpin: the pod reached itself through a service.  SNAT to the
        # gateway IP, or the pod would drop a packet from its own address.
        F.flow(P.L3_FORWARDING, PRIO_HIGH + 20,
               (F.Ct(zone=ctx.snat_zone, table=P.HAIRPIN.id, commit=True,
                     nat=F.Nat(src_ip=ctx.gateway_ip)),), c,
               eth_type=F.ETH_IP, ipv4_src=pod.ip, ipv4_dst=pod.ip, ct_state=new),
        F.flow(P.L3_FORWARDING, PRIO_HIGH + 20,
               (F.Ct(zone=ctx.snat_zone, table=P.HAIRPIN.id, nat=F.Nat()),), c,
               eth_type=F.ETH_IP, ipv4_src=pod.ip, ipv4_dst=pod.ip, ct_state=old),
        # ...and its replies (and un-SNATed hairpin replies) leave by in_port.
        F.flow(P.L3_FORWARDING, PRIO_HIGH + 10, to_pod + (F.Output(F.IN_PORT),), c,
               in_port=pod.ofport, eth_type=F.ETH_IP, ipv4_dst=pod.ip),
        F.flow(P.HAIRPIN, PRIO_HIGH, to_pod + (F.Output(F.IN_PORT),), c,
               eth_type=F.ETH_IP, ipv4_dst=pod.ip),
    ]))


def _out_uplink(ctx, table, priority, rewrite, cookie, **match):
    """Flows that send out of the uplink; a second one for packets that came
    in on it (north-south traffic to a remote endpoint), because OpenFlow
    never outputs to the ingress port unless told IN_PORT."""
    return [F.flow(table, priority, rewrite + (F.Output(ctx.uplink),), cookie, **match),
            F.flow(table, priority + 1, rewrite + (F.Output(F.IN_PORT),), cookie,
                   in_port=ctx.uplink, **match)]


def node_fragment(ctx: BridgeContext, node: model.Node) -> Fragment:
    """Route another node's pod CIDR and node IP over the uplink to that
    node's router (replies to a node's masquerade go straight back to it)."""
    net = ipaddress.IPv4Network(node.pod_cidr)
    c = cookies.for_name(cookies.KIND_NODE, node.name)
    to_node = (F.SetField("eth_src", ctx.router_mac),
               F.SetField("eth_dst", router_mac(node.pod_cidr)))
    return Fragment(flows=frozenset(
        _out_uplink(ctx, P.L3_FORWARDING, PRIO_MID, to_node, c, eth_type=F.ETH_IP,
                    ipv4_dst=(str(net.network_address), str(net.netmask)))
        + _out_uplink(ctx, P.L3_FORWARDING, PRIO_MID, to_node, c, eth_type=F.ETH_IP,
                      ipv4_dst=node.internal_ip)))


def vip_fragment(ctx: BridgeContext, ip: str) -> Fragment:
    """ARP for a service IP, and reject TCP/UDP to ports it does not have
    (the service ports' own flows sit above these)."""
    c = cookies.for_ip(cookies.KIND_VIP, ip)
    return Fragment(flows=frozenset([_arp_flow(ip, ctx.router_mac, PRIO_HIGH, c)] + [
        F.flow(P.SERVICE_LB, PRIO_MID, REJECT, c, eth_type=F.ETH_IP, ip_proto=proto,
               ipv4_dst=ip) for proto in (F.IP_PROTO["TCP"], F.IP_PROTO["UDP"])]))


def service_port_name(svc: model.Service, port: model.ServicePort) -> str:
    return f"{svc.namespace}/{svc.name}:{port.protocol}/{port.port}"


def external_group_name(svc: model.Service, port: model.ServicePort) -> str:
    return service_port_name(svc, port) + "/external"


def gateway_group_name(ip: str) -> str:
    return f"gateway/{ip}"


def group_names(svc: model.Service):
    """Every group name the service may use (to keep their ids allocated)."""
    for port in svc.ports:
        yield service_port_name(svc, port)
        if svc.outside_ips or svc.node_ports:
            yield external_group_name(svc, port)
    for ip in svc.outside_ips:
        yield gateway_group_name(ip)


_SKIPPED_SCTP = set()


def _skip_sctp(ctx, svc, port) -> bool:
    if port.protocol != model.SCTP or ctx.nats_sctp:
        return False
    key = (ctx.name, svc.key, port.port)
    if key not in _SKIPPED_SCTP:
        _SKIPPED_SCTP.add(key)
        LOG.warning("bridge %s: service %s port SCTP/%d skipped: the %s datapath's "
                    "conntrack cannot NAT SCTP", ctx.name, svc.key, port.port,
                    ctx.datapath_type or "system")
    return True


def _buckets(ctx, endpoints, mark=None):
    return tuple(
        F.Bucket((F.Ct(zone=ctx.ct_zone, table=P.SERVICE_MASQUERADE.id, commit=True,
                       nat=F.Nat(ep.ip, ep.port), mark=mark),))
        for ep in endpoints)


def _ip_int(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def _affinity_pool(ctx, svc, port, frontends, endpoints, group_id, cookie, mark=None,
                   refuse=REJECT):
    """Flows and the group of one pool with sessionAffinity ClientIP.

    ServiceLB writes the frontend into reg2/reg3 and looks the client up in
    SessionAffinity (a hit loads the remembered endpoint into reg0/reg1);
    EndpointDNAT then DNATs to that endpoint, or - no hit, or the endpoint is
    gone - hands over to the group, whose bucket loads a fresh pick and
    comes back.  After the DNAT, AffinityLearn remembers a fresh pick.  The
    ct sits in a table, not in the bucket: buckets run as action sets.
    """
    proto = F.IP_PROTO[port.protocol]
    learned_cookie = cookies.make(cookies.KIND_AFFINITY, group_id)   # generation 0:
    buckets = tuple(F.Bucket((                                      # kept on restart
        F.Load("reg0", _ip_int(ep.ip)),
        F.Load("reg1", ep.port | P.AFFINITY_LEARN_BIT),
        F.Resubmit(P.ENDPOINT_DNAT.id))) for ep in endpoints)
    flows = []
    for ip, dport, ranges in frontends:
        fe = dict(eth_type=F.ETH_IP, ip_proto=proto, reg2=_ip_int(ip), reg3=dport)
        flows += _frontend_flows(port, [(ip, dport, ranges)], (
            F.Load("reg2", _ip_int(ip)), F.Load("reg3", dport),
            F.Resubmit(P.SESSION_AFFINITY.id), F.GotoTable(P.ENDPOINT_DNAT.id))
            if endpoints else refuse, cookie)
        if not endpoints:
            continue
        flows.append(F.flow(P.ENDPOINT_DNAT, PRIO_LOW, (F.Group(group_id),), cookie, **fe))
        for ep in endpoints:
            flows.append(F.flow(
                P.ENDPOINT_DNAT, PRIO_HIGH,
                (F.Ct(zone=ctx.ct_zone, table=P.AFFINITY_LEARN.id, commit=True,
                      nat=F.Nat(ep.ip, ep.port), mark=mark),), cookie,
                reg0=_ip_int(ep.ip), reg1=(ep.port, 0xFFFF), **fe))
        flows.append(F.flow(P.AFFINITY_LEARN, PRIO_HIGH, (
            F.LearnAffinity(table=P.SESSION_AFFINITY.id, idle_timeout=svc.affinity_timeout,
                            priority=PRIO_HIGH, cookie=learned_cookie, ip_proto=proto),
            F.GotoTable(P.SERVICE_MASQUERADE.id)), cookie,
            **dict(fe, reg1=(P.AFFINITY_LEARN_BIT, P.AFFINITY_LEARN_BIT))))
    return flows, F.SelectGroup(group_id, buckets)


def _external_frontends(svc, port, node):
    """(ip, port, source ranges) that reach the external pool: externalIPs,
    load-balancer IPs (with loadBalancerSourceRanges) and the nodePort on
    this node's IP."""
    out = [(ip, port.port, ()) for ip in svc.external_ips]
    out += [(ip, port.port, svc.source_ranges) for ip in svc.load_balancer_ips]
    if port.node_port and svc.node_ports and node is not None:
        out.append((node.internal_ip, port.node_port, ()))
    return out


def _frontend_flows(port, frontends, action, cookie):
    """ServiceLB flows of (ip, port, ranges) frontends; with source ranges,
    only those sources get ``action`` and every other source is dropped."""
    proto = F.IP_PROTO[port.protocol]
    flows = []
    for ip, dport, ranges in frontends:
        match = dict(eth_type=F.ETH_IP, ip_proto=proto, ipv4_dst=ip,
                     **{F.L4_DST_FIELD[proto]: dport})
        flows.append(F.flow(P.SERVICE_LB, PRIO_HIGH, () if ranges else action, cookie,
                            **match))
        for cidr in ranges:
            net = ipaddress.IPv4Network(cidr)
            flows.append(F.flow(P.SERVICE_LB, PRIO_HIGH + 5, action, cookie,
                                ipv4_src=(str(net.network_address), str(net.netmask)),
                                **match))
    return flows


def service_fragment(ctx: BridgeContext, svc: model.Service, group_ids,
                     node: model.Node = None) -> Fragment:
    """Per port: a select group for the cluster IP and, when the service has
    external frontends (externalIPs, load-balancer IPs, a nodePort), one for
    those; one bucket per endpoint this node may use.

    A bucket holds nothing but ``ct(commit,nat(dst=...),table=...)``: OVS
    treats bucket actions as an action set, and a ct followed by anything
    else in a bucket silently loses the ct (verified with ofproto/trace).
    External traffic with externalTrafficPolicy Cluster is marked (ct_mark)
    for masquerade; with Local it uses this node's endpoints only, keeps the
    client's source IP, and is dropped when there is none (as kube-proxy).
    """
    flows, groups = [], []
    cluster_policy = svc.external_traffic_policy == model.CLUSTER
    for port in svc.ports:
        if _skip_sctp(ctx, svc, port):
            continue
        gid = group_ids.get(service_port_name(svc, port))
        cookie = cookies.make(cookies.KIND_SERVICE_PORT, gid)
        chosen = endpoint_selection.select(svc, port, ctx.node, node)
        pools = [([(svc.cluster_ip, port.port, ())], chosen.internal, gid, None, REJECT)]
        external = _external_frontends(svc, port, node)
        if external:
            pools.append((external, chosen.external,
                          group_ids.get(external_group_name(svc, port)),
                          P.MASQUERADE_MARK if cluster_policy else None,
                          REJECT if cluster_policy else ()))
        for frontends, endpoints, group_id, mark, refuse in pools:
            if svc.affinity_timeout:
                pool_flows, group = _affinity_pool(ctx, svc, port, frontends, endpoints,
                                                   group_id, cookie, mark, refuse)
            else:
                group = F.SelectGroup(group_id, _buckets(ctx, endpoints, mark))
                pool_flows = _frontend_flows(
                    port, frontends, (F.Group(group_id),) if endpoints else refuse, cookie)
            flows += pool_flows
            groups.append(group)
    return Fragment(flows=frozenset(flows), groups=frozenset(groups))


def local_node_fragment(ctx: BridgeContext, node: model.Node) -> Fragment:
    """This node's own IP: masquerade to it, un-SNAT its replies, and route
    what leaves the cluster to the gateway (pods source-NATed to the node IP)."""
    c = cookies.for_name(cookies.KIND_NODE, node.name)
    snat = ctx.snat_zone
    flows = [
        F.flow(P.HAIRPIN_UNSNAT, PRIO_HIGH, (F.Ct(zone=snat, table=P.CONNTRACK_ZONE.id,
                                                  nat=F.Nat()),), c,
               eth_type=F.ETH_IP, ipv4_dst=node.internal_ip),
        F.flow(P.SERVICE_MASQUERADE, PRIO_HIGH,
               (F.Ct(zone=snat, table=P.L3_FORWARDING.id, commit=True,
                     nat=F.Nat(src_ip=node.internal_ip)),), c,
               eth_type=F.ETH_IP, ct_mark=P.MASQUERADE_MARK,
               ct_state=(F.CT_TRK, F.CT_TRK | F.CT_RPL)),
    ]
    if ctx.fabric_gateway and ctx.uplink is not None:
        net = ipaddress.IPv4Network(ctx.pod_cidr)
        flows += [
            F.flow(P.L3_FORWARDING, PRIO_FALLBACK + 1,
                   (F.Ct(zone=snat, table=P.EGRESS_OUTPUT.id, commit=True,
                         nat=F.Nat(src_ip=node.internal_ip)),), c,
                   eth_type=F.ETH_IP,
                   ipv4_src=(str(net.network_address), str(net.netmask))),
            F.flow(P.L3_FORWARDING, PRIO_FALLBACK, (F.GotoTable(P.EGRESS_OUTPUT.id),), c,
                   eth_type=F.ETH_IP),
        ] + _out_uplink(ctx, P.EGRESS_OUTPUT, PRIO_HIGH,
                        (F.SetField("eth_src", ctx.router_mac),
                         F.SetField("eth_dst", ip_mac(ctx.fabric_gateway))), c,
                        eth_type=F.ETH_IP)
    return Fragment(flows=frozenset(flows))


def floating_ip_fragment(ctx: BridgeContext, fip: model.FloatingIP) -> Fragment:
    """1:1 NAT for a pod on this node: DNAT what arrives for the floating IP
    (zone Z, like a one-endpoint service), SNAT what the pod sends out of the
    cluster (zone Z+1, like the node IP's masquerade)."""
    c = cookies.for_ip(cookies.KIND_FLOATING_IP, fip.ip)
    flows = [F.flow(P.HAIRPIN_UNSNAT, PRIO_HIGH, (F.Ct(zone=ctx.snat_zone,
                                                       table=P.CONNTRACK_ZONE.id,
                                                       nat=F.Nat()),), c,
                    eth_type=F.ETH_IP, ipv4_dst=fip.ip)]
    for proto in ("TCP", "UDP", "ICMP"):
        flows.append(F.flow(P.SERVICE_LB, PRIO_HIGH,
                            (F.Ct(zone=ctx.ct_zone, table=P.SERVICE_MASQUERADE.id,
                                  commit=True, nat=F.Nat(fip.pod_ip)),), c,
                            eth_type=F.ETH_IP, ip_proto=F.IP_PROTO[proto], ipv4_dst=fip.ip))
    if ctx.fabric_gateway and ctx.uplink is not None:
        flows.append(F.flow(P.L3_FORWARDING, PRIO_FALLBACK + 2,
                            (F.Ct(zone=ctx.snat_zone, table=P.EGRESS_OUTPUT.id, commit=True,
                                  nat=F.Nat(src_ip=fip.ip)),), c,
                            eth_type=F.ETH_IP, ipv4_src=fip.pod_ip))
    return Fragment(flows=frozenset(flows))


# --- the gateway router ----------------------------------------------------

def _to_node(ctx, node, out_port):
    return (F.SetField("eth_src", ip_mac(ctx.fabric_ip)),
            F.SetField("eth_dst", router_mac(node.pod_cidr)), F.Output(out_port))


def gateway_fragment(ctx: BridgeContext) -> Fragment:
    """Admission and the default route of the gateway router."""
    c = cookies.make(cookies.KIND_PIPELINE, 1)
    ext = ctx.external
    flows = []
    if ext is not None:
        flows += [
            F.flow(P.CLASSIFIER, PRIO_HIGH, (F.GotoTable(P.GATEWAY_ROUTING.id),), c,
                   in_port=ext.ofport, eth_type=F.ETH_IP, eth_dst=ext.mac),
            F.flow(P.CLASSIFIER, PRIO_HIGH, (F.GotoTable(P.ARP_RESPONDER.id),), c,
                   in_port=ext.ofport, eth_type=F.ETH_ARP),
            _arp_flow(ext.ip, ext.mac, PRIO_HIGH, c),
        ]
    if ctx.uplink is not None and ctx.fabric_ip:
        flows.append(F.flow(P.CLASSIFIER, PRIO_HIGH, (F.GotoTable(P.GATEWAY_ROUTING.id),),
                            c, in_port=ctx.uplink, eth_type=F.ETH_IP,
                            eth_dst=ip_mac(ctx.fabric_ip)))
        if ext is not None:   # from the cluster to anywhere else: the Internet
            flows.append(F.flow(P.GATEWAY_ROUTING, PRIO_FALLBACK, (
                F.SetField("eth_src", ext.mac), F.SetField("eth_dst", ext.next_hop_mac),
                F.Output(ext.ofport)), c, in_port=ctx.uplink, eth_type=F.ETH_IP))
    return Fragment(flows=frozenset(flows))


def gateway_node_fragment(ctx: BridgeContext, node: model.Node) -> Fragment:
    """Node IPs are reachable from outside (NodePorts): route to the node."""
    c = cookies.for_name(cookies.KIND_NODE, node.name)
    return Fragment(flows=frozenset([
        F.flow(P.GATEWAY_ROUTING, PRIO_HIGH, _to_node(ctx, node, ctx.uplink), c,
               eth_type=F.ETH_IP, ipv4_dst=node.internal_ip)]))


def gateway_vip_fragment(ctx: BridgeContext, ip: str, nodes, group_ids) -> Fragment:
    """A load-balancer or external IP: ECMP over the nodes that serve it."""
    gid = group_ids.get(gateway_group_name(ip))
    c = cookies.make(cookies.KIND_VIP, gid)
    buckets = tuple(F.Bucket(_to_node(ctx, n, ctx.uplink))
                    for n in sorted(nodes, key=lambda n: n.name))
    return Fragment(
        flows=frozenset([F.flow(P.GATEWAY_ROUTING, PRIO_HIGH,
                                (F.Group(gid),) if buckets else (), c,
                                eth_type=F.ETH_IP, ipv4_dst=ip)]),
        groups=frozenset([F.SelectGroup(gid, buckets)]))


def gateway_fip_fragment(ctx: BridgeContext, fip: model.FloatingIP,
                         node: model.Node) -> Fragment:
    """A pod's floating IP: to its node, from outside and from the cluster."""
    c = cookies.for_ip(cookies.KIND_FLOATING_IP, fip.ip)
    return Fragment(flows=frozenset([
        F.flow(P.GATEWAY_ROUTING, PRIO_HIGH, _to_node(ctx, node, ctx.uplink), c,
               eth_type=F.ETH_IP, ipv4_dst=fip.ip),
        F.flow(P.GATEWAY_ROUTING, PRIO_HIGH + 1, _to_node(ctx, node, F.IN_PORT), c,
               eth_type=F.ETH_IP, ipv4_dst=fip.ip, in_port=ctx.uplink)]))


def serving_nodes(state: model.ClusterState, ip: str):
    """Nodes the gateway may send ``ip`` to: all of them, or for services with
    externalTrafficPolicy Local only those with a usable local endpoint."""
    nodes = list(state.nodes.values())
    users = [s for s in state.services.values()
             if ip in s.outside_ips]
    if not users or any(s.external_traffic_policy == model.CLUSTER for s in users):
        return nodes
    return [n for n in nodes if any(
        endpoint_selection.local_endpoints(p, n.name) for s in users for p in s.ports)]


# --- the whole bridge ------------------------------------------------------

class Compiler:
    """Compiles states for one bridge, reusing fragments of unchanged objects.

    ``compile`` is a pure function of (state, ctx) in its result; the memo
    and the patch path only make it fast.  When only services without
    external IPs changed since the last call, the previous output is patched
    for exactly those services (a one-endpoint change at 10,000 services
    touches one fragment); anything else recompiles from the memo.  A new
    context (a pod plugged in) gets a new Compiler.
    """

    def __init__(self, ctx: BridgeContext, group_ids: cookies.GroupIds):
        self.ctx = ctx
        self._group_ids = group_ids
        self._memo: Dict[Hashable, tuple] = {}
        self._last = None                    # (state, output) of the last call

    def _cached(self, key, source, build) -> Fragment:
        hit = self._memo.get(key)
        if hit is not None and (hit[0] is source or hit[0] == source):
            return hit[1]
        frag = build()
        self._memo[key] = (source, frag)
        return frag

    def compile(self, state: model.ClusterState) -> Dict[Hashable, Fragment]:
        """The bridge's desired fragments; the caller owns the returned dict."""
        out = None
        if self._last is not None and self.ctx.role == ROLE_NODE:
            out = self._patch(*self._last, state)
        if out is None:
            out = self._full(state)
        self._last = (state, out)
        return dict(out)

    def _service(self, out, key, svc, node) -> None:
        ctx = self.ctx
        skey, vkey = service_key(key), vip_key(svc.cluster_ip)
        out[skey] = self._cached(
            skey, (svc, node), lambda: service_fragment(ctx, svc, self._group_ids, node))
        out[vkey] = self._cached(vkey, svc.cluster_ip,
                                 lambda: vip_fragment(ctx, svc.cluster_ip))

    def _patch(self, last_state, last_out, state):
        if state.nodes is not last_state.nodes and state.nodes != last_state.nodes:
            return None
        if state.floating_ips is not last_state.floating_ips and \
                state.floating_ips != last_state.floating_ips:
            return None
        old, new = last_state.services, state.services
        removed = old.keys() - new.keys()
        changed = [k for k, v in new.items() if old.get(k) is not v]
        touched = [old[k] for k in removed] + [old[k] for k in changed if k in old]
        if any(s.outside_ips
               for s in touched + [new[k] for k in changed]):
            return None                      # shared VIPs: take the full path
        out = dict(last_out)
        for svc in touched:                  # drop old versions first: a VIP may move
            keys = (service_key(svc.key), vip_key(svc.cluster_ip))
            for key in keys:
                out.pop(key, None)
                if svc.key in removed:
                    self._memo.pop(key, None)
        node = state.nodes.get(self.ctx.node)
        for key in changed:
            self._service(out, key, new[key], node)
        return out

    def _full(self, state):
        ctx = self.ctx
        out: Dict[Hashable, Fragment] = {"pipeline": self._cached(
            "pipeline", ctx, lambda: pipeline_fragment(ctx))}
        if ctx.role != ROLE_NODE:
            return self._gateway(out, state)
        for pod in ctx.pods:
            key = f"pod/{pod.full_name}"
            out[key] = self._cached(key, pod, lambda: pod_fragment(ctx, pod))
        if ctx.uplink is not None:
            for node in state.nodes.values():
                if node.name != ctx.node:
                    key = f"node/{node.name}"
                    out[key] = self._cached(key, node, lambda: node_fragment(ctx, node))
        shared_vips = set()
        node = state.nodes.get(ctx.node)
        if node is not None:
            out["local-node"] = self._cached("local-node", node,
                                             lambda: local_node_fragment(ctx, node))
        for fip in state.floating_ips.values():
            if fip.node == ctx.node:
                key = f"fip/{fip.ip}"
                out[key] = self._cached(key, fip, lambda: floating_ip_fragment(ctx, fip))
        for skey, svc in state.services.items():
            self._service(out, skey, svc, node)
            shared_vips.update(svc.outside_ips)
        for ip in shared_vips - {s.cluster_ip for s in state.services.values()}:
            out[vip_key(ip)] = self._cached(vip_key(ip), ip, lambda: vip_fragment(ctx, ip))
        return self._forget_stale(out)

    def _forget_stale(self, out):
        stale = set(self._memo) - set(out)
        for key in stale:
            del self._memo[key]
        return out

    def _gateway(self, out, state):
        ctx = self.ctx
        if ctx.uplink is None or not ctx.fabric_ip:
            return out                       # not wired up (yet): skeleton only
        out["gateway"] = self._cached("gateway", ctx, lambda: gateway_fragment(ctx))
        for node in state.nodes.values():
            key = f"gw-node/{node.name}"
            out[key] = self._cached(key, node, lambda: gateway_node_fragment(ctx, node))
        ips = {ip for s in state.services.values()
               for ip in s.outside_ips}
        for ip in sorted(ips):
            nodes = tuple(serving_nodes(state, ip))
            key = f"gw-vip/{ip}"
            out[key] = self._cached(key, nodes, lambda: gateway_vip_fragment(
                ctx, ip, nodes, self._group_ids))
        for fip in state.floating_ips.values():
            node = state.nodes.get(fip.node)
            if node is not None:
                key = f"gw-fip/{fip.ip}"
                out[key] = self._cached(key, (fip, node),
                                        lambda: gateway_fip_fragment(ctx, fip, node))
        return self._forget_stale(out)


def flatten(state: BridgeState):
    """All flows (by key) and groups (by id) of a bridge state.

    Raises ValueError if two fragments claim one flow key or group id: the
    object-by-object diff relies on fragments being disjoint.
    """
    flows, groups = {}, {}
    for frag in state.values():
        for f in frag.flows:
            if flows.setdefault(f.key, f) is not f:
                raise ValueError(f"two objects claim {F.flow_text(f)}")
        for g in frag.groups:
            if groups.setdefault(g.group_id, g) is not g:
                raise ValueError(f"two objects claim group {g.group_id}")
    return flows, groups


def dump(state: BridgeState) -> str:
    """ovs-ofctl-like text of a bridge state, sorted like dump-flows --rsort."""
    flows, groups = flatten(state)
    lines = [F.flow_text(f) for f in sorted(
        flows.values(), key=lambda f: (f.table, -f.priority, F.match_text(f.match)))]
    lines += [F.group_text(g) for g in sorted(groups.values(), key=lambda g: g.group_id)]
    return "\n".join(lines) + "\n"
