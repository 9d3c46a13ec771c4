"""Fragments of a node bridge: the pipeline skeleton, pods, routes to other
nodes, service ports and service IPs (nat_fragments.py has this node's own
IP and floating IPs).  Dual-stack: a pod, a node route and a service's
cluster IP get the flows of each family they have; a bridge without an
IPv6 pod CIDR gets no IPv6 flow at all.

Pure functions of (bridge context, one object): no Ryu, no I/O, no state.
Every flow is built through its table (pipeline.Table.flow), which checks
it against the pipeline's declaration.
"""
import ipaddress
import zlib

from controller import addresses as A
from controller import cookies, udp_pool
from controller import flows as F
from controller import pipeline as P
from controller.bridges import (HOST_NAMESPACE, NODE_PORT_STEER_IP, NODE_PORT_STEER_IP6,
                                ROLE_NODE, BridgeContext, Pod, router_mac)
from controller.fragments import Fragment
from controller.neighbor import answer_flow, nd_pipeline_flows
from controller.names import (external_group_name, family_group_name, pool_parts,
                              service_port_name, spread_per_flow)
from controller.split_pool import part_match, pool_group_ids, pool_groups
from nsx_proxy import endpoint_selection, model

REJECT = (F.Meter(P.REJECT_METER), F.Controller(128))


# --- fragments -------------------------------------------------------------

def pipeline_fragment(ctx: BridgeContext) -> Fragment:
    """Table skeleton: misses, conntrack, the gateway's ARP, the uplink."""
    c = cookies.make(cookies.KIND_PIPELINE, 0)
    zone = ctx.ct_zone
    # miss = drop, never flood; NdAdvertise only where pods have IPv6, so an
    # IPv4-only bridge's flows stay exactly as they were
    out = [t.flow(P.PRIO_MISS, (), c) for t in P.TABLES
           if t is not P.HAIRPIN_UNSNAT and (t is not P.ND_ADVERTISE or ctx.routes_ipv6)]
    out += [
        P.HAIRPIN_UNSNAT.flow(P.PRIO_MISS, (F.GotoTable(P.CONNTRACK_ZONE.id),), c),
        P.AFFINITY_LEARN.flow(P.PRIO_FALLBACK, (F.GotoTable(P.SERVICE_MASQUERADE.id),), c),
        P.SERVICE_MASQUERADE.flow(P.PRIO_FALLBACK, (F.GotoTable(P.L3_FORWARDING.id),), c),
        P.CONNTRACK_STATE.flow(P.PRIO_HIGH, (), c,
               ct_state=(F.CT_INV | F.CT_TRK, F.CT_INV | F.CT_TRK)),
    ]
    # IPv6 only where pods have it: an IPv4-only bridge (and the gateway
    # router's) stays as it was
    node = ctx.role == ROLE_NODE
    dual = node and ctx.gateway_ip6 is not None
    gateways = [ctx.gateway_ip, ctx.gateway_ip6] if dual else [ctx.gateway_ip] if node else []
    for eth_type in (F.ETH_IP, F.ETH_IPV6) if dual else (F.ETH_IP,):
        out += [
            P.CONNTRACK_ZONE.flow(P.PRIO_HIGH,
                   (F.Ct(zone=zone, table=P.CONNTRACK_STATE.id, nat=F.Nat()),), c,
                   eth_type=eth_type),
            P.CONNTRACK_STATE.flow(P.PRIO_MID, (F.GotoTable(P.SERVICE_MASQUERADE.id),), c,
                   eth_type=eth_type, ct_state=(F.CT_TRK, F.CT_TRK | F.CT_NEW)),
            P.CONNTRACK_STATE.flow(P.PRIO_LOW, (F.GotoTable(P.SERVICE_LB.id),), c,
                   eth_type=eth_type, ct_state=(F.CT_TRK | F.CT_NEW, F.CT_TRK | F.CT_NEW)),
            # Not a service: commit as is, so replies are +est on this bridge too.
            P.SERVICE_LB.flow(P.PRIO_FALLBACK,
                   (F.Ct(zone=zone, table=P.L3_FORWARDING.id, commit=True),), c,
                   eth_type=eth_type),
        ]
    if not node:
        return Fragment(flows=out)
    if dual:
        out += nd_pipeline_flows(c)
    for gateway in gateways:
        out.append(answer_flow(gateway, ctx.router_mac, P.PRIO_HIGH, c))
        # Hairpin replies are addressed to the gateway IP: un-SNAT them first.
        out.append(P.HAIRPIN_UNSNAT.flow(P.PRIO_HIGH,
                          (F.Ct(zone=ctx.snat_zone, table=P.CONNTRACK_ZONE.id,
                                nat=F.Nat()),), c, **A.addr(gateway)))
        if ctx.uplink is not None:
            # Only frames addressed to this router: a learning fabric floods
            # unknown unicast, and routing those twice would duplicate them.
            out.append(P.CLASSIFIER.flow(P.PRIO_HIGH,
                              (F.GotoTable(P.HAIRPIN_UNSNAT.id),), c,
                              in_port=ctx.uplink, eth_type=A.eth_type_of(gateway),
                              eth_dst=ctx.router_mac))
    return Fragment(flows=out)


