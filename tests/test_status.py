"""Readiness and health, as the probes read them (pure over the app's data)."""
from types import SimpleNamespace

from controller import status
import world


def app(**kw):
    base = dict(source=None, state_received=1.0, contexts={}, switches={}, node_name="")
    base.update(kw)
    return SimpleNamespace(**base)


def test_not_ready_says_why():
    unreachable = SimpleNamespace(synced=False, reflectors=[
        SimpleNamespace(name="services", synced=False),
        SimpleNamespace(name="nodes", synced=True)])
    ok, why = status.readiness(app(source=unreachable, node_name="node7"))
    assert not ok and why == [
        "waiting for the initial lists of services (is the API server reachable?)",
        "no bridge in OVSDB is labelled for node node7"]
    ctx = world.NODE1
    ok, why = status.readiness(app(contexts={ctx.dpid: ctx}))
    assert why == ["bridge br-node1 is not connected"]
    behind = SimpleNamespace(ready=True, session=SimpleNamespace(needs_resync=True))
    ok, why = status.readiness(app(contexts={ctx.dpid: ctx}, switches={ctx.dpid: behind}))
    assert why == ["bridge br-node1 is not programmed yet"]
    done = SimpleNamespace(ready=True, session=SimpleNamespace(needs_resync=False))
    assert status.readiness(app(contexts={ctx.dpid: ctx}, switches={ctx.dpid: done})) \
        == (True, [])


def test_unhealthy_when_syncs_stop():
    runner = SimpleNamespace(last_run=100.0, max_interval=60.0)
    source = SimpleNamespace(runner=runner)
    assert status.health(app(source=source), 219.0) == (True, [])
    assert status.health(app(source=source), 221.0) == (False, ["no sync for 121 s"])
    assert status.health(app(), 1e9) == (True, [])              # no source: nothing to run
