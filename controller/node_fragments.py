"""Fragments of a node bridge: the pipeline skeleton, pods, routes to other
nodes, this node's own IP, service ports, service IPs and floating IPs.

Pure functions of (bridge context, one object): no Ryu, no I/O, no state.
Every flow is built through its table (pipeline.Table.flow), which checks
it against the pipeline's declaration.
"""
import functools
import ipaddress

from controller import cookies, udp_pool
from controller import flows as F
from controller import pipeline as P
from controller.bridges import (HOST_NAMESPACE, NODE_PORT_STEER_IP, ROLE_NODE, BridgeContext,
                                Pod, ip_mac, router_mac)
from controller.fragments import Fragment
from controller.names import external_group_name, pool_parts, service_port_name, spread_per_flow
from controller.split_pool import part_match, pool_group_ids, pool_groups
from nsx_proxy import endpoint_selection, model

REJECT = (F.Meter(P.REJECT_METER), F.Controller(128))


def _arp_reply(ip: str, mac: str) -> tuple:
    """Turn an ARP request for ``ip`` into the reply 'ip is at mac'."""
    head, tail = _arp_reply_parts(mac)
    return head + (F.SetField("arp_spa", ip),) + tail


@functools.lru_cache(maxsize=64)
def _arp_reply_parts(mac: str) -> tuple:
    """The actions of an ARP reply that do not depend on the address, built
    once per MAC: every service IP has an ARP flow, and sharing these seven
    objects saves about 3 MB at 10,000 services."""
    return ((F.Move("eth_src", "eth_dst"), F.SetField("eth_src", mac),
             F.SetField("arp_op", 2),
             F.Move("arp_sha", "arp_tha"), F.SetField("arp_sha", mac),
             F.Move("arp_spa", "arp_tpa")),
            (F.Output(F.IN_PORT),))


def arp_flow(ip, mac, priority, cookie) -> F.Flow:
    return P.ARP_RESPONDER.flow(priority, _arp_reply(ip, mac), cookie,
                  eth_type=F.ETH_ARP, arp_op=1, arp_tpa=ip)



# --- fragments -------------------------------------------------------------

def pipeline_fragment(ctx: BridgeContext) -> Fragment:
    """Table skeleton: misses, conntrack, the gateway's ARP, the uplink."""
    c = cookies.make(cookies.KIND_PIPELINE, 0)
    zone = ctx.ct_zone
    out = [t.flow(P.PRIO_MISS, (), c) for t in P.TABLES   # miss = drop, never flood
           if t is not P.HAIRPIN_UNSNAT]
    out += [
        P.HAIRPIN_UNSNAT.flow(P.PRIO_MISS, (F.GotoTable(P.CONNTRACK_ZONE.id),), c),
        P.AFFINITY_LEARN.flow(P.PRIO_FALLBACK, (F.GotoTable(P.SERVICE_MASQUERADE.id),), c),
        P.SERVICE_MASQUERADE.flow(P.PRIO_FALLBACK, (F.GotoTable(P.L3_FORWARDING.id),), c),
        P.CONNTRACK_ZONE.flow(P.PRIO_HIGH,
               (F.Ct(zone=zone, table=P.CONNTRACK_STATE.id, nat=F.Nat()),), c,
               eth_type=F.ETH_IP),
        P.CONNTRACK_STATE.flow(P.PRIO_HIGH, (), c,
               ct_state=(F.CT_INV | F.CT_TRK, F.CT_INV | F.CT_TRK)),
        P.CONNTRACK_STATE.flow(P.PRIO_MID, (F.GotoTable(P.SERVICE_MASQUERADE.id),), c,
               eth_type=F.ETH_IP, ct_state=(F.CT_TRK, F.CT_TRK | F.CT_NEW)),
        P.CONNTRACK_STATE.flow(P.PRIO_LOW, (F.GotoTable(P.SERVICE_LB.id),), c,
               eth_type=F.ETH_IP, ct_state=(F.CT_TRK | F.CT_NEW, F.CT_TRK | F.CT_NEW)),
        # Not a service: commit as is, so replies are +est on this bridge too.
        P.SERVICE_LB.flow(P.PRIO_FALLBACK,
               (F.Ct(zone=zone, table=P.L3_FORWARDING.id, commit=True),), c,
               eth_type=F.ETH_IP),
    ]
    if ctx.role == ROLE_NODE:
        out.append(arp_flow(ctx.gateway_ip, ctx.router_mac, P.PRIO_HIGH, c))
        # Hairpin replies are addressed to the gateway IP: un-SNAT them first.
        out.append(P.HAIRPIN_UNSNAT.flow(P.PRIO_HIGH,
                          (F.Ct(zone=ctx.snat_zone, table=P.CONNTRACK_ZONE.id,
                                nat=F.Nat()),), c,
                          eth_type=F.ETH_IP, ipv4_dst=ctx.gateway_ip))
        if ctx.uplink is not None:
            # Only frames addressed to this router: a learning fabric floods
            # unknown unicast, and routing those twice would duplicate them.
            out.append(P.CLASSIFIER.flow(P.PRIO_HIGH,
                              (F.GotoTable(P.HAIRPIN_UNSNAT.id),), c,
                              in_port=ctx.uplink, eth_type=F.ETH_IP,
                              eth_dst=ctx.router_mac))
    return Fragment(flows=out)


