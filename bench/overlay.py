"""What the overlay costs: connections/s through a VIP across hosts, Geneve
against the shared L2 fabric, on the multi-host lab.

The same lab is built twice (``HostsLab`` with ``overlay`` on, then off):
pod1 on node1 opens TCP connections back to back (bench.dataplane's client:
connect, read one byte, close with RST) to a ClusterIP whose only endpoint
is pod3 on node2, and to pod3's own IP; so every connection crosses the
hosts, through the tunnels or over the fabric.  Rounds per lab; the
medians, with the spread, and the overlay's ratio to the fabric.  Run as
root with OVS up, nothing else using the lab's names:

    .venv/bin/python -m bench.overlay [--seconds 5] [--rounds 3]
"""
import argparse
import json
import statistics
import subprocess
import sys

from bench.core import progress
from bench.dataplane import CLIENT, SERVER
from topologies import lab as L

PORT = 9099                      # beside the pods' own server (8080)
VIP = "10.96.7.7"


def measure(lab, target, seconds):
    ip, port = target.split()
    proc = lab.net.get("pod1").popen(["python3", "-c", CLIENT, ip, port, str(seconds)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
    out, err = proc.communicate(timeout=seconds + 30)
    if proc.returncode:
        raise RuntimeError(f"client to {target}: {err.strip()}")
    return json.loads(out.strip().splitlines()[-1])


def run_mode(overlay, rounds, seconds):
    from topologies.hosts import HostsLab
    name = "overlay (Geneve)" if overlay else "fabric (L2)"
    lab = HostsLab(nodes=2, pods_per_node=2, overlay=overlay,
                   run_dir=f"/tmp/nsx-proxy-bench-{'overlay' if overlay else 'fabric'}")
    results = {"vip": [], "pod": []}
    server = None
    try:
        progress(f"{name}: building the multi-host lab")
        lab.start()
        L.wait_for(lab.programmed, 30, what="flows on every host's bridge")
        server = lab.net.get("pod3").popen(["python3", "-c",
                                            SERVER.replace("8080", str(PORT))])
        lab.cluster.kubelet.relabel("pod3", {"app": "far"})
        lab.cluster.apply_service({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "far", "namespace": "default"},
            "spec": {"clusterIP": VIP, "selector": {"app": "far"},
                     "ports": [{"name": "x", "port": 80, "targetPort": PORT}]}})
        L.wait_for(lab.programmed, 30, what="the far service on every bridge")
        pod3 = next(p.ip for p in lab.pods if p.name == "pod3")
        L.wait_for(lambda: measure(lab, f"{VIP} 80", 0.5)["connections"] > 0, 30,
                   what="the VIP to answer across hosts")
        for r in range(rounds):
            for what, target in (("vip", f"{VIP} 80"), ("pod", f"{pod3} {PORT}")):
                progress(f"{name}: round {r + 1}, {what}")
                results[what].append(measure(lab, target, seconds))
    finally:
        if server is not None:
            server.kill()
            server.wait()
        lab.stop()
    return results


def fmt(values):
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    modes = {"overlay": run_mode(True, args.rounds, args.seconds),
             "fabric": run_mode(False, args.rounds, args.seconds)}
    print(f"\nConnections/s across hosts (pod1 on node1 -> pod3 on node2), "
          f"{args.rounds} rounds of {args.seconds:g} s: median (min-max)\n")
    print("| target | overlay (Geneve) | fabric (L2) | overlay / fabric | "
          "connect p50 overlay / fabric | failed |")
    print("|---|---|---|---|---|---|")
    for what, label in (("vip", "ClusterIP"), ("pod", "pod IP")):
        o = [r["cps"] for r in modes["overlay"][what]]
        f = [r["cps"] for r in modes["fabric"][what]]
        om = statistics.median(r["connect_ms"] for r in modes["overlay"][what])
        fm = statistics.median(r["connect_ms"] for r in modes["fabric"][what])
        failed = sum(r["failed"] for m in modes.values() for r in m[what])
        print(f"| {label} | {fmt(o)} | {fmt(f)} | "
              f"{statistics.median(o) / statistics.median(f):.2f}x | "
              f"{om:.2f} / {fm:.2f} ms | {failed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
