"""Per-agent figures on the multi-host lab: what each node pays.

The multi-host lab (topologies/hosts.py: an OVS and an agent per host) with
N ClusterIP services x 5 endpoints spread over the two nodes, in the
embedded API server.  For every agent:

* start -> ready: a restart of the agent (SIGTERM, start) until its /readyz
  says ok: lists, translation, compile and the bundle on its own bridge;
* RSS before the services (the lab's one demo Service only: the
  interpreter, its libraries and the agent's skeleton), after convergence
  (VmRSS of the agent process), and in brackets again at the end, after
  the changes: what a running agent settles at;
* CPU seconds (user + system) the agent spends on --changes endpoint
  changes (each one EndpointSlice write that replaces one endpoint, spaced
  beyond the sync period, nothing scraping the agents meanwhile);
* API write -> live on its bridge, p50 / p99: for each change, written at
  T, the agent's ``nsx_proxy_programmed_event_timestamp_seconds`` shows the
  first commit whose triggering event came at or after T, and
  ``nsx_proxy_last_programmed_timestamp_seconds`` when it was committed
  (the agent's clock and ours are the same machine's); "every host" is the
  slowest node of each change.

The gateway agent programs no ClusterIP service (it has no node bridge),
so it pays the watch and translation only.  Run as root with OVS up::

    .venv/bin/python -m bench.hosts [--services 10000] [--changes 1000] [--phases]
"""
import argparse
import os
import signal
import statistics
import time

from bench import kube
from bench.core import pct, progress
from controller import config
from topologies.apiserver.kinds import RESOURCES
from topologies.hosts import GATEWAY_HOST, LEASE, HostsLab
from topologies.waiting import wait_for

ENDPOINTS = 5
GAP = 0.25          # between changes: over the lab agents' min_sync_period (0.1 s)


