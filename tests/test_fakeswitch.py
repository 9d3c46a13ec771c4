"""Packets through the compiled pipeline of two nodes, on the fake switch."""
import dataclasses
import ipaddress

import pytest

from controller import compiler, cookies, diff
from controller import flows as F
from fakeswitch import CONTROLLER, FakeNetwork, tcp, udp
from controller.bridges import ip_mac
from nsx_proxy import model
import world

P = world.PODS


def build(state_):
    net = FakeNetwork()
    ids = cookies.GroupIds()
    for ctx in (world.NODE1, world.NODE2):
        sw = net.add_switch(ctx.name)
        sw.apply(diff.diff({}, compiler.Compiler(ctx, ids).compile(state_)))
    net.link(("br-node1", world.UPLINK), ("br-node2", world.UPLINK))
    return net


def from_pod(name, pkt):
    p = P[name]
    bridge = "br-node1" if p.ip.startswith("10.1.1.") else "br-node2"
    return bridge, p.ofport, dict(pkt, eth_src=p.mac, in_port=p.ofport)


def landing(outcomes):
    return sorted((o.bridge, o.port, o.packet["ipv4_dst"], o.packet.get("tp_dst"))
                  for o in outcomes)


def send(net, pod, pkt):
    bridge, port, pkt = from_pod(pod, pkt)
    return net.send(bridge, port, pkt)


def test_new_connection_to_vip_can_reach_every_endpoint_on_both_nodes():
    net = build(world.state(world.web(endpoints=("pod2", "pod3", "pod4"))))
    outs = send(net, "pod1", tcp(P["pod1"].ip, world.VIP, 80))
    assert landing(outs) == [("br-node1", 2, "10.1.1.3", 8080),
                             ("br-node2", 1, "10.1.2.2", 8080),
                             ("br-node2", 2, "10.1.2.3", 8080)]
    for o in outs:   # routed: the bridge's router MAC is the source
        assert o.packet["eth_dst"] == P[{"10.1.1.3": "pod2", "10.1.2.2": "pod3",
                                          "10.1.2.3": "pod4"}[o.packet["ipv4_dst"]]].mac


def test_reply_is_unnated_and_established_packets_skip_load_balancing():
    net = build(world.state(world.web(endpoints=("pod3", "pod4"))))
    outs = send(net, "pod1", tcp(P["pod1"].ip, world.VIP, 80, sport=5555))
    to_pod3 = next(o for o in outs if o.packet["ipv4_dst"] == P["pod3"].ip)
    net.adopt(to_pod3)
    reply = tcp(P["pod3"].ip, P["pod1"].ip, 5555, sport=8080, tcp_flags="syn-ack")
    back = send(net, "pod3", reply)
    assert [(o.bridge, o.port, o.packet["ipv4_src"], o.packet["tp_src"]) for o in back] \
        == [("br-node1", P["pod1"].ofport, world.VIP, 80)]
    # the next packet of the connection sticks to pod3, even after pod3's
    # bucket is joined by others: no re-balancing of established flows
    again = send(net, "pod1", tcp(P["pod1"].ip, world.VIP, 80, sport=5555, tcp_flags="ack"))
    assert landing(again) == [("br-node2", 1, P["pod3"].ip, 8080)]


def test_udp_service_port_translates_to_its_own_target_port():
    net = build(world.state(world.web(endpoints=("pod3",))))
    outs = send(net, "pod1", udp(P["pod1"].ip, world.VIP, 53))
    assert landing(outs) == [("br-node2", 1, P["pod3"].ip, 5353)]


def test_a_new_udp_flow_can_pick_every_endpoint_and_its_reply_is_unnated():
    """UDP pools are a multipath pick and a flow per endpoint (UdpSpread):
    each pick DNATs to its endpoint, on either node, and the reply comes
    back from the VIP."""
    net = build(world.state(world.web(endpoints=("pod2", "pod3", "pod4"))))
    outs = send(net, "pod1", udp(P["pod1"].ip, world.VIP, 53, sport=4000))
    assert sorted(o.packet["ipv4_dst"] for o in outs) == \
        sorted(P[p].ip for p in ("pod2", "pod3", "pod4"))
    assert {o.packet["tp_dst"] for o in outs} == {5353}
    (to_pod3,) = [o for o in outs if o.packet["ipv4_dst"] == P["pod3"].ip]
    net.adopt(to_pod3)
    reply = udp(P["pod3"].ip, P["pod1"].ip, 4000, sport=5353)
    back = send(net, "pod3", reply)
    assert [(o.packet["ipv4_src"], o.packet["tp_src"]) for o in back] == [(world.VIP, 53)]


