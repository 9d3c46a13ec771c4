"""Fragments of the gateway router bridge: admission and the default route,
node IPs, load-balancer and external IPs (ECMP over the serving nodes) and
pods' floating IPs.

IPv6 where the external port has an IPv6 address: the gateway answers
Neighbor Discovery for it outside, routes nodes' IPv6 InternalIPs and IPv6
service IPs to the nodes that have an IPv6 InternalIP, and sends the rest
out.  The fabric (or the overlay) between gateway and nodes stays IPv4-
addressed: frames of both families go to the same router MACs and tunnel
ends.

Pure functions of (bridge context, objects), like node_fragments.
"""
from controller import addresses as A
from controller import cookies
from controller import flows as F
from controller import pipeline as P
from controller.bridges import BridgeContext, ip_mac, router_mac
from controller.fragments import Fragment
from controller.names import gateway_group_name
from controller.neighbor import answer_flow, arp_flow, nd_pipeline_flows
from controller.node_fragments import tunnel_to
from nsx_proxy import endpoint_selection, model


def _to_node(ctx, node, out_port):
    return (F.SetField("eth_src", ip_mac(ctx.fabric_ip)),
            F.SetField("eth_dst", router_mac(node.pod_cidr))) + \
        tunnel_to(ctx, node.internal_ip) + (F.Output(out_port),)


def gateway_fragment(ctx: BridgeContext) -> Fragment:
    """Admission and the default route of the gateway router."""
    c = cookies.make(cookies.KIND_PIPELINE, 1)
    ext = ctx.external
    flows = []
    eth_types = (F.ETH_IP, F.ETH_IPV6) if ctx.routes_ipv6 else (F.ETH_IP,)
    if ext is not None:
        flows += [P.CLASSIFIER.flow(P.PRIO_HIGH, (F.GotoTable(P.GATEWAY_ROUTING.id),), c,
                                    in_port=ext.ofport, eth_type=eth_type, eth_dst=ext.mac)
                  for eth_type in eth_types]
        flows += [
            P.CLASSIFIER.flow(P.PRIO_HIGH, (F.GotoTable(P.ARP_RESPONDER.id),), c,
                   in_port=ext.ofport, eth_type=F.ETH_ARP),
            arp_flow(ext.ip, ext.mac, P.PRIO_HIGH, c),
        ]
        if ext.ip6:
            # solicitations go to a multicast MAC: admitted apart, and above
            # the unicast ones' way to routing
            flows += [P.CLASSIFIER.flow(P.PRIO_NEIGHBOR, (F.GotoTable(P.ARP_RESPONDER.id),),
                                        c, in_port=ext.ofport, eth_type=F.ETH_IPV6,
                                        ip_proto=F.ICMPV6, icmpv6_type=F.ICMPV6_NS),
                      answer_flow(ext.ip6, ext.mac, P.PRIO_HIGH, c)] + nd_pipeline_flows(c)
    if ctx.uplink is not None and ctx.fabric_ip:
        for eth_type in eth_types:
            flows.append(P.CLASSIFIER.flow(P.PRIO_HIGH, (F.GotoTable(P.GATEWAY_ROUTING.id),),
                                c, in_port=ctx.uplink, eth_type=eth_type,
                                eth_dst=ip_mac(ctx.fabric_ip)))
            if ext is not None:   # from the cluster to anywhere else: the Internet
                flows.append(P.GATEWAY_ROUTING.flow(P.PRIO_FALLBACK, (
                    F.SetField("eth_src", ext.mac), F.SetField("eth_dst", ext.next_hop_mac),
                    F.Output(ext.ofport)), c, in_port=ctx.uplink, eth_type=eth_type))
    return Fragment(flows=flows)


def gateway_node_fragment(ctx: BridgeContext, node: model.Node) -> Fragment:
    """Node IPs are reachable from outside (NodePorts): route to the node."""
    c = cookies.for_name(cookies.KIND_NODE, node.name)
    ips = [node.internal_ip] + ([node.internal_ip6] if ctx.routes_ipv6 and
                                node.dual_stack else [])
    return Fragment(flows=[
        P.GATEWAY_ROUTING.flow(P.PRIO_HIGH, _to_node(ctx, node, ctx.uplink), c, **A.addr(ip))
        for ip in ips])

def gateway_vip_fragment(ctx: BridgeContext, ip: str, nodes, group_ids) -> Fragment:
    """A load-balancer or external IP: ECMP over the nodes that serve it."""
    gid = group_ids.get(gateway_group_name(ip))
    c = cookies.make(cookies.KIND_VIP, gid)
    buckets = tuple(P.GATEWAY_ROUTING.bucket(_to_node(ctx, n, ctx.uplink))
                    for n in sorted(nodes, key=lambda n: n.name))
    return Fragment(
        flows=[P.GATEWAY_ROUTING.flow(P.PRIO_HIGH,
                                (F.Group(gid),) if buckets else (), c, **A.addr(ip))],
        groups=[F.SelectGroup(gid, buckets)])


def gateway_fip_fragment(ctx: BridgeContext, fip: model.FloatingIP,
                         node: model.Node) -> Fragment:
    """A pod's floating IP: to its node, from outside and from the cluster."""
    c = cookies.for_ip(cookies.KIND_FLOATING_IP, fip.ip)
    return Fragment(flows=[
        P.GATEWAY_ROUTING.flow(P.PRIO_HIGH, _to_node(ctx, node, ctx.uplink), c,
               eth_type=F.ETH_IP, ipv4_dst=fip.ip),
        P.GATEWAY_ROUTING.flow(P.PRIO_HIGH + P.PRIO_FROM_UPLINK,
                               _to_node(ctx, node, F.IN_PORT), c,
               eth_type=F.ETH_IP, ipv4_dst=fip.ip, in_port=ctx.uplink)])


def serving_nodes(state: model.ClusterState, ip: str):
    """Nodes the gateway may send ``ip`` to: every node with a node bridge
    (not the gateway host's own Node), or for services with
    externalTrafficPolicy Local only those with a usable local endpoint; an
    IPv6 address only to nodes that serve IPv6."""
    nodes = [n for n in state.nodes.values()
             if n.compute and (not A.is_ipv6(ip) or n.dual_stack)]
    users = [s for s in state.services.values()
             if ip in s.outside_ips]
    if not users or any(s.external_traffic_policy == model.CLUSTER for s in users):
        return nodes
    return [n for n in nodes if any(
        endpoint_selection.local_endpoints(p, n.name) for s in users for p in s.ports)]