def pod_fragment(ctx: BridgeContext, pod: Pod) -> Fragment:
    c = cookies.for_name(cookies.KIND_POD, pod.full_name)
    to_pod = (F.SetField("eth_src", ctx.router_mac), F.SetField("eth_dst", pod.mac))
    new = (F.CT_TRK | F.CT_NEW, F.CT_TRK | F.CT_NEW)
    old = (F.CT_TRK, F.CT_TRK | F.CT_NEW)
    steering = []
    if pod.namespace == HOST_NAMESPACE:
        # The host port: NodePorts the node steered in from off the node
        # keep their client's source; their replies (the source is the
        # steering address again once un-NATed) go back to the node.
        for steer in (NODE_PORT_STEER_IP, NODE_PORT_STEER_IP6 if pod.ip6 and ctx.gateway_ip6
                      else None):
            if steer:
                steering += [
                    P.CLASSIFIER.flow(P.PRIO_HIGH, (F.GotoTable(P.HAIRPIN_UNSNAT.id),), c,
                           in_port=pod.ofport, eth_src=pod.mac, **A.addr(steer)),
                    P.L3_FORWARDING.flow(P.PRIO_HIGH, to_pod + (F.Output(pod.ofport),), c,
                           **A.addr(steer, "src")),
                ]
    flows = steering + [
        P.CLASSIFIER.flow(P.PRIO_HIGH, (F.GotoTable(P.ARP_RESPONDER.id),), c,
               in_port=pod.ofport, eth_type=F.ETH_ARP, eth_src=pod.mac, arp_spa=pod.ip)]
    if pod.ip6 and ctx.gateway_ip6:
        # Solicitations come from the pod's global or link-local address (or
        # from :: while it checks its own address): admitted from its MAC
        flows.append(P.CLASSIFIER.flow(P.PRIO_NEIGHBOR, (F.GotoTable(P.ARP_RESPONDER.id),),
                                       c, in_port=pod.ofport, eth_type=F.ETH_IPV6,
                                       eth_src=pod.mac, ip_proto=F.ICMPV6,
                                       icmpv6_type=F.ICMPV6_NS))
    for ip, gateway in ((pod.ip, ctx.gateway_ip), (pod.ip6, ctx.gateway_ip6)):
        if not ip or not gateway:
            continue
        flows += [
            P.CLASSIFIER.flow(P.PRIO_HIGH, (F.GotoTable(P.HAIRPIN_UNSNAT.id),), c,
                   in_port=pod.ofport, eth_src=pod.mac, **A.addr(ip, "src")),
            answer_flow(ip, pod.mac, P.PRIO_MID, c),
            P.L3_FORWARDING.flow(P.PRIO_HIGH, to_pod + (F.Output(pod.ofport),), c,
                   **A.addr(ip)),
            # Hairpin: the pod reached itself through a service.  SNAT to the
            # gateway IP, or the pod would drop a packet from its own address.
            P.L3_FORWARDING.flow(P.PRIO_HAIRPIN,
                   (F.Ct(zone=ctx.snat_zone, table=P.HAIRPIN.id, commit=True,
                         nat=F.Nat(src_ip=gateway)),), c,
                   **A.addrs(ip, ip), ct_state=new),
            P.L3_FORWARDING.flow(P.PRIO_HAIRPIN,
                   (F.Ct(zone=ctx.snat_zone, table=P.HAIRPIN.id, nat=F.Nat()),), c,
                   **A.addrs(ip, ip), ct_state=old),
            # ...and its replies (and un-SNATed hairpin replies) leave by in_port.
            P.L3_FORWARDING.flow(P.PRIO_POD_REPLY, to_pod + (F.Output(F.IN_PORT),), c,
                   in_port=pod.ofport, **A.addr(ip)),
            P.HAIRPIN.flow(P.PRIO_HIGH, to_pod + (F.Output(F.IN_PORT),), c, **A.addr(ip)),
        ]
    return Fragment(flows=flows)


