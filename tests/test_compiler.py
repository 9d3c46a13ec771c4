"""Compiler output: golden dumps a reader can check, and structural rules."""
import dataclasses
import os

import pytest

from controller import compiler, cookies, fragments, names, pipeline, wire
from controller import bridges as B
from controller import flows as F
import world

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def check_golden(name, text):
    path = os.path.join(GOLDEN, name)
    if os.environ.get("UPDATE_GOLDEN"):
        with open(path, "w") as fh:
            fh.write(text)
    with open(path) as fh:
        assert text == fh.read(), f"{name} changed; UPDATE_GOLDEN=1 rewrites it"


def test_node_bridge_golden_dump():
    st = world.state(world.web())
    check_golden("node1.txt", fragments.dump(world.compile_for(world.NODE1, st)))


def test_session_affinity_golden_dump():
    svc = dataclasses.replace(world.web(endpoints=("pod2", "pod3")), name="sticky",
                              affinity_timeout=600)
    check_golden("node1-affinity.txt",
                 fragments.dump(world.compile_for(world.NODE1, world.state(svc))))


def test_every_affinity_flow_jumps_forward_too():
    svc = dataclasses.replace(world.web(), affinity_timeout=600)
    flows, groups = fragments.flatten(world.compile_for(world.NODE1, world.state(svc)))
    for f in list(flows.values()) + [b for g in groups.values() for b in g.buckets]:
        for action in f.actions:
            if isinstance(action, (F.GotoTable, F.Resubmit)) and isinstance(f, F.Flow):
                assert action.table > f.table, F.flow_text(f)


def test_empty_cluster_golden_dump():
    check_golden("node1-empty.txt",
                 fragments.dump(world.compile_for(world.NODE1, world.state())))


def test_every_flow_sits_in_a_declared_table_and_jumps_forward():
    flows, groups = fragments.flatten(world.compile_for(world.NODE1, world.state(world.web())))
    for f in flows.values():
        assert f.table in pipeline.BY_ID, F.flow_text(f)
        for action in f.actions:
            if isinstance(action, F.GotoTable):
                assert action.table > f.table, F.flow_text(f)
        assert cookies.kind_of(f.cookie) in cookies.KIND_NAMES, F.flow_text(f)
    assert groups


def test_one_group_per_tcp_port_one_flow_per_endpoint_for_udp():
    svc = world.web(endpoints=("pod1", "pod2", "pod3"))
    flows, groups = fragments.flatten(world.compile_for(world.NODE1, world.state(svc)))
    (g,) = groups.values()                       # the TCP port's
    assert len(g.buckets) == 3
    # a bucket is one ct action and nothing else (OVS drops ct otherwise)
    assert all(len(b.actions) == 1 and isinstance(b.actions[0], F.Ct) for b in g.buckets)
    # UDP: the frontend hashes the 5-tuple into one of 3 picks, each pick a flow
    (front,) = [f for f in flows.values() if f.table == pipeline.SERVICE_LB.id
                and dict(f.match).get("udp_dst") == 53]
    load, multipath, goto = front.actions
    assert multipath == F.Multipath(3, pipeline.POOL_PICK)
    assert goto == F.GotoTable(pipeline.UDP_SPREAD.id)
    picks = {dict(f.match)["reg5"]: f.actions for f in flows.values()
             if f.table == pipeline.UDP_SPREAD.id and dict(f.match).get("reg4") == load.value}
    assert sorted(picks) == [0, 1, 2]
    assert {a.nat.dst_ip for (a,) in picks.values()} == \
        {b.actions[0].nat.dst_ip for b in g.buckets}


def test_a_large_udp_pool_is_not_split_and_sticky_udp_keeps_its_group():
    from nsx_proxy import model
    eps = tuple(model.Endpoint(f"10.50.{i // 250}.{i % 250 + 1}", 5353, node=None)
                for i in range(1200))
    port = model.ServicePort("dns", model.UDP, 53, 5353, eps)
    svc = dataclasses.replace(world.web(), ports=(port,))
    flows, groups = fragments.flatten(world.compile_for(world.NODE1, world.state(svc)))
    assert not groups
    assert sum(f.table == pipeline.UDP_SPREAD.id and f.priority > 0
               for f in flows.values()) == 1200
    sticky = dataclasses.replace(svc, affinity_timeout=60)
    flows, groups = fragments.flatten(world.compile_for(world.NODE1, world.state(sticky)))
    assert len(groups) == 4                      # 1,200 buckets: split in 4 parts
    assert not any(f.table == pipeline.UDP_SPREAD.id and f.priority > 0
                   for f in flows.values())


