"""Every reader of raw API JSON is total: property tests (hypothesis).

Raw objects come from the watches exactly as an API server sent them, and
an API server may send anything (the lab's accepts any JSON).  For each
reader - translation, the cache and the state builder, the pool plan and
the LB writer, the health checks and endpoint selection downstream - the
objects tried are (a) arbitrary JSON and (b) a valid object with one value,
at any depth, replaced by arbitrary JSON (a string where a map belongs, a
list of strings where a list of objects belongs, null, ...).  A reader may
reject (translate raises ``validate.Invalid``; the others log and skip),
never raise anything else; and the good objects next to a broken one are
still translated.
"""
import copy
import logging

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsx_proxy import endpoint_selection, healthcheck, lb_ipam, model, translate, validate
from nsx_proxy.kube_cache import KubeCache
from nsx_proxy.lb_writer import LbStatusWriter
from nsx_proxy.state_builder import StateBuilder
from nsx_proxy.validate import Invalid

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
LOG = logging.getLogger("properties")

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=False) | st.text(max_size=12)
           | st.sampled_from(["", "None", "TCP", "LoadBalancer", "Local", "10.96.0.1",
                              "fd00::1", "x" * 70, "²", "80", "IPv4", "Pod"]))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.sampled_from(["ip", "name", "metadata"]),
                      inner, max_size=4),
    max_leaves=12)

SERVICE = {
    "metadata": {"namespace": "default", "name": "web", "resourceVersion": "7",
                 "labels": {"app": "web"}, "annotations": {lb_ipam.POOL_ANNOTATION: "public"}},
    "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
             "externalIPs": ["198.51.100.5"], "loadBalancerIP": "203.0.113.9",
             "loadBalancerSourceRanges": ["203.0.113.0/24"],
             "sessionAffinity": "ClientIP",
             "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
             "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Cluster",
             "healthCheckNodePort": 32000, "trafficDistribution": "PreferClose",
             "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http",
                        "nodePort": 30080},
                       {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 5353}]},
    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9", "ipMode": "VIP"}]}}}
SLICE = {
    "metadata": {"namespace": "default", "name": "web-abc", "resourceVersion": "3",
                 "labels": {translate.SERVICE_NAME_LABEL: "web"}},
    "addressType": "IPv4",
    "ports": [{"name": "http", "protocol": "TCP", "port": 8080},
              {"name": "dns", "protocol": "UDP", "port": 5353}],
    "endpoints": [{"addresses": ["10.1.1.2"], "nodeName": "node1",
                   "conditions": {"ready": True, "serving": True, "terminating": False},
                   "targetRef": {"kind": "Pod", "namespace": "default", "name": "pod1"},
                   "hints": {"forZones": [{"name": "zone-1"}],
                             "forNodes": [{"name": "node1"}]}}]}
NODE = {"metadata": {"name": "node1", "resourceVersion": "2",
                     "labels": {translate.ZONE_LABEL: "zone-1"}},
        "spec": {"podCIDR": "10.1.1.0/24", "podCIDRs": ["10.1.1.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.100.1"}]}}
POD = {"metadata": {"namespace": "default", "name": "pod1", "resourceVersion": "4",
                    "annotations": {translate.FLOATING_IP_ANNOTATION: "198.51.100.77"}},
       "spec": {"nodeName": "node1"}, "status": {"podIP": "10.1.1.2", "phase": "Running"}}
NAMESPACE = {"metadata": {"name": "default", "annotations": {lb_ipam.POOL_ANNOTATION: "public"}}}

# How many raw shapes each property saw (printed with -s; the note quotes them).
TRIED = {}


