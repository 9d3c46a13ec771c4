"""nsx-proxy: look at what the proxy did, the way Contrail and Antrea users look.

    nsx-proxy services [NS/NAME]          load balancer -> listeners -> pools -> members
    nsx-proxy conntrack NS/NAME           connections OVS tracks for a service
    nsx-proxy trace --from-pod NS/POD --dst IP --dport N [--proto tcp]
    nsx-proxy flows (--service NS/NAME | --node NAME | --floating-ip IP)

Every subcommand takes ``--json`` for scripts.  It reads the controller's
read-only endpoint (the state it implements, with group ids, frontends, each
cookie's owner and the table names) and OVS on this host (``ovs-ofctl`` /
``ovs-appctl``): group stats, conntrack, ofproto/trace.  It imports nothing of
the controller: the endpoint's view is its whole contract.

Which endpoint, the way the controller itself is configured: ``--controller
URL``; else ``status_port`` from ``--config-file FILE`` (the file given to
ryu-manager); else from the config of a lab that is running
(/tmp/nsx-proxy-lab, /tmp/nsx-proxy-seed); else from
/etc/nsx-proxy/nsx-proxy.conf; else http://127.0.0.1:9910.  In the
multi-host lab each agent listens inside its host: ``node1 nsx-proxy ...``
from the lab's CLI (the CLI says so when nothing answers).
"""
import argparse
import configparser
import glob
import os
import json
import re
import subprocess
import sys
import urllib.request

from controller.ovs_text import (affinity_alias, conntrack_entries, group_buckets, group_stats,
                                 spread_picks)

OFCTL = ["ovs-ofctl", "-O", "OpenFlow13"]


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"nsx-proxy: {' '.join(cmd[:3])} failed: {proc.stderr.strip()}")
    return proc.stdout


DEFAULT_PORT = 9910
# Config files looked at, in order, when neither --controller nor
# --config-file is given: a running lab's controller, then an installed one.
KNOWN_CONFIGS = ("/tmp/nsx-proxy-lab/nsx-proxy.conf", "/tmp/nsx-proxy-seed/nsx-proxy.conf",
                 "/etc/nsx-proxy/nsx-proxy.conf")


def status_url(config_path):
    """The status endpoint a controller started with this config serves."""
    parser = configparser.ConfigParser(inline_comment_prefixes=("#",))
    if not parser.read(config_path):
        raise SystemExit(f"nsx-proxy: cannot read the config file {config_path}")
    port = parser.getint("nsx_proxy", "status_port", fallback=DEFAULT_PORT)
    if port == 0:
        raise SystemExit(f"nsx-proxy: {config_path} turns the status endpoint off "
                         f"(status_port = 0)")
    return f"http://127.0.0.1:{port}"


# A running multi-host lab (./scripts/lab --hosts): one agent per host, each
# on its own host's 127.0.0.1, which the root namespace cannot reach.
HOSTS_LAB_CONFIGS = "/tmp/nsx-proxy-hosts/*/nsx-proxy.conf"


def unreachable_hint() -> str:
    """How to reach an agent when the default one does not answer."""
    hosts = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(HOSTS_LAB_CONFIGS))
    if not hosts:
        return ""
    return (f"\nnsx-proxy: the multi-host lab's agents listen inside their hosts "
            f"({', '.join(hosts)}); from its CLI run it in one: "
            f"HOST .venv/bin/nsx-proxy ... (e.g. {hosts[-1]} .venv/bin/nsx-proxy services)")


def find_controller(args):
    """(URL, where it came from) of the controller's status endpoint."""
    if args.controller:
        return args.controller, "--controller"
    if args.config_file:
        return status_url(args.config_file), f"--config-file {args.config_file}"
    for path in KNOWN_CONFIGS:
        if os.path.exists(path):
            return status_url(path), f"the config {path}"
    return f"http://127.0.0.1:{DEFAULT_PORT}", "the default"


def fetch_state(url):
    with urllib.request.urlopen(url.rstrip("/") + "/state", timeout=5) as resp:
        return json.load(resp)


def _service(state, name):
    ns, _, svc = name.partition("/")
    for s in state["services"]:
        if (s["namespace"], s["name"]) == (ns, svc) or (not svc and s["name"] == ns):
            return s
    raise SystemExit(f"nsx-proxy: no service {name!r} in the controller's state")


def _named(items, field, value, what):
    for item in items:
        if item[field] == value:
            return item
    raise SystemExit(f"nsx-proxy: no {what} {value!r} in the controller's state")


def _node_bridges(state):
    return [b for b in state["bridges"] if b["role"] == "node" and b["connected"]]


# --- cookies -> objects ----------------------------------------------------------

def cookie_owner(state, cookie):
    """What object a flow's cookie says it belongs to, as text."""
    key = f"{cookie & int(state['cookie_mask'], 16):#018x}"
    return state["cookies"].get(key, f"unknown object (cookie {key})")


# --- subcommands ------------------------------------------------------------------

