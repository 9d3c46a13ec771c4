"""The watch loop and the source against a local API server (no mocks of the client)."""
import time

import pytest

from kube_helpers import WEB, Recorder, add_node, add_pod, service
from nsx_proxy import model
from nsx_proxy.kube_source import KubeSource, api_client
from nsx_proxy.runner import BoundedFrequencyRunner, thread_hub
from topologies.apiserver.kinds import RESOURCES
from topologies.waiting import wait_for

SVC, PODS = RESOURCES["services"], RESOURCES["pods"]


SOURCES = []


@pytest.fixture(autouse=True)
def _stop_sources(request):
    """Sources stop before the API server they watch (conftest's ``server``)."""
    if "server" in request.fixturenames:
        request.getfixturevalue("server")
    yield
    while SOURCES:
        SOURCES.pop().stop()


def make_source(server, **kw):
    rec = Recorder()
    kw.setdefault("min_interval", 0.05)
    src = KubeSource(api_client(server.kubeconfig_path), rec, thread_hub(), **kw)
    for r in src.reflectors:
        r.backoff = (0.05, 0.5)
    SOURCES.append(src)
    return src, rec


def populate(api):
    add_node(api, "node1", "192.168.100.1", "10.1.1.0/24")
    api.create(SVC, "default", service("web", {"app": "web"}))
    add_pod(api, "a", "10.1.1.2")


def test_delivers_only_after_every_list_then_follows_changes(server):
    populate(server.api)
    src, rec = make_source(server)
    assert src.sync() is None and rec.last is None       # nothing listed yet: no state
    src.start()
    wait_for(lambda: rec.endpoints() == ["10.1.1.2"], 5, what="first state")
    assert rec.states[0].services, "the first state delivered already has the services"
    assert list(rec.last.nodes) == ["node1"]
    add_pod(server.api, "b", "10.1.1.3")
    wait_for(lambda: rec.endpoints() == ["10.1.1.2", "10.1.1.3"], 5, what="new endpoint")
    server.api.delete(SVC, "default", "web")
    wait_for(lambda: WEB not in rec.last.services, 5, what="service removal")


def test_unchanged_services_keep_their_object(server):
    populate(server.api)
    server.api.create(SVC, "default", service("db", {"app": "db"}))
    src, rec = make_source(server)
    src.start()
    wait_for(lambda: rec.endpoints() == ["10.1.1.2"], 5, what="first state")
    db = rec.last.services[model.ServiceKey("default", "db")]
    add_pod(server.api, "b", "10.1.1.3")
    wait_for(lambda: rec.endpoints() == ["10.1.1.2", "10.1.1.3"], 5, what="new endpoint")
    assert rec.last.services[model.ServiceKey("default", "db")] is db


def test_api_server_restart_resumes_and_410_relists(server):
    populate(server.api)
    src, rec = make_source(server)
    src.start()
    wait_for(lambda: rec.endpoints() == ["10.1.1.2"], 5, what="first state")
    server.stop()
    server.api.delete(PODS, "default", "a", grace=0)    # changes while it is down
    add_pod(server.api, "b", "10.1.1.3")
    server.start()
    wait_for(lambda: rec.endpoints() == ["10.1.1.3"], 10, what="resumed watch")
    assert all(r.lists == 1 for r in src.reflectors), "a resumable watch must not relist"
    server.stop()
    server.api.create(SVC, "default", service("late", {"app": "web"}))
    server.api.delete(SVC, "default", "web")
    server.api.store.compact()                           # history gone: 410 on resume
    server.start()
    wait_for(lambda: WEB not in rec.last.services
             and model.ServiceKey("default", "late") in rec.last.services, 10,
             what="relist after 410")
    assert src.reflectors[0].lists == 2


def test_bookmarks_advance_the_resource_version(server):
    populate(server.api)
    src, rec = make_source(server)
    src.start()
    wait_for(lambda: rec.last is not None, 5, what="first state")
    nodes = src.reflectors[2]
    before = int(nodes.resource_version)
    add_pod(server.api, "b", "10.1.1.3")                 # writes that are not nodes
    wait_for(lambda: int(nodes.resource_version) > before, 5, what="a bookmark")