def _slice(i, generation=0):
    """svc{i}'s slice: 5 endpoints, alternately on node1 and node2; change
    number ``generation`` moves the last one to an address of its own (never
    one it had: a write that changes nothing would never go live)."""
    eps = []
    for j in range(ENDPOINTS):
        node = 1 + (i + j) % 2
        ip = f"10.1.{node}.{10 + (i * ENDPOINTS + j) % 240}"
        if generation and j == ENDPOINTS - 1:
            ip = f"10.3.{generation // 250 % 250}.{generation % 250 + 1}"
        eps.append({"addresses": [ip], "nodeName": f"node{node}",
                    "conditions": {"ready": True}})
    return {"metadata": {"name": f"svc{i}-1",
                         "labels": {"kubernetes.io/service-name": f"svc{i}"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": eps}


def metrics(lab, host):
    out = {}
    for line in lab.status(host, "/metrics").splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def bridge_of(host):
    return "br-gw" if host == GATEWAY_HOST else f"br-{host}"


def live_at(lab, host, written):
    """When the first commit behind an event at or after ``written`` landed on
    this host's bridge (None: not yet)."""
    m = metrics(lab, host)
    label = f'{{bridge="{bridge_of(host)}"}}'
    event = m.get(f"nsx_proxy_programmed_event_timestamp_seconds{label}", 0)
    done = m.get(f"nsx_proxy_last_programmed_timestamp_seconds{label}", 0)
    return done if event >= written else None


def phases(lab, host, n):
    """One more restart of ``host``'s agent, its status endpoint polled every
    50 ms: when it answers (imports done), when its state holds the
    services (lists and translation), when its first bundle committed, and
    how long that bundle took from its plan (the agent's own histogram).
    The polling costs the agent some CPU: this is a breakdown, not the
    start -> ready figure."""
    lab.stop_agent(host, signal.SIGTERM)
    began = time.monotonic()
    lab.start_agent(host)
    label = f'{{bridge="{bridge_of(host)}"}}'
    marks = {}
    while "ready" not in marks and time.monotonic() - began < 120:
        m = metrics(lab, host)
        at = time.monotonic() - began
        if m:
            marks.setdefault("status endpoint answers (imports done)", at)
        if m.get("nsx_proxy_services") == n + 1:
            marks.setdefault("state holds the services (lists, translation)", at)
        if m.get(f"nsx_proxy_sync_duration_seconds_count{label}", 0) >= 1:
            marks.setdefault("first bundle committed", at)
            marks.setdefault("(that bundle, plan -> commit)",
                             m[f"nsx_proxy_sync_duration_seconds_sum{label}"])
            if lab.status(host, "/readyz").strip() == "ok":
                marks["ready"] = at
        time.sleep(0.05)
    return marks


def deployed_lab(run_dir) -> HostsLab:
    """The multi-host lab (two nodes, a pod each) with its agents as deployed:
    the default drift-audit period and Lease timings (the lab's own check
    drift every 2 s and renew the Lease every 1 s, so its tests see repairs
    and takeovers fast, at a cost the idle figure would count), and the
    pools, hence the Lease, on the gateway agent only, as deploy/ has it."""
    defaults = config.CONF.nsx_proxy
    return HostsLab(nodes=2, pods_per_node=1, run_dir=run_dir,
                    audit_period=defaults.audit_period, writers=(GATEWAY_HOST,), lease={
                        name: getattr(defaults, name) for name in LEASE})


def run(n, changes, latency_changes, rounds, breakdown=False, dual_stack=False):
    lab = deployed_lab("/tmp/nsx-proxy-bench-hosts")
    nodes = [node.name for node in lab.nodes]
    try:
        progress(f"multi-host lab, {n} services x {ENDPOINTS} endpoints")
        lab.start()
        for host, _, _ in lab.hosts:
            lab.wait_ready(host, 60)
        base = {host: rss_mb(lab.agents[host].proc.pid) for host, _, _ in lab.hosts}
        # VIPs from 10.97.0.1: the lab's demo service holds 10.96.0.10
        kube.populate(lab.cluster.server.api, n, _slice, first_octet=97,
                      dual_stack=dual_stack)
        for host, _, _ in lab.hosts:
            wait_for(lambda: metrics(lab, host).get("nsx_proxy_services") == n + 1, 600,
                     what=f"{host}'s agent to take the services")
            lab.wait_ready(host, 600)
        starts = {host: [] for host, _, _ in lab.hosts}
        for _ in range(rounds):
            for host in starts:
                lab.stop_agent(host, signal.SIGTERM)
                began = time.monotonic()
                lab.start_agent(host)
                lab.wait_ready(host, 600)
                starts[host].append(time.monotonic() - began)
        pids = {host: lab.agents[host].proc.pid for host in starts}
        rss = {host: rss_mb(pid) for host, pid in pids.items()}
        api = lab.cluster.server.api

        def change(k):
            i = (k * 7919) % n                   # spread over the services
            written = time.time()
            api.update(RESOURCES["endpointslices"], "bench", f"svc{i}-1",
                       _slice(i, generation=k + 1))
            return written

        # CPU: the changes alone, spaced beyond the agents' min_sync_period
        # (each its own sync), nothing scraping the agents meanwhile.
        # Idle: the background work (drift audits, lease renewals, bookmarks)
        # for as long as the changes will take, measured over up to 60 s.
        quiet = min(changes * GAP, 60.0)
        progress(f"idle for {quiet:.0f} s, CPU per agent")
        cpu0 = {host: cpu_seconds(pid) for host, pid in pids.items()}
        time.sleep(quiet)
        idle = {host: (cpu_seconds(pid) - cpu0[host]) * changes * GAP / quiet
                for host, pid in pids.items()}
        progress(f"{changes} endpoint changes, CPU per agent")
        cpu0 = {host: cpu_seconds(pid) for host, pid in pids.items()}
        for k in range(changes):
            written = change(k)
            time.sleep(GAP)
        for host in nodes:
            wait_for(lambda: live_at(lab, host, written) is not None, 30,
                     what=f"the last change on {host}")
        cpu = {host: cpu_seconds(pid) - cpu0[host] for host, pid in pids.items()}
        # Latency: the agents' own commit times against the write's.
        progress(f"{latency_changes} endpoint changes, write -> live")
        per_host = {host: [] for host in nodes}
        every = []
        for k in range(changes, changes + latency_changes):
            written = change(k)
            done = {}
            deadline = time.monotonic() + 30
            while len(done) < len(nodes) and time.monotonic() < deadline:
                time.sleep(0.05)        # when we look; the times are the agents' own
                for host in nodes:
                    if host not in done:
                        at = live_at(lab, host, written)
                        if at is not None:
                            done[host] = at - written
            if len(done) < len(nodes):
                raise TimeoutError(f"change {k} not live on {set(nodes) - set(done)}")
            for host, seconds in done.items():
                per_host[host].append(seconds * 1000)
            every.append(max(done.values()) * 1000)
            time.sleep(GAP)
        rss = {host: (base[host], rss[host], rss_mb(pid)) for host, pid in pids.items()}
        marks = phases(lab, nodes[0], n) if breakdown else {}
        return starts, rss, idle, cpu, per_host, every, marks
    finally:
        lab.stop()


def spread(values):
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--changes", type=int, default=1000,
                        help="endpoint changes for the CPU figure")
    parser.add_argument("--latency-changes", type=int, default=300,
                        help="endpoint changes timed write -> live")
    parser.add_argument("--rounds", type=int, default=3, help="agent restarts per host")
    parser.add_argument("--phases", action="store_true",
                        help="then one more restart of node1, broken down")
    parser.add_argument("--dual-stack", action="store_true",
                        help="every Service RequireDualStack, with an IPv6 slice too (the "
                             "changes rewrite the IPv4 slices)")
    args = parser.parse_args(argv)
    starts, rss, idle, cpu, per_host, every, marks = run(
        args.services, args.changes, args.latency_changes, args.rounds, args.phases,
        args.dual_stack)
    per_1000 = 1000 / args.changes
    family = " dual-stack" if args.dual_stack else ""
    print(f"\n{args.services}{family} services x {ENDPOINTS} endpoints, {args.changes} endpoint "
          f"changes; start -> ready: median (min-max) of {args.rounds} restarts")
    print("CPU: seconds per 1,000 changes (the same time idle: background work such as "
          "drift audits, lease renewals, bookmarks)")
    print(f"{'agent':8} {'start->ready s':>20} {'RSS MB: base, N (end)':>22} "
          f"{'CPU s/1k (idle)':>17} "
          f"{'write->live p50 ms':>19} {'p99 ms':>8}")
    for host in starts:
        lat = per_host.get(host)
        cpu_text = f"{cpu[host] * per_1000:.2f} ({idle[host] * per_1000:.2f})"
        rss_text = f"{rss[host][0]:.0f}, {rss[host][1]:.0f} ({rss[host][2]:.0f})"
        print(f"{host:8} {spread(starts[host]):>20} {rss_text:>22} {cpu_text:>17} "
              f"{(f'{pct(lat, 0.5):.1f}' if lat else '-'):>19} "
              f"{(f'{pct(lat, 0.99):.1f}' if lat else '-'):>8}")
    print(f"{'every node':8} {'':>20} {'':>22} {'':>17} {pct(every, 0.5):19.1f} "
          f"{pct(every, 0.99):8.1f}")
    if marks:
        print("\nnode1 restarted once more, its status endpoint polled every 50 ms:")
        for what, seconds in marks.items():
            print(f"  {seconds:6.2f} s  {what}")


if __name__ == "__main__":
    main()
