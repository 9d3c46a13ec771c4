"""Core benchmark: cold sync vs the ovs-ofctl floor, one-change latency, RSS.

For each N (ClusterIP services x 5 endpoints) on one userspace bridge:

(a) cold sync: the app's model-to-bundle-committed time for the whole state,
    side by side with ``ovs-ofctl bundle`` installing the very same flows and
    groups (dumped from the bridge) - the floor.  Ratio = app / floor.
(b) one endpoint change: model change -> bundle committed, p50/p99 over
    100 changes (at N = 10,000 by default).
(c) controller RSS after all of it.

Run as root with OVS up:  .venv/bin/python -m bench.core [--sizes 1000 10000]
Prints one table; medians over --rounds runs.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from topologies.controller_proc import AGENT_ENV

BR = "nsxp-bench"
PORT = 16670
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_T0 = time.monotonic()


def progress(what):
    """A progress line on stderr (the result table goes to stdout)."""
    print(f"[{time.monotonic() - _T0:6.1f} s] {what}", file=sys.stderr, flush=True)


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def make_bridge():
    sh("ovs-vsctl", "--if-exists", "del-br", BR)
    sh("ovs-vsctl", "add-br", BR, "--", "set", "bridge", BR, "datapath_type=netdev",
       "fail_mode=secure", "protocols=OpenFlow13",
       "external_ids:nsx-proxy-role=node", "external_ids:nsx-proxy-node=node1",
       "external_ids:nsx-proxy-pod-cidr=10.1.0.0/16",
       "--", "set-controller", BR, f"tcp:127.0.0.1:{PORT}",
       "--", "add-port", BR, "nsxp-b-up", "--", "set", "interface", "nsxp-b-up",
       "type=internal", "external_ids:nsx-proxy-role=uplink")
    for uuid in sh("ovs-vsctl", "--bare", "--columns=controller", "list", "bridge",
                   BR).split():
        sh("ovs-vsctl", "set", "controller", uuid, "max_backoff=1000")


def run_app(n, changes, workdir, endpoints=5):
    out = os.path.join(workdir, f"app-{n}.json")
    conf = os.path.join(workdir, "bench.conf")
    with open(conf, "w") as fh:
        fh.write("[nsx_proxy]\nsource = none\nstatus_port = 0\n")
    env = dict(os.environ, **AGENT_ENV, BENCH_SERVICES=str(n), BENCH_CHANGES=str(changes),
               BENCH_ENDPOINTS=str(endpoints), BENCH_OUT=out)
    ryu = os.path.join(os.path.dirname(sys.executable), "ryu-manager")
    with open(os.path.join(workdir, "controller.log"), "w") as log:
        proc = subprocess.Popen([ryu, "--config-file", conf, "--ofp-tcp-listen-port",
                                 str(PORT), "controller.app", "bench.driver"],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        proc.wait(timeout=1800)
    with open(out) as fh:
        return json.load(fh)


def ofctl_floor(workdir):
    """Dump what the app installed, wipe the bridge, install it with ovs-ofctl."""
    flows = sh("ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "dump-flows", BR)
    groups = sh("ovs-ofctl", "-O", "OpenFlow13", "dump-groups", BR)
    path = os.path.join(workdir, "bundle.txt")
    with open(path, "w") as fh:
        for line in groups.splitlines():
            if "group_id=" in line:
                fh.write("group add " + line.strip() + "\n")
        for line in flows.splitlines():
            if "actions=" in line:
                fh.write("flow add " + line.strip() + "\n")
    sh("ovs-vsctl", "del-controller", BR)
    sh("ovs-ofctl", "-O", "OpenFlow13", "del-flows", BR)
    sh("ovs-ofctl", "-O", "OpenFlow13", "del-groups", BR)
    # The reject meter the flows refer to (the app adds it before its bundle too).
    subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "add-meter", BR,
                    "meter=1,pktps,burst,band=type=drop,rate=100,burst_size=100"],
                   capture_output=True)
    t0 = time.monotonic()
    sh("ovs-ofctl", "-O", "OpenFlow13", "bundle", BR, path)
    elapsed = time.monotonic() - t0
    count = sum(1 for _ in open(path))
    return elapsed, count


def node_context(name=BR, dual_stack=False):
    """node1's bridge, as the in-process benchmarks compile it (dual-stack:
    with an IPv6 pod CIDR too)."""
    from controller.bridges import BridgeContext
    return BridgeContext(name=name, dpid=1, role="node", ct_zone=100, node="node1",
                         pod_cidr="10.1.0.0/16", uplink=1,
                         pod_cidr6="fd00:10:1::/48" if dual_stack else None)


def cold_sync_messages(want):
    """Every bundle-add message of a cold sync of ``want`` (a bridge state),
    as the switch object encodes and sends them, in this process."""
    from controller import fragments, ofmsg
    from controller.bundle import step_bytes
    from ryu.ofproto import ofproto_v1_3, ofproto_v1_3_parser

    class Datapath:
        ofproto, ofproto_parser, id = ofproto_v1_3, ofproto_v1_3_parser, 1

    flows, groups = fragments.flatten(want)
    plan = fragments.Plan(group_adds=list(groups.values()), flow_adds=list(flows.values()))
    return [step_bytes(Datapath(), step, 1, 1, 0) for step in ofmsg.plan_steps(plan)]


def message_sizes(n, endpoints):
    """Bytes of every bundle-add message of the cold sync for this benchmark's
    state (compiled and encoded in this process)."""
    from bench.driver import NODES, make_services
    from controller import cookies
    from controller.compiler import Compiler
    from nsx_proxy import model

    want = Compiler(node_context(), cookies.GroupIds()).compile(
        model.ClusterState.build(make_services(n, endpoints), NODES))
    return [len(msg) for msg in cold_sync_messages(want)]


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--endpoints", type=int, default=5,
                        help="endpoints per service (e.g. --sizes 1 --endpoints 5000 "
                             "for one large service)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        try:
            for n in args.sizes:
                apps, floors, lat, rss, msgs = [], [], [], [], 0
                for r in range(args.rounds):
                    progress(f"bench.core: {n} services, round {r + 1}/{args.rounds}: "
                             f"cold sync and {args.changes} changes")
                    make_bridge()
                    res = run_app(n, args.changes, workdir, args.endpoints)
                    progress(f"bench.core: {n} services: the ovs-ofctl floor")
                    floor, msgs = ofctl_floor(workdir)
                    apps.append(res["cold_sync_s"])
                    floors.append(floor)
                    lat += res["change_s"]
                    rss.append(res["rss_kb"])
                app, flo = statistics.median(apps), statistics.median(floors)
                rows.append((n, msgs, app, flo, app / flo, pct(lat, .5) * 1e3,
                             pct(lat, .99) * 1e3, statistics.median(rss) / 1024))
        finally:
            sh("ovs-vsctl", "--if-exists", "del-br", BR)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"{sh('ovs-vsctl', '--version').splitlines()[0]}, Python {platform.python_version()}")
    print(f"medians of {args.rounds} rounds; {args.endpoints} endpoints per service; "
          f"change latency over {args.rounds * args.changes} endpoint changes")
    for n in args.sizes:
        sizes = message_sizes(n, args.endpoints)
        print(f"{n} services: {len(sizes)} messages, largest {max(sizes)} bytes, "
              f"median {statistics.median(sizes):.0f} bytes (OpenFlow's limit: 65535)")
    head = ("services", "msgs", "cold sync app s", "ovs-ofctl floor s", "ratio",
            "change p50 ms", "change p99 ms", "RSS MB", "per service: sync us, RSS KB")
    print(" | ".join(head))
    for r in rows:
        # the cost per service: linear growth keeps these flat across sizes
        print(f"{r[0]:>8} | {r[1]:>5} | {r[2]:>15.3f} | {r[3]:>17.3f} | {r[4]:>5.2f}x | "
              f"{r[5]:>13.2f} | {r[6]:>13.2f} | {r[7]:>6.0f} | "
              f"{r[2] / r[0] * 1e6:>8.0f} us, {r[7] * 1024 / r[0]:>6.1f} KB")
    return rows


if __name__ == "__main__":
    main()