def test_hairpin_pod_reaching_itself_is_snated_to_the_gateway():
    net = build(world.state(world.web(endpoints=("pod1",))))
    outs = send(net, "pod1", tcp(P["pod1"].ip, world.VIP, 80, sport=7777))
    assert [(o.port, o.packet["ipv4_src"], o.packet["ipv4_dst"]) for o in outs] == [
        (P["pod1"].ofport, world.NODE1.gateway_ip, P["pod1"].ip)]
    net.adopt(outs[0])
    reply = tcp(P["pod1"].ip, world.NODE1.gateway_ip, 7777, sport=8080, tcp_flags="ack")
    back = send(net, "pod1", reply)
    assert [(o.port, o.packet["ipv4_src"], o.packet["tp_src"], o.packet["ipv4_dst"])
            for o in back] == [(P["pod1"].ofport, world.VIP, 80, P["pod1"].ip)]


def test_invalid_conntrack_state_is_dropped():
    net = build(world.state(world.web(endpoints=("pod3",))))
    outs = send(net, "pod1", tcp(P["pod1"].ip, world.VIP, 80, sport=6000))
    net.adopt(outs[0])
    stray = tcp(P["pod1"].ip, world.VIP, 80, sport=6000, tcp_flags="ack",
                out_of_window=True)
    assert send(net, "pod1", stray) == []
    ok = tcp(P["pod1"].ip, world.VIP, 80, sport=6000, tcp_flags="ack")
    assert landing(send(net, "pod1", ok)) == [("br-node2", 1, P["pod3"].ip, 8080)]


@pytest.mark.parametrize("pkt", [
    tcp("10.1.1.99", world.VIP, 80),                # spoofed source IP
    tcp(world.PODS["pod1"].ip, "8.8.8.8", 80),      # nowhere to route
])
def test_unknown_traffic_is_dropped_never_flooded(pkt):
    net = build(world.state(world.web()))
    assert send(net, "pod1", pkt) == []


def rejected(outs):
    return [o.port for o in outs] == [CONTROLLER]


@pytest.mark.parametrize("pkt", [
    tcp(world.PODS["pod1"].ip, world.VIP, 81),      # a port the VIP does not have
    udp(world.PODS["pod1"].ip, world.VIP, 5353),
])
def test_ports_the_service_ip_does_not_have_are_rejected(pkt):
    net = build(world.state(world.web()))
    assert rejected(send(net, "pod1", pkt))


def test_service_without_endpoints_rejects_new_connections():
    net = build(world.state(world.web(endpoints=())))
    assert rejected(send(net, "pod1", tcp(P["pod1"].ip, world.VIP, 80)))
    assert rejected(send(net, "pod1", udp(P["pod1"].ip, world.VIP, 53)))


def test_internal_traffic_policy_local_uses_only_this_nodes_endpoints():
    svc = dataclasses.replace(world.web(endpoints=("pod2", "pod3")),
                              internal_traffic_policy=model.LOCAL)
    net = build(world.state(svc))
    assert landing(send(net, "pod1", tcp(P["pod1"].ip, world.VIP, 80))) == [
        ("br-node1", 2, P["pod2"].ip, 8080)]
    assert landing(send(net, "pod4", tcp(P["pod4"].ip, world.VIP, 80))) == [
        ("br-node2", 1, P["pod3"].ip, 8080)]
    only_remote = dataclasses.replace(world.web(endpoints=("pod3",)),
                                      internal_traffic_policy=model.LOCAL)
    net = build(world.state(only_remote))
    assert rejected(send(net, "pod1", tcp(P["pod1"].ip, world.VIP, 80)))