def _table_id(state, name):
    """A table's id by its name, from the endpoint's table names (None from
    a controller older than the table)."""
    return next((int(t) for t, n in state["tables"].items() if n == name), None)


def cmd_services(args, state):
    bridges = _node_bridges(state)
    spread_table = _table_id(state, "UdpSpread")     # UDP pools: a flow per endpoint
    layout, stats = {}, {}
    for b in bridges:
        layout[b["name"]] = group_buckets(_run(OFCTL + ["dump-groups", b["name"]]))
        stats[b["name"]] = group_stats(_run(OFCTL + ["dump-group-stats", b["name"]]))
        if spread_table is not None:
            picks, counters = spread_picks(_run(OFCTL + ["dump-flows", b["name"],
                                                         f"table={spread_table}"]))
            layout[b["name"]].update(picks)
            stats[b["name"]].update(counters)
    out = []
    chosen = [_service(state, args.name)] if args.name else state["services"]
    for s in chosen:
        listeners = []
        for p in s["ports"]:
            pools = []
            # a pool per cluster IP (each of its family's members), then the
            # external ones, per family
            vips = s.get("cluster_ips") or [s["cluster_ip"]]
            has_v4 = any(":" not in ip for ip in vips)
            for label, gids, v6 in (
                    ("cluster IP", p["group_ids"] if has_v4 else [], False),
                    ("cluster IP (IPv6)", [p["ipv6_group_id"]] if p.get("ipv6_group_id")
                     else [], True),
                    ("external", p["external_group_ids"], False),
                    ("external (IPv6)", [p["external_ipv6_group_id"]]
                     if p.get("external_ipv6_group_id") else [], True)):
                if not gids:
                    continue
                counted = {}                 # every part of a split pool counts
                # an IPv6 affinity bucket names its endpoint by a hash of it
                alias = {affinity_alias(e["ip"]): e["ip"] for e in p["endpoints"]}
                for b in bridges:
                    for gid in gids:
                        for (ip, port), (pk, by) in zip(layout[b["name"]].get(gid, ()),
                                                        stats[b["name"]].get(gid, ())):
                            c = counted.setdefault((alias.get(ip, ip), port), [0, 0])
                            c[0] += pk
                            c[1] += by
                members = []
                for e in (e for e in p["endpoints"] if (":" in e["ip"]) == v6):
                    pk, by = counted.get((e["ip"], e["port"]), (0, 0))
                    members.append(dict(e, packets=pk, bytes=by))
                pools.append({"pool": label, "group_id": gids[0], "group_ids": gids,
                              "spread_per_flow": p.get("spread_per_flow", False),
                              "members": members})
            listeners.append({"protocol": p["protocol"], "port": p["port"], "name": p["name"],
                              "node_port": p["node_port"], "cookie": p["cookie"],
                              "pools": pools})
        out.append({"service": f"{s['namespace']}/{s['name']}", "type": s["type"],
                    "vips": (s.get("cluster_ips") or [s["cluster_ip"]]) + s["external_ips"]
                    + s["load_balancer_ips"],
                    "listeners": listeners})
    if args.json:
        return out
    for lb in out:
        print(f"loadbalancer {lb['service']} ({lb['type']})  VIPs {', '.join(lb['vips'])}")
        for li in lb["listeners"]:
            np = f"  nodePort {li['node_port']}" if li["node_port"] else ""
            print(f"  listener {li['protocol']}/{li['port']} {li['name'] or ''}{np}"
                  f"  cookie {li['cookie']}")
            for pool in li["pools"]:
                if pool["spread_per_flow"]:
                    where = f"flows reg4={pool['group_id']:#x} (table {spread_table})"
                else:
                    where = f"group {', '.join(map(str, pool['group_ids']))}"
                print(f"    pool {pool['pool']}  {where}")
                for m in pool["members"] or [{"ip": "(no members)", "port": ""}]:
                    cond = ("ready" if m.get("ready") else "terminating"
                            if m.get("terminating") else "not ready") if "ready" in m else ""
                    print(f"      member {m['ip']}:{m['port']:<6} {m.get('node') or '':<8} "
                          f"{cond:<12} packets={m.get('packets', 0)} bytes={m.get('bytes', 0)}")
    return None


def cmd_conntrack(args, state):
    s = _service(state, args.name)
    frontends = {(f["ip"], f["port"]) for f in s["frontends"]}
    zones = {b["ct_zone"]: b["name"] for b in state["bridges"]}
    out = [dict(e, bridge=zones.get(e["zone"]))
           for e in conntrack_entries(_run(["ovs-appctl", "dpctl/dump-conntrack"]))
           if (e["original"]["dst"], e["original"]["dport"]) in frontends]
    if args.json:
        return out
    for e in out:
        o, r = e["original"], e["reply"]
        print(f"{e['proto']:<4} {o['src']}:{o['sport']} -> {o['dst']}:{o['dport']}   "
              f"=>   {r['dst']}:{r['dport']} -> {r['src']}:{r['sport']}   "
              f"{e['bridge'] or e['zone']} {e['state'] or ''}")
    return None


