"""Where a running node agent's memory goes, by tracemalloc.

The multi-host lab (bench.hosts' lab and objects: N ClusterIP services x 5
endpoints), every agent started with ``PYTHONTRACEMALLOC=FRAMES``.  Once
node1's agent has programmed the services and run ``--settle`` seconds, it
gets SIGUSR2 and writes a snapshot (nsx_proxy/heap_snapshot.py), which is
read here: what is still allocated, the largest files and lines first.
Tracing costs about as much memory again and slows the agent, so the RSS
printed is the traced agent's; bench.hosts gives the real one.  More than
5 frames make a traced agent's start too slow for the lab's 20 s::

    .venv/bin/python -m bench.memory [--services 10000] [--frames 1] [--top 25]
    .venv/bin/python -m bench.memory --read FILE [--top 25]    # any agent's snapshot

(On a cluster: set PYTHONTRACEMALLOC=1 in the agent's environment, send it
SIGUSR2, copy the file its log names, and ``--read`` it.)
"""
import argparse
import os
import signal
import tempfile
import time
import tracemalloc

from bench import kube
from bench.core import progress
from bench.hosts import _slice, deployed_lab, metrics, rss_mb
from nsx_proxy import heap_snapshot
from topologies.waiting import wait_for


def snapshot_of_node_agent(n, frames, settle):
    """(the snapshot file of node1's agent, its RSS in MB when sent SIGUSR2)."""
    lab = deployed_lab("/tmp/nsx-proxy-bench-memory")
    lab.agent_env = {"PYTHONTRACEMALLOC": str(frames)}
    try:
        progress(f"multi-host lab, agents traced ({frames} frames), {n} services")
        lab.start()
        kube.populate(lab.cluster.server.api, n, _slice, first_octet=97)
        host = lab.nodes[0].name
        wait_for(lambda: metrics(lab, host).get("nsx_proxy_services") == n + 1, 900,
                 what=f"{host}'s agent to take the services")
        lab.wait_ready(host, 900)
        progress(f"{host}'s agent is ready; {settle:.0f} s more, then SIGUSR2")
        time.sleep(settle)
        pid = lab.agents[host].proc.pid
        path = heap_snapshot.path_for(tempfile.gettempdir(), pid)   # the agent's default
        if os.path.exists(path):
            os.remove(path)
        rss = rss_mb(pid)
        os.kill(pid, signal.SIGUSR2)

        def written():
            with open(lab.agent_log(host)) as log:
                return f"written to {path}" in log.read()
        wait_for(written, 300, what=f"{host}'s agent to write {path}")
        return path, rss
    finally:
        lab.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--frames", type=int, default=1, help="PYTHONTRACEMALLOC's value")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds between ready and the snapshot")
    parser.add_argument("--top", type=int, default=25, help="files and lines to show")
    parser.add_argument("--read", metavar="FILE", help="only read this snapshot")
    args = parser.parse_args(argv)
    if args.read:
        path, head = args.read, f"snapshot {args.read}"
    else:
        path, rss = snapshot_of_node_agent(args.services, args.frames, args.settle)
        head = (f"node1's agent at {args.services} services x 5 endpoints, traced "
                f"({args.frames} frames): RSS {rss:.0f} MB under tracing; snapshot {path}")
    print(head)
    for line in heap_snapshot.summary(tracemalloc.Snapshot.load(path), args.top):
        print(line)


if __name__ == "__main__":
    main()
