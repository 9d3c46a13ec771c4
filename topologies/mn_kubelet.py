"""The kubelet of a network started with ``mn --custom topologies/nsx_topo.py``.

With ``source = kubernetes``, Services come from an API server, and so must
the Nodes and the Pods behind their EndpointSlices.  This registers the
topology's Nodes and Pods (found by name: Mininet runs each host's shell as
``mininet:NAME``), reports each pod Ready from a real TCP connect made in
its network namespace, and applies the demo Service ``web`` (10.96.0.10)::

    .venv/bin/python -m topologies.apiserver --kubeconfig /tmp/nsx-kubeconfig &
    .venv/bin/python -m topologies.mn_kubelet --kubeconfig /tmp/nsx-kubeconfig \\
        --nodes 3 --pods 2

Meant for the embedded API server (or a throw-away cluster): it creates
Node and Pod objects no real kubelet backs.  Runs until Ctrl-C or SIGTERM.
"""
import argparse
import os
import sys
import tempfile

from topologies import plan
from topologies.cluster import Cluster, demo_service
from topologies.waiting import until_stopped

DEMO_VIP = "10.96.0.10"


def pid_of(name):
    """The pid of Mininet host ``name``'s shell (it lives in the host's netns)."""
    want = f"mininet:{name}".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if want in fh.read().split(b"\0"):
                    return int(pid)
        except OSError:
            continue
    raise LookupError(f"no Mininet host {name} is running (start mn first)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--pods", type=int, default=2, help="pods per node")
    parser.add_argument("--no-demo-service", action="store_true",
                        help="do not apply the Service web (10.96.0.10)")
    args = parser.parse_args(argv)
    nodes = plan.plan_nodes(args.nodes, args.pods)
    pods = [p for n in nodes for p in n.pods]
    try:
        pids = {p.name: pid_of(p.name) for p in pods}
    except LookupError as exc:
        print(f"mn_kubelet: {exc}", file=sys.stderr)
        return 2
    cluster = Cluster(tempfile.mkdtemp(prefix="nsx-mn-kubelet-"), args.kubeconfig,
                      plan.TCP_TARGET, plan.UDP_TARGET)
    kubelet = cluster.kubelet
    kubelet.register_nodes(nodes)
    kubelet.start(pods, pids.__getitem__)
    for pod in pods:
        kubelet.schedule(pod.name)
    if not args.no_demo_service:
        cluster.apply_service(demo_service(DEMO_VIP, plan.TCP_TARGET, plan.UDP_TARGET))
    print(f"registered {len(nodes)} nodes and {len(pods)} pods"
          + ("" if args.no_demo_service else f"; Service web on {DEMO_VIP}"), flush=True)
    until_stopped()
    cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
