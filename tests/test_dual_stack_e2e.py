"""Dual-stack Services with real packets on the shared (dual-stack) lab:
pods have an IPv4 and an IPv6 address from nsx-proxy-cni, the API server
allocates cluster IPs of both families, and the bridges serve each family's
cluster IP with that family's endpoints."""
import functools
import json
import os
import re
import subprocess
import sys

import pytest

from kube_helpers import service as raw_service
from lab_helpers import HERE, STATUS, metric, services
from topologies import lab as L

pytestmark = pytest.mark.mininet

EVERYONE = {"pod1", "pod2", "pod3", "pod4"}
service = functools.partial(raw_service, selector={"app": "web"})
POD_IP6 = {"pod1": "fd00:10:1:1::2", "pod2": "fd00:10:1:1::3",
           "pod3": "fd00:10:1:2::2", "pod4": "fd00:10:1:2::3"}


def url(ip, port=80, path="/"):
    return f"http://[{ip}]:{port}{path}" if ":" in ip else f"http://{ip}:{port}{path}"


def curl(lab, client, target, timeout=3):
    """(exit code, body) of one curl from a pod."""
    out = lab.net.get(client).cmd(
        f"curl -s --max-time {timeout} {target}; echo \"@@rc=$?\"").strip()
    body, _, rc = out.rpartition("@@rc=")
    return int(rc), body.strip()


def who(lab, client, target, want=EVERYONE, tries=40):
    seen = set()
    for _ in range(tries):
        seen.add(curl(lab, client, target)[1])
        if want <= seen:
            break
    return seen - {""}


def udp_ask(lab, client, ip, port):
    return lab.net.get(client).cmd(f"python3 {HERE}/udpask.py {ip} {port}").strip()


def cluster_ips(lab, name):
    return lab.cluster.core.read_namespaced_service(name, "default").spec.cluster_i_ps


def test_pods_resolve_the_gateway_and_each_other_through_the_bridges_nd_answers(lab):
    pod1 = lab.net.get("pod1")
    assert curl(lab, "pod1", url(POD_IP6["pod2"], 8080))[1] == "pod2"     # same node
    assert curl(lab, "pod1", url(POD_IP6["pod3"], 8080))[1] == "pod3"     # routed
    neigh = pod1.cmd("ip -6 neigh show dev eth0")
    # the gateway (routes to pod3) and pod2 (on-link), each with its own MAC
    assert re.search(r"fd00:10:1:1::1 lladdr 0a:58:0a:01:01:01 (REACHABLE|STALE|DELAY)",
                     neigh), neigh
    assert re.search(r"fd00:10:1:1::3 lladdr 0a:58:0a:01:01:03 ", neigh), neigh


def test_the_demo_service_answers_on_both_families_from_every_endpoint(lab):
    assert cluster_ips(lab, "web") == [L.DEMO_VIP, L.DEMO_VIP6]
    for client in ("pod1", "pod3"):
        assert who(lab, client, url(L.DEMO_VIP6)) == EVERYONE
        assert who(lab, client, url(L.DEMO_VIP)) == EVERYONE
    # an endpoint sees the client's own IPv6 address (no SNAT inside the
    # cluster); pod1 itself, reached through the VIP, sees its gateway
    # (the hairpin's SNAT)
    seen = {curl(lab, "pod1", url(L.DEMO_VIP6, path="/ip"))[1] for _ in range(16)}
    assert seen == {POD_IP6["pod1"], "fd00:10:1:1::1"}, seen
    # and the IPv6 pool's group holds IPv6 endpoints only
    groups = [g for g in lab.dump_groups("br-node1") if "nat(dst=[" in g]
    assert len(groups) == 1 and set(re.findall(r"nat\(dst=\[([0-9a-f:]+)\]", groups[0])) \
        == set(POD_IP6.values())