def tunnel_to(ctx: BridgeContext, ip: str) -> tuple:
    """In overlay mode the uplink is a tunnel port with remote_ip=flow: a
    frame for another node (or the gateway) names that host's underlay
    address as its tunnel destination.  On a fabric: nothing."""
    return (F.SetField("tun_ipv4_dst", ip),) if ctx.tunnel else ()


def out_uplink(ctx, table, priority, rewrite, cookie, **match):
    """Flows that send out of the uplink; a second one for packets that came
    in on it (north-south traffic to a remote endpoint), because OpenFlow
    never outputs to the ingress port unless told IN_PORT."""
    return [table.flow(priority, rewrite + (F.Output(ctx.uplink),), cookie, **match),
            table.flow(priority + P.PRIO_FROM_UPLINK, rewrite + (F.Output(F.IN_PORT),), cookie,
                   in_port=ctx.uplink, **match)]


def node_fragment(ctx: BridgeContext, node: model.Node) -> Fragment:
    """Route another node's pod CIDR and node IP over the uplink to that
    node's router (replies to a node's masquerade go straight back to it);
    in overlay mode through the tunnel to the node's InternalIP."""
    c = cookies.for_name(cookies.KIND_NODE, node.name)
    to_node = (F.SetField("eth_src", ctx.router_mac),
               F.SetField("eth_dst", router_mac(node.pod_cidr))) + \
        tunnel_to(ctx, node.internal_ip)
    flows = out_uplink(ctx, P.L3_FORWARDING, P.PRIO_MID, to_node, c,
                        **A.net(node.pod_cidr, "dst"))
    if node.pod_cidr6 and ctx.pod_cidr6:          # both ends dual-stack
        flows += out_uplink(ctx, P.L3_FORWARDING, P.PRIO_MID, to_node, c,
                             **A.net(node.pod_cidr6, "dst"))
    for ip in (node.internal_ip, node.internal_ip6 if ctx.pod_cidr6 else None):
        if ip:
            flows += out_uplink(ctx, P.L3_FORWARDING, P.PRIO_MID, to_node, c, **A.addr(ip))
    return Fragment(flows=flows)


def vip_fragment(ctx: BridgeContext, ip: str) -> Fragment:
    """ARP (IPv4) or ND (IPv6) for a service IP, and reject TCP/UDP to ports
    it does not have (the service ports' own flows sit above these)."""
    c = cookies.for_ip(cookies.KIND_VIP, ip)
    return Fragment(flows=[answer_flow(ip, ctx.router_mac, P.PRIO_HIGH, c)] + [
        P.SERVICE_LB.flow(P.PRIO_MID, REJECT, c, ip_proto=proto, **A.addr(ip))
        for proto in (F.IP_PROTO["TCP"], F.IP_PROTO["UDP"])])


def skipped_ports(ctx: BridgeContext, svc: model.Service):
    """Ports this bridge cannot implement: SCTP where conntrack cannot NAT it
    (OVS 3.1's userspace datapath).  The compiler logs them."""
    if ctx.nats_sctp:
        return ()
    return tuple(p for p in svc.ports if p.protocol == model.SCTP)


def _member(ctx, ep, mark=None) -> F.DnatBucket:
    """An endpoint as a pool member: commit, DNAT to it, on to masquerade."""
    return P.SERVICE_LB.dnat_bucket(ctx.ct_zone, P.SERVICE_MASQUERADE.id, ep.ip, ep.port,
                                    mark)


def _dnat(ctx, ep, mark=None):
    """A member's one action, for pools spread by flows (udp_pool)."""
    return _member(ctx, ep, mark).actions


def _buckets(ctx, endpoints, mark=None):
    return tuple(_member(ctx, ep, mark) for ep in endpoints)


def _ip_int(ip: str) -> int:
    """An address as the 32-bit register value session affinity keys on
    (reg0, reg2): an IPv4 address itself, an IPv6 one by its CRC-32 (two
    endpoints of one pool share a CRC with odds of 1 in 2**32 per pair)."""
    if ":" in ip:
        return zlib.crc32(ipaddress.IPv6Address(ip).packed)
    return int(ipaddress.IPv4Address(ip))


