"""North-south in IPv6, compiled: a node bridge's external pools per family
(nodePort on each InternalIP, LB and external IPs, source ranges of their
own family), the node's IPv6 masquerade and egress, and the gateway's IPv6
routing and Neighbor Discovery.  IPv4 stays as it was."""
import dataclasses
import logging

from controller import cookies, fragments, names
from controller import flows as F
from controller import pipeline as P
from nsx_proxy import model, translate, validate
from test_compiler import check_golden
import world

LB4, LB6 = world.LB_IPS


def compiled(ctx, st, ids=None):
    return fragments.flatten(world.compile_for(ctx, st, ids))


def dst(flow):
    match = dict(flow.match)
    return match.get("ipv4_dst") or match.get("ipv6_dst")


def lb_flows(flows, ip, port):
    return [f for f in flows.values() if f.table == P.SERVICE_LB.id and dst(f) == ip
            and port in (dict(f.match).get("tcp_dst"), dict(f.match).get("udp_dst"))]


def test_golden_dumps_of_a_node_and_the_gateway_with_north_south_ipv6():
    st = world.north_south_state(world.edge_dual_stack())
    check_golden("node1-north-south-ipv6.txt",
                 fragments.dump(world.compile_for(world.NODE1_DS, st)))
    check_golden("gateway-dual-stack.txt",
                 fragments.dump(world.compile_for(world.GATEWAY_DS, st)))


def test_each_familys_outside_frontends_go_to_that_familys_external_pool(caplog):
    svc = world.edge_dual_stack()
    ids = cookies.GroupIds()
    flows, groups = compiled(world.NODE1_DS, world.north_south_state(svc), ids)
    assert "cannot compile" not in caplog.text
    ext = names.external_group_name(svc, svc.ports[0])
    gid4, gid6 = ids.peek(ext), ids.peek(ext + "/IPv6")
    assert gid4 and gid6 and gid4 != gid6
    nats = {g: sorted(b.actions[0].nat.dst_ip for b in groups[g].buckets) for g in (gid4, gid6)}
    assert nats == {gid4: ["10.1.1.2", "10.1.2.2"], gid6: ["fd00:10:1:1::2", "fd00:10:1:2::2"]}
    # the nodePort on each of node1's InternalIPs, LB and external IPs by family
    for ip, port, gid in (("192.168.100.1", 30080, gid4), ("fd00:100::1", 30080, gid6),
                          (world.EXTERNAL_IPS[0], 80, gid4), (world.EXTERNAL_IPS[1], 80, gid6),
                          (LB4, 80, gid4), (LB6, 80, gid6)):
        assert any(f.actions == (F.Group(gid),) for f in lb_flows(flows, ip, port)), ip
    # masqueraded per family to node1's address of that family
    masq = {dict(f.match)["eth_type"]: f.actions[0].nat.src_ip for f in flows.values()
            if f.table == P.SERVICE_MASQUERADE.id and dict(f.match).get("ct_mark")}
    assert masq == {F.ETH_IP: "192.168.100.1", F.ETH_IPV6: "fd00:100::1"}


def test_source_ranges_apply_to_the_lb_ips_of_their_own_family():
    flows, _ = compiled(world.NODE1_DS, world.north_south_state(world.edge_dual_stack()))
    for ip, field, allowed in ((LB4, "ipv4_src", ("203.0.113.0", "255.255.255.240")),
                               (LB6, "ipv6_src", ("2001:db8:113::", "ffff:ffff:ffff:ffff::"))):
        lb = lb_flows(flows, ip, 80)
        assert [dict(f.match)[field] for f in lb if field in dict(f.match)] == [allowed]
        (drop,) = [f for f in lb if field not in dict(f.match)]
        assert drop.actions == ()
    # IPv4 ranges only: the IPv6 LB IP is open to all (kube-proxy filters by family)
    v4_only = world.edge_dual_stack(source_ranges=("203.0.113.0/28",))
    flows, _ = compiled(world.NODE1_DS, world.north_south_state(v4_only))
    (open6,) = lb_flows(flows, LB6, 80)
    assert "ipv6_src" not in dict(open6.match) and open6.actions


def test_ipv4_external_pool_and_flows_stay_when_ipv6_outside_ips_are_added():
    svc = world.edge_dual_stack()
    v4 = dataclasses.replace(svc, secondary_cluster_ip=None, load_balancer_ips=(LB4,),
                             external_ips=world.EXTERNAL_IPS[:1], source_ranges=("203.0.113.0/28",))
    key = names.service_key(svc.key)
    before = world.compile_for(world.NODE1_DS, world.north_south_state(v4))[key]
    after = world.compile_for(world.NODE1_DS, world.north_south_state(svc))[key]
    ipv4 = {f for f in after.flows if dict(f.match).get("eth_type") == F.ETH_IP}
    assert ipv4 == set(before.flows)
    assert set(before.groups) <= set(after.groups)


def test_no_ipv6_outside_without_an_ipv6_internal_ip_or_an_ipv6_bridge():
    svc = world.edge_dual_stack()
    # node1 without an IPv6 InternalIP: nothing to masquerade to
    nodes = (dataclasses.replace(world.NODES_NS6[0], internal_ip6=None), world.NODES_NS6[1])
    flows, _ = compiled(world.NODE1_DS, model.ClusterState.build([svc], nodes))
    assert not lb_flows(flows, LB6, 80) and not lb_flows(flows, "fd00:100::1", 30080)
    assert lb_flows(flows, LB4, 80)
    # ... and the gateway sends IPv6 only to node2
    gw, groups = compiled(world.GATEWAY_DS, model.ClusterState.build([svc], nodes))
    (route6,) = [f for f in gw.values() if dst(f) == LB6]
    assert len(groups[route6.actions[0].group_id].buckets) == 1
    assert not [f for f in gw.values() if dst(f) == "fd00:100::1"]
    # an IPv4-only bridge: no IPv6 frontend from outside, no IPv6 masquerade
    flows, _ = compiled(world.NODE1, world.north_south_state(svc))
    assert not lb_flows(flows, LB6, 80) and not lb_flows(flows, "fd00:100::1", 30080)
    assert not [f for f in flows.values() if f.table == P.SERVICE_MASQUERADE.id and
                dict(f.match).get("eth_type") == F.ETH_IPV6]