def test_terminating_endpoints_serve_only_when_nothing_is_ready():
    eps = (world.endpoint("pod2", ready=False, serving=True, terminating=True),
           world.endpoint("pod3", ready=False, serving=False, terminating=True))
    svc = dataclasses.replace(world.web(), ports=(model.ServicePort(
        "http", model.TCP, 80, 8080, eps),))
    net = build(world.state(svc))
    assert landing(send(net, "pod1", tcp(P["pod1"].ip, world.VIP, 80))) == [
        ("br-node1", 2, P["pod2"].ip, 8080)]
    local = dataclasses.replace(svc, internal_traffic_policy=model.LOCAL)
    net = build(world.state(local))
    assert landing(send(net, "pod1", tcp(P["pod1"].ip, world.VIP, 80))) == [
        ("br-node1", 2, P["pod2"].ip, 8080)]
    eps += (world.endpoint("pod4"),)
    svc = dataclasses.replace(svc, ports=(model.ServicePort("http", model.TCP, 80, 8080,
                                                            eps),))
    net = build(world.state(svc))
    assert landing(send(net, "pod1", tcp(P["pod1"].ip, world.VIP, 80))) == [
        ("br-node2", 2, P["pod4"].ip, 8080)]


def test_topology_hints_keep_traffic_in_the_clients_zone_with_fallbacks():
    def hinted(zones):
        eps = tuple(world.endpoint(name, zones=(zone,) if zone else ())
                    for name, zone in zones.items())
        return dataclasses.replace(world.web(), topology_aware=True, ports=(
            model.ServicePort("http", model.TCP, 80, 8080, eps),))
    nodes = (dataclasses.replace(world.NODES[0], zone="a"),
             dataclasses.replace(world.NODES[1], zone="b"))

    def reach(svc, client="pod1"):
        net = build(model.ClusterState.build([svc], nodes))
        return {o.packet["ipv4_dst"] for o in
                send(net, client, tcp(P[client].ip, world.VIP, 80))}
    everyone = {P[n].ip for n in ("pod2", "pod3", "pod4")}
    assert reach(hinted({"pod2": "a", "pod3": "b", "pod4": "b"})) == {P["pod2"].ip}
    assert reach(hinted({"pod2": "a", "pod3": "b", "pod4": "b"}), "pod4") == \
        {P["pod3"].ip, P["pod4"].ip}
    # no endpoint hinted for zone a: every endpoint
    assert reach(hinted({"pod2": "b", "pod3": "b", "pod4": "b"})) == everyone
    # one endpoint without hints: hints are ignored altogether
    assert reach(hinted({"pod2": "a", "pod3": "b", "pod4": None})) == everyone
    # the service did not ask for topology-aware routing
    plain = dataclasses.replace(hinted({"pod2": "a", "pod3": "b", "pod4": "b"}),
                                topology_aware=False)
    assert reach(plain) == everyone


def test_prefer_same_node_uses_node_hints_before_zone_hints():
    """trafficDistribution PreferSameNode: both nodes in one zone, so zone hints
    alone would pick everyone; node hints keep a client on its own node, with
    kube-proxy's fallbacks when they do not apply."""
    def hinted(node_hints):
        eps = tuple(world.endpoint(name, zones=("a",), node_hints=hints)
                    for name, hints in node_hints.items())
        return dataclasses.replace(world.web(), topology_aware=True, ports=(
            model.ServicePort("http", model.TCP, 80, 8080, eps),))
    nodes = tuple(dataclasses.replace(n, zone="a") for n in world.NODES)

    def reach(svc, client="pod1"):
        net = build(model.ClusterState.build([svc], nodes))
        return {o.packet["ipv4_dst"] for o in
                send(net, client, tcp(P[client].ip, world.VIP, 80))}
    both = {"pod2": ("node1",), "pod3": ("node2",), "pod4": ("node2",)}
    assert reach(hinted(both)) == {P["pod2"].ip}
    assert reach(hinted(both), "pod4") == {P["pod3"].ip, P["pod4"].ip}
    everyone = {P[n].ip for n in ("pod2", "pod3", "pod4")}
    # no endpoint for this node, or one without node hints: zone hints (all "a")
    assert reach(hinted({"pod2": ("node2",), "pod3": ("node2",), "pod4": ("node2",)})) \
        == everyone
    assert reach(hinted({"pod2": ("node1",), "pod3": ("node2",), "pod4": ()})) == everyone


def test_sctp_is_skipped_on_the_userspace_datapath_only():
    svc = dataclasses.replace(world.web(), ports=(model.ServicePort(
        "sctp", model.SCTP, 9000, 9000, (world.endpoint("pod3", port=9000),)),))
    ids = cookies.GroupIds()
    netdev = dataclasses.replace(world.NODE1, datapath_type="netdev")
    assert not any(f.match and dict(f.match).get("ip_proto") == 132
                   for frag in compiler.Compiler(netdev, ids).compile(world.state(svc)).values()
                   for f in frag.flows)
    kernel = compiler.Compiler(world.NODE1, ids).compile(world.state(svc))
    assert any(dict(f.match).get("sctp_dst") == 9000
               for frag in kernel.values() for f in frag.flows)


