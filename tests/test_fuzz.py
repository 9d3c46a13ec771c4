"""Fuzzing: generated Services, EndpointSlices, Nodes and Pods - well-formed,
odd and broken, including what the lab's API server would accept and a real
one would not - go through the cache, the state builder, the compiler and the
encoder.  Nothing may raise; every object that does not make it is named in a
log line with a reason; the good ones next to it are programmed."""
import logging
import random

import pytest

from controller import cookies, fragments, ofmsg
from controller.compiler import Compiler
from nsx_proxy import model, translate, validate
from nsx_proxy.kube_cache import KubeCache
from nsx_proxy.state_builder import StateBuilder
from world import FakeDatapath
import world
from raw_objects import endpoint_slice, node, pod, service


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


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
    assert len(state.services) > 100 and not change.everything
    # everything that made it compiles and encodes, on a node and the gateway
    ids = cookies.GroupIds()
    for ctx in (world.NODE1, world.GATEWAY):
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