def cmd_trace(args, state):
    pod = next((p for b in state["bridges"] for p in b["pods"] if p["name"] == args.from_pod),
               None)
    if pod is None:
        raise SystemExit(f"nsx-proxy: no pod {args.from_pod!r} on a bridge the proxy knows")
    bridge = next(b for b in state["bridges"] if pod in b["pods"])
    if ":" in args.dst and not pod.get("ip6"):
        raise SystemExit(f"nsx-proxy: pod {args.from_pod} has no IPv6 address")
    addrs = (f"{args.proto}6,ipv6_src={pod['ip6']},ipv6_dst={args.dst}" if ":" in args.dst
             else f"{args.proto},nw_src={pod['ip']},nw_dst={args.dst}")
    flow = (f"in_port={pod['ofport']},dl_src={pod['mac']},dl_dst={bridge['router_mac']},"
            f"{addrs},tp_dst={args.dport}" + (",tcp_flags=syn" if args.proto == "tcp" else ""))
    text = _run(["ovs-appctl", "ofproto/trace", bridge["name"], flow])
    steps, out_lines = [], []
    for line in text.splitlines():
        m = re.match(r"^(\s*)(\d+)\. (.*?)(?:, )?priority (\d+), cookie (0x[0-9a-f]+)", line)
        if m:
            table, cookie = int(m.group(2)), int(m.group(5), 16)
            step = {"table": table,
                    "table_name": state["tables"].get(str(table), f"table{table}"),
                    "match": m.group(3), "priority": int(m.group(4)),
                    "cookie": m.group(5), "object": cookie_owner(state, cookie)}
            steps.append(step)
            line = f"{line}   <- {step['table_name']}: {step['object']}"
        out_lines.append(line)
    if args.json:
        return {"bridge": bridge["name"], "flow": flow, "steps": steps,
                "datapath_actions": [ln.split(":", 1)[1].strip() for ln in text.splitlines()
                                     if ln.startswith("Datapath actions:")]}
    print("\n".join(out_lines))
    return None


def cmd_flows(args, state):
    if args.service:
        s = _service(state, args.service)
        masks = [int(p["cookie"], 16) for p in s["ports"]]
    elif args.node:
        masks = [int(_named(state["nodes"], "name", args.node, "node")["cookie"], 16)]
    else:
        masks = [int(_named(state["floating_ips"], "ip", args.floating_ip,
                            "floating IP")["cookie"], 16)]
    bridges = [b["name"] for b in state["bridges"] if b["connected"]
               and (not args.bridge or b["name"] == args.bridge)]
    out = []
    for br in bridges:
        for cookie in masks:
            spec = f"cookie={cookie:#x}/{state['cookie_mask']}"
            for line in _run(OFCTL + ["dump-flows", br, spec]).splitlines():
                if "cookie=" in line:
                    out.append({"bridge": br, "flow": line.strip()})
    if args.json:
        return out
    for f in out:
        print(f"{f['bridge']}: {f['flow']}")
    return None


def build_parser():
    parser = argparse.ArgumentParser(prog="nsx-proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--controller", metavar="URL",
                        help="the controller's status endpoint, e.g. http://127.0.0.1:9910")
    parser.add_argument("--config-file", metavar="FILE",
                        help="the controller's config file (its status_port is used)")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, fn, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(fn=fn)
        return p
    p = add("services", cmd_services, "services as load balancer -> listeners -> pools -> "
            "members, with group ids and the packets/bytes each bucket carried")
    p.add_argument("name", nargs="?", help="NS/NAME (default: every service)")
    p = add("conntrack", cmd_conntrack, "connections OVS tracks for a service: original "
            "tuple and translated tuple side by side")
    p.add_argument("name", help="NS/NAME")
    p = add("trace", cmd_trace, "trace a packet from a pod with ofproto/trace, each step "
            "annotated with its table's name and the object its flow belongs to")
    p.add_argument("--from-pod", required=True, metavar="NS/POD")
    p.add_argument("--dst", required=True, help="destination IP (IPv4, or IPv6 from a "
                   "dual-stack pod)")
    p.add_argument("--dport", required=True, type=int)
    p.add_argument("--proto", default="tcp", choices=("tcp", "udp"))
    p = add("flows", cmd_flows, "the flows of one service, one node or one floating IP")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--service", metavar="NS/NAME")
    which.add_argument("--node", metavar="NAME")
    which.add_argument("--floating-ip", metavar="IP")
    p.add_argument("--bridge", help="only this bridge")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    url, source = find_controller(args)
    try:
        state = fetch_state(url)
    except OSError as exc:
        hint = unreachable_hint() if source == "the default" else ""
        print(f"nsx-proxy: cannot reach the controller at {url} (from {source}): {exc}"
              f"{hint}", file=sys.stderr)
        return 2
    result = args.fn(args, state)
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
