"""Data-plane benchmark: connections/s and connect latency through a VIP.

Side by side, in network namespaces this benchmark creates:

* **OVS**: a client and a server namespace on one userspace OVS bridge
  programmed by ``ryu-manager controller.app`` with N ClusterIP services
  (all backed by the server; the last one is measured): VIP vs pod IP.
* **iptables**: the same client/server pair routed through a namespace
  holding a kube-proxy-style chain for the same N services
  (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* DNAT): VIP vs pod IP.  Routed,
  not bridged, because br_netfilter is not available on this kernel.

The client opens TCP connections back to back for a few seconds (connect,
read the server's one byte, close with RST so no TIME_WAIT piles up in the
client) and reports connections/s, the median and p99 connect() time, stalls
(connects over 0.5 s) and failures; medians over rounds, with the spread.
OVS's VIP is measured twice: with fresh tuples (each round from an empty
conntrack zone, no client port used twice) and with reused ones (a
1,000-port range), where the userspace conntrack's stalls show.
Run as root with OVS up:

    .venv/bin/python -m bench.dataplane [--sizes 1 1000 10000] [--rounds 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

from bench.core import progress, sh
from controller.bridges import default_zone, ip_mac
from topologies.controller_proc import RyuProcess
from topologies.waiting import wait_for

BR = "nsxb-br"
OF_PORT = 16671
NS = {"client": "nsxb-c", "server": "nsxb-s", "router": "nsxb-r",
      "iclient": "nsxb-ic", "iserver": "nsxb-is",
      "nrouter": "nsxb-nr", "nclient": "nsxb-nc", "nserver": "nsxb-ns"}
POD_CIDR = "10.9.1.0/24"
CLIENT_IP, SERVER_IP, GATEWAY = "10.9.1.2", "10.9.1.3", "10.9.1.1"
HERE = os.path.dirname(os.path.abspath(__file__))

SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(1024)
while True:
    c, _ = s.accept(); c.sendall(b"x"); c.close()
"""

CLIENT = r"""
import json, socket, struct, sys, time
ip, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
count, failed, times, end = 0, 0, [], time.monotonic() + seconds
stalled = []                        # source ports of connects over 0.5 s
abort = struct.pack("ii", 1, 0)     # close with RST: no TIME_WAIT on either side,
while time.monotonic() < end:       # so reused ports never meet an old connection
    s = socket.socket(); s.settimeout(2)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, abort)
    try:
        t = time.perf_counter(); s.connect((ip, port))
        took = time.perf_counter() - t
        times.append(took); s.recv(1); count += 1
        if took > 0.5:
            stalled.append(s.getsockname()[1])
    except OSError:
        failed += 1
    finally:
        s.close()
times.sort()
print(json.dumps({"cps": count / seconds, "failed": failed, "stalls": len(stalled),
                  "stalled_ports": stalled[:20], "connections": count,
                  "connect_ms": times[len(times) // 2] * 1000 if times else None,
                  "p99_ms": times[int(len(times) * 0.99)] * 1000 if times else None}))
"""


def vip(i):
    return f"10.{100 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"


def cleanup():
    sh("ovs-vsctl", "--if-exists", "del-br", BR)
    # Userspace conntrack outlives the bridge: drop the zones' old entries.
    flush_zones()
    for ns in NS.values():
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for dev in ("nsxb-c1", "nsxb-s1", "nsxb-rc", "nsxb-rs", "nsxb-nc", "nsxb-ns"):
        subprocess.run(["ip", "link", "del", dev], capture_output=True)


def flush_zones():
    """Empty this bridge's conntrack zones (only the benchmark's own entries)."""
    zone = default_zone(BR)
    for z in (zone, zone + 1):
        subprocess.run(["ovs-appctl", "dpctl/flush-conntrack", f"zone={z}"],
                       capture_output=True)


def in_ns(ns, *cmd):
    return sh("ip", "netns", "exec", ns, *cmd)


def veth_pod(ns, ifname, ip, prefix, gw):
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", ifname, "type", "veth", "peer", "name", "eth0", "netns", ns)
    in_ns(ns, "ip", "link", "set", "eth0", "address", ip_mac(ip))
    in_ns(ns, "ip", "addr", "add", f"{ip}/{prefix}", "dev", "eth0")
    in_ns(ns, "ip", "link", "set", "eth0", "up")
    in_ns(ns, "ip", "link", "set", "lo", "up")
    in_ns(ns, "ip", "route", "add", "default", "via", gw)
    in_ns(ns, "ethtool", "-K", "eth0", "tx", "off")
    sh("ethtool", "-K", ifname, "tx", "off")
    sh("ip", "link", "set", ifname, "up")