def test_bad_objects_are_skipped_one_by_one(server, caplog):
    populate(server.api)
    # Objects the API server would refuse can still arrive (older servers,
    # other writers); inject them into the store directly.
    server.api.store.commit("services", "ADDED", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": "broken"},
        "spec": {"clusterIP": "10.96.0.300", "ports": [{"port": 80}]}})
    server.api.store.commit("nodes", "ADDED", {"metadata": {"name": "nocidr"}, "spec": {},
                                               "status": {"addresses": [
                                                   {"type": "InternalIP",
                                                    "address": "192.168.100.9"}]}})
    server.api.create(SVC, "default", service("headless", {"app": "web"}, clusterIP="None"))
    src, rec = make_source(server)
    src.start()
    wait_for(lambda: rec.endpoints() == ["10.1.1.2"], 5, what="first state")
    assert set(rec.last.services) == {WEB} and set(rec.last.nodes) == {"node1"}
    assert "rejected service default/broken: clusterIP '10.96.0.300' is not an IP" in caplog.text
    assert "rejected node nocidr: has no IPv4 podCIDR yet" in caplog.text
    assert "headless" not in caplog.text


def test_a_burst_of_1000_events_becomes_a_few_syncs(server):
    populate(server.api)
    src, rec = make_source(server, min_interval=0.5)
    src.start()
    wait_for(lambda: rec.last is not None, 5, what="first state")
    before, started = src.syncs, time.monotonic()
    for i in range(1000):
        server.api.create(SVC, "default", service(f"s{i}"))
    wait_for(lambda: len(rec.last.services) == 1001, 20, what="all services")
    elapsed = time.monotonic() - started
    # At most one sync per min_interval while the burst lasts (plus the
    # first and the last): a few, not 1,000.
    assert src.syncs - before <= elapsed / 0.5 + 2
    assert src.syncs - before < 50


def test_runner_bounds_the_frequency():
    runs = []
    runner = BoundedFrequencyRunner("t", lambda: runs.append(1), thread_hub(),
                                    min_interval=0.2, max_interval=0.3)
    runner.start()
    for _ in range(50):
        runner.request()
    wait_for(lambda: len(runs) >= 1, 2, what="first run")
    wait_for(lambda: len(runs) >= 3, 2, what="periodic runs with no request")


def _raw_slice(service, ip, ready=True, rv="1"):
    return {"metadata": {"namespace": "default", "name": f"{service}-1", "resourceVersion": rv,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}}]}


def test_collision_rules_still_hold_when_only_endpoints_change():
    """The fast path (no frontend changed) must give what a full pass gives."""
    rec = Recorder()
    src = KubeSource(api_client_for_tests(), rec, thread_hub())
    for r in src.reflectors:
        r.synced = True
    src.cache.replace_services([
        service("a", vip="10.96.0.1", externalIPs=["198.51.100.1"], rv="1"),
        service("b", vip="10.96.0.2", externalIPs=["198.51.100.1"], rv="1"),
        service("c", vip="10.96.0.1", rv="1")])                      # clusterIP taken
    src.cache.replace_slices([_raw_slice("b", "10.1.1.2")])
    first = src.sync()
    b = model.ServiceKey("default", "b")
    assert first.services[b].external_ips == ()                     # lost to "a"
    assert model.ServiceKey("default", "c") not in first.services
    src.cache.slice_event("MODIFIED", _raw_slice("b", "10.1.1.3", rv="2"))
    src.cache.service_event("MODIFIED", service("c", vip="10.96.0.1", rv="2"))
    second = src.sync()
    assert second.services[b].external_ips == ()
    assert [e.ip for e in second.services[b].ports[0].endpoints] == ["10.1.1.3"]
    assert model.ServiceKey("default", "c") not in second.services
    assert second.services[model.ServiceKey("default", "a")] is \
        first.services[model.ServiceKey("default", "a")]
    assert rec.changes[-1].services == {b}          # the change set names only b
    src.cache.service_event("DELETED", service("a", vip="10.96.0.1", rv="1"))  # frontends change:
    third = src.sync()                                              # full pass again
    assert third.services[b].external_ips == ("198.51.100.1",)
    assert model.ServiceKey("default", "c") in third.services
    # b and c were not touched by the event, but the rules changed them
    assert rec.changes[-1].services == {model.ServiceKey("default", n) for n in "abc"}