def test_not_ready_endpoints_get_no_bucket_but_terminating_serving_ones_are_fallback():
    from nsx_proxy import model
    ready = world.endpoint("pod1")
    not_ready = world.endpoint("pod3", ready=False, serving=False)
    port = model.ServicePort("http", model.TCP, 80, 8080, (ready, not_ready))
    assert port.ready_endpoints() == (ready,)
    terminating = world.endpoint("pod3", ready=False, serving=True, terminating=True)
    port = model.ServicePort("http", model.TCP, 80, 8080, (not_ready, terminating))
    assert port.ready_endpoints() == (terminating,)


def test_service_port_cookie_selects_exactly_its_flows():
    st = world.state(world.web(), world.web(name="api", vip="10.96.0.20"))
    flows, groups = fragments.flatten(world.compile_for(world.NODE1, st))
    gid = next(iter(groups))
    cookie = cookies.make(cookies.KIND_SERVICE_PORT, gid)
    mine = [f for f in flows.values() if f.cookie & cookies.OBJECT_MASK == cookie]
    assert mine and all(F.Group(gid) in f.actions for f in mine)


def test_unchanged_objects_reuse_their_fragments():
    comp = compiler.Compiler(world.NODE1, cookies.GroupIds())
    svc_a, svc_b = world.web(), world.web(name="api", vip="10.96.0.20")
    first = comp.compile(world.state(svc_a, svc_b))
    second = comp.compile(world.state(svc_a, world.web(name="api", vip="10.96.0.20",
                                                       endpoints=("pod2",))))
    key_a = names.service_key(svc_a.key)
    assert second[key_a] is first[key_a]
    assert second[names.service_key(svc_b.key)] != first[names.service_key(svc_b.key)]


def test_group_ids_are_stable_across_compilers_and_collisions_probe():
    ids = cookies.GroupIds()
    a = ids.get("default/web:TCP/80")
    assert cookies.GroupIds().get("default/web:TCP/80") == a
    ids._owner[cookies.stable_id("x") % 0x7FFFFFFF or 1] = "taken"
    assert ids.get("x") != cookies.stable_id("x")
    ids.release_unused({"x"})
    assert "default/web:TCP/80" not in ids._by_name


@pytest.mark.parametrize("seen,expected", [((), 1), ((1,), 2), ((7, 3), 8), ((255,), 1)])
def test_next_generation(seen, expected):
    assert cookies.next_generation(seen) == expected


def test_a_flow_that_breaks_its_tables_declaration_fails_when_built():
    """The pipeline is enforced: a match its table does not expect, or a jump
    the pipeline does not make, is a PipelineError at compile time."""
    with pytest.raises(pipeline.PipelineError, match="does not match on"):
        pipeline.ARP_RESPONDER.flow(pipeline.PRIO_HIGH, (), 0, ipv4_dst="10.0.0.1")
    with pytest.raises(pipeline.PipelineError, match="may not send packets to table 30"):
        pipeline.L3_FORWARDING.flow(pipeline.PRIO_HIGH, (F.GotoTable(30),), 0)
    with pytest.raises(pipeline.PipelineError, match="table 20"):
        pipeline.SERVICE_LB.bucket((F.Ct(zone=1, table=20, commit=True),))
    ok = pipeline.SERVICE_LB.flow(pipeline.PRIO_HIGH, (F.Group(7),), 0, ipv4_dst="10.0.0.1")
    assert ok.table == 30 and ok.match == (("ipv4_dst", "10.0.0.1"),)
    with pytest.raises(pipeline.PipelineError, match="table 20"):
        pipeline.SERVICE_LB.dnat_bucket(1, 20, "10.0.0.5", 80)


def test_a_flat_dnat_bucket_reads_as_the_bucket_it_stands_for():
    """A pool member is kept as one DnatBucket; its text, the actions every
    reader sees and its bytes are those of the four-object spelling."""
    flat = pipeline.SERVICE_LB.dnat_bucket(3, pipeline.SERVICE_MASQUERADE.id,
                                           "10.244.1.5", 8080, mark=0x20)
    spelled = F.Bucket((F.Ct(zone=3, table=pipeline.SERVICE_MASQUERADE.id, commit=True,
                             nat=F.Nat("10.244.1.5", 8080), mark=0x20),))
    assert flat.actions == spelled.actions and flat.weight == spelled.weight
    assert F.group_text(F.SelectGroup(9, (flat,))) == F.group_text(F.SelectGroup(9, (spelled,)))
    assert wire.group_buckets(F.SelectGroup(9, (flat,))) == \
        wire.group_buckets(F.SelectGroup(9, (spelled,)))
    six = pipeline.SERVICE_LB.dnat_bucket(3, pipeline.SERVICE_MASQUERADE.id, "fd00::5", 80)
    assert wire.group_buckets(F.SelectGroup(9, (six,))) == wire.group_buckets(
        F.SelectGroup(9, (F.Bucket(six.actions),)))