def test_arp_for_gateway_and_vip_is_answered_with_the_router_mac():
    net = build(world.state(world.web()))
    for target in (world.NODE1.gateway_ip, world.VIP):
        req = {"eth_type": F.ETH_ARP, "arp_op": 1, "arp_spa": P["pod1"].ip,
               "arp_tpa": target, "arp_sha": P["pod1"].mac, "eth_dst": "ff:ff:ff:ff:ff:ff"}
        (out,) = send(net, "pod1", req)
        assert out.port == P["pod1"].ofport
        assert (out.packet["arp_op"], out.packet["arp_spa"], out.packet["arp_sha"],
                out.packet["arp_tpa"]) == (2, target, world.NODE1.router_mac, P["pod1"].ip)


def affinity_web(endpoints=("pod2", "pod3", "pod4"), timeout=10800):
    return dataclasses.replace(world.web(endpoints=endpoints), affinity_timeout=timeout)


def test_session_affinity_sends_a_client_back_to_its_endpoint():
    net = build(world.state(affinity_web()))
    first = send(net, "pod1", tcp(P["pod1"].ip, world.VIP, 80, sport=1000))
    assert len(first) == 3                          # no entry yet: the group picks
    learned = [f for f in net.switches["br-node1"].flows.values()
               if f.table == 31 and f.priority > 0]
    assert len(learned) == 1
    chosen = next(a.value for a in learned[0].actions if a.field == "reg0")
    for sport in (1001, 1002, 1003):                # new connections, same client
        again = send(net, "pod1", tcp(P["pod1"].ip, world.VIP, 80, sport=sport))
        assert [int(ipaddress.IPv4Address(o.packet["ipv4_dst"])) for o in again] == [chosen]
    other = send(net, "pod2", tcp(P["pod2"].ip, world.VIP, 80, sport=1000))
    assert len(other) == 3, "another client is balanced on its own"
    udp_first = send(net, "pod1", udp(P["pod1"].ip, world.VIP, 53, sport=2000))
    assert len(udp_first) == 3                      # per protocol and port


def test_affinity_entry_for_a_gone_endpoint_falls_back_to_the_group():
    net = build(world.state(affinity_web(endpoints=("pod3",))))
    send(net, "pod1", tcp(P["pod1"].ip, world.VIP, 80, sport=1000))
    sw = net.switches["br-node1"]
    plan = diff.diff(compiler.Compiler(world.NODE1, cookies.GroupIds()).compile(
        world.state(affinity_web(endpoints=("pod3",)))),
        compiler.Compiler(world.NODE1, cookies.GroupIds()).compile(
            world.state(affinity_web(endpoints=("pod4",)))))
    sw.apply(plan)                                  # learned entry still says pod3
    outs = send(net, "pod1", tcp(P["pod1"].ip, world.VIP, 80, sport=1001))
    assert landing(outs) == [("br-node2", 2, P["pod4"].ip, 8080)]


# --- north-south ------------------------------------------------------------

GW_FABRIC = "192.168.100.254"
INET = "203.0.113.10"


def ns_build(state_, **node1):
    """Two nodes with a fabric gateway, plus the gateway bridge (uplink 1,
    external 2); ``node1``: changes to node1's bridge context."""
    net = FakeNetwork()
    ids = cookies.GroupIds()
    gw = world.GATEWAY
    assert gw.fabric_ip == GW_FABRIC
    for ctx in (dataclasses.replace(world.NODE1, fabric_gateway=GW_FABRIC, **node1),
                dataclasses.replace(world.NODE2, fabric_gateway=GW_FABRIC), gw):
        sw = net.add_switch(ctx.name)
        sw.apply(diff.diff({}, compiler.Compiler(ctx, ids).compile(state_)))
        net.attach_fabric((ctx.name, ctx.uplink),
                          ctx.router_mac if ctx.role == "node" else ip_mac(GW_FABRIC))
    return net, gw


def from_internet(net, gw, pkt):
    return net.send("br-gw", 2, dict(pkt, eth_dst=gw.external.mac, in_port=2))