def api_client_for_tests():
    from kubernetes import client
    return client.ApiClient()


def test_a_failed_load_balancer_status_write_is_logged_and_retried(server, caplog):
    from kubernetes import client
    from nsx_proxy import lb_ipam
    populate(server.api)
    ipam = lb_ipam.Ipam(lb_ipam.parse_pools("default=198.51.100.0/30"), "default")
    src, rec = make_source(server, ipam=ipam)
    real = src.lb_writer._core.patch_namespaced_service_status
    calls = []

    def flaky(name, namespace, body):          # the API refuses the first write
        calls.append(name)
        if len(calls) == 1:
            raise client.ApiException(status=500, reason="etcd is unhappy")
        return real(name, namespace, body)
    src.lb_writer._core.patch_namespaced_service_status = flaky
    src.start()
    server.api.create(SVC, "default", service("lb", {"app": "web"}, type_="LoadBalancer"))
    key = model.ServiceKey("default", "lb")
    wait_for(lambda: rec.last and key in rec.last.services
             and rec.last.services[key].load_balancer_ips == ("198.51.100.1",), 10,
             what="the IP written on the second try")
    lines = [r.getMessage() for r in caplog.records
             if "cannot write load-balancer status" in r.getMessage()]
    assert len(lines) == 1 and "default/lb" in lines[0] and "etcd is unhappy" in lines[0]
    assert calls == ["lb", "lb"]


def test_the_lb_writer_plans_only_when_a_load_balancer_could_be_affected(server):
    """An endpoint change of a ClusterIP Service does not walk every Service
    for the pool plan (at 10,000 Services that walk was most of its cost);
    a new LoadBalancer, a namespace change or a failed write do."""
    from nsx_proxy import lb_ipam
    populate(server.api)
    ipam = lb_ipam.Ipam(lb_ipam.parse_pools("default=198.51.100.0/30"), "default")
    plans = []
    real = ipam.plan
    ipam.plan = lambda *a, **kw: plans.append(1) or real(*a, **kw)
    src, rec = make_source(server, ipam=ipam)
    src.start()
    wait_for(lambda: rec.endpoints() == ["10.1.1.2"], 5, what="first state")
    first = len(plans)
    add_pod(server.api, "b", "10.1.1.3")                    # web's endpoints change
    wait_for(lambda: rec.endpoints() == ["10.1.1.2", "10.1.1.3"], 5, what="the endpoint")
    assert len(plans) == first
    server.api.create(SVC, "default", service("lb", {"app": "web"}, type_="LoadBalancer"))
    key = model.ServiceKey("default", "lb")
    wait_for(lambda: key in rec.last.services and rec.last.services[key].load_balancer_ips,
             5, what="an IP for the new LoadBalancer")
    assert len(plans) > first
    settled = len(plans)
    server.api.patch(RESOURCES["namespaces"], None, "default", "application/merge-patch+json",
                     b'{"metadata": {"labels": {"x": "y"}}}')
    wait_for(lambda: len(plans) > settled, 5, what="a plan after a namespace change")


def test_a_junk_ingress_item_costs_only_its_own_service(server, caplog):
    """One Service whose status.loadBalancer.ingress holds a string made every
    sync raise in the LB writer, and a Service created in the same run was
    never programmed.  Now: that Service alone is named, the other goes live."""
    from nsx_proxy import lb_ipam
    populate(server.api)
    ipam = lb_ipam.Ipam(lb_ipam.parse_pools("default=198.51.100.0/30"), "default")
    src, rec = make_source(server, ipam=ipam)
    src.start()
    wait_for(lambda: rec.endpoints() == ["10.1.1.2"], 5, what="first state")
    server.api.create(SVC, "default", service("bad", {"app": "web"}, type_="LoadBalancer"))
    server.api.update(SVC, "default", "bad",
                      {"status": {"loadBalancer": {"ingress": ["198.51.100.3"]}}}, "status")
    server.api.create(SVC, "default", service("fresh", {"app": "web"}))
    fresh = model.ServiceKey("default", "fresh")
    wait_for(lambda: fresh in rec.last.services and rec.last.services[fresh].ports[0].endpoints,
             5, what="the Service created next to the broken one")
    assert src.runner.failures == 0
    assert any("default/bad" in r.getMessage() and "not an object" in r.getMessage()
               for r in caplog.records)


