"""Where an agent's start goes, in this process: each step of a node agent's
first sync at N Services x 5 endpoints, timed and (once) weighed.

The steps are the agent's own functions, in its order: decode the two
lists' JSON (the objects the lab's API server sends) an item at a time,
packing each into the cache (nsx_proxy/list_items, as the reflector does),
translate every Service (the first build), compile node1's bridge, encode
every message of the bundle.  No OVS, no API server, no Ryu event loop:
what is left of bench.hosts' start -> ready is theirs (see its --phases).
Memory is tracemalloc's count of what each step keeps: the cache, the
model, the compiled fragments.  The collector is paused around the steps
as the agent pauses it (nsx_proxy/gc_pause)::

    .venv/bin/python -m bench.start [--services 10000] [--rounds 3] [--protocol UDP]
                                    [--dual-stack]

``--protocol UDP`` makes every Service's port UDP: what a pool spread per
flow (a flow per endpoint, controller/udp_pool.py) costs against a group.
``--dual-stack`` makes every Service RequireDualStack, with an IPv6 cluster
IP and an IPv6 slice of the same 5 pods, on a dual-stack bridge: what the
second family costs against IPv4 alone.
"""
import argparse
import gc
import json
import statistics
import time
import tracemalloc

from bench import kube
from bench.core import cold_sync_messages, node_context
from bench.hosts import ENDPOINTS, _slice
from controller import cookies
from controller.compiler import Compiler
from nsx_proxy import gc_pause, kube_cache, list_items, state_builder, validate


def lists(n, protocol="TCP", dual_stack=False):
    """The two lists' bodies as the lab's API server writes them (bench.hosts'
    objects, with what the server fills in)."""
    services, slices = [], []
    for i in range(n):
        meta = {"namespace": "bench", "resourceVersion": str(2 * i + 1),
                "uid": f"{i:08x}-0000-4000-8000-000000000000",
                "creationTimestamp": "2026-12-06T10:00:00Z"}
        svc = kube.service(i, first_octet=97)
        svc["metadata"].update(meta)
        svc["spec"]["type"] = "ClusterIP"
        svc["spec"]["ports"][0]["protocol"] = protocol
        services.append(svc)
        sl = _slice(i)
        for port in sl["ports"]:
            port["protocol"] = protocol
        sl["metadata"].update(meta, resourceVersion=str(2 * i + 2))
        slices.append(sl)
        if dual_stack:
            kube.dual_stack_service(svc, i)
            slices.append(kube.slice6(sl))
    return json.dumps({"items": services}).encode(), json.dumps({"items": slices}).encode()


def one_start(bodies, weigh, dual_stack=False):
    """{step: seconds} and, when ``weigh``, {what is kept: bytes}."""
    times, kept = {}, {}
    if weigh:
        tracemalloc.start()
    with gc_pause.paused():
        mark = tracemalloc.get_traced_memory()[0] if weigh else 0
        began = time.perf_counter()
        cache = kube_cache.KubeCache(started=0)
        # as the reflector reads a list: one item decoded and packed at a time
        cache.replace_services(list_items.walk(bodies[0], {}))
        cache.replace_slices(list_items.walk(bodies[1], {}))
        times["decode the lists and pack them into the cache"] = time.perf_counter() - began
        if weigh:
            gc.collect()
            used, peak = tracemalloc.get_traced_memory()
            kept["the cache"] = used - mark
            kept["(the lists' peak on top of it)"] = peak - used
            mark = used
        began = time.perf_counter()
        builder = state_builder.StateBuilder(validate.RejectLog())
        state, _ = builder.build(cache)
        times["translate (the first build)"] = time.perf_counter() - began
        if weigh:
            kept["the model"] = tracemalloc.get_traced_memory()[0] - mark
            mark = tracemalloc.get_traced_memory()[0]
        began = time.perf_counter()
        want, _ = Compiler(node_context(dual_stack=dual_stack),
                           cookies.GroupIds()).desired(state)
        times["compile node1's bridge"] = time.perf_counter() - began
        if weigh:
            kept["the fragments (and the compiler's memo)"] = \
                tracemalloc.get_traced_memory()[0] - mark
            tracemalloc.stop()
        began = time.perf_counter()
        msgs = cold_sync_messages(want)
        times[f"encode the bundle ({len(msgs)} messages, "
              f"{sum(map(len, msgs)) / 1e6:.1f} MB)"] = time.perf_counter() - began
    return times, kept


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--protocol", choices=("TCP", "UDP"), default="TCP")
    parser.add_argument("--dual-stack", action="store_true",
                        help="every Service RequireDualStack, with an IPv6 slice too")
    args = parser.parse_args(argv)
    bodies = lists(args.services, args.protocol, args.dual_stack)
    runs = [one_start(bodies, False, args.dual_stack) for _ in range(args.rounds)]
    _, kept = one_start(bodies, True, args.dual_stack)
    family = " dual-stack" if args.dual_stack else ""
    print(f"{args.services}{family} {args.protocol} services x {ENDPOINTS} endpoints, an agent's "
          f"first sync in "
          f"process: median (min-max) of {args.rounds} rounds")
    for step in runs[0][0]:
        values = [times[step] for times, _ in runs]
        print(f"  {statistics.median(values):6.3f} s ({min(values):.3f}-{max(values):.3f})"
              f"  {step}")
    print("kept (tracemalloc, one more round):")
    for what, size in kept.items():
        print(f"  {size / 1e6:6.1f} MB  {what}")


if __name__ == "__main__":
    main()