def test_node_port_cluster_masquerades_to_the_node_ip():
    svc = dataclasses.replace(world.web(endpoints=("pod3",)), type=model.NODE_PORT, ports=(
        model.ServicePort("http", model.TCP, 80, 8080, (world.endpoint("pod3"),),
                          node_port=30080),))
    net, gw = ns_build(world.state(svc))
    (out,) = from_internet(net, gw, tcp(INET, "192.168.100.1", 30080))
    assert (out.bridge, out.port, out.packet["ipv4_src"], out.packet["ipv4_dst"],
            out.packet["tp_dst"]) == ("br-node2", 1, "192.168.100.1", P["pod3"].ip, 8080)


def test_node_port_local_keeps_the_source_and_drops_without_local_endpoints():
    svc = dataclasses.replace(world.web(endpoints=("pod3",)), type=model.NODE_PORT,
                              external_traffic_policy=model.LOCAL, ports=(
        model.ServicePort("http", model.TCP, 80, 8080, (world.endpoint("pod3"),),
                          node_port=30080),))
    net, gw = ns_build(world.state(svc))
    (out,) = from_internet(net, gw, tcp(INET, "192.168.100.2", 30080))
    assert (out.port, out.packet["ipv4_src"]) == (1, INET)
    assert from_internet(net, gw, tcp(INET, "192.168.100.1", 30080)) == []


def test_nodeport_addresses_keep_node_ports_off_node_ips_outside_them():
    svc = dataclasses.replace(world.web(endpoints=("pod3",)), type=model.NODE_PORT, ports=(
        model.ServicePort("http", model.TCP, 80, 8080, (world.endpoint("pod3"),),
                          node_port=30080),))
    net, gw = ns_build(world.state(svc), node_port_cidrs=("10.0.0.0/8",))
    assert from_internet(net, gw, tcp(INET, "192.168.100.1", 30080)) == []
    (out,) = from_internet(net, gw, tcp(INET, "192.168.100.2", 30080))   # node2: all
    assert out.packet["ipv4_dst"] == P["pod3"].ip


def test_the_node_ip_reaches_the_nodes_own_stack_unless_a_service_claims_it():
    """A ``host`` port (the node's stack, wired like a pod with the node IP)."""
    host = world.pod("host0", "192.168.100.1", 9)
    host = dataclasses.replace(host, namespace="host")
    svc = dataclasses.replace(world.web(endpoints=("pod3",)), type=model.NODE_PORT, ports=(
        model.ServicePort("http", model.TCP, 80, 8080, (world.endpoint("pod3"),),
                          node_port=30080),))
    net, gw = ns_build(world.state(svc), pods=world.NODE1.pods + (host,))
    (out,) = from_internet(net, gw, tcp(INET, "192.168.100.1", 10256))   # a health check
    assert (out.bridge, out.port, out.packet["ipv4_dst"], out.packet["eth_dst"]) == \
        ("br-node1", 9, "192.168.100.1", host.mac)
    (out,) = from_internet(net, gw, tcp(INET, "192.168.100.1", 30080))   # the nodePort
    assert out.packet["ipv4_dst"] == P["pod3"].ip


def test_a_node_port_the_node_steered_in_keeps_its_client_and_answers_by_the_host_port():
    """Off the node, a client reached node1's own address; the node DNATed
    it to the steering address into its host port (node_setup's nftables).
    The bridge serves it like the nodePort on the node IP, and the reply,
    un-NATed, leaves by the host port again for the node to un-DNAT."""
    from controller.bridges import NODE_PORT_STEER_IP
    host = dataclasses.replace(world.pod("host0", "192.168.100.1", 9), namespace="host")
    svc = dataclasses.replace(world.web(endpoints=("pod3",)), type=model.NODE_PORT, ports=(
        model.ServicePort("http", model.TCP, 80, 8080, (world.endpoint("pod3"),),
                          node_port=30080),))
    net, _ = ns_build(world.state(svc), pods=world.NODE1.pods + (host,))
    client = "198.18.0.9"
    steered = tcp(client, NODE_PORT_STEER_IP, 30080, sport=41000, eth_src=host.mac, in_port=9)
    (out,) = net.send("br-node1", 9, steered)
    assert (out.bridge, out.port, out.packet["ipv4_src"], out.packet["ipv4_dst"],
            out.packet["tp_dst"]) == ("br-node2", 1, "192.168.100.1", P["pod3"].ip, 8080)
    net.adopt(out)
    reply = tcp(P["pod3"].ip, "192.168.100.1", out.packet["tp_src"], sport=8080,
                tcp_flags="syn-ack")
    (back,) = send(net, "pod3", reply)
    assert (back.bridge, back.port, back.packet["ipv4_src"], back.packet["tp_src"],
            back.packet["ipv4_dst"], back.packet["eth_dst"]) == \
        ("br-node1", 9, NODE_PORT_STEER_IP, 30080, client, host.mac)
    # anything else the host port sends keeps to the node's own address
    spoofed = tcp(client, world.VIP, 80, eth_src=host.mac, in_port=9)
    assert net.send("br-node1", 9, spoofed) == []


