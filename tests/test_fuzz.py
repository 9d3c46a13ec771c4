"""Fuzzing: generated Services, EndpointSlices, Nodes and Pods - well-formed,
odd and broken, including what the lab's API server would accept and a real
one would not - go through the cache, the state builder, the compiler and the
encoder.  Nothing may raise; every object that does not make it is named in a
log line with a reason; the good ones next to it are programmed."""
import logging
import random

import pytest

from controller import cookies, fragments, ofmsg
from controller.bridges import BridgeContext, ExternalPort
from controller.compiler import Compiler
from nsx_proxy import model, translate, validate
from nsx_proxy.kube_cache import KubeCache
from nsx_proxy.state_builder import StateBuilder
from test_switch import FakeDatapath
import world

ODD = [None, "", 0, -1, 65536, "80", [], {}, True, "x" * 300, 3.5]


def pick(rnd, good, bad=ODD, p_bad=0.15):
    return rnd.choice(bad) if rnd.random() < p_bad else rnd.choice(good)


def ip(rnd, net="10.96"):
    return f"{net}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"


def service(rnd, i):
    ports = []
    for k in range(rnd.choice([0, 1, 1, 2, 3])):
        ports.append({"name": pick(rnd, [f"p{k}", "http", "dns"]),
                      "protocol": pick(rnd, ["TCP", "UDP", "SCTP"], ["ICMP", "tcp", 7, None]),
                      "port": pick(rnd, [80, 53, 443, 8080, 1, 65535]),
                      "targetPort": pick(rnd, [8080, "http", "dns", 5353],
                                         [0, 70000, "bad name!", None, []]),
                      "nodePort": pick(rnd, [None, 30000 + i % 2000], [29999, 40000, "x"])})
    spec = {"type": pick(rnd, ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
                         ["Bogus", None, 5]),
            "clusterIP": pick(rnd, [ip(rnd), ip(rnd), "None"], ["300.1.1.1", "fd00::1", 42]),
            "ports": pick(rnd, [ports], [None, "ports", [None]])}
    if rnd.random() < 0.3:
        spec["externalIPs"] = pick(rnd, [[ip(rnd, "198.51")], [ip(rnd, "198.51"), "nope"]])
    if rnd.random() < 0.3:
        spec["sessionAffinity"] = pick(rnd, ["ClientIP", "None"], ["Sticky"])
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": pick(
            rnd, [1, 600, 65535, 65536, 86400], [0, 86401, "x", -1])}}
    for field, values in (("externalTrafficPolicy", ["Cluster", "Local"]),
                          ("internalTrafficPolicy", ["Cluster", "Local"]),
                          ("loadBalancerSourceRanges", [["203.0.113.0/24"]])):
        if rnd.random() < 0.2:
            spec[field] = pick(rnd, values, ["Everywhere", ["10.0.0.0/33"], 3])
    meta = {"namespace": pick(rnd, ["default", "team"], [None]), "name": f"s{i}",
            "resourceVersion": "1"}
    out = {"metadata": meta, "spec": spec}
    if rnd.random() < 0.1:
        out["status"] = {"loadBalancer": {"ingress": pick(rnd, [[{"ip": ip(rnd, "198.51")}]],
                                                          [[{"ip": "x"}], "x"])}}
    return out


def endpoint_slice(rnd, i, services):
    svc = rnd.choice(services)["metadata"]
    eps = []
    for _ in range(rnd.choice([0, 1, 3, 8])):
        eps.append({"addresses": pick(rnd, [[ip(rnd, "10.1")]], [[], ["fd00::2"], ["x"], None]),
                    "conditions": {"ready": pick(rnd, [True, False, None], ["yes"]),
                                   "serving": pick(rnd, [True, False, None]),
                                   "terminating": pick(rnd, [False, True, None])},
                    "nodeName": pick(rnd, ["node1", "node2", None], [7]),
                    "hints": pick(rnd, [None, {"forZones": [{"name": "zone-1"}]}],
                                  [{"forZones": "zone"}])})
    return {"metadata": {"namespace": svc.get("namespace") or "default",
                         "name": f"sl{i}", "resourceVersion": "1",
                         "labels": {translate.SERVICE_NAME_LABEL: svc["name"]}},
            "addressType": pick(rnd, ["IPv4"], ["IPv6", "FQDN", None]),
            "ports": pick(rnd, [[{"name": "http", "port": 8080, "protocol": "TCP"},
                                 {"name": "dns", "port": 5353, "protocol": "UDP"}]],
                          [[{"name": "http", "port": 0}], None, [{"port": "x"}]]),
            "endpoints": pick(rnd, [eps], [None, "eps"])}