def _affinity_pool(ctx, svc, port, frontends, endpoints, gids, cookie, mark=None,
                   refuse=REJECT, previous=None):
    """Flows and groups of one pool with sessionAffinity ClientIP.

    ServiceLB writes the frontend into reg2/reg3 and looks the client up in
    SessionAffinity (a hit loads the remembered endpoint into reg0/reg1);
    EndpointDNAT then DNATs to that endpoint, or - no hit, or the endpoint is
    gone - hands over to the group (of the client's part), whose bucket loads
    a fresh pick and comes back.  After the DNAT, AffinityLearn remembers a
    fresh pick.  The ct sits in a table, not in the bucket: buckets run as
    action sets.
    """
    proto = F.IP_PROTO[port.protocol]
    learned_cookie = cookies.make(cookies.KIND_AFFINITY, gids[0])   # generation 0:
    buckets = [P.ENDPOINT_DNAT.bucket((                              # kept on restart
        # the endpoint and the "fresh pick" bit in one 32-bit load
        F.Load(P.ENDPOINT_IP.field, _ip_int(ep.ip)),
        F.Load(P.ENDPOINT_PORT.field, ep.port | P.AFFINITY_LEARN_BIT),
        F.Resubmit(P.ENDPOINT_DNAT.id))) for ep in endpoints]
    groups = pool_groups(gids, buckets, previous)
    flows = []
    for ip, dport, ranges in frontends:
        # ServiceLB loads the whole of reg2 and reg3, so they match whole too.
        fe = dict(eth_type=A.eth_type_of(ip), ip_proto=proto, **{
            P.FRONTEND_IP.field: _ip_int(ip), P.FRONTEND_PORT.field: dport})
        flows += _frontend_flows(port, [(ip, dport, ranges)], [({}, (
            F.Load(P.FRONTEND_IP.field, _ip_int(ip)), F.Load(P.FRONTEND_PORT.field, dport),
            F.Resubmit(P.SESSION_AFFINITY.id), F.GotoTable(P.ENDPOINT_DNAT.id))
            if endpoints else refuse)], cookie)
        if not endpoints:
            continue
        for i, gid in enumerate(gids):
            flows.append(P.ENDPOINT_DNAT.flow(P.PRIO_LOW, (F.Group(gid),), cookie,
                                              **fe, **part_match(proto, i, len(gids))))
        for ep in endpoints:
            flows.append(P.ENDPOINT_DNAT.flow(
                P.PRIO_HIGH,
                (F.Ct(zone=ctx.ct_zone, table=P.AFFINITY_LEARN.id, commit=True,
                      nat=F.Nat(ep.ip, ep.port), mark=mark),), cookie,
                **P.ENDPOINT_IP.match(_ip_int(ep.ip)), **P.ENDPOINT_PORT.match(ep.port),
                **fe))
        flows.append(P.AFFINITY_LEARN.flow(P.PRIO_HIGH, (
            P.affinity_learn(proto, P.learn_idle_timeout(svc.affinity_timeout),
                             learned_cookie, A.eth_type_of(ip)),
            F.GotoTable(P.SERVICE_MASQUERADE.id)), cookie,
            **fe, **P.AFFINITY_FRESH.match(1)))
    return flows, groups


def serves_ipv6_outside(ctx: BridgeContext, node) -> bool:
    """IPv6 from outside on this bridge: it routes IPv6 (an IPv6 pod CIDR)
    and its node has an IPv6 InternalIP, to masquerade to and to egress as."""
    return ctx.pod_cidr6 is not None and node is not None and node.internal_ip6 is not None


def _external_frontends(ctx, svc, port, node):
    """[(frontends, family address)] that reach the external pools, one entry
    per family: (ip, port, source ranges) of externalIPs, load-balancer IPs
    (with the loadBalancerSourceRanges of their family) and the nodePort on
    this node's InternalIPs (if nodeport_addresses lets it serve there).

    IPv6 ones only where the bridge routes IPv6 and its node has an IPv6
    InternalIP: their masquerade (externalTrafficPolicy Cluster) is to it,
    and the gateway routes IPv6 to such nodes only (gateway_fragments).
    """
    ipv6 = serves_ipv6_outside(ctx, node)
    out = [(ip, port.port, ()) for ip in svc.external_ips]
    out += [(ip, port.port, tuple(r for r in svc.source_ranges if (":" in r) == (":" in ip)))
            for ip in svc.load_balancer_ips]
    if port.node_port and svc.node_ports and node is not None:
        families = {":" in ip for ip in svc.cluster_ips}
        host = ctx.host_pod
        for ip, steer in ((node.internal_ip, NODE_PORT_STEER_IP),
                          (node.internal_ip6 if ipv6 else None, NODE_PORT_STEER_IP6)):
            if ip and (":" in ip) in families and ctx.serves_node_ports(ip):
                out.append((ip, port.node_port, ()))
                if host is not None and (":" not in ip or host.ip6):
                    out.append((steer, port.node_port, ()))   # steered in by the node
    v4 = [f for f in out if ":" not in f[0]]
    v6 = [f for f in out if ":" in f[0]] if ipv6 else []
    return [(f, f[0][0]) for f in (v4, v6) if f]