def build_ovs(workdir, n):
    veth_pod(NS["client"], "nsxb-c1", CLIENT_IP, 24, GATEWAY)
    veth_pod(NS["server"], "nsxb-s1", SERVER_IP, 24, GATEWAY)
    sh("ovs-vsctl", "add-br", BR, "--", "set", "bridge", BR, "datapath_type=netdev",
       "fail_mode=secure", "protocols=OpenFlow13", "external_ids:nsx-proxy-role=node",
       "external_ids:nsx-proxy-node=node1", f"external_ids:nsx-proxy-pod-cidr={POD_CIDR}",
       "--", "set-controller", BR, f"tcp:127.0.0.1:{OF_PORT}")
    for name, port, ip in (("client", "nsxb-c1", CLIENT_IP), ("server", "nsxb-s1", SERVER_IP)):
        sh("ovs-vsctl", "add-port", BR, port, "--", "set", "interface", port,
           "external_ids:nsx-proxy-role=pod", "external_ids:pod-namespace=bench",
           f"external_ids:pod-name={name}", f"external_ids:ip-address={ip}",
           f"external_ids:attached-mac={ip_mac(ip)}")
    state = {"nodes": [{"name": "node1", "internalIP": "192.168.200.1",
                        "podCIDR": POD_CIDR}],
             "services": [{"namespace": "bench", "name": f"svc{i}", "clusterIP": vip(i),
                           "ports": [{"name": "http", "protocol": "TCP", "port": 80,
                                      "targetPort": 8080}],
                           "endpoints": [{"ip": SERVER_IP, "node": "node1"}]}
                          for i in range(n)]}
    path = os.path.join(workdir, "state.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(state, fh)
    ctl = RyuProcess(workdir, OF_PORT, os.path.join(workdir, "controller.log"),
                     {"source": "file", "state_file": path, "status_port": 0})
    ctl.start()
    wait_for(lambda: sh("ovs-ofctl", "-O", "OpenFlow13", "dump-groups", BR)
             .count("group_id=") >= n, 600, interval=0.5, what=f"{n} services installed")
    return ctl


def routed_pair(router, client, server, net, devs):
    """A client and a server namespace routed through ``router`` (10.N.1.2 and
    10.N.2.2), the way a kube-proxy node routes pod traffic."""
    sh("ip", "netns", "add", router)
    for ns, dev, sub in ((client, devs[0], 1), (server, devs[1], 2)):
        veth_pod(ns, dev, f"{net}.{sub}.2", 24, f"{net}.{sub}.1")
        sh("ip", "link", "set", dev, "netns", router)
        in_ns(router, "ip", "addr", "add", f"{net}.{sub}.1/24", "dev", dev)
        in_ns(router, "ip", "link", "set", dev, "up")
    in_ns(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")


def build_iptables(workdir, n):
    """kube-proxy's iptables mode for N services; returns the restore time."""
    routed_pair(NS["router"], NS["iclient"], NS["iserver"], "10.8", ("nsxb-rc", "nsxb-rs"))
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":KUBE-SERVICES - [0:0]",
             "-A PREROUTING -j KUBE-SERVICES"]
    for i in range(n):
        lines += [f":KUBE-SVC-{i} - [0:0]", f":KUBE-SEP-{i} - [0:0]",
                  f"-A KUBE-SERVICES -d {vip(i)}/32 -p tcp --dport 80 -j KUBE-SVC-{i}",
                  f"-A KUBE-SVC-{i} -j KUBE-SEP-{i}",
                  f"-A KUBE-SEP-{i} -p tcp -j DNAT --to-destination 10.8.2.2:8080"]
    lines.append("COMMIT")
    rules = os.path.join(workdir, "rules")
    with open(rules, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    t0 = time.monotonic()
    with open(rules) as fh:
        subprocess.run(["ip", "netns", "exec", NS["router"], "iptables-restore"], stdin=fh,
                       check=True)
    return time.monotonic() - t0


def build_nftables(workdir, n):
    """kube-proxy's nftables mode (GA in 1.33) for N services: one verdict
    map keyed on (address, protocol, port), a chain per service choosing an
    endpoint with numgen, a chain per endpoint that DNATs.  Returns the time
    ``nft -f`` took to load the whole ruleset."""
    routed_pair(NS["nrouter"], NS["nclient"], NS["nserver"], "10.7", ("nsxb-nc", "nsxb-ns"))
    lines = ["table ip kube-proxy {",
             "  map service-ips {",
             "    type ipv4_addr . inet_proto . inet_service : verdict",
             "  }",
             "  chain services {",
             "    ip daddr . meta l4proto . th dport vmap @service-ips",
             "  }",
             "  chain nat-prerouting {",
             "    type nat hook prerouting priority dstnat; policy accept;",
             "    jump services",
             "  }"]
    for i in range(n):
        lines += [f"  chain service-{i} {{",
                  f"    numgen random mod 1 vmap {{ 0 : goto endpoint-{i} }}", "  }",
                  f"  chain endpoint-{i} {{",
                  "    meta l4proto tcp dnat to 10.7.2.2:8080", "  }"]
    lines.append("}")
    elements = ", ".join(f"{vip(i)} . tcp . 80 : goto service-{i}" for i in range(n))
    lines.append(f"add element ip kube-proxy service-ips {{ {elements} }}")
    rules = os.path.join(workdir, "nft-rules")
    with open(rules, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    t0 = time.monotonic()
    in_ns(NS["nrouter"], "nft", "-f", rules)
    return time.monotonic() - t0


def measure(client_ns, target, seconds, ports, vip_ip):
    """One run; ``ports`` is the client's ephemeral range for this case, so the
    VIP case's conntrack entries (whose reply tuple is client:port <- pod:8080)
    never collide with the direct case's new connections."""
    in_ns(client_ns, "sysctl", "-qw", f"net.ipv4.ip_local_port_range={ports}")
    port = "80" if target == vip_ip else "8080"
    out = in_ns(client_ns, sys.executable, "-c", CLIENT, target, port, str(seconds))
    return json.loads(out)


def run_size(n, rounds, seconds):
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        cleanup()
        ctl = None
        servers = []
        try:
            progress(f"bench.dataplane: {n} services: programming OVS and the iptables chain")
            ctl = build_ovs(workdir, n)
            results["loads"] = {"iptables": build_iptables(workdir, n),
                                "nftables": build_nftables(workdir, n)}
            for ns in (NS["server"], NS["iserver"], NS["nserver"]):
                servers.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable,
                                                 "-c", SERVER]))
            time.sleep(0.5)
            # The measured VIP is the last service: the end of kube-proxy's chain
            # (OVS's classifier does not care about order).
            target_vip = vip(n - 1)
            # kernel cases: VIP and pod in disjoint port ranges, so the VIP's
            # entries (reply tuple client:port <- pod:8080) never meet the
            # direct case's; OVS's fresh cases flush their zone each round
            # instead and get 25,500 even ports (5 s at 5,000 conn/s)
            low, high, fresh_ports = "10000 34999", "35000 59999", "10000 60999"
            cases = {"ovs vip": (NS["client"], target_vip, fresh_ports),
                     "ovs pod": (NS["client"], SERVER_IP, fresh_ports),
                     "iptables vip": (NS["iclient"], target_vip, low),
                     "iptables pod": (NS["iclient"], "10.8.2.2", high),
                     "nftables vip": (NS["nclient"], target_vip, low),
                     "nftables pod": (NS["nclient"], "10.7.2.2", high)}
            # Two regimes through OVS's VIP, reported apart.  Fresh tuples:
            # each round starts from an empty conntrack zone and stays below
            # one wrap of the client's ports, as most clients' connections
            # to one VIP do.  Reused tuples: a 1,000-port range wraps every
            # tenth of a second, so new connections meet their predecessors'
            # entries (TIME_WAIT) - the userspace conntrack then sometimes
            # cannot NAT a SYN and drops it (docs/known-limits.md); the
            # stalls and the spread of that row are the datapath's.
            cases["ovs vip reused"] = (NS["client"], target_vip, "10000 10999")
            for name, (ns, target, ports) in cases.items():
                progress(f"bench.dataplane: {n} services: {name}, {rounds} x {seconds} s")
                fresh = name in ("ovs vip", "ovs pod")
                measure(ns, target, 0.5, ports, target_vip)  # warm up (ARP, caches)
                runs = []
                for _ in range(rounds):
                    if fresh:
                        flush_zones()
                    runs.append(measure(ns, target, seconds, ports, target_vip))
                results[name] = {k: statistics.median(r[k] for r in runs)
                                 for k in ("cps", "connect_ms", "p99_ms")}
                results[name]["failed"] = sum(r["failed"] for r in runs)
                results[name]["stalls"] = sum(r["stalls"] for r in runs)
                results[name]["spread"] = (min(r["cps"] for r in runs),
                                           max(r["cps"] for r in runs))
        finally:
            for proc in servers:
                proc.kill()
            if ctl is not None:
                ctl.stop()
            cleanup()
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 1000, 10000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    print(f"medians of {args.rounds} rounds x {args.seconds} s; the VIP is the last service")
    print("services | case          | conn/s | min-max conn/s | VIP/pod | connect p50 ms | "
          "p99 ms | stalls | failed")
    rows = {}
    for n in args.sizes:
        r = rows[n] = run_size(n, args.rounds, args.seconds)
        for mode in ("ovs", "iptables", "nftables"):
            for what in ("vip", "pod", "vip reused"):
                if f"{mode} {what}" not in r:
                    continue
                v = r[f"{mode} {what}"]
                ratio = (f"{v['cps'] / r[f'{mode} pod']['cps']:7.2f}"
                         if what != "pod" else " " * 7)
                print(f"{n:>8} | {mode + ' ' + what:<14}| {v['cps']:>6.0f} | "
                      f"{v['spread'][0]:>6.0f}-{v['spread'][1]:<7.0f} | {ratio} | "
                      f"{v['connect_ms']:>14.3f} | {v['p99_ms']:>6.2f} | {v['stalls']:>6} | "
                      f"{v['failed']:>6}", flush=True)
        print(f"{n:>8} | ruleset load: iptables-restore {r['loads']['iptables']:.3f} s, "
              f"nft -f {r['loads']['nftables']:.3f} s (this proxy's cold sync: "
              f"python -m bench.core)", flush=True)
    return rows


if __name__ == "__main__":
    main()
