"""Services with thousands of endpoints: split into groups that each fit one
OpenFlow message, with every endpoint reachable and equally likely."""
import collections
import dataclasses

import pytest

from controller import fragments, names, ofmsg, pipeline
from controller import flows as F
from controller.fragments import Plan
from controller.split_pool import split_pool
from nsx_proxy import model
import world
from world import FakeDatapath, big_service, big_state as state

OF_MAX = 65535


def test_parts_are_a_power_of_two_balanced_and_cover_every_endpoint():
    assert names.parts_for(512, 512) == 1 and names.parts_for(513, 512) == 2
    assert names.parts_for(5000, 512) == 16
    endpoints = list(range(5000))
    parts = split_pool(endpoints)
    assert len(parts) == 16 and sorted(x for p in parts for x in p) == endpoints
    assert {len(p) for p in parts} == {312, 313}
    assert split_pool(list(range(3))) == [(0, 1, 2)]            # small pools: one group


@pytest.mark.parametrize("n,affinity", [(1000, None), (5000, None), (1200, 600)])
def test_every_message_fits_and_every_endpoint_is_reachable(n, affinity):
    st = state(big_service(n, affinity))
    want = world.compile_for(world.NODE1, st)
    flows, groups = fragments.flatten(want)
    big = [g for g in groups.values() if g.buckets]
    assert sum(len(g.buckets) for g in big) == n
    assert all(len(g.buckets) <= pipeline.MAX_BUCKETS_PER_GROUP for g in big)
    dp = FakeDatapath()
    plan = Plan(group_adds=list(groups.values()), flow_adds=list(flows.values()))
    sizes = []
    for msg, _ in ofmsg.plan_messages(dp, plan, 1):
        msg.serialize()
        sizes.append(len(msg.buf))
    assert max(sizes) <= OF_MAX
    # Source ports pick the part (their low bits); every part's group, and so
    # every endpoint, is reachable - and each part is reached by 1/P of ports.
    import fakeswitch
    sw = fakeswitch.FakeSwitch("br-node1")
    sw.apply(plan)
    reached, per_part = set(), collections.Counter()
    parts = len(big)
    for sport in range(40000, 40000 + 4 * parts):
        # a new client each time: forget what session affinity learned
        sw.flows = {k: f for k, f in sw.flows.items()
                    if f.table != pipeline.SESSION_AFFINITY.id}
        outs = sw.send(fakeswitch.tcp("10.1.1.2", "10.96.5.5", 80, sport=sport,
                                      eth_src=world.PODS["pod1"].mac), in_port=1)
        got = {o.packet["ipv4_dst"] for o in outs}
        per_part[frozenset(got)] += 1
        reached |= got
    assert len(reached) == n
    assert len(per_part) == parts and set(per_part.values()) == {4}


def _endpoints(svc):
    return svc.ports[0].endpoints


def _with(svc, endpoints):
    port = svc.ports[0]
    return dataclasses.replace(svc, ports=(dataclasses.replace(port, endpoints=endpoints),))


@pytest.mark.parametrize("affinity", [None, 600])
def test_an_endpoint_change_rewrites_one_or_two_parts_not_the_pool(affinity):
    """The parts keep their buckets across changes: a removed endpoint
    rewrites its part (and at most one more, to stay balanced), an added one
    the smallest part, a replaced one (a rolling update) its own part."""
    from controller.compiler import Compiler
    from controller import diff
    svc = big_service(5000, affinity)
    comp = Compiler(world.NODE1, world.cookies.GroupIds())
    last = comp.compile(state(svc))
    eps = list(_endpoints(svc))
    new_ep = model.Endpoint(ip="10.2.30.2", port=8080, node="node2")
    steps = [("remove", eps[:17] + eps[18:], 2),
             ("add back", eps, 1),
             ("replace", eps[:4000] + [new_ep] + eps[4001:], 2),
             ("remove three", eps[3:4000] + [new_ep] + eps[4001:], 6)]
    for what, endpoints, most in steps:
        now = comp.compile(state(_with(svc, tuple(endpoints))))
        plan = diff.diff(last, now)
        assert not plan.group_adds and not plan.group_deletes, what
        assert 1 <= len(plan.group_modifies) <= most, (what, len(plan.group_modifies))
        if affinity is None:
            assert not plan.flow_adds and not plan.flow_deletes, what
        groups = [g for g in fragments.flatten(now)[1].values() if g.buckets]
        assert sum(len(g.buckets) for g in groups) == len(endpoints), what
        assert max(len(g.buckets) for g in groups) - \
            min(len(g.buckets) for g in groups) <= 1, what
        last = now


def test_the_split_stays_balanced_and_complete_through_any_churn():
    """Seeded churn over a pool that grows past and shrinks below the split:
    every layout holds each bucket once, in parts within one of each other,
    and a step rewrites no more parts than it adds and removes buckets (plus
    one to rebalance per removal)."""
    import random
    rng = random.Random(12)
    pool = list(range(3000))
    fresh = iter(range(10_000, 1_000_000))
    parts = split_pool(pool)
    for step in range(300):
        gone = rng.sample(pool, rng.randint(0, min(len(pool), 40)))
        added = [next(fresh) for _ in range(rng.randint(0, 40 if step < 150 else 5))]
        pool = [b for b in pool if b not in set(gone)] + added
        new = split_pool(pool, parts)
        assert sorted(b for p in new for b in p) == sorted(pool)
        assert max(map(len, new)) - min(map(len, new)) <= 1
        assert max(map(len, new)) <= pipeline.MAX_BUCKETS_PER_GROUP
        if len(new) == len(parts):
            changed = sum(1 for a, b in zip(parts, new) if a != b)
            assert changed <= len(gone) * 2 + len(added)
        parts = new
    assert split_pool(list(range(5))) == [tuple(range(5))]


def test_a_pool_that_shrinks_below_the_split_frees_its_extra_groups():
    from controller.compiler import Compiler
    from controller import diff
    ids = world.cookies.GroupIds()
    comp = Compiler(world.NODE1, ids)
    before = comp.compile(state(big_service(1000)))
    plan = diff.diff(before, comp.compile(state(big_service(10))))
    assert len(plan.group_deletes) == 1 and len(plan.group_modifies) == 1
    text = [F.flow_text(f) for f in plan.flow_adds + plan.flow_modifies]
    assert all("tp_src" not in t for t in text)


def test_affinity_pools_of_5000_fit_too():
    flows, groups = fragments.flatten(world.compile_for(world.NODE1,
                                                        state(big_service(5000, 600))))
    plan = Plan(group_adds=list(groups.values()), flow_adds=list(flows.values()))
    for msg, _ in ofmsg.plan_messages(FakeDatapath(), plan, 1):
        msg.serialize()
        assert len(msg.buf) <= OF_MAX
    assert max(len(g.buckets) for g in groups.values()) <= pipeline.MAX_BUCKETS_PER_GROUP