def pod_fragment(ctx: BridgeContext, pod: Pod) -> Fragment:
    c = cookies.for_name(cookies.KIND_POD, pod.full_name)
    to_pod = (F.SetField("eth_src", ctx.router_mac), F.SetField("eth_dst", pod.mac))
    new = (F.CT_TRK | F.CT_NEW, F.CT_TRK | F.CT_NEW)
    old = (F.CT_TRK, F.CT_TRK | F.CT_NEW)
    steering = [
        # The host port: NodePorts the node steered in from off the node
        # keep their client's source; their replies (the source is the
        # steering address again once un-NATed) go back to the node.
        P.CLASSIFIER.flow(P.PRIO_HIGH, (F.GotoTable(P.HAIRPIN_UNSNAT.id),), c,
               in_port=pod.ofport, eth_type=F.ETH_IP, eth_src=pod.mac,
               ipv4_dst=NODE_PORT_STEER_IP),
        P.L3_FORWARDING.flow(P.PRIO_HIGH, to_pod + (F.Output(pod.ofport),), c,
               eth_type=F.ETH_IP, ipv4_src=NODE_PORT_STEER_IP),
    ] if pod.namespace == HOST_NAMESPACE else []
    return Fragment(flows=steering + [
        P.CLASSIFIER.flow(P.PRIO_HIGH, (F.GotoTable(P.HAIRPIN_UNSNAT.id),), c,
               in_port=pod.ofport, eth_type=F.ETH_IP, eth_src=pod.mac, ipv4_src=pod.ip),
        P.CLASSIFIER.flow(P.PRIO_HIGH, (F.GotoTable(P.ARP_RESPONDER.id),), c,
               in_port=pod.ofport, eth_type=F.ETH_ARP, eth_src=pod.mac, arp_spa=pod.ip),
        arp_flow(pod.ip, pod.mac, P.PRIO_MID, c),
        P.L3_FORWARDING.flow(P.PRIO_HIGH, to_pod + (F.Output(pod.ofport),), c,
               eth_type=F.ETH_IP, ipv4_dst=pod.ip),
        # Hairpin: the pod reached itself through a service.  SNAT to the
        # gateway IP, or the pod would drop a packet from its own address.
        P.L3_FORWARDING.flow(P.PRIO_HAIRPIN,
               (F.Ct(zone=ctx.snat_zone, table=P.HAIRPIN.id, commit=True,
                     nat=F.Nat(src_ip=ctx.gateway_ip)),), c,
               eth_type=F.ETH_IP, ipv4_src=pod.ip, ipv4_dst=pod.ip, ct_state=new),
        P.L3_FORWARDING.flow(P.PRIO_HAIRPIN,
               (F.Ct(zone=ctx.snat_zone, table=P.HAIRPIN.id, nat=F.Nat()),), c,
               eth_type=F.ETH_IP, ipv4_src=pod.ip, ipv4_dst=pod.ip, ct_state=old),
        # ...and its replies (and un-SNATed hairpin replies) leave by in_port.
        P.L3_FORWARDING.flow(P.PRIO_POD_REPLY, to_pod + (F.Output(F.IN_PORT),), c,
               in_port=pod.ofport, eth_type=F.ETH_IP, ipv4_dst=pod.ip),
        P.HAIRPIN.flow(P.PRIO_HIGH, to_pod + (F.Output(F.IN_PORT),), c,
               eth_type=F.ETH_IP, ipv4_dst=pod.ip),
    ])