def test_a_sync_whose_consumer_raises_loses_nothing(server):
    """Rule: a change is done only once it has been handed on.  The consumer
    raises on the state that first holds a new Service; the runner retries
    by itself and the next delivery carries that Service in its change set."""
    populate(server.api)
    rec = Recorder()
    failed = []

    def consumer(state, change):
        if model.ServiceKey("default", "fresh") in state.services and not failed:
            failed.append(change)
            raise RuntimeError("the consumer broke")
        rec(state, change)
    src = KubeSource(api_client(server.kubeconfig_path), consumer, thread_hub(),
                     min_interval=0.05)
    src.runner.retry_interval = 0.2
    SOURCES.append(src)
    src.start()
    wait_for(lambda: rec.endpoints() == ["10.1.1.2"], 5, what="first state")
    server.api.create(SVC, "default", service("fresh", {"app": "web"}))
    fresh = model.ServiceKey("default", "fresh")
    wait_for(lambda: rec.last and fresh in rec.last.services, 5,
             what="the retry, without any new event")
    assert failed and src.runner.failures == 1
    assert any(fresh in c.services for c in rec.changes[-2:])


def test_a_build_that_raises_gives_its_marks_back(monkeypatch):
    """A step of the build that raises (here the claim rules) leaves every
    change pending: the next build has the Service and names it changed."""
    from nsx_proxy import validate
    from nsx_proxy.kube_cache import KubeCache
    from nsx_proxy.state_builder import StateBuilder
    cache, builder = KubeCache(), StateBuilder(validate.RejectLog())
    cache.replace_services([service("web", vip="10.96.0.1", rv="1")])
    builder.build(cache)
    builder.delivered()
    cache.service_event("ADDED", service("fresh", vip="10.96.0.2", rv="2"))
    real = validate.claim_frontends
    monkeypatch.setattr(validate, "claim_frontends",
                        lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        builder.build(cache)
    monkeypatch.setattr(validate, "claim_frontends", real)
    state, change = builder.build(cache)
    fresh = model.ServiceKey("default", "fresh")
    assert fresh in state.services and fresh in change.services


def test_a_change_not_delivered_is_part_of_the_next_change_set():
    from nsx_proxy import validate
    from nsx_proxy.kube_cache import KubeCache
    from nsx_proxy.state_builder import StateBuilder
    cache, builder = KubeCache(), StateBuilder(validate.RejectLog())
    cache.replace_services([service("web", vip="10.96.0.1", rv="1")])
    builder.build(cache)
    builder.delivered()
    cache.service_event("ADDED", service("fresh", vip="10.96.0.2", rv="2"))
    builder.build(cache)                 # built, but the consumer raised: not delivered
    cache.service_event("MODIFIED", service("web", vip="10.96.0.1", rv="3",
                                            ports=(("http", "TCP", 81, 8080),)))
    _, change = builder.build(cache)
    assert change.services == {model.ServiceKey("default", "fresh"),
                               model.ServiceKey("default", "web")}
    assert builder.last_dirty >= {model.ServiceKey("default", "fresh")}
    builder.delivered()
    _, change = builder.build(cache)
    assert not change


def test_kube_proxys_label_selector_filters_services_and_slices_server_side(server):
    """kube-proxy lists Services and EndpointSlices with
    !service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name;
    so do we: such objects never reach the cache, and one that gains the
    label later leaves it (the watch says DELETED) and stops being proxied."""
    from nsx_proxy.kube_source import SERVICE_SELECTOR
    assert SERVICE_SELECTOR == ("!service.kubernetes.io/headless,"
                                "!service.kubernetes.io/service-proxy-name")
    populate(server.api)
    other = service("other", {"app": "web"})
    other["metadata"]["labels"] = {"service.kubernetes.io/service-proxy-name": "theirs"}
    server.api.create(SVC, "default", other)
    tagged = service("tagged", {"app": "web"})
    tagged["metadata"]["labels"] = {"service.kubernetes.io/headless": ""}
    server.api.create(SVC, "default", tagged)
    src, rec = make_source(server)
    src.start()
    wait_for(lambda: rec.endpoints() == ["10.1.1.2"], 5, what="first state")
    keys = {k.name for k in src.cache.services}
    assert keys == {"web"}, keys
    assert all(k[1].startswith("web") for k in src.cache.slices), src.cache.slices
    server.api.patch(SVC, "default", "web", "application/merge-patch+json",
                     b'{"metadata": {"labels": {"service.kubernetes.io/service-proxy-name":'
                     b' "theirs"}}}')
    wait_for(lambda: WEB not in rec.last.services, 5, what="web handed to another proxy")
    assert not src.cache.services


def test_slice_trigger_times_travel_with_the_change_set():
    """endpoints.kubernetes.io/last-change-trigger-time of changed slices, as
    kube-proxy reads it: RFC 3339 with nanoseconds, not for deletions, not
    from before the cache started (the initial list)."""
    from nsx_proxy import validate
    from nsx_proxy.kube_cache import TRIGGER_TIME_ANNOTATION, KubeCache, trigger_time
    from nsx_proxy.state_builder import StateBuilder
    assert trigger_time({"metadata": {"annotations": {
        TRIGGER_TIME_ANNOTATION: "2026-12-06T03:00:00.123456789Z"}}}) == 1796526000.123456
    for junk in ("yesterday", 7, "", None):
        assert trigger_time({"metadata": {"annotations": {TRIGGER_TIME_ANNOTATION: junk}}}) \
            is None
    cache, builder = KubeCache(started=1796526000.0), StateBuilder(validate.RejectLog())
    old = _raw_slice("web", "10.1.1.2")
    old["metadata"]["annotations"] = {TRIGGER_TIME_ANNOTATION: "2026-12-06T02:59:59Z"}
    cache.replace_services([service("web", vip="10.96.0.1", rv="1")])
    cache.replace_slices([old])
    _, change = builder.build(cache)
    assert change.trigger_times == ()                 # from before we started
    builder.delivered()
    new = _raw_slice("web", "10.1.1.3", rv="2")
    new["metadata"]["annotations"] = {TRIGGER_TIME_ANNOTATION: "2026-12-06T03:00:01.5Z"}
    cache.slice_event("MODIFIED", new)
    _, change = builder.build(cache)
    assert change.trigger_times == (1796526001.5,)
    builder.delivered()
    cache.slice_event("DELETED", new)
    _, change = builder.build(cache)
    assert change.trigger_times == ()


def test_a_failing_run_is_retried_with_a_doubling_interval_up_to_max_interval():
    runs = []

    def run():
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("still broken")
    runner = BoundedFrequencyRunner("sync", run, thread_hub(), min_interval=0.0,
                                    max_interval=0.4, retry_interval=0.05)
    delays = []
    for failed in range(1, 6):
        runner._failing = failed
        delays.append(runner._retry_in())
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.4]
    runner._failing = 0
    runner.start()
    runner.request()                       # once: the retries need no request
    wait_for(lambda: len(runs) == 3, 5, what="two retries, then a good run")
    runner.stop()
    assert runner.failures == 2 and runner._failing == 0


