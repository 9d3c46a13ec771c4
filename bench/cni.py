"""CNI ADD and DEL latency: nsx-proxy-cni against Debian's ``ptp`` plugin.

Side by side, on this machine: N network namespaces are attached, C at a
time, first by ``nsx-proxy-cni`` as the DaemonSet installs it (the zipapp
run by /usr/bin/python3; a veth pair, ``host-local``, one OVSDB transaction
on a userspace bridge), then by the reference plugins' ``ptp``
(a veth pair, ``host-local``, host routes; Go, no OVS) as the baseline; then
each detaches them again.  Each call is timed from exec to exit, as a
runtime sees it.  Rounds alternate the two; medians over rounds, with the
spread.  Run as root with OVS up:

    .venv/bin/python -m bench.cni [--pods 100] [--concurrency 10] [--rounds 3]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from bench.core import pct, progress, sh
from nsx_cni import install

CNI_PATH = "/usr/lib/cni"
BR = "nsxb-cni"
POD_CIDR = "10.77.0.0/20"


def setup_bridge():
    sh("ovs-vsctl", "--if-exists", "del-br", BR)
    sh("ovs-vsctl", "add-br", BR, "--", "set", "bridge", BR, "datapath_type=netdev",
       "fail_mode=secure", "external_ids:nsx-proxy-role=node",
       "external_ids:nsx-proxy-node=bench", f"external_ids:nsx-proxy-pod-cidr={POD_CIDR}")


def configs(workdir):
    ipam = {"type": "host-local", "dataDir": os.path.join(workdir, "ipam"),
            "ranges": [[{"subnet": POD_CIDR}]]}
    return {"nsx-proxy-cni": {"cniVersion": "1.0.0", "name": "bench-nsx",
                              "type": "nsx-proxy-cni", "bridge": BR, "ipam": ipam},
            "ptp": {"cniVersion": "1.0.0", "name": "bench-ptp", "type": "ptp",
                    "ipam": ipam}}


def call(binary, command, conf, i):
    env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=f"bench-{i}",
               CNI_NETNS=f"/var/run/netns/nsxb-{i}", CNI_IFNAME="eth0", CNI_PATH=CNI_PATH)
    t0 = time.perf_counter()
    proc = subprocess.run([binary], input=json.dumps(conf).encode(), env=env,
                          capture_output=True)
    took = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{command} pod {i}: {proc.stdout.decode()} {proc.stderr.decode()}")
    return took


def one_round(name, binary, conf, pods, concurrency):
    with ThreadPoolExecutor(concurrency) as pool:
        adds = list(pool.map(lambda i: call(binary, "ADD", conf, i), range(pods)))
        dels = list(pool.map(lambda i: call(binary, "DEL", conf, i), range(pods)))
    return {"add": adds, "del": dels}


def fmt(values):
    return f"{statistics.median(values) * 1000:.0f} ({min(values) * 1000:.0f}-" \
           f"{max(values) * 1000:.0f})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="nsxb-cni-")
    install.install(os.path.join(workdir, "bin"), os.path.join(workdir, "net.d"))
    binaries = {"nsx-proxy-cni": os.path.join(workdir, "bin", install.PLUGIN_TYPE),
                "ptp": os.path.join(CNI_PATH, "ptp")}
    results = {name: {"add": {"p50": [], "p99": []}, "del": {"p50": [], "p99": []}}
               for name in binaries}
    setup_bridge()
    for i in range(args.pods):
        sh("ip", "netns", "add", f"nsxb-{i}")
    try:
        for r in range(args.rounds):
            for name, binary in binaries.items():
                progress(f"round {r + 1}: {name}, {args.pods} pods, "
                         f"{args.concurrency} at a time")
                times = one_round(name, binary, configs(workdir)[name], args.pods,
                                  args.concurrency)
                for what in ("add", "del"):
                    results[name][what]["p50"].append(pct(times[what], 0.5))
                    results[name][what]["p99"].append(pct(times[what], 0.99))
    finally:
        for i in range(args.pods):
            subprocess.run(["ip", "netns", "del", f"nsxb-{i}"], capture_output=True)
        sh("ovs-vsctl", "--if-exists", "del-br", BR)
        shutil.rmtree(workdir, ignore_errors=True)
    ours, base = results["nsx-proxy-cni"], results["ptp"]
    print(f"\nCNI calls, {args.pods} pods, {args.concurrency} at a time, "
          f"{args.rounds} rounds: ms, median of rounds (min-max)\n")
    print("| call | nsx-proxy-cni | ptp (baseline) | ratio |")
    print("|---|---|---|---|")
    for what in ("add", "del"):
        for q in ("p50", "p99"):
            o, b = ours[what][q], base[what][q]
            print(f"| {what.upper()} {q} | {fmt(o)} | {fmt(b)} | "
                  f"{statistics.median(o) / statistics.median(b):.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
