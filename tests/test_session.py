"""Switch sessions: rounds after a restart, and quarantine of refused objects."""
from controller import cookies, names
from controller import flows as F
from controller.session import SwitchSession
from nsx_proxy import changes
import world


def session_for(ctx=world.NODE1, cookies_on_switch=(), groups=()):
    s = SwitchSession(ctx.dpid, cookies.GroupIds())
    s.learn_switch(cookies_on_switch, groups)
    s.set_context(ctx)
    return s


def test_restart_starts_a_new_round_and_plans_the_old_one_away():
    old = cookies.with_generation(cookies.make(cookies.KIND_PIPELINE, 0), 4)
    s = session_for(cookies_on_switch=[old, 0x0], groups=[99])
    assert s.generation == 5
    want, plan, stale, keys = s.plan(world.state(world.web()))
    assert keys is changes.ALL                   # a new round: everything
    assert stale == {4}
    assert [g.group_id for g in plan.group_deletes] == [99]
    assert len(plan.flow_adds) == sum(len(f.flows) for f in want.values())


def test_refused_object_is_skipped_and_the_rest_still_installs():
    s = session_for()
    good, bad = world.web(), world.web(name="bad", vip="10.96.0.66")
    st = world.state(good, bad)
    want, plan, _, keys = s.plan(st)
    culprit = next(g for g in plan.group_adds
                   if any("10.96.0.66" in F.flow_text(f)
                          for f in want[names.service_key(bad.key)].flows
                          if F.Group(g.group_id) in f.actions))
    s.failed(want, plan, [culprit], "error type=1 code=2")
    want, plan, _, keys = s.plan(st)
    assert names.service_key(bad.key) not in want and names.service_key(good.key) in want
    s.committed(want, keys, full=s.needs_resync)
    # once the object changes it is tried again
    fixed = world.web(name="bad", vip="10.96.0.66", endpoints=("pod2",))
    s.note(changes.between(st, world.state(good, fixed)))
    want, plan, _, keys = s.plan(world.state(good, fixed))
    assert names.service_key(fixed.key) in want and plan.group_adds


def test_a_refusal_nobody_can_be_blamed_for_forces_a_resync():
    s = session_for()
    want, plan, _, keys = s.plan(world.state(world.web()))
    s.committed(want, keys, full=s.needs_resync)
    s.failed(want, plan, [], "switch disconnected")
    assert s.needs_resync
