"""Dual-stack on a node bridge: what each family gets, and what an IPv4-only
bridge keeps (exactly its flows of before)."""
import dataclasses

from controller import bridges as B
from controller import cookies, fragments, names
from controller import flows as F
from test_compiler import check_golden
import world


def compiled(ctx=world.NODE1_DS, *services):
    return fragments.flatten(world.compile_for(ctx, world.dual_stack_state(*services)))


def test_dual_stack_golden_dump():
    st = world.dual_stack_state(world.web_dual_stack())
    check_golden("node1-dual-stack.txt",
                 fragments.dump(world.compile_for(world.NODE1_DS, st)))


def test_each_cluster_ip_is_served_by_its_own_familys_endpoints():
    ids = cookies.GroupIds()
    flows, groups = fragments.flatten(world.compile_for(
        world.NODE1_DS, world.dual_stack_state(world.web_dual_stack()), ids))
    tcp = world.web_dual_stack().ports[0]
    gid4 = ids.peek(names.service_port_name(world.web_dual_stack(), tcp))
    gid6 = ids.peek(names.service_port_name(world.web_dual_stack(), tcp) + "/IPv6")
    assert gid4 and gid6 and gid4 != gid6
    nats = {gid: [b.actions[0].nat.dst_ip for b in groups[gid].buckets] for gid in (gid4, gid6)}
    assert nats == {gid4: ["10.1.1.2", "10.1.2.2"],
                    gid6: ["fd00:10:1:1::2", "fd00:10:1:2::2"]}
    lb = {(dict(f.match).get("ipv4_dst") or dict(f.match).get("ipv6_dst")): f.actions
          for f in flows.values() if f.table == 30 and dict(f.match).get("tcp_dst") == 80}
    assert lb == {world.VIP: (F.Group(gid4),), world.VIP6: (F.Group(gid6),)}
    # UDP: each family its own pool id (reg4) and picks of its own endpoints
    picks = sorted((dict(f.match)["eth_type"], f.actions[0].nat.dst_ip)
                   for f in flows.values() if f.table == 33 and "reg5" in dict(f.match))
    assert picks == [(F.ETH_IP, "10.1.1.2"), (F.ETH_IP, "10.1.2.2"),
                     (F.ETH_IPV6, "fd00:10:1:1::2"), (F.ETH_IPV6, "fd00:10:1:2::2")]


def test_the_ipv4_pool_keeps_its_group_id_and_flows_when_ipv6_is_added():
    single = dataclasses.replace(world.web_dual_stack(), secondary_cluster_ip=None)
    ipv4_only = world.compile_for(world.NODE1_DS, world.dual_stack_state(single))
    dual = world.compile_for(world.NODE1_DS, world.dual_stack_state(world.web_dual_stack()))
    key = names.service_key(single.key)
    v4 = {f for f in dual[key].flows if dict(f.match).get("eth_type") == F.ETH_IP}
    assert v4 == set(ipv4_only[key].flows)
    assert ipv4_only[key].groups[0] in dual[key].groups


def test_a_single_stack_ipv6_service_and_its_vip_neighbor_answer():
    svc = world.web_dual_stack(vips=(world.VIP6,))
    flows, groups = compiled(world.NODE1_DS, svc)
    lb = [f for f in flows.values() if f.table == 30 and f.cookie >> 48 == 5]
    assert lb and all(dict(f.match)["eth_type"] == F.ETH_IPV6 for f in lb)
    assert all(b.actions[0].nat.dst_ip.startswith("fd00:") for g in groups.values()
               for b in g.buckets)
    nd = [f for f in flows.values() if f.table == 10 and
          dict(f.match).get("ipv6_nd_target") == world.VIP6]
    (answer,) = nd
    assert F.SetField("eth_src", world.NODE1_DS.router_mac) in answer.actions
    assert answer.actions[-1] == F.GotoTable(11)


def test_sticky_ipv6_learns_the_clients_ipv6_address():
    flows, _ = compiled(world.NODE1_DS, world.web_dual_stack(affinity=600))
    learns = [a for f in flows.values() for a in f.actions if isinstance(a, F.Learn)]
    clients = sorted((a.specs[0].value, a.specs[2].dst.field, a.specs[2].dst.nbits)
                     for a in learns)
    assert clients == [(F.ETH_IP, "ipv4_src", 32)] * 2 + [(F.ETH_IPV6, "ipv6_src", 128)] * 2


def test_ipv6_needs_both_the_bridge_and_the_pod_to_have_it():
    # an IPv4-only bridge: its pipeline, pods and routes stay as they were,
    # even with a dual-stack service and nodes (it cannot reach IPv6 pods)
    flows, _ = compiled(world.NODE1, world.web_dual_stack())
    plain, _ = fragments.flatten(world.compile_for(world.NODE1, world.state(world.web())))
    not_services = (cookies.KIND_VIP, cookies.KIND_SERVICE_PORT)
    assert {k: f for k, f in flows.items() if cookies.kind_of(f.cookie) not in not_services} \
        == {k: f for k, f in plain.items() if cookies.kind_of(f.cookie) not in not_services}
    # a pod without an IPv6 address on a dual-stack bridge: IPv4 flows only
    ctx = dataclasses.replace(world.NODE1_DS, pods=world.NODE1.pods)
    flows, _ = compiled(ctx)
    assert not any(dict(f.match).get("ipv6_src", "").startswith("fd00:10:1:1::2")
                   for f in flows.values())


def test_dual_stack_pods_and_bridges_parse_from_ovsdb():
    ctx = B.parse_bridge("br-node1", 1, {
        B.ROLE: B.ROLE_NODE, B.NODE: "node1",
        B.POD_CIDR: "10.1.1.0/24,fd00:10:1:1::/64"}, [
        ("p1", 1, {B.ROLE: B.ROLE_POD, B.POD_NAME: "pod1",
                   B.POD_IP: "10.1.1.2/24,FD00:10:1:1::2/64", B.POD_MAC: "0a:58:0a:01:01:02"}),
        ("p2", 2, {B.ROLE: B.ROLE_POD, B.POD_NAME: "pod2",
                   B.POD_IP: "fd00:10:1:1::3/64", B.POD_MAC: "0a:58:0a:01:01:03"})])
    assert (ctx.pod_cidr, ctx.pod_cidr6, ctx.gateway_ip6) == \
        ("10.1.1.0/24", "fd00:10:1:1::/64", "fd00:10:1:1::1")
    (pod,) = ctx.pods                        # IPv4 comes first and is required
    assert (pod.ip, pod.ip6) == ("10.1.1.2", "fd00:10:1:1::2")
    for bad in ("fd00:10:1:1::/64", "10.1.1.0/24,10.1.2.0/24", "10.1.1.0/24,x"):
        try:
            B.parse_bridge("br", 1, {B.ROLE: B.ROLE_NODE, B.NODE: "n", B.POD_CIDR: bad}, [])
        except B.BadBridge as exc:
            assert "one IPv4 and one IPv6 network" in str(exc)
        else:
            raise AssertionError(bad)