def tunnel_to(ctx: BridgeContext, ip: str) -> tuple:
    """In overlay mode the uplink is a tunnel port with remote_ip=flow: a
    frame for another node (or the gateway) names that host's underlay
    address as its tunnel destination.  On a fabric: nothing."""
    return (F.SetField("tun_ipv4_dst", ip),) if ctx.tunnel else ()


def _out_uplink(ctx, table, priority, rewrite, cookie, **match):
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
    net = ipaddress.IPv4Network(node.pod_cidr)
    c = cookies.for_name(cookies.KIND_NODE, node.name)
    to_node = (F.SetField("eth_src", ctx.router_mac),
               F.SetField("eth_dst", router_mac(node.pod_cidr))) + \
        tunnel_to(ctx, node.internal_ip)
    return Fragment(flows=(
        _out_uplink(ctx, P.L3_FORWARDING, P.PRIO_MID, to_node, c, eth_type=F.ETH_IP,
                    ipv4_dst=(str(net.network_address), str(net.netmask)))
        + _out_uplink(ctx, P.L3_FORWARDING, P.PRIO_MID, to_node, c, eth_type=F.ETH_IP,
                      ipv4_dst=node.internal_ip)))


def vip_fragment(ctx: BridgeContext, ip: str) -> Fragment:
    """ARP for a service IP, and reject TCP/UDP to ports it does not have
    (the service ports' own flows sit above these)."""
    c = cookies.for_ip(cookies.KIND_VIP, ip)
    return Fragment(flows=[arp_flow(ip, ctx.router_mac, P.PRIO_HIGH, c)] + [
        P.SERVICE_LB.flow(P.PRIO_MID, REJECT, c, eth_type=F.ETH_IP, ip_proto=proto,
               ipv4_dst=ip) for proto in (F.IP_PROTO["TCP"], F.IP_PROTO["UDP"])])


def skipped_ports(ctx: BridgeContext, svc: model.Service):
    """Ports this bridge cannot implement: SCTP where conntrack cannot NAT it
    (OVS 3.1's userspace datapath).  The compiler logs them."""
    if ctx.nats_sctp:
        return ()
    return tuple(p for p in svc.ports if p.protocol == model.SCTP)


def _dnat(ctx, ep, mark=None):
    return (F.Ct(zone=ctx.ct_zone, table=P.SERVICE_MASQUERADE.id, commit=True,
                 nat=F.Nat(ep.ip, ep.port), mark=mark),)


def _buckets(ctx, endpoints, mark=None):
    return tuple(P.SERVICE_LB.bucket(_dnat(ctx, ep, mark)) for ep in endpoints)


def _ip_int(ip: str) -> int:
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
        fe = dict(eth_type=F.ETH_IP, ip_proto=proto, **{
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
                             learned_cookie),
            F.GotoTable(P.SERVICE_MASQUERADE.id)), cookie,
            **fe, **P.AFFINITY_FRESH.match(1)))
    return flows, groups


def _external_frontends(ctx, svc, port, node):
    """(ip, port, source ranges) that reach the external pool: externalIPs,
    load-balancer IPs (with loadBalancerSourceRanges) and the nodePort on
    this node's IP (if nodeport_addresses lets it serve there)."""
    out = [(ip, port.port, ()) for ip in svc.external_ips]
    out += [(ip, port.port, svc.source_ranges) for ip in svc.load_balancer_ips]
    if port.node_port and svc.node_ports and node is not None and \
            ctx.serves_node_ports(node.internal_ip):
        out.append((node.internal_ip, port.node_port, ()))
        if ctx.host_pod is not None:       # steered in by the node (node_setup)
            out.append((NODE_PORT_STEER_IP, port.node_port, ()))
    return out


