"""Fragments of the addresses a node bridge source-NATs to on the way out:
the node's own IP (the masquerade of external traffic, and pods leaving
the cluster) and pods' floating IPs (Contrail's 1:1 NAT).

Pure functions of (bridge context, one object), like node_fragments.py.
The node's IP is of both families where the bridge routes IPv6 and the node
has an IPv6 InternalIP; floating IPs are IPv4 (docs/known-limits.md).
"""
from controller import addresses as A
from controller import cookies
from controller import flows as F
from controller import pipeline as P
from controller.bridges import BridgeContext, ip_mac
from controller.fragments import Fragment
from controller.node_fragments import out_uplink, serves_ipv6_outside, tunnel_to
from nsx_proxy import model


def local_node_fragment(ctx: BridgeContext, node: model.Node) -> Fragment:
    """This node's own IPs: masquerade to them, un-SNAT their replies, and
    route what leaves the cluster to the gateway (pods source-NATed to the
    node IP of their family)."""
    c = cookies.for_name(cookies.KIND_NODE, node.name)
    snat = ctx.snat_zone
    families = [(node.internal_ip, ctx.pod_cidr)]
    if serves_ipv6_outside(ctx, node):
        families.append((node.internal_ip6, ctx.pod_cidr6))
    flows = []
    for ip, pod_cidr in families:
        eth_type = A.eth_type_of(ip)
        flows += [
            P.HAIRPIN_UNSNAT.flow(P.PRIO_HIGH, (F.Ct(zone=snat, table=P.CONNTRACK_ZONE.id,
                                                      nat=F.Nat()),), c, **A.addr(ip)),
            P.SERVICE_MASQUERADE.flow(P.PRIO_HIGH,
                   (F.Ct(zone=snat, table=P.L3_FORWARDING.id, commit=True,
                         nat=F.Nat(src_ip=ip)),), c,
                   eth_type=eth_type, ct_mark=P.MASQUERADE_MARK,
                   ct_state=(F.CT_TRK, F.CT_TRK | F.CT_RPL)),
        ]
        if ctx.fabric_gateway and ctx.uplink is not None:
            # the gateway router routes both families: one MAC, one tunnel end
            flows += [
                P.L3_FORWARDING.flow(P.PRIO_EGRESS_NODE_SNAT,
                       (F.Ct(zone=snat, table=P.EGRESS_OUTPUT.id, commit=True,
                             nat=F.Nat(src_ip=ip)),), c,
                       **A.net(pod_cidr)),
                P.L3_FORWARDING.flow(P.PRIO_FALLBACK, (F.GotoTable(P.EGRESS_OUTPUT.id),), c,
                       eth_type=eth_type),
            ] + out_uplink(ctx, P.EGRESS_OUTPUT, P.PRIO_HIGH,
                            (F.SetField("eth_src", ctx.router_mac),
                             F.SetField("eth_dst", ip_mac(ctx.fabric_gateway)))
                            + tunnel_to(ctx, ctx.fabric_gateway), c,
                            eth_type=eth_type)
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


