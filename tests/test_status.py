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


def test_the_probe_ports_healthz_gives_kube_proxys_verdict():
    """Healthy while starting up and while changes are programmed in time;
    503 with the reason once a change has waited two of the longest sync
    periods (max_sync_period 60: 120 s) - the API event's own wait counts."""
    from controller.app import ServiceProxy
    from nsx_proxy import healthcheck
    proxy = SimpleNamespace(source=SimpleNamespace(pending_since=None), _queued_since=None,
                            conf=SimpleNamespace(max_sync_period=60.0))
    verdict = lambda now: ServiceProxy.proxy_health(proxy, now)     # noqa: E731
    assert verdict(1e6) == (True, [])                         # nothing waiting
    proxy._queued_since = 100.0                               # handed to the switches
    assert verdict(219.9) == (True, [])
    assert verdict(220.0) == (False, ["a change has waited 120 s to be programmed "
                                      "(more than 120 s)"])
    proxy._queued_since, proxy.source.pending_since = None, 50.0   # stuck before that
    assert not verdict(170.0)[0]
    assert healthcheck.proxy_health(None, 1e9, 1.0) == (True, [])
    handle = status.wsgi_app(SimpleNamespace(proxy_health=verdict), None, clock=lambda: 220.0)
    seen = []
    body = handle({"PATH_INFO": "/healthz"}, lambda code, headers: seen.append(code))
    assert seen == ["503 Service Unavailable"] and b"waited 170 s" in body[0]


