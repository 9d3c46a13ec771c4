"""Diff properties over many random cluster states, and plan ordering."""
import random

import pytest

from ryu.ofproto import ofproto_v1_3 as ofp

from controller import compiler, cookies, diff, fragments, ofmsg, pipeline
from controller import flows as F
from nsx_proxy import model, validate
import world
from world import FakeDatapath


def random_state(rng):
    services = []
    for i in range(rng.randint(0, 6)):
        eps = rng.sample(sorted(world.PODS), rng.randint(0, 4))
        svc = world.web(endpoints=eps, vip=f"10.96.0.{10 + i}", name=f"svc{i}",
                        ready=rng.random() > 0.2)
        if rng.random() < 0.3:
            # sometimes another service's cluster IP: the claim rules must
            # keep it the cluster IP's (installed() below flattens: a flow
            # two objects claim raises there)
            outside = rng.choice([f"172.16.0.{rng.randint(1, 3)}", f"10.96.0.{10 + rng.randint(0, 5)}"])
            svc = model.Service(svc.namespace, svc.name, svc.cluster_ip, svc.ports[:1],
                                external_ips=(outside,))
        services.append(svc)
    return world.state(*validate.claim_frontends(services, validate.RejectLog()))


def test_frontend_collisions_are_resolved_by_name_not_arrival():
    a = model.Service("default", "a", "10.96.0.1", world.web().ports[:1],
                      external_ips=("172.16.0.1",))
    b = model.Service("default", "b", "10.96.0.2", world.web().ports[:1],
                      external_ips=("172.16.0.1", "172.16.0.2"))
    for order in ((a, b), (b, a)):
        kept = validate.claim_frontends(order, validate.RejectLog())
        assert [s.external_ips for s in kept] == [("172.16.0.1",), ("172.16.0.2",)]


@pytest.mark.parametrize("hijacker_name,victim_name", [("a", "b"), ("b", "a")])
def test_a_cluster_ip_always_wins_over_an_external_or_lb_ip(hijacker_name, victim_name):
    """CVE-2020-8554's family: an externalIP (or LB IP) equal to another
    Service's cluster IP took that cluster IP over when its Service sorted
    first.  Whatever the names and the order, the cluster IP's Service keeps
    it whole, the other loses that IP only, and nothing reaches the switch
    twice."""
    port = world.web().ports[:1]
    victim = model.Service("default", victim_name, "10.96.0.5", port)
    hijacker = model.Service("default", hijacker_name, "10.96.0.6", port,
                             type=model.LOAD_BALANCER,
                             external_ips=("10.96.0.5", "172.16.0.9"),
                             load_balancer_ips=("10.96.0.5", "203.0.113.7"))
    for order in ((victim, hijacker), (hijacker, victim)):
        lines = []
        rejects = validate.RejectLog()
        rejects._logger = type("L", (), {"warning": lambda self, *a: lines.append(a[0] % a[1:])})()
        kept = {s.name: s for s in validate.claim_frontends(order, rejects)}
        assert kept[victim_name] is victim
        assert kept[hijacker_name].external_ips == ("172.16.0.9",)
        assert kept[hijacker_name].load_balancer_ips == ("203.0.113.7",)
        assert lines == [f"rejected service default/{hijacker_name}: IP 10.96.0.5 is the "
                         f"clusterIP of default/{victim_name}; cluster IPs always win, "
                         "ignoring that IP for this service"]
        for ctx in (world.NODE1,):
            fragments.flatten(compiler.Compiler(ctx, cookies.GroupIds()).compile(
                world.state(*kept.values())))


def test_external_ips_outside_the_allowed_cidrs_are_refused_one_line_each():
    svc = model.Service("default", "x", "10.96.0.6", world.web().ports[:1],
                        external_ips=("198.51.100.5", "203.0.113.5", "203.0.113.6"))
    lines = []
    rejects = validate.RejectLog()
    rejects._logger = type("L", (), {"warning": lambda self, *a: lines.append(a[0] % a[1:])})()
    allowed = validate.external_ip_cidrs("203.0.113.0/24, 192.0.2.0/24")
    for _ in range(3):                                  # every sync: logged once
        (kept,) = validate.claim_frontends([svc], rejects, allowed)
        assert kept.external_ips == ("203.0.113.5", "203.0.113.6")
    assert lines == ["rejected service default/x: externalIP 198.51.100.5 is outside "
                     "external_ip_cidrs; ignoring it"]
    assert validate.claim_frontends([svc], rejects)[0] is svc      # empty: any
    with pytest.raises(validate.Invalid):
        validate.external_ip_cidrs("203.0.113.0/24,nonsense")


def installed(state_):
    flows, groups = fragments.flatten(state_)
    return dict(flows), dict(groups)


@pytest.mark.parametrize("seed", range(40))
def test_diff_properties(seed):
    rng = random.Random(seed)
    ids = cookies.GroupIds()
    comp = compiler.Compiler(world.NODE1, ids)
    a = dict(comp.compile(random_state(rng)))
    b = dict(comp.compile(random_state(rng)))

    assert len(diff.diff(a, a)) == 0                      # diff(A, A) is empty

    flows, groups = installed(a)                          # A + diff(A, B) == B
    diff.apply(flows, groups, diff.diff(a, b))
    assert (flows, groups) == installed(b)

    diff.apply(flows, groups, diff.diff(b, a))            # A -> B -> A restores A
    assert (flows, groups) == installed(a)