def test_the_affinity_learn_layout_is_written_once_and_reads_like_ovs_ofctl():
    learn = pipeline.affinity_learn(6, 600, 0x6000000000007)
    assert F.action_text(learn) == (
        "learn(table=31,idle_timeout=600,priority=200,cookie=0x6000000000007,"
        "eth_type=0x800,nw_proto=6,NXM_OF_IP_SRC[],NXM_NX_REG2[],NXM_NX_REG3[0..15],"
        "load:NXM_NX_REG0[]->NXM_NX_REG0[],load:NXM_NX_REG1[0..15]->NXM_NX_REG1[0..15],"
        "load:0x1->NXM_NX_REG1[16])")


def test_a_bug_compiling_one_service_costs_only_that_service(monkeypatch, caplog):
    """Isolation in the compiler: an exception building one object's fragment
    is logged once, naming it; that object keeps its last flows (or is left
    out), everything else compiles."""
    from controller import compiler as C
    real = C.service_fragment

    def buggy(ctx, svc, group_ids, node=None, previous=None):
        if svc.name == "bad":
            raise KeyError("a bug")
        return real(ctx, svc, group_ids, node, previous)
    monkeypatch.setattr(C, "service_fragment", buggy)
    good, bad = world.web(), world.web(name="bad", vip="10.96.0.66")
    comp = compiler.Compiler(world.NODE1, cookies.GroupIds())
    out = comp.compile(world.state(good, bad))
    assert names.service_key(good.key) in out and names.service_key(bad.key) not in out
    assert "vip/10.96.0.66" in out                     # its VIP (ARP, reject) is fine
    lines = [r.getMessage() for r in caplog.records if "cannot compile" in r.getMessage()]
    assert len(lines) == 1 and "service/default/bad" in lines[0] and "KeyError" in lines[0]
    comp.compile(world.state(world.web(endpoints=("pod2",)), bad))   # others change
    assert len([r for r in caplog.records if "cannot compile" in r.getMessage()]) == 1


def test_the_gateway_hosts_node_gets_no_bucket_no_route_and_no_node_ip_flow():
    """A Node labelled nsx-proxy.io/gateway=true has no node bridge: the
    gateway's ECMP groups, its node-IP routes and the node bridges' routes
    to other nodes leave it out."""
    import dataclasses
    from controller.bridges import router_mac
    from controller.gateway_fragments import serving_nodes
    from nsx_proxy import model, translate
    raw = {"metadata": {"name": "gw", "labels": {"nsx-proxy.io/gateway": "true"}},
           "spec": {"podCIDR": "10.1.250.0/24"},
           "status": {"addresses": [{"type": "InternalIP", "address": "192.168.100.254"}]}}
    gw = translate.node(raw)
    assert gw.gateway and not gw.compute
    svc = dataclasses.replace(world.web(), type=model.LOAD_BALANCER,
                              load_balancer_ips=("203.0.113.50",))
    state = model.ClusterState.build([svc], world.NODES + (gw,))
    assert [n.name for n in serving_nodes(state, "203.0.113.50")] == ["node1", "node2"]
    nowhere = router_mac(gw.pod_cidr)
    for ctx in (world.GATEWAY, world.NODE1):
        # buckets, node routes and node-IP routes all rewrite to the node's router MAC
        assert nowhere not in fragments.dump(world.compile_for(ctx, state)), ctx.name


def _uplink_outputs(ctx, st):
    """(actions, where) of every flow and bucket that sends out of the uplink."""
    frags = world.compile_for(ctx, st)
    flows, groups = fragments.flatten(frags)
    out = []
    for flow in flows.values():
        from_uplink = dict(flow.match).get("in_port") == ctx.uplink
        if any(isinstance(a, F.Output) and (a.port == ctx.uplink or
                                            a.port == F.IN_PORT and from_uplink)
               for a in flow.actions):
            out.append((flow.actions, flow))
    for group in groups.values():
        for bucket in group.buckets:
            if any(isinstance(a, F.Output) and a.port == ctx.uplink for a in bucket.actions):
                out.append((bucket.actions, group))
    return out


