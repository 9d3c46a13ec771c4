"""A Ryu app, loaded next to controller.app by bench/kube.py, that writes to
the API server and times each write until its bundle is committed in OVS.

It waits until the proxy has synced the N services already present, then:
(a) ``BENCH_CHANGES`` isolated writes: flip one endpoint's readiness in one
    EndpointSlice through the API (an HTTP PATCH with the official client)
    and wait for the bundle that implements it to be committed (the barrier
    after the bundle has been answered, so the flows are live);
(b) a burst of 1,000 such writes as fast as the client can send them,
    counting the source's syncs until the last one is live.
Results go to $BENCH_OUT as JSON; then the process exits.
"""
import json
import os
import time

from kubernetes import client
from ryu.base import app_manager
from ryu.lib import hub

from nsx_proxy.kube_source import api_client


def slice_body(i, flip):
    """The EndpointSlice of service i: two endpoints, the first one's Ready flipped."""
    return {"endpoints": [
        {"addresses": [f"10.2.{i // 250 % 250}.{i % 250 + 2}"], "nodeName": "node2",
         "conditions": {"ready": not flip}},
        {"addresses": [f"10.3.{i // 250 % 250}.{i % 250 + 2}"], "nodeName": "node2",
         "conditions": {"ready": True}}]}


class KubeBenchDriver(app_manager.RyuApp):
    def start(self):
        super().start()
        return hub.spawn(self._run)

    def _run(self):
        n = int(os.environ["BENCH_SERVICES"])
        changes = int(os.environ.get("BENCH_CHANGES", "50"))
        gap = float(os.environ.get("BENCH_GAP", "0.2"))
        proxy = None
        while proxy is None:
            proxy = app_manager.lookup_service_brick("ServiceProxy")
            hub.sleep(0.01)
        commits, last = hub.Queue(), [0.0]

        def on_commit(dpid, plan, secs):
            last[0] = time.monotonic()
            commits.put(last[0])
        proxy.commit_listeners.append(on_commit)

        def live():
            """The state the source delivered last is committed on the switch."""
            return proxy.state_received is not None and last[0] > proxy.state_received

        t0 = time.monotonic()
        while not (len(proxy.state.services) >= n and live()):
            hub.sleep(0.01)
        cold = time.monotonic() - t0
        while not commits.empty():
            commits.get()
        api = client.DiscoveryV1Api(api_client(os.environ["BENCH_KUBECONFIG"]))
        flips = {}
        latencies = []
        for c in range(changes):
            i = (c * 7919) % n
            flips[i] = not flips.get(i, False)
            hub.sleep(gap)                   # isolated writes: the runner is idle
            t1 = time.monotonic()
            api.patch_namespaced_endpoint_slice(f"svc{i}-1", "bench", slice_body(i, flips[i]))
            latencies.append(commits.get(timeout=30) - t1)
        hub.sleep(gap)
        while not commits.empty():
            commits.get()
        syncs_before = proxy.source.syncs
        t2 = time.monotonic()
        for c in range(1000):
            i = (c * 31) % n
            flips[i] = not flips.get(i, False)
            api.patch_namespaced_endpoint_slice(f"svc{i}-1", "bench", slice_body(i, flips[i]))
        sent = time.monotonic() - t2

        def done():
            return all(any(e.ready != f for e in
                           proxy.state.services[("bench", f"svc{i}")].ports[0].endpoints
                           if e.ip.startswith("10.2."))
                       for i, f in flips.items())
        while not (done() and live()):
            hub.sleep(0.01)
        burst = time.monotonic() - t2
        with open(f"/proc/{os.getpid()}/status") as fh:
            rss_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))
        with open(os.environ["BENCH_OUT"], "w") as fh:
            json.dump({"cold_s": cold, "write_to_live_s": latencies, "burst_syncs":
                       proxy.source.syncs - syncs_before, "burst_send_s": sent,
                       "burst_live_s": burst, "rss_kb": rss_kb}, fh)
        os._exit(0)