def test_the_gateway_answers_nd_outside_and_routes_ipv6_to_the_nodes():
    st = world.north_south_state(world.edge_dual_stack())
    flows, groups = compiled(world.GATEWAY_DS, st)
    nd = [f for f in flows.values() if f.table == P.ARP_RESPONDER.id and
          dict(f.match).get("ipv6_nd_target") == "2001:db8:113::1"]
    assert len(nd) == 1 and F.SetField("eth_src", "0a:58:cb:00:71:01") in nd[0].actions
    for k in (1, 2):
        (route,) = [f for f in flows.values() if dst(f) == f"fd00:100::{k}"]
        assert F.SetField("eth_dst", f"0a:58:0a:01:0{k}:01") in route.actions
    for ip in (LB6, world.EXTERNAL_IPS[1]):
        (route,) = [f for f in flows.values() if dst(f) == ip]
        assert len(groups[route.actions[0].group_id].buckets) == 2
    out6 = [f for f in flows.values() if f.table == P.GATEWAY_ROUTING.id and
            f.priority == P.PRIO_FALLBACK and dict(f.match)["eth_type"] == F.ETH_IPV6]
    assert len(out6) == 1 and F.Output(2) in out6[0].actions
    # an IPv4-only gateway: exactly its flows of before, no IPv6 route
    v4_gw, _ = compiled(world.GATEWAY, st)
    assert not [f for f in v4_gw.values() if dict(f.match).get("eth_type") == F.ETH_IPV6]


def test_translation_keeps_outside_ips_of_the_services_families_and_says_why_not():
    lines = []
    reject = lambda kind, name, why: lines.append(why)      # noqa: E731
    raw = {"metadata": {"name": "edge", "namespace": "default"},
           "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                    "type": "LoadBalancer", "ports": [{"port": 80}],
                    "externalIPs": ["2001:db8:51::200", "198.51.100.200"],
                    "loadBalancerSourceRanges": ["2001:db8:113::/64"]},
           "status": {"loadBalancer": {"ingress": [{"ip": LB4}, {"ip": LB6}]}}}
    svc = translate.service(raw, (), reject)
    assert svc.external_ips == ("198.51.100.200",) and svc.load_balancer_ips == (LB4,)
    assert lines == [
        "externalIP 2001:db8:51::200 is IPv6 and the service has no IPv6 cluster IP "
        "(spec.ipFamilies); ignoring it",
        f"load-balancer IP {LB6} is IPv6 and the service has no IPv6 cluster IP "
        "(spec.ipFamilies); ignoring it",
        "loadBalancerSourceRanges has no IPv4 range: its IPv4 load-balancer IPs accept "
        "every source (as with kube-proxy)"]
    raw["spec"]["clusterIPs"] = ["10.96.0.10", "fd00:96::a"]
    lines.clear()
    svc = translate.service(raw, (), reject)
    assert svc.external_ips == ("2001:db8:51::200", "198.51.100.200")
    assert svc.load_balancer_ips == (LB4, LB6) and svc.source_ranges == ("2001:db8:113::/64",)
    assert lines == ["loadBalancerSourceRanges has no IPv4 range: its IPv4 load-balancer IPs "
                     "accept every source (as with kube-proxy)"]


def test_a_nodes_ipv6_internal_ip_and_a_bad_one_that_costs_only_itself():
    lines = []
    raw = {"metadata": {"name": "node1"},
           "spec": {"podCIDRs": ["10.1.1.0/24", "fd00:10:1:1::/64"]},
           "status": {"addresses": [{"type": "InternalIP", "address": "fd00:100::1"},
                                    {"type": "InternalIP", "address": "192.168.100.1"}]}}
    node = translate.node(raw, lambda *r: lines.append(r))
    assert (node.internal_ip, node.internal_ip6) == ("192.168.100.1", "fd00:100::1")
    raw["status"]["addresses"][0]["address"] = "ff02::1"
    node = translate.node(raw, lambda *r: lines.append(r))
    assert node.internal_ip6 is None and node.internal_ip == "192.168.100.1"
    assert lines == [("node", "node1", "IPv6 InternalIP ff02::1 cannot be a unicast service "
                      "address; no IPv6 NodePorts on it")]


def test_a_source_range_of_either_family_is_read_and_junk_is_one_line(caplog):
    assert validate.source_range(" 2001:db8::/48") == "2001:db8::/48"
    rejects = validate.RejectLog(logging.getLogger("test"))
    raw = {"metadata": {"name": "lb", "namespace": "default"},
           "spec": {"clusterIP": "10.96.0.10", "type": "LoadBalancer", "ports": [{"port": 80}],
                    "loadBalancerSourceRanges": ["2001:db8::1/48", "10.0.0.0/8"]}}
    svc = translate.service(raw, (), rejects.reject)
    assert svc.source_ranges == ("10.0.0.0/8",) and sum(rejects.counts.values()) == 1
    assert "loadBalancerSourceRange '2001:db8::1/48' is not a network" in caplog.text
