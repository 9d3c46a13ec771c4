"""Kubernetes benchmark: API write -> flows live in OVS, and burst coalescing.

For each N, the embedded API server (in this process) holds N selectorless
ClusterIP services, each with one EndpointSlice of two endpoints; one
userspace bridge; ``ryu-manager controller.app bench.kube_driver`` watching
the API server.  The driver (see bench/kube_driver.py) measures:

* write -> live: an EndpointSlice PATCH over HTTP until the bundle that
  implements it is committed (barrier answered), p50/p99 over --changes
  isolated writes spaced by the sync period;
* burst: 1,000 PATCHes sent back to back; how many syncs the source ran
  before the last one was live, and how long that took.

Run as root with OVS up:  .venv/bin/python -m bench.kube [--sizes 1000 10000]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

from bench.core import BR, PORT, REPO, make_bridge, pct, progress, sh
from topologies.apiserver import ApiServer
from topologies.controller_proc import AGENT_ENV
from topologies.apiserver.kinds import RESOURCES

MIN_SYNC = 0.1


def two_on_node2(i):
    """svc{i}'s EndpointSlice: two ready endpoints on node2."""
    return {"metadata": {"name": f"svc{i}-1",
                         "labels": {"kubernetes.io/service-name": f"svc{i}"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080,
                                              "protocol": "TCP"}],
            "endpoints": [{"addresses": [f"10.{ip}.{i // 250 % 250}.{i % 250 + 2}"],
                           "nodeName": "node2", "conditions": {"ready": True}}
                          for ip in (2, 3)]}


def populate(api, n, slice_of=two_on_node2, first_octet=96, dual_stack=False):
    """Namespace ``bench`` with ``n`` ClusterIP services ``svc{i}`` (VIPs from
    10.<first_octet>.0.1 on, 62,500 per /16) and ``slice_of(i)`` for each;
    ``dual_stack``: each RequireDualStack, with the IPv6 twin of its slice."""
    api.create(RESOURCES["namespaces"], None, {"metadata": {"name": "bench"}})
    for i in range(n):
        svc = service(i, first_octet)
        if dual_stack:
            dual_stack_service(svc, i)
        api.create(RESOURCES["services"], "bench", svc)
        api.create(RESOURCES["endpointslices"], "bench", slice_of(i))
        if dual_stack:
            api.create(RESOURCES["endpointslices"], "bench", slice6(slice_of(i)))


def dual_stack_service(svc, i):
    """Make ``svc{i}`` RequireDualStack, its IPv6 cluster IP given (the
    allocator would walk the range for each of 10,000)."""
    svc["spec"].update(ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"],
                       clusterIPs=[svc["spec"]["clusterIP"], "fd00:96::%x" % (i + 16)])
    return svc


def slice6(sl):
    """The IPv6 twin of a benchmark slice: the same pods' IPv6 addresses
    (10.1.K.X -> fd00:10:1:K::X in hex, as the dual-stack lab plans them)."""
    eps = []
    for ep in sl["endpoints"]:
        _, _, node, last = ep["addresses"][0].split(".")
        eps.append(dict(ep, addresses=["fd00:10:1:%s::%x" % (node, int(last))]))
    meta = dict(sl["metadata"], name=sl["metadata"]["name"] + "-v6")
    return dict(sl, metadata=meta, addressType="IPv6", endpoints=eps)


def service(i, first_octet=96):
    """``svc{i}``, as the benchmarks write it (the API server fills in the rest)."""
    return {"metadata": {"name": f"svc{i}"},
            "spec": {"clusterIP": f"10.{first_octet + i // 62500}.{i // 250 % 250}."
                                  f"{i % 250 + 1}",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def run_once(n, changes, workdir):
    server = ApiServer(bookmark_interval=30).start()
    try:
        populate(server.api, n)
        kubeconfig = server.kubeconfig(os.path.join(workdir, "kubeconfig"))
        out = os.path.join(workdir, f"kube-{n}.json")
        conf = os.path.join(workdir, "bench-kube.conf")
        with open(conf, "w") as fh:
            fh.write(f"[nsx_proxy]\nsource = kubernetes\nkubeconfig = {kubeconfig}\n"
                     f"min_sync_period = {MIN_SYNC}\nmax_sync_period = 600\nstatus_port = 0\n")
        env = dict(os.environ, **AGENT_ENV, BENCH_SERVICES=str(n), BENCH_CHANGES=str(changes),
                   BENCH_OUT=out, BENCH_KUBECONFIG=kubeconfig, BENCH_GAP=str(2 * MIN_SYNC))
        make_bridge()
        ryu = os.path.join(os.path.dirname(sys.executable), "ryu-manager")
        with open(os.path.join(workdir, "controller.log"), "w") as log:
            proc = subprocess.Popen([ryu, "--config-file", conf, "--ofp-tcp-listen-port",
                                     str(PORT), "controller.app", "bench.kube_driver"],
                                    cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            proc.wait(timeout=1800)
        with open(out) as fh:
            return json.load(fh)
    finally:
        server.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        try:
            for n in args.sizes:
                lat, syncs, burst, cold = [], [], [], []
                for r in range(args.rounds):
                    progress(f"bench.kube: {n} services, round {r + 1}/{args.rounds}")
                    res = run_once(n, args.changes, workdir)
                    lat += res["write_to_live_s"]
                    syncs.append(res["burst_syncs"])
                    burst.append(res["burst_live_s"])
                    cold.append(res["cold_s"])
                rows.append((n, statistics.median(cold), pct(lat, .5) * 1e3,
                             pct(lat, .99) * 1e3, statistics.median(syncs),
                             statistics.median(burst)))
        finally:
            sh("ovs-vsctl", "--if-exists", "del-br", BR)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; min_sync_period {MIN_SYNC}s; "
          f"medians of {args.rounds} rounds, latency over {args.rounds * args.changes} writes")
    print("services | start->synced s | write->live p50 ms | write->live p99 ms | "
          "syncs for 1,000-write burst | burst->live s")
    for r in rows:
        print(f"{r[0]:>8} | {r[1]:>15.2f} | {r[2]:>18.1f} | {r[3]:>18.1f} | "
              f"{r[4]:>27.0f} | {r[5]:>13.2f}")
    return rows


if __name__ == "__main__":
    main()