def test_endpoint_change_is_a_group_modify_for_tcp_and_two_flows_for_udp():
    comp = compiler.Compiler(world.NODE1, cookies.GroupIds())
    a = dict(comp.compile(world.state(world.web(endpoints=("pod1", "pod3")))))
    b = dict(comp.compile(world.state(world.web(endpoints=("pod1",)))))
    plan = diff.diff(a, b)
    assert len(plan.group_modifies) == 1                  # TCP: its group, no flow
    # UDP: the frontend now picks among one endpoint, and the second pick goes
    (front,) = plan.flow_modifies
    assert F.Multipath(1, pipeline.POOL_PICK) in front.actions
    (gone,) = plan.flow_deletes
    assert gone.table == pipeline.UDP_SPREAD.id and dict(gone.match)["reg5"] == 1
    assert not (plan.flow_adds or plan.group_adds or plan.group_deletes)


def test_unrelated_services_are_never_touched():
    comp = compiler.Compiler(world.NODE1, cookies.GroupIds())
    other = world.web(name="other", vip="10.96.0.99")
    a = dict(comp.compile(world.state(other, world.web())))
    b = dict(comp.compile(world.state(other)))
    plan = diff.diff(a, b)
    touched = plan.flow_deletes + plan.group_deletes
    assert touched and all("10.96.0.99" not in F.flow_text(f) for f in plan.flow_deletes)
    assert not (plan.flow_adds or plan.flow_modifies or plan.group_modifies)


def test_resync_readds_flows_writes_every_group_whether_known_or_not_and_deletes_unknown():
    comp = compiler.Compiler(world.NODE1, cookies.GroupIds())
    want = dict(comp.compile(world.state(world.web())))
    _, groups = fragments.flatten(want)
    known = next(iter(groups))
    plan = diff.resync(want, {known, 424242})
    # ADD_OR_MOD: right whether the switch still has a group or lost it
    assert plan.groups_may_exist and not plan.group_modifies
    assert {g.group_id for g in plan.group_adds} == set(groups)
    assert [g.group_id for g in plan.group_deletes] == [424242]
    steps = ofmsg.plan_steps(plan)
    assert {cmd for kind, _, cmd in steps if kind == "group"} == \
        {ofmsg.OFPGC_ADD_OR_MOD, ofp.OFPGC_DELETE}
    assert len(plan.flow_adds) == len(fragments.flatten(want)[0])


def test_deleting_a_group_deletes_flows_pointing_to_it():
    flows = {("k",): F.flow(30, 1, (F.Group(7),))}
    flows = {f.key: f for f in flows.values()}
    plan = fragments.Plan(group_deletes=[F.SelectGroup(7)])
    diff.apply(flows, {7: F.SelectGroup(7)}, plan)
    assert flows == {}


@pytest.mark.parametrize("ctx", [world.NODE1, world.GATEWAY], ids=["node", "gateway"])
@pytest.mark.parametrize("seed", range(40))
def test_patched_compile_equals_a_fresh_compile(seed, ctx):
    """The compiler's fast paths (a node's patch, a gateway left as it is
    when no outside IP moved) give exactly what a new compiler gives."""
    rng = random.Random(1000 + seed)
    ids = cookies.GroupIds()
    comp = compiler.Compiler(ctx, ids)
    st = random_state(rng)
    for _ in range(4):
        st = random_state(rng) if rng.random() < 0.5 else \
            world.state(*[world.web(endpoints=rng.sample(sorted(world.PODS), 2),
                                    vip=s.cluster_ip, name=s.name)
                          if not s.outside_ips else s for s in st.services.values()])
        assert comp.compile(st) == compiler.Compiler(ctx, ids).compile(st)


def _learned_cookies(state_):
    return {a.cookie for frag in state_.values() for f in frag.flows for a in f.actions
            if isinstance(a, F.Learn)}


def test_learned_affinity_entries_go_with_their_service_port_or_affinity():
    """Entries a learn action made carry its cookie; when the learn flow goes
    (Service or port deleted, affinity off) or changes (timeout, frontend)
    they are deleted in the same plan.  An endpoint change keeps them."""
    import dataclasses
    comp = compiler.Compiler(world.NODE1, cookies.GroupIds())
    sticky = dataclasses.replace(world.web(), affinity_timeout=10800)
    a = dict(comp.compile(world.state(sticky)))
    learned = _learned_cookies(a)
    assert len(learned) == 2                                      # TCP and UDP ports
    cases = {
        "deleted": world.state(),
        "affinity off": world.state(world.web()),
        "timeout changed": world.state(dataclasses.replace(sticky, affinity_timeout=2)),
        "cluster IP reused by another": world.state(dataclasses.replace(
            world.web(name="newcomer"), affinity_timeout=2)),
    }
    for why, after in cases.items():
        plan = diff.diff(a, dict(comp.compile(after)))
        assert set(plan.learned_deletes) == learned, why
    one_port = dataclasses.replace(sticky, ports=sticky.ports[:1])
    plan = diff.diff(a, dict(comp.compile(world.state(one_port))))
    assert len(plan.learned_deletes) == 1, "only the removed port's entries"
    fewer = dataclasses.replace(world.web(endpoints=("pod1",)), affinity_timeout=10800)
    assert diff.diff(a, dict(comp.compile(world.state(fewer)))).learned_deletes == []


def test_learned_entries_are_deleted_by_cookie_in_table_31_whatever_their_round():
    plan = fragments.Plan(learned_deletes=[cookies.make(cookies.KIND_AFFINITY, 77)])
    (msg, item), = ofmsg.plan_messages(FakeDatapath(), plan, generation=5)
    assert item is None and msg.command == ofp.OFPFC_DELETE and msg.table_id == 31
    assert msg.cookie == cookies.make(cookies.KIND_AFFINITY, 77)
    assert msg.cookie_mask == cookies.OBJECT_MASK          # generation bits ignored
    assert ofmsg.encode(msg) is None