def _frontend_flows(port, frontends, actions, cookie):
    """ServiceLB flows of (ip, port, ranges) frontends.  ``actions`` is
    [(extra match, actions)]: one entry, or one per part of a split pool.
    With source ranges, only those sources get the actions and every other
    source is dropped."""
    proto = F.IP_PROTO[port.protocol]
    flows = []
    for ip, dport, ranges in frontends:
        match = dict(ip_proto=proto, **A.addr(ip), **{F.L4_DST_FIELD[proto]: dport})
        if ranges:
            flows.append(P.SERVICE_LB.flow(P.PRIO_HIGH, (), cookie, **match))
        for extra, action in actions:
            if not ranges:
                flows.append(P.SERVICE_LB.flow(P.PRIO_HIGH, action, cookie, **match, **extra))
            for cidr in ranges:
                flows.append(P.SERVICE_LB.flow(
                    P.PRIO_SOURCE_RANGE, action, cookie, **{**match, **A.net(cidr)}, **extra))
    return flows


def service_fragment(ctx: BridgeContext, svc: model.Service, group_ids,
                     node: model.Node = None, previous: Fragment = None) -> Fragment:
    """Per port: a select group for the cluster IP and, when the service has
    external frontends (externalIPs, load-balancer IPs, a nodePort), one for
    those; one bucket per endpoint this node may use.  UDP pools without
    session affinity are flows instead, one per endpoint (udp_pool.py).
    ``previous`` is the service's fragment as compiled last: a pool split
    over several groups keeps its buckets where they were (see split_pool).

    A bucket holds nothing but ``ct(commit,nat(dst=...),table=...)``: OVS
    treats bucket actions as an action set, and a ct followed by anything
    else in a bucket silently loses the ct (verified with ofproto/trace).
    External traffic with externalTrafficPolicy Cluster is marked (ct_mark)
    for masquerade; with Local it uses this node's endpoints only, keeps the
    client's source IP, and is dropped when there is none (as kube-proxy).
    """
    flows, groups = [], []
    cluster_policy = svc.external_traffic_policy == model.CLUSTER
    skipped = skipped_ports(ctx, svc)
    for port in svc.ports:
        if port in skipped:
            continue
        name = service_port_name(svc, port)
        cookie = cookies.make(cookies.KIND_SERVICE_PORT, group_ids.get(name))
        proto = F.IP_PROTO[port.protocol]
        chosen = endpoint_selection.select(svc, port, ctx.node, node)
        # one pool per cluster IP, of the endpoints of its family
        pools = [([(ip, port.port, ())], A.same_family(chosen.internal, ip),
                  family_group_name(name, ip), None, REJECT) for ip in svc.cluster_ips]
        for external, ip in _external_frontends(ctx, svc, port, node):
            pools.append((external, A.same_family(chosen.external, ip),
                          family_group_name(external_group_name(svc, port), ip),
                          P.MASQUERADE_MARK if cluster_policy else None,
                          REJECT if cluster_policy else ()))
        for frontends, endpoints, group_name, mark, refuse in pools:
            gids = pool_group_ids(group_ids, group_name, pool_parts(
                svc, port, len(endpoints), P.MAX_BUCKETS_PER_GROUP))
            if spread_per_flow(svc, port):
                parts = []
                pool_flows = _frontend_flows(port, frontends, [({}, udp_pool.pick_actions(
                    gids[0], len(endpoints)) if endpoints else refuse)], cookie)
                pool_flows += udp_pool.endpoint_flows(
                    gids[0], [_dnat(ctx, ep, mark) for ep in endpoints], cookie,
                    A.eth_type_of(frontends[0][0]))
            elif svc.affinity_timeout:
                pool_flows, parts = _affinity_pool(ctx, svc, port, frontends, endpoints,
                                                   gids, cookie, mark, refuse, previous)
            else:
                parts = pool_groups(gids, _buckets(ctx, endpoints, mark), previous)
                actions = [(part_match(proto, i, len(gids)), (F.Group(gid),))
                           for i, gid in enumerate(gids)] if endpoints else [({}, refuse)]
                pool_flows = _frontend_flows(port, frontends, actions, cookie)
            flows += pool_flows
            groups += parts
    return Fragment(flows=flows, groups=groups)