def test_overlay_mode_names_the_host_behind_every_frame_that_leaves_by_the_tunnel():
    """A tunnel uplink (remote_ip=flow): each frame for another node carries
    that node's InternalIP as tun_dst, each frame for the gateway the
    gateway's address; on a fabric no frame carries one."""
    st = world.state(dataclasses.replace(world.web(), external_ips=("198.51.100.7",)))
    node_ips = {n.name: n.internal_ip for n in world.NODES}
    routers = {B.router_mac(n.pod_cidr): n.internal_ip for n in world.NODES}
    for ctx in (dataclasses.replace(world.NODE1, fabric_gateway="192.168.100.254"),
                world.GATEWAY):
        fabric = _uplink_outputs(ctx, st)
        assert fabric and not any(isinstance(a, F.SetField) and a.field == "tun_ipv4_dst"
                                  for actions, _ in fabric for a in actions)
        overlay = _uplink_outputs(dataclasses.replace(ctx, tunnel=True), st)
        assert len(overlay) == len(fabric)
        for actions, where in overlay:
            fields = {a.field: a.value for a in actions if isinstance(a, F.SetField)}
            want = routers.get(fields.get("eth_dst"), "192.168.100.254")
            assert fields.get("tun_ipv4_dst") == want, where
        assert {f["tun_ipv4_dst"] for f in (
            {a.field: a.value for a in actions if isinstance(a, F.SetField)}
            for actions, _ in overlay)} >= {node_ips["node2"]}


def test_load_balancer_source_ranges_let_their_sources_through_and_drop_the_rest(caplog):
    svc = dataclasses.replace(world.web(), type="LoadBalancer",
                              load_balancer_ips=("198.51.100.7",),
                              source_ranges=("203.0.113.0/28", "10.0.0.0/8"))
    flows, _ = fragments.flatten(world.compile_for(world.NODE1, world.state(svc)))
    assert "cannot compile" not in caplog.text
    lb = [f for f in flows.values() if f.table == 30 and
          dict(f.match).get("ipv4_dst") == "198.51.100.7" and dict(f.match).get("tcp_dst") == 80]
    allowed = sorted(dict(f.match)["ipv4_src"] for f in lb if "ipv4_src" in dict(f.match))
    assert allowed == [("10.0.0.0", "255.0.0.0"), ("203.0.113.0", "255.255.255.240")]
    (drop,) = [f for f in lb if "ipv4_src" not in dict(f.match)]
    assert drop.actions == () and drop.priority < pipeline.PRIO_SOURCE_RANGE


def test_a_service_ips_flows_share_their_match_pairs():
    """Flows are many and their (field, value) pairs repeat: the flows built
    for one service IP share its address pair, and every service's flows
    share a port's pair (at 10,000 services: 1.7 MB)."""
    st = world.state(world.web(), world.web(name="api", vip="10.96.0.77"))
    flows, _ = fragments.flatten(world.compile_for(world.NODE1, st))
    pairs = {}
    for f in flows.values():
        for pair in f.match:
            if pair[0] in ("ipv4_dst", "tcp_dst"):
                pairs.setdefault(pair, set()).add(id(pair))
    vip_pairs = [ids for pair, ids in pairs.items() if pair[0] == "ipv4_dst"
                 and pair[1] in (world.VIP, "10.96.0.77")]
    assert len(vip_pairs) == 2 and all(len(ids) == 1 for ids in vip_pairs)
    assert len(pairs[("tcp_dst", 80)]) == 1


def test_a_second_full_compile_keys_its_fragments_with_the_memos_strings():
    """A full compile again (a node change, a reconnect) builds every key
    string anew; the output must use the ones the memo holds, or 20,000
    keys live twice (1.3 MB at 10,000 services)."""
    from nsx_proxy import changes
    st = world.state(world.web(), world.web(name="api", vip="10.96.0.77"))
    comp = compiler.Compiler(world.NODE1, cookies.GroupIds())
    first, _ = comp.desired(st)
    first_keys = {id(k) for k in first}
    comp.note(changes.EVERYTHING)
    again, touched = comp.desired(st)
    assert touched is changes.ALL
    assert {id(k) for k in again} == first_keys
    assert {id(k) for k in comp._memo} == first_keys


def test_a_patch_names_the_keys_it_touched_with_the_outputs_own_objects():
    """The session keeps its installed state under the keys a patch
    touched: a new service's must be the output's own strings, or each
    lives twice (20,000 strings, 1.4 MB, when 10,000 services arrive one by
    one: bench.memory)."""
    from nsx_proxy import changes
    web = world.web()
    st1 = world.state(web)
    comp = compiler.Compiler(world.NODE1, cookies.GroupIds())
    comp.desired(st1)
    st2 = world.state(web, world.web(name="api", vip="10.96.0.77"))
    comp.note(changes.between(st1, st2))
    out, touched = comp.desired(st2)
    assert touched is not changes.ALL and len(touched) == 2
    assert {id(k) for k in touched} <= {id(k) for k in out}