def test_gateway_spreads_a_load_balancer_ip_over_serving_nodes():
    svc = dataclasses.replace(world.web(endpoints=("pod1", "pod3")),
                              type=model.LOAD_BALANCER, load_balancer_ips=("198.51.100.1",))
    net, gw = ns_build(world.state(svc))
    outs = from_internet(net, gw, tcp(INET, "198.51.100.1", 80))
    # ECMP to both nodes; each node's group may pick either endpoint
    assert {o.packet["ipv4_dst"] for o in outs} == {P["pod1"].ip, P["pod3"].ip}
    assert {o.packet["ipv4_src"] for o in outs} == {"192.168.100.1", "192.168.100.2"}
    assert from_internet(net, gw, tcp(INET, world.VIP, 80)) == [], "no cluster IP from outside"


def test_floating_ip_in_and_out():
    fip = model.FloatingIP("198.51.100.77", P["pod2"].ip, "node1", "default/pod2")
    st = model.ClusterState.build([world.web()], world.NODES, [fip])
    net, gw = ns_build(st)
    (inbound,) = from_internet(net, gw, tcp(INET, fip.ip, 8080))
    assert (inbound.bridge, inbound.port, inbound.packet["ipv4_src"],
            inbound.packet["ipv4_dst"]) == ("br-node1", 2, INET, P["pod2"].ip)
    (out,) = send(net, "pod2", tcp(P["pod2"].ip, INET, 8080, sport=999))
    assert (out.bridge, out.port, out.packet["ipv4_src"]) == ("br-gw", 2, fip.ip)
    (out,) = send(net, "pod1", tcp(P["pod1"].ip, INET, 8080, sport=998))
    assert out.packet["ipv4_src"] == "192.168.100.1"           # no FIP: the node IP


def _one_table_switch(*flows, groups=()):
    from fakeswitch import FakeSwitch
    sw = FakeSwitch("br-strict")
    sw.flows = {f.key: f for f in flows}
    sw.groups = {g.group_id: g for g in groups}
    return sw


def test_the_fake_switch_refuses_what_ovs_would_refuse_or_do_arbitrarily():
    """A wrong pipeline is a red test, not a silent drop: a missing group, a
    goto that does not go forward, two flows of one priority for one packet."""
    from fakeswitch import PipelineFault
    pkt = tcp("10.1.1.2", "10.96.0.10", 80)
    missing = _one_table_switch(F.flow(0, 10, [F.Group(77)], eth_type=F.ETH_IP))
    with pytest.raises(PipelineFault, match="group 77 does not exist"):
        missing.send(pkt, 1)
    empty = _one_table_switch(F.flow(0, 10, [F.Group(77)], eth_type=F.ETH_IP),
                              groups=[F.SelectGroup(77, ())])
    assert empty.send(pkt, 1) == []                       # an empty group drops: fine
    backwards = _one_table_switch(F.flow(0, 10, [F.GotoTable(30)], eth_type=F.ETH_IP),
                                  F.flow(30, 10, [F.GotoTable(20)], eth_type=F.ETH_IP))
    with pytest.raises(PipelineFault, match="goto_table:20 from table 30"):
        backwards.send(pkt, 1)
    overlap = _one_table_switch(F.flow(0, 10, [F.Output(2)], eth_type=F.ETH_IP),
                                F.flow(0, 10, [F.Output(3)], ipv4_dst="10.96.0.10"))
    with pytest.raises(PipelineFault, match="table 0 priority 10: 2 flows match"):
        overlap.send(pkt, 1)
    ranked = _one_table_switch(F.flow(0, 10, [F.Output(2)], eth_type=F.ETH_IP),
                               F.flow(0, 20, [F.Output(3)], ipv4_dst="10.96.0.10"))
    assert [o.port for o in ranked.send(pkt, 1)] == [3]   # priorities decide: fine