def test_a_pod_sending_from_an_address_not_its_own_is_dropped_in_both_families(lab):
    """Anti-spoofing with real packets: pod1 takes a second address of each
    family and sends from it; the bridge admits only its own."""
    pod1 = lab.net.get("pod1")
    fake4, fake6 = "10.1.1.99", "fd00:10:1:1::99"
    pod1.cmd(f"ip addr add {fake4}/24 dev eth0 && ip addr add {fake6}/64 dev eth0 nodad")
    try:
        for vip, fake, own in ((L.DEMO_VIP, fake4, "10.1.1.2"),
                               (L.DEMO_VIP6, fake6, POD_IP6["pod1"])):
            rc, body = curl(lab, "pod1", f"--interface {fake} {url(vip)}", timeout=2)
            assert (rc, body) == (28, ""), (vip, rc, body)        # nothing comes back
            assert curl(lab, "pod1", f"--interface {own} {url(vip)}")[1] in EVERYONE
    finally:
        pod1.cmd(f"ip addr del {fake4}/24 dev eth0; ip addr del {fake6}/64 dev eth0")


def test_udp_over_ipv6_spreads_new_flows_over_every_endpoint(lab):
    out = json.loads(lab.net.get("pod1").cmd(
        f"python3 {HERE}/spread.py --udp {L.DEMO_VIP6} 53 200").strip())
    counts = out["answers"]
    # each query from a socket of its own: a new source port, a new pick
    assert set(counts) == EVERYONE and all(n >= 20 for n in counts.values()), out
    assert out["failed"] <= 2, out


def test_ports_the_ipv6_cluster_ip_lacks_are_refused_at_once(lab):
    rc, _ = curl(lab, "pod1", url(L.DEMO_VIP6, 81), timeout=2)
    assert rc == 7                                   # a TCP RST, not a timeout
    assert udp_ask(lab, "pod1", L.DEMO_VIP6, 54) == "refused"   # ICMPv6 port unreachable


def test_a_single_stack_ipv6_service_and_its_hairpin(lab):
    body = service("six", ports=[("http", "TCP", 80, 8080)], selector={"app": "web"},
                   ipFamilies=["IPv6"])
    only1 = service("six-pod1", ports=[("http", "TCP", 80, 8080)],
                    selector={"nsx-proxy.lab/host": "pod1"}, ipFamilies=["IPv6"])
    with services(lab, body, only1):
        (vip,) = cluster_ips(lab, "six")
        assert vip.startswith("fd00:96::")
        assert who(lab, "pod2", url(vip)) == EVERYONE
        (hairpin,) = cluster_ips(lab, "six-pod1")
        # pod1 reaching itself through the service: answered, source-NATed
        # to its IPv6 gateway so the pod does not drop its own address
        assert curl(lab, "pod1", url(hairpin))[1] == "pod1"
        assert curl(lab, "pod1", url(hairpin, path="/ip"))[1] == "fd00:10:1:1::1"


def test_metrics_count_cluster_ips_per_family(lab):
    body = service("six-more", ports=[("http", "TCP", 80, 8080)], ipFamilies=["IPv6"])
    before = metric("nsx_proxy_cluster_ips", '{family="IPv6"}')
    v4 = metric("nsx_proxy_cluster_ips", '{family="IPv4"}')
    assert before >= 1 and v4 >= 1                      # web has one of each
    with services(lab, body):
        assert metric("nsx_proxy_cluster_ips", '{family="IPv6"}') == before + 1
        assert metric("nsx_proxy_cluster_ips", '{family="IPv4"}') == v4


def test_client_ip_affinity_holds_per_family(lab):
    body = service("sticky6", ports=[("http", "TCP", 80, 8080)],
                   ipFamilyPolicy="RequireDualStack", sessionAffinity="ClientIP")
    with services(lab, body):
        v4, v6 = cluster_ips(lab, "sticky6")
        for vip in (v4, v6):
            answers = {curl(lab, "pod1", url(vip))[1] for _ in range(8)}
            assert len(answers) == 1 and answers <= EVERYONE, (vip, answers)
        # another client is remembered on its own
        assert len({curl(lab, "pod3", url(v6))[1] for _ in range(8)}) == 1
        # nsx-proxy maps the IPv6 pool's buckets (reg0 holds a hash of the
        # endpoint) back to its members, with their packets
        out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "nsx-proxy"),
                              "--controller", STATUS, "services", "default/sticky6",
                              "--json"], check=True, capture_output=True, text=True,
                             timeout=30).stdout
        (listener,) = json.loads(out)[0]["listeners"]
        pool6 = next(p for p in listener["pools"] if p["pool"] == "cluster IP (IPv6)")
        assert {m["ip"] for m in pool6["members"]} == set(POD_IP6.values())
        assert sum(m["packets"] for m in pool6["members"]) > 0, pool6
