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
from controller.bridges import BridgeContext, Pod, ROLE_NODE, router_mac
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
        F.flow(P.AFFINITY_LEARN, PRIO_FALLBACK, (F.GotoTable(P.L3_FORWARDING.id),), c),
        F.flow(P.CONNTRACK_ZONE, PRIO_HIGH,
               (F.Ct(zone=zone, table=P.CONNTRACK_STATE.id, nat=F.Nat()),), c,
               eth_type=F.ETH_IP),
        F.flow(P.CONNTRACK_STATE, PRIO_HIGH, (), c,
               ct_state=(F.CT_INV | F.CT_TRK, F.CT_INV | F.CT_TRK)),
        F.flow(P.CONNTRACK_STATE, PRIO_MID, (F.GotoTable(P.L3_FORWARDING.id),), c,
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


def node_fragment(ctx: BridgeContext, node: model.Node) -> Fragment:
    """Route another node's pod CIDR over the uplink to that node's router."""
    net = ipaddress.IPv4Network(node.pod_cidr)
    c = cookies.for_name(cookies.KIND_NODE, node.name)
    return Fragment(flows=frozenset([
        F.flow(P.L3_FORWARDING, PRIO_MID,
               (F.SetField("eth_src", ctx.router_mac),
                F.SetField("eth_dst", router_mac(node.pod_cidr)),
                F.Output(ctx.uplink)), c,
               eth_type=F.ETH_IP, ipv4_dst=(str(net.network_address), str(net.netmask))),
    ]))


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


def group_names(svc: model.Service):
    """Every group name the service's ports may use (to keep their ids allocated)."""
    for port in svc.ports:
        yield service_port_name(svc, port)
        if svc.external_ips or svc.load_balancer_ips:
            yield external_group_name(svc, port)


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


def _buckets(ctx, endpoints):
    return tuple(
        F.Bucket((F.Ct(zone=ctx.ct_zone, table=P.L3_FORWARDING.id, commit=True,
                       nat=F.Nat(ep.ip, ep.port)),))
        for ep in endpoints)


def _ip_int(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def _affinity_pool(ctx, svc, port, frontends, endpoints, group_id, cookie):
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
    for ip in frontends:
        fe = dict(eth_type=F.ETH_IP, ip_proto=proto, reg2=_ip_int(ip), reg3=port.port)
        flows.append(F.flow(P.SERVICE_LB, PRIO_HIGH, (
            F.Load("reg2", _ip_int(ip)), F.Load("reg3", port.port),
            F.Resubmit(P.SESSION_AFFINITY.id), F.GotoTable(P.ENDPOINT_DNAT.id))
            if endpoints else REJECT, cookie,
            eth_type=F.ETH_IP, ip_proto=proto, ipv4_dst=ip,
            **{F.L4_DST_FIELD[proto]: port.port}))
        if not endpoints:
            continue
        flows.append(F.flow(P.ENDPOINT_DNAT, PRIO_LOW, (F.Group(group_id),), cookie, **fe))
        for ep in endpoints:
            flows.append(F.flow(
                P.ENDPOINT_DNAT, PRIO_HIGH,
                (F.Ct(zone=ctx.ct_zone, table=P.AFFINITY_LEARN.id, commit=True,
                      nat=F.Nat(ep.ip, ep.port)),), cookie,
                reg0=_ip_int(ep.ip), reg1=(ep.port, 0xFFFF), **fe))
        flows.append(F.flow(P.AFFINITY_LEARN, PRIO_HIGH, (
            F.LearnAffinity(table=P.SESSION_AFFINITY.id, idle_timeout=svc.affinity_timeout,
                            priority=PRIO_HIGH, cookie=learned_cookie, ip_proto=proto),
            F.GotoTable(P.L3_FORWARDING.id)), cookie,
            **dict(fe, reg1=(P.AFFINITY_LEARN_BIT, P.AFFINITY_LEARN_BIT))))
    return flows, F.SelectGroup(group_id, buckets)


def service_fragment(ctx: BridgeContext, svc: model.Service, group_ids,
                     node: model.Node = None) -> Fragment:
    """A select group per port (and per frontend class when they differ),
    one bucket per endpoint this node may use; rejection when there is none.

    A bucket holds nothing but ``ct(commit,nat(dst=...),table=...)``: OVS
    treats bucket actions as an action set, and a ct followed by anything
    else in a bucket silently loses the ct (verified with ofproto/trace).
    The cluster IP and the external IPs share one group unless their
    endpoints differ (internalTrafficPolicy Local).
    """
    flows, groups = [], []
    external = svc.external_ips + svc.load_balancer_ips
    for port in svc.ports:
        if _skip_sctp(ctx, svc, port):
            continue
        gid = group_ids.get(service_port_name(svc, port))
        cookie = cookies.make(cookies.KIND_SERVICE_PORT, gid)
        proto = F.IP_PROTO[port.protocol]
        chosen = endpoint_selection.select(svc, port, ctx.node, node)
        pools = [((svc.cluster_ip,), chosen.internal, gid)]
        if external and chosen.external != chosen.internal:
            pools.append((external, chosen.external,
                          group_ids.get(external_group_name(svc, port))))
        else:
            pools[0] = ((svc.cluster_ip,) + external, chosen.internal, gid)
        for frontends, endpoints, group_id in pools:
            if svc.affinity_timeout:
                pool_flows, group = _affinity_pool(ctx, svc, port, frontends, endpoints,
                                                   group_id, cookie)
                flows += pool_flows
                groups.append(group)
                continue
            groups.append(F.SelectGroup(group_id, _buckets(ctx, endpoints)))
            action = (F.Group(group_id),) if endpoints else REJECT
            for ip in frontends:
                flows.append(F.flow(P.SERVICE_LB, PRIO_HIGH, action, cookie,
                                    eth_type=F.ETH_IP, ip_proto=proto, ipv4_dst=ip,
                                    **{F.L4_DST_FIELD[proto]: port.port}))
    return Fragment(flows=frozenset(flows), groups=frozenset(groups))


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
        old, new = last_state.services, state.services
        removed = old.keys() - new.keys()
        changed = [k for k, v in new.items() if old.get(k) is not v]
        touched = [old[k] for k in removed] + [old[k] for k in changed if k in old]
        if any(s.external_ips or s.load_balancer_ips
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
            return out    # the gateway's routing is programmed in a later stage
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
        for skey, svc in state.services.items():
            self._service(out, skey, svc, node)
            shared_vips.update(svc.external_ips + svc.load_balancer_ips)
        for ip in shared_vips - {s.cluster_ip for s in state.services.values()}:
            out[vip_key(ip)] = self._cached(vip_key(ip), ip, lambda: vip_fragment(ctx, ip))
        stale = set(self._memo) - set(out)
        for key in stale:
            del self._memo[key]
        return out


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