def _paths(value, prefix=()):
    """Every path into a JSON value (the root included)."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _replaced(template, path, value):
    if not path:
        return value
    out = copy.deepcopy(template)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


def broken(template):
    """``template`` with the value at one path replaced by arbitrary JSON."""
    paths = list(_paths(template))
    return st.tuples(st.sampled_from(paths), json_values).map(
        lambda pv: _replaced(template, *pv))


def shapes(template):
    return json_values | broken(template) | broken(template).flatmap(broken)


def _count(name):
    TRIED[name] = TRIED.get(name, 0) + 1


def _rejects():
    return validate.RejectLog(LOG)


@SETTINGS
@given(shapes(SERVICE), st.lists(shapes(SLICE), max_size=3))
def test_translating_a_service_raises_nothing_but_invalid(svc, slices):
    _count("service")
    translate.object_name(svc)
    translate.ignored_reason(svc)
    for raw in slices:
        translate.slice_service(raw)
    try:
        translated = translate.service(svc, slices, lambda *a: None)
    except Invalid:
        return
    hash(translated)                     # the model is hashable, all the way down
    state = model.ClusterState.build([translated], [])
    for port in translated.ports:
        endpoint_selection.select(translated, port, "node1", None)
    healthcheck.service_checks(state, "node1")


@SETTINGS
@given(shapes(NODE))
def test_translating_a_node_raises_nothing_but_invalid(raw):
    _count("node")
    try:
        hash(translate.node(raw))
    except Invalid:
        pass


@SETTINGS
@given(shapes(POD))
def test_a_pods_floating_ip_raises_nothing_but_invalid(raw):
    _count("pod")
    try:
        translate.floating_ip(raw)
    except Invalid:
        pass


def _good(name, ip):
    svc = copy.deepcopy(SERVICE)
    svc["metadata"]["name"] = name
    svc["spec"].update(clusterIP=ip, clusterIPs=[ip], externalIPs=[], type="ClusterIP")
    svc["spec"].pop("healthCheckNodePort")
    del svc["status"]
    return svc


@SETTINGS
@given(st.lists(shapes(SERVICE), min_size=1, max_size=3), st.lists(shapes(SLICE), max_size=3),
       st.lists(shapes(NODE), max_size=2), st.lists(shapes(POD), max_size=2),
       st.lists(shapes(NAMESPACE), max_size=2),
       st.lists(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), min_size=1, max_size=3))
def test_the_cache_builder_and_lb_writer_never_raise_and_good_objects_go_live(
        services, slices, nodes, pods, namespaces, etypes):
    """Junk next to a good Service, through events and relists: every sync
    succeeds and the good Service is in the state."""
    _count("sync")
    good = _good("zz-good", "10.96.200.1")
    cache, builder = KubeCache(), StateBuilder(_rejects())
    cache.replace_services(services + [good])
    cache.replace_slices(slices)
    cache.replace_nodes(nodes)
    cache.replace_pods(pods)
    cache.replace_namespaces(namespaces)
    writes = []
    writer = LbStatusWriter(
        lb_ipam.Ipam(lb_ipam.parse_pools("public=203.0.113.0/28"), "public"), core=None,
        spawn=lambda fn, *args: writes.append(args), reject=lambda *a: None,
        on_written=lambda: None)
    state, _ = builder.build(cache)
    writer.sync(cache.services, cache.namespaces, changed=None)
    assert model.ServiceKey("default", "zz-good") in state.services
    for etype, obj in zip(etypes * 4, services + slices + nodes + pods):
        for event in (cache.service_event, cache.slice_event, cache.node_event,
                      cache.pod_event, cache.namespace_event):
            event(etype, obj)
        state, _ = builder.build(cache)
        writer.sync(cache.services, cache.namespaces, changed=builder.last_dirty)
        builder.delivered()
    healthcheck.service_checks(state, "node1")
    assert model.ServiceKey("default", "zz-good") in state.services


def test_shapes_tried():
    """Runs last in this module: how many raw shapes the properties tried."""
    print("raw-JSON shapes tried:", TRIED, "total", sum(TRIED.values()))
    assert sum(TRIED.values()) >= 1000
