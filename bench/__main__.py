"""Every benchmark, one table: python -m bench [--quick].

Runs bench.core (cold sync vs the ovs-ofctl floor, one-change latency,
RSS), bench.kube (API write to flows live, burst coalescing) and
bench.dataplane (connections/s and connect latency through a VIP vs
straight to the pod, OVS vs a kube-proxy-style iptables chain), then prints
one table: what was measured, ours, the baseline it is compared with, and
the ratio.  Medians of several rounds (``--rounds``); ``--quick`` runs one
round at 1,000 services only, for a smoke test.  Root, OVS up.
"""
import argparse
import os
import platform
import subprocess

from bench import core, dataplane, kube


def fmt(value):
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
    return str(value)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--charts", default="docs/bench", metavar="DIR",
                        help="where the PNG charts go (default %(default)s; needs the "
                             "bench extra: .venv/bin/pip install -e '.[bench]')")
    args = parser.parse_args(argv)
    sizes = [1000] if args.quick else [1000, 10000]
    rounds = 1 if args.quick else args.rounds
    rows = []
    core_rows = core.main(["--sizes", *map(str, sizes), "--rounds", str(rounds)])
    for n, msgs, app, floor, ratio, p50, p99, rss in core_rows:
        rows += [("cold sync, s (vs ovs-ofctl bundle)", n, app, floor, ratio),
                 ("one endpoint change p50 / p99, ms", n, f"{p50:.1f} / {p99:.1f}", "", ""),
                 ("controller RSS, MB", n, rss, "", "")]
    for n, cold, p50, p99, syncs, burst in kube.main(
            ["--sizes", *map(str, sizes), "--rounds", str(rounds)]):
        rows += [("API write -> flows live p50 / p99, ms", n, f"{p50:.1f} / {p99:.1f}", "", ""),
                 ("syncs for a 1,000-write burst", n, syncs, 1000, syncs / 1000)]
    dp = dataplane.main(["--sizes", *map(str, [1] + sizes), "--rounds", str(rounds)])
    for n, r in dp.items():
        rows += [("conn/s via VIP (vs iptables chain)", n, r["ovs vip"]["cps"],
                  r["iptables vip"]["cps"], r["ovs vip"]["cps"] / r["iptables vip"]["cps"]),
                 ("conn/s VIP / straight to pod (vs iptables)", n,
                  r["ovs vip"]["cps"] / r["ovs pod"]["cps"],
                  r["iptables vip"]["cps"] / r["iptables pod"]["cps"], ""),
                 ("connect() median, ms (vs iptables)", n, r["ovs vip"]["connect_ms"],
                  r["iptables vip"]["connect_ms"],
                  r["ovs vip"]["connect_ms"] / r["iptables vip"]["connect_ms"]),
                 ("conn/s via VIP (vs nftables)", n, r["ovs vip"]["cps"],
                  r["nftables vip"]["cps"], r["ovs vip"]["cps"] / r["nftables vip"]["cps"]),
                 ("full ruleset load, s: iptables (vs nftables)", n,
                  r["loads"]["iptables"], r["loads"]["nftables"], ""),
                 ("VIP connects over 0.5 s (vs nftables)", n, r["ovs vip"]["stalls"],
                  r["nftables vip"]["stalls"], "")]
    ovs = subprocess.run(["ovs-vsctl", "--version"], capture_output=True,
                         text=True).stdout.splitlines()[0]
    print(f"\nmachine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"{ovs}, Python {platform.python_version()}, kernel {platform.release()}; "
          f"medians of {rounds} round(s)")
    print(f"{'measure':<44} | {'services':>8} | {'ours':>14} | {'baseline':>10} | ratio")
    for name, n, ours, base, ratio in rows:
        print(f"{name:<44} | {n:>8} | {fmt(ours):>14} | {fmt(base):>10} | {fmt(ratio)}")
    try:
        from bench import charts
        for path in charts.write(core_rows, dp, args.charts):
            print(f"chart: {path}")
    except ImportError:
        print("charts skipped: .venv/bin/pip install -e '.[bench]' adds matplotlib")


if __name__ == "__main__":
    main()