def test_a_list_is_packed_page_by_page_and_a_list_failing_half_way_changes_nothing():
    """The reflector hands the cache the list's pages as they come (so the
    dicts of 10,000 objects never live at once); the cache swaps its
    contents only after the last page."""
    import json as _json
    from types import SimpleNamespace
    from nsx_proxy.kube_cache import KubeCache
    from nsx_proxy.reflector import Reflector

    def svc(name, rv):
        return {"metadata": {"namespace": "default", "name": name, "resourceVersion": rv},
                "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}}

    pages = {None: ([svc("a", "1"), svc("b", "1")], "p2"), "p2": ([svc("c", "1")], None)}
    calls = []

    def list_fn(limit, _continue=None, **_):
        calls.append((limit, _continue))
        if _continue == "broken":
            raise OSError("connection reset")
        items, cont = pages[_continue]
        meta = {"resourceVersion": "9"}
        if cont:
            meta["continue"] = cont
        return SimpleNamespace(data=_json.dumps({"items": items, "metadata": meta}))

    cache = KubeCache()
    Reflector("services", list_fn, cache.replace_services, None, None, page_size=2).list_once()
    assert calls == [(2, None), (2, "p2")]
    assert sorted(k.name for k in cache.services) == ["a", "b", "c"]
    assert cache.services[next(iter(cache.services))]["spec"]["clusterIP"] == "10.96.0.1"
    pages[None] = ([svc("a", "2")], "broken")                 # the next list breaks
    with pytest.raises(OSError):
        Reflector("services", list_fn, cache.replace_services, None, None,
                  page_size=2).list_once()
    assert sorted(k.name for k in cache.services) == ["a", "b", "c"]   # as they were
    assert {cache.services.version(k) for k in cache.services} == {"1"}


def test_a_list_body_broken_after_some_items_changes_nothing_and_junk_items_are_one_line(
        caplog):
    """Items are decoded and packed one at a time (nsx_proxy/list_items), so a
    body that breaks after some of them has already handed those over: the
    cache must still keep its old contents.  Items that are not objects are
    skipped with one line for the page."""
    from types import SimpleNamespace
    from nsx_proxy.kube_cache import KubeCache
    from nsx_proxy.reflector import Reflector

    body = {"now": b'{"metadata": {"resourceVersion": "5"}, "items": ['
                   b'{"metadata": {"namespace": "d", "name": "a", "resourceVersion": "1"}},'
                   b' 7, "x", null,'
                   b'{"metadata": {"namespace": "d", "name": "b", "resourceVersion": "1"}}]}'}
    cache = KubeCache()
    reflector = Reflector("services", lambda **_: SimpleNamespace(data=body["now"]),
                          cache.replace_services, None, None)
    with caplog.at_level("WARNING"):
        reflector.list_once()
    assert sorted(k.name for k in cache.services) == ["a", "b"]
    assert reflector.resource_version == "5"
    lines = [r.getMessage() for r in caplog.records if "not objects" in r.getMessage()]
    assert lines == ["services: 3 listed items are not objects; skipped"]
    body["now"] = (b'{"metadata": {"resourceVersion": "6"}, "items": ['
                   b'{"metadata": {"namespace": "d", "name": "c", "resourceVersion": "1"}},'
                   b'{"metadata": {"namespace": "d", "name": "b", "resourceVersion": "2"}} ]')
    with pytest.raises(ValueError):
        reflector.list_once()
    assert sorted(k.name for k in cache.services) == ["a", "b"]
    assert reflector.resource_version == "5"


def test_the_cache_keeps_what_the_proxy_reads_and_drops_what_it_never_does():
    """client-go's transform: managedFields, kubectl's last-applied
    annotation, uids and owner references are most of a real object's bytes
    (a Service written by kubectl apply: 1,381 bytes packed whole, 459
    slimmed).  The translation of what is kept is the translation of the
    whole object, and the caller's object is left as it was."""
    import copy
    import marshal
    from nsx_proxy import translate, validate
    from nsx_proxy.kube_cache import KubeCache

    managed = [{"manager": "kubectl-client-side-apply", "operation": "Update",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:ports": {}}}}]
    svc = {"metadata": {
        "name": "web", "namespace": "shop", "uid": "0f1e2d3c-4b5a", "resourceVersion": "7",
        "creationTimestamp": "2026-11-01T10:00:00Z", "managedFields": managed,
        "labels": {"app": "web"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}\n",
                        "service.kubernetes.io/topology-mode": "Auto"}},
        "spec": {"clusterIP": "10.96.12.34", "type": "LoadBalancer",
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}}
    sl = {"addressType": "IPv4", "metadata": {
        "name": "web-abcde", "namespace": "shop", "uid": "2b3c", "resourceVersion": "9",
        "generation": 7, "managedFields": managed,
        "labels": {"kubernetes.io/service-name": "web"},
        "annotations": {"endpoints.kubernetes.io/last-change-trigger-time":
                        "2026-11-01T10:00:01Z"},
        "ownerReferences": [{"kind": "Service", "name": "web", "uid": "0f1e2d3c-4b5a"}]},
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.1.1.5"], "nodeName": "node1", "zone": "z1",
                       "conditions": {"ready": True}, "hints": {"forZones": [{"name": "z1"}]},
                       "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-1",
                                     "uid": "1a2b3c4d"}}]}
    given = copy.deepcopy((svc, sl))
    cache = KubeCache(started=0)
    cache.service_event("ADDED", svc)
    cache.slice_event("ADDED", sl)
    assert (svc, sl) == given                                   # not touched
    key = model.ServiceKey("shop", "web")
    kept_svc, (kept_slice,) = cache.services[key], cache.slices_of(key)
    assert "managedFields" not in kept_svc["metadata"] and "uid" not in kept_svc["metadata"]
    assert kept_svc["metadata"]["annotations"] == {"service.kubernetes.io/topology-mode": "Auto"}
    assert "ownerReferences" not in kept_slice["metadata"]
    assert kept_slice["endpoints"][0]["targetRef"] == {"kind": "Pod", "namespace": "shop",
                                                       "name": "web-1"}
    assert cache.services.version(key) == "7" and cache.trigger_times
    rejects = validate.RejectLog()
    assert translate.service(kept_svc, [kept_slice], rejects.reject) == \
        translate.service(svc, [sl], rejects.reject)
    assert len(marshal.dumps(kept_svc)) < len(marshal.dumps(svc))