def node(rnd, i):
    return {"metadata": {"name": f"node{i}", "resourceVersion": "1",
                         "labels": {"topology.kubernetes.io/zone": f"zone-{i}"}},
            "spec": {"podCIDR": pick(rnd, [f"10.1.{i}.0/24"], ["10.1.0.0/33", "x", None])},
            "status": {"addresses": pick(rnd, [[{"type": "InternalIP",
                                                  "address": f"192.168.100.{i}"}]],
                                         [[], [{"type": "InternalIP", "address": "x"}]])}}


def pod(rnd, i):
    return {"metadata": {"namespace": "default", "name": f"pod{i}", "resourceVersion": "1",
                         "annotations": {translate.FLOATING_IP_ANNOTATION: pick(
                             rnd, [ip(rnd, "198.51"), "198.51.100.77"], ["x", "fd00::9"])}},
            "spec": {"nodeName": pick(rnd, ["node1", "node2"], [None])},
            "status": {"podIP": pick(rnd, [ip(rnd, "10.1")], ["x", None])}}


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


GATEWAY = BridgeContext(name="br-gw", dpid=0x2000, role="gateway", ct_zone=300, uplink=1,
                        fabric_ip="192.168.100.254",
                        external=ExternalPort(ofport=2, ip="203.0.113.1", prefix=24,
                                              next_hop_mac="0a:58:cb:00:71:0a"))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_objects_never_raise_and_every_bad_one_is_named(seed):
    rnd = random.Random(seed)
    services = [service(rnd, i) for i in range(500)]
    objects = {"services": services,
               "slices": [endpoint_slice(rnd, i, services) for i in range(400)],
               "nodes": [node(rnd, i) for i in range(1, 41)],
               "pods": [pod(rnd, i) for i in range(100)]}
    handler = Lines()
    logger = logging.getLogger(f"fuzz{seed}")
    logger.addHandler(handler)
    logger.propagate = False
    cache = KubeCache()
    cache.replace_services(objects["services"])
    cache.replace_slices(objects["slices"])
    cache.replace_nodes(objects["nodes"])
    cache.replace_pods(objects["pods"])
    state, change = StateBuilder(validate.RejectLog(logger)).build(cache)
    # every service is programmed, legitimately ignored, or named with a reason
    for raw in services:
        meta = raw["metadata"]
        key = model.ServiceKey(meta.get("namespace"), meta["name"])
        if key in state.services or translate.ignored_reason(raw):
            continue
        assert any(meta["name"] in line for line in handler.lines), key
    assert len(state.services) > 100 and change.full is False
    # everything that made it compiles and encodes, on a node and the gateway
    ids = cookies.GroupIds()
    for ctx in (world.NODE1, GATEWAY):
        want = Compiler(ctx, ids).compile(state)
        flows, groups = fragments.flatten(want)
        plan = fragments.Plan(group_adds=list(groups.values()),
                              flow_adds=list(flows.values()))
        for msg, _ in ofmsg.plan_messages(FakeDatapath(), plan, 1):
            assert ofmsg.encode(msg) is None
    total = sum(len(v) for v in objects.values())
    print(f"seed {seed}: {total} objects, {len(state.services)} services and "
          f"{len(state.nodes)} nodes programmed, {len(handler.lines)} reject lines")
    assert total >= 1000