def _frontend_flows(port, frontends, actions, cookie):
    """ServiceLB flows of (ip, port, ranges) frontends.  ``actions`` is
    [(extra match, actions)]: one entry, or one per part of a split pool.
    With source ranges, only those sources get the actions and every other
    source is dropped."""
    proto = F.IP_PROTO[port.protocol]
    flows = []
    for ip, dport, ranges in frontends:
        match = dict(eth_type=F.ETH_IP, ip_proto=proto, ipv4_dst=ip,
                     **{F.L4_DST_FIELD[proto]: dport})
        if ranges:
            flows.append(P.SERVICE_LB.flow(P.PRIO_HIGH, (), cookie, **match))
        for extra, action in actions:
            if not ranges:
                flows.append(P.SERVICE_LB.flow(P.PRIO_HIGH, action, cookie, **match, **extra))
            for cidr in ranges:
                net = ipaddress.IPv4Network(cidr)
                flows.append(P.SERVICE_LB.flow(
                    P.PRIO_SOURCE_RANGE, action, cookie,
                    ipv4_src=(str(net.network_address), str(net.netmask)), **match, **extra))
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
        pools = [([(svc.cluster_ip, port.port, ())], chosen.internal, name, None, REJECT)]
        external = _external_frontends(ctx, svc, port, node)
        if external:
            pools.append((external, chosen.external, external_group_name(svc, port),
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
                    gids[0], [_dnat(ctx, ep, mark) for ep in endpoints], cookie)
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


def local_node_fragment(ctx: BridgeContext, node: model.Node) -> Fragment:
    """This node's own IP: masquerade to it, un-SNAT its replies, and route
    what leaves the cluster to the gateway (pods source-NATed to the node IP)."""
    c = cookies.for_name(cookies.KIND_NODE, node.name)
    snat = ctx.snat_zone
    flows = [
        P.HAIRPIN_UNSNAT.flow(P.PRIO_HIGH, (F.Ct(zone=snat, table=P.CONNTRACK_ZONE.id,
                                                  nat=F.Nat()),), c,
               eth_type=F.ETH_IP, ipv4_dst=node.internal_ip),
        P.SERVICE_MASQUERADE.flow(P.PRIO_HIGH,
               (F.Ct(zone=snat, table=P.L3_FORWARDING.id, commit=True,
                     nat=F.Nat(src_ip=node.internal_ip)),), c,
               eth_type=F.ETH_IP, ct_mark=P.MASQUERADE_MARK,
               ct_state=(F.CT_TRK, F.CT_TRK | F.CT_RPL)),
    ]
    if ctx.fabric_gateway and ctx.uplink is not None:
        net = ipaddress.IPv4Network(ctx.pod_cidr)
        flows += [
            P.L3_FORWARDING.flow(P.PRIO_EGRESS_NODE_SNAT,
                   (F.Ct(zone=snat, table=P.EGRESS_OUTPUT.id, commit=True,
                         nat=F.Nat(src_ip=node.internal_ip)),), c,
                   eth_type=F.ETH_IP,
                   ipv4_src=(str(net.network_address), str(net.netmask))),
            P.L3_FORWARDING.flow(P.PRIO_FALLBACK, (F.GotoTable(P.EGRESS_OUTPUT.id),), c,
                   eth_type=F.ETH_IP),
        ] + _out_uplink(ctx, P.EGRESS_OUTPUT, P.PRIO_HIGH,
                        (F.SetField("eth_src", ctx.router_mac),
                         F.SetField("eth_dst", ip_mac(ctx.fabric_gateway)))
                        + tunnel_to(ctx, ctx.fabric_gateway), c,
                        eth_type=F.ETH_IP)
    return Fragment(flows=flows)


def floating_ip_fragment(ctx: BridgeContext, fip: model.FloatingIP) -> Fragment:
    """1:1 NAT for a pod on this node: DNAT what arrives for the floating IP
    (zone Z, like a one-endpoint service), SNAT what the pod sends out of the
    cluster (zone Z+1, like the node IP's masquerade)."""
    c = cookies.for_ip(cookies.KIND_FLOATING_IP, fip.ip)
    flows = [P.HAIRPIN_UNSNAT.flow(P.PRIO_HIGH, (F.Ct(zone=ctx.snat_zone,
                                                       table=P.CONNTRACK_ZONE.id,
                                                       nat=F.Nat()),), c,
                    eth_type=F.ETH_IP, ipv4_dst=fip.ip)]
    for proto in ("TCP", "UDP", "ICMP"):
        flows.append(P.SERVICE_LB.flow(P.PRIO_HIGH,
                            (F.Ct(zone=ctx.ct_zone, table=P.SERVICE_MASQUERADE.id,
                                  commit=True, nat=F.Nat(fip.pod_ip)),), c,
                            eth_type=F.ETH_IP, ip_proto=F.IP_PROTO[proto], ipv4_dst=fip.ip))
    if ctx.fabric_gateway and ctx.uplink is not None:
        flows.append(P.L3_FORWARDING.flow(P.PRIO_EGRESS_FIP_SNAT,
                            (F.Ct(zone=ctx.snat_zone, table=P.EGRESS_OUTPUT.id, commit=True,
                                  nat=F.Nat(src_ip=fip.ip)),), c,
                            eth_type=F.ETH_IP, ipv4_src=fip.pod_ip))
    return Fragment(flows=flows)


