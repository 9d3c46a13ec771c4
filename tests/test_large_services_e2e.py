"""A selectorless Service with 1,000 and 5,000 endpoints, on real OVS with real
TCP: every part of the split pool serves, connections spread over the
endpoints, removing one endpoint stops only that one, and another service
keeps answering throughout.

The endpoints are addresses of the Internet host (a selectorless Service
pointing outside the cluster): node1 DNATs, source-NATs to its node IP and
sends them out through the gateway, as for any external endpoint.
"""
import json
import os
import subprocess
import sys
import threading

import pytest

from lab_helpers import HERE, STATUS, converge
from controller.names import parts_for
from controller.pipeline import MAX_BUCKETS_PER_GROUP
from topologies import lab as L

pytestmark = pytest.mark.mininet
VIP = "10.96.2.50"


def addresses(n):
    return [f"10.50.{i // 250}.{i % 250 + 1}" for i in range(n)]


def slices(ips, chunk=1000):
    """EndpointSlices of at most 1,000 endpoints, as the API allows."""
    for k in range(0, len(ips), chunk):
        yield {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": f"big-{k // chunk}", "namespace": "default",
                            "labels": {"kubernetes.io/service-name": "big"}},
               "addressType": "IPv4",
               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
               "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}
                             for ip in ips[k:k + chunk]]}


class Watchdog(threading.Thread):
    """Curls the demo service from pod3 until stopped; counts failures."""

    def __init__(self, lab):
        super().__init__(daemon=True)
        self.lab, self.ok, self.failed = lab, 0, 0
        self.done = threading.Event()

    def run(self):
        url = f"http://{L.DEMO_VIP}/"
        while not self.done.is_set():
            # one retry: a new connection now and then stalls in OVS's userspace
            # conntrack when a client port is reused (docs/known-limits.md)
            if self.lab.curl("pod3", url) or self.lab.curl("pod3", url):
                self.ok += 1
            else:
                self.failed += 1

    def stop(self):
        self.done.set()
        self.join()


def counted(lab):
    """Endpoints of the big service with packets, as ``nsx-proxy services`` says."""
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "nsx-proxy"),
                          "--controller", STATUS, "services", "default/big", "--json"],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    (svc,) = json.loads(out)
    (pool,) = svc["listeners"][0]["pools"]
    assert len(pool["group_ids"]) == parts_for(len(pool["members"]), MAX_BUCKETS_PER_GROUP)
    return {m["ip"] for m in pool["members"] if m["packets"]}


def spread(lab, count):
    out = lab.net.get("pod1").cmd(f"python3 {HERE}/spread.py {VIP} 80 {count} /local")
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("n", [1000, 5000])
def test_a_service_with_thousands_of_endpoints_spreads_over_all_of_them(lab, n):
    ips = addresses(n)
    inet = lab.net.get("inet")
    batch = "\n".join(f"addr add {ip}/32 dev inet-eth0" for ip in ips)
    inet.cmd(f"ip -batch - <<'EOF'\n{batch}\nEOF")
    discovery = lab.cluster.discovery
    watchdog = Watchdog(lab)
    watchdog.start()
    try:
        lab.cluster.apply_service({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "big", "namespace": "default"},
            "spec": {"clusterIP": VIP, "ports": [{"name": "http", "port": 80,
                                                  "targetPort": 8080}]}})
        for body in slices(ips):
            discovery.create_namespaced_endpoint_slice("default", body)
        converge(lab, what=f"{n} endpoints in split groups")
        parts = parts_for(n, MAX_BUCKETS_PER_GROUP)
        groups = [g for g in lab.dump_groups("br-node1") if "10.50." in g]
        assert len(groups) == parts
        assert max(g.count("bucket=") for g in groups) <= MAX_BUCKETS_PER_GROUP
        # Every part serves (the parts are chosen by source-port bits), and
        # connections spread over the endpoints.
        order = sorted(ips)
        part_of = {ip: i % parts for i, ip in enumerate(order)}
        got = spread(lab, 3000)
        assert got["failed"] == 0
        assert {part_of[ip] for ip in got["answers"]} == set(range(parts))
        distinct = len(got["answers"])
        expected = n * (1 - (1 - 1 / n) ** 3000)        # if picks were uniform
        assert distinct >= 0.85 * expected, (distinct, expected)
        # nsx-proxy services counts every part's buckets: exactly the
        # endpoints that answered carried packets
        L.wait_for(lambda: counted(lab) == set(got["answers"]), 10,
                   what="bucket counters of every part in nsx-proxy services")
        # One endpoint goes: only it stops answering, and only its part's
        # group (and at most one more, to stay balanced) is rewritten.
        before = set(groups)
        gone = order[0]
        first = next(slices(ips))
        first["endpoints"] = [e for e in first["endpoints"] if e["addresses"] != [gone]]
        discovery.replace_namespaced_endpoint_slice("big-0", "default", first)
        converge(lab, what="the endpoint removed")
        after = [g for g in lab.dump_groups("br-node1") if "10.50." in g]
        assert len(after) == parts
        assert 1 <= len(set(after) - before) <= min(2, parts)
        again = spread(lab, 1500)
        assert again["failed"] == 0 and gone not in again["answers"]
        assert len(again["answers"]) >= 0.85 * (n - 1) * (1 - (1 - 1 / (n - 1)) ** 1500)
    finally:
        watchdog.stop()
        lab.cluster.delete_service("big")
        for k in range(0, n, 1000):
            try:
                discovery.delete_namespaced_endpoint_slice(f"big-{k // 1000}", "default")
            except Exception:       # already gone with the service
                pass
        batch = "\n".join(f"addr del {ip}/32 dev inet-eth0" for ip in ips)
        inet.cmd(f"ip -batch - <<'EOF'\n{batch}\nEOF")
        converge(lab)
    assert watchdog.failed == 0 and watchdog.ok > 0, \
        f"the demo service failed {watchdog.failed} times while {n} endpoints came and went"
