"""The nsx-proxy CLI and the metrics endpoint against the running lab."""
import json
import os
import subprocess
import sys

import pytest

from kube_helpers import service
from lab_helpers import HERE, STATUS, HeldConnection, converge, metric
from topologies import lab as L

pytestmark = pytest.mark.mininet
CLI = os.path.join(os.path.dirname(sys.executable), "nsx-proxy")


def cli(*args):
    out = subprocess.run([CLI, "--controller", STATUS] + list(args) + ["--json"],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    return json.loads(out)


def test_services_lists_load_balancer_listeners_pools_members_with_bucket_stats(lab):
    def tcp_pool():
        (web,) = cli("services", "default/web")
        assert web["vips"] == [L.DEMO_VIP, L.DEMO_VIP6]        # the lab's web: dual-stack
        listeners = {(li["protocol"], li["port"]): li for li in web["listeners"]}
        assert set(listeners) == {("TCP", 80), ("UDP", 53)}
        pool, pool6 = listeners[("TCP", 80)]["pools"]
        assert pool6["pool"] == "cluster IP (IPv6)" and pool6["group_id"] != pool["group_id"]
        assert {m["ip"] for m in pool6["members"]} == {p.ip6 for p in lab.pods}
        return pool

    def counted():
        # New connections' first packets go through the group; a group MODIFY
        # (an endpoint flapping while the lab settles) restarts its counters.
        ok = sum(1 for _ in range(4) if lab.curl("pod1", f"http://{L.DEMO_VIP}/"))
        return ok and sum(m["packets"] for m in tcp_pool()["members"]) >= ok
    L.wait_for(counted, 20, what="bucket packet counters from OVS")
    pool = tcp_pool()
    assert pool["group_id"] and {m["ip"] for m in pool["members"]} == {p.ip for p in lab.pods}
    assert all(m["ready"] and m["node"] for m in pool["members"])
    usage = subprocess.run([CLI, "services", "--help"], capture_output=True, text=True)
    assert "listeners" in usage.stdout


def test_services_counts_a_udp_pools_members_from_its_flows(lab):
    """A UDP pool is flows, not a group: nsx-proxy services still lists its
    members, with the packets each one's flow carried."""
    def udp_pool():
        (web,) = cli("services", "default/web")
        (listener,) = [li for li in web["listeners"] if li["protocol"] == "UDP"]
        pool, _ = listener["pools"]                  # IPv4's, then IPv6's
        return pool
    before = {m["ip"]: m["packets"] for m in udp_pool()["members"]}
    out = lab.net.get("pod2").cmd(f"python3 {HERE}/spread.py --udp {L.DEMO_VIP} 53 200")
    assert json.loads(out.strip().splitlines()[-1])["failed"] == 0
    pool = udp_pool()
    assert pool["spread_per_flow"] and {m["ip"] for m in pool["members"]} == \
        {p.ip for p in lab.pods}
    grown = {m["ip"]: m["packets"] - before[m["ip"]] for m in pool["members"]}
    # a query whose random source port repeats an earlier one's (conntrack
    # still has it: +est) is not picked again, so a few may not be counted
    assert all(n > 0 for n in grown.values()) and 190 <= sum(grown.values()) <= 200, grown
    text = subprocess.run([CLI, "--controller", STATUS, "services", "default/web"],
                          check=True, capture_output=True, text=True, timeout=30).stdout
    assert f"pool cluster IP  flows reg4={pool['group_id']:#x} (table 33)" in text, text


def test_conntrack_shows_original_and_translated_tuples(lab):
    held = HeldConnection(lab, "pod1")
    try:
        owner = held.ping().split()[0]
        owner_ip = next(p.ip for p in lab.pods if p.name == owner)
        entries = cli("conntrack", "default/web")
        mine = [e for e in entries if e["original"]["src"] == lab.pods[0].ip
                and e["state"] == "ESTABLISHED"]
        assert mine and mine[0]["original"]["dst"] == L.DEMO_VIP
        assert mine[0]["reply"]["src"] == owner_ip and mine[0]["reply"]["sport"] == 8080
        assert mine[0]["bridge"] == "br-node1"
    finally:
        held.close()


def test_the_controllers_config_file_is_enough_to_find_it(lab):
    conf = os.path.join(lab.run_dir, "nsx-proxy.conf")
    out = subprocess.run([CLI, "--config-file", conf, "services", "default/web", "--json"],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    assert json.loads(out)[0]["service"] == "default/web"


def test_trace_annotates_each_step_with_table_and_object(lab):
    trace = cli("trace", "--from-pod", "default/pod1", "--dst", L.DEMO_VIP, "--dport", "80")
    names = [s["table_name"] for s in trace["steps"]]
    assert names[:4] == ["Classifier", "UnSNAT", "ConntrackZone", "ConntrackState"]
    lb = next(s for s in trace["steps"] if s["table_name"] == "ServiceLB")
    assert lb["object"] == "service default/web TCP/80"
    assert trace["steps"][0]["object"] == "pod default/pod1"


def test_trace_and_conntrack_of_an_ipv6_cluster_ip(lab):
    trace = cli("trace", "--from-pod", "default/pod1", "--dst", L.DEMO_VIP6, "--dport", "80")
    assert "ipv6_dst=fd00:96::a" in trace["flow"]
    lb = next(s for s in trace["steps"] if s["table_name"] == "ServiceLB")
    assert lb["object"] == "service default/web TCP/80"
    held = HeldConnection(lab, "pod1", vip=L.DEMO_VIP6)
    try:
        held.ping()
        mine = [e for e in cli("conntrack", "default/web")
                if e["original"]["src"] == lab.pods[0].ip6 and e["state"] == "ESTABLISHED"]
        assert mine and mine[0]["original"]["dst"] == L.DEMO_VIP6
        assert mine[0]["reply"]["src"] in {p.ip6 for p in lab.pods}
    finally:
        held.close()


def test_flows_of_one_service_node_and_floating_ip(lab):
    flows = cli("flows", "--service", "default/web")
    # the frontends' flows, and UDP/53's flow per endpoint (UdpSpread)
    spread = [f for f in flows if "table=33," in f["flow"]]
    # on each node bridge, for each family of the dual-stack web
    assert len(spread) == 2 * len(lab.pods) * 2
    assert sum("udp6" in f["flow"] for f in spread) == 2 * len(lab.pods)
    assert all(L.DEMO_VIP in f["flow"] or L.DEMO_VIP6 in f["flow"]
               for f in flows if f not in spread)
    assert any(L.DEMO_VIP6 in f["flow"] for f in flows)
    assert {f["bridge"] for f in flows} == {"br-node1", "br-node2"}
    node2 = cli("flows", "--node", "node2", "--bridge", "br-node1")
    # node2's routes: its pod CIDRs and node IPs (both families), nothing else
    nets = ("10.1.2.0/24", "192.168.100.2", "fd00:10:1:2::/64", "fd00:100::2")
    assert node2 and all(any(n in f["flow"] for n in nets) for f in node2)
    assert {n for f in node2 for n in nets if n in f["flow"]} == set(nets)
    unknown = subprocess.run([CLI, "--controller", STATUS, "flows", "--floating-ip",
                              "198.51.100.99"], capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 1
    assert "no floating IP '198.51.100.99'" in unknown.stderr


def test_metrics_move_when_services_change(lab):
    services, syncs = metric("nsx_proxy_services"), metric(
        "nsx_proxy_sync_duration_seconds_count")
    assert metric("nsx_proxy_flows", '{bridge="br-node1"}') > 0
    assert metric("nsx_proxy_relists_total", '{resource="services"}') >= 1
    assert metric("nsx_proxy_switch_connects_total") >= 3
    body = service("metered", {"app": "web"}, ports=[{"port": 80, "targetPort": 8080}])
    lab.cluster.apply_service(body)
    try:
        converge(lab)
        L.wait_for(lambda: metric("nsx_proxy_services") == services + 1, 10,
                   what="the services gauge")
        assert metric("nsx_proxy_sync_duration_seconds_count") > syncs
        assert metric("nsx_proxy_event_to_programmed_seconds_count") > 0
    finally:
        lab.cluster.delete_service("metered")
        converge(lab)