def test_a_packed_object_keeps_its_version_in_its_own_bytes_and_a_relist_compares_it():
    """Packed keeps one bytes object per object (the resourceVersion
    marshalled first), not a tuple and a string beside it: 2,000 slices
    cost little more than their marshalled bytes.  Versions compare as
    before, exactly, odd ones too (a number, a long string): equal ones are
    not translated again, changed ones are."""
    import marshal
    import sys
    from nsx_proxy.kube_cache import KubeCache, Packed, slim

    def sl(i, rv):
        return {"metadata": {"name": f"web-{i}", "namespace": "shop", "resourceVersion": rv,
                             "labels": {"kubernetes.io/service-name": f"web{i}"}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"addresses": [f"10.1.{i % 250}.{k}"], "nodeName": "node1",
                               "conditions": {"ready": True}} for k in range(5)]}
    objs = [sl(i, str(1000000 + i)) for i in range(2000)]
    packed = Packed(((o["metadata"]["name"], o) for o in objs))

    def held(value):      # what an entry keeps alive (a list's dicts are dropped)
        return sys.getsizeof(value) + (sum(map(sys.getsizeof, value))
                                       if isinstance(value, tuple) else 0)
    kept = sum(map(held, packed._blobs.values()))
    marshalled = sum(len(marshal.dumps(slim(o))) for o in objs)
    assert kept < marshalled + 64 * len(objs), (kept, marshalled)   # was + 147 each
    assert packed["web-7"] == objs[7] and packed.version("web-7") == "1000007"
    assert packed.version("nope") is None

    odd = {"n": sl(1, 5), "long": sl(2, "9" * 300), "none": sl(3, None)}
    packed = Packed(odd.items())
    assert [packed[k] for k in odd] == list(odd.values())
    assert (packed.version("n"), packed.version("long"), packed.version("none")) == \
        (5, "9" * 300, None)

    cache = KubeCache(started=0)
    svc = {"metadata": {"name": "web1", "namespace": "shop", "resourceVersion": "7"},
           "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}}
    slices = [sl(1, "8"), sl(2, "9" * 300)]
    slices[1]["metadata"]["labels"]["kubernetes.io/service-name"] = "web2"
    cache.replace_services([svc])
    cache.replace_slices(slices)
    cache.take_dirty()
    cache.replace_services([svc])                  # the same versions: nothing to do
    cache.replace_slices(slices)
    assert cache.take_dirty()[0] == set()
    slices[1]["metadata"]["resourceVersion"] = "9" * 299 + "8"
    cache.replace_slices(slices)
    assert cache.take_dirty()[0] == {model.ServiceKey("shop", "web2")}


def test_the_reflector_lists_as_client_go_does_from_the_cache_then_consistently_after_410():
    """First list at resourceVersion 0 (kube-apiserver's watch cache, no etcd
    read for an agent's start), a relist at the version last seen, and
    after a 410 a consistent read, paged without a version."""
    import json as _json
    from types import SimpleNamespace
    from nsx_proxy.kube_client import ApiException
    from nsx_proxy.reflector import Reflector

    asked, watches = [], []

    def list_fn(watch=False, **kw):
        if watch:
            watches.append(kw["resource_version"])
            if len(watches) == 1:
                now[0] += 601                         # the next round relists
                raise ApiException(status=500, reason="a blip")
            if len(watches) == 2:
                raise ApiException(status=410, reason="Gone")
            reflector.stop()
            raise ApiException(status=500, reason="done")
        asked.append((kw.get("resource_version"), kw.get("_continue")))
        more = kw.get("_continue") is None and len(asked) >= 3
        meta = {"resourceVersion": str(10 + len(asked))}
        if more:
            meta["continue"] = "page2"
        return SimpleNamespace(data=_json.dumps({"items": [], "metadata": meta}))

    hub, now = SimpleNamespace(sleep=lambda s: None, spawn=None), [0.0]
    reflector = Reflector("services", list_fn, lambda objs: list(objs), None, hub,
                          clock=lambda: now[0])
    reflector.run()
    assert asked == [("0", None),          # the start: from the watch cache
                     ("11", None),         # a relist: not older than what was seen
                     (None, None),         # after a 410: consistent, paged
                     (None, "page2")]      # ... a continued page names no version


def test_the_cache_indexes_a_services_slices_in_order_and_shares_namespace_strings():
    """A service's slices come back in the order they arrived, after one of
    them goes and another comes; every object of a namespace shares one
    namespace string, and the model's constants are the model's own strings
    (10,000 Services each kept their own copies: 3 MB); the state's keys
    are the cache's."""
    import json as _json
    from nsx_proxy import model
    from nsx_proxy.kube_cache import KubeCache
    from nsx_proxy.state_builder import StateBuilder
    from nsx_proxy.validate import RejectLog

    def sl(name):
        return _json.loads(_json.dumps({            # a fresh decode, as a watch gives
            "metadata": {"namespace": "team-a", "name": name, "resourceVersion": "1",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080,
                                              "protocol": "TCP"}],
            "endpoints": [{"addresses": [f"10.0.0.{len(name)}"]}]}))

    cache = KubeCache()
    for name in ("web-a", "web-bb", "web-ccc"):
        cache.slice_event("ADDED", sl(name))
    cache.slice_event("DELETED", sl("web-bb"))
    cache.slice_event("ADDED", sl("web-dddd"))
    web = model.ServiceKey("team-a", "web")
    assert [s["metadata"]["name"] for s in cache.slices_of(web)] == \
        ["web-a", "web-ccc", "web-dddd"]
    for name in ("web", "api"):
        cache.service_event("ADDED", _json.loads(_json.dumps({
            "metadata": {"namespace": "team-a", "name": name, "resourceVersion": "1"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.9" if name == "web"
                     else "10.96.0.8", "ports": [{"name": "http", "port": 80,
                                                  "protocol": "TCP"}]}})))
    spaces = {id(k.namespace) for k in cache.services} | {id(k[0]) for k in cache.slices}
    assert len(spaces) == 1
    state, _ = StateBuilder(RejectLog()).build(cache)
    web_svc, api_svc = state.services[web], state.services[model.ServiceKey("team-a", "api")]
    assert web_svc.type is model.CLUSTER_IP and web_svc.ports[0].protocol is model.TCP
    assert web_svc.namespace is api_svc.namespace
    assert web_svc.ports[0].name is api_svc.ports[0].name
    assert len(web_svc.ports[0].endpoints) == 3
    # the state's keys are key objects the cache holds, not one more per service
    held = {id(k) for k in cache.services} | {id(k) for k in cache._slice_owner.values()}
    assert len(state.services) == 2 and {id(k) for k in state.services} <= held
