"""Traffic and state helpers shared by the Mininet end-to-end modules (the
central lab's and the multi-host lab's)."""
import contextlib
import functools
import os
import re
import subprocess
import time
import urllib.request

from kube_helpers import service as raw_service
from nsx_proxy import model
from topologies import lab as L

HERE = os.path.dirname(os.path.abspath(L.__file__))
WEB = model.ServiceKey("default", "web")


def converge(lab, what="the bridges to match the API server"):
    L.wait_for(lab.programmed, 20, what=what)


def set_ready(lab, ready):
    """Stop the servers of pods not in ``ready``: their probes fail, Ready flips."""
    for pod in lab.pods:
        running = os.path.exists(f"{lab.run_dir}/{pod.name}.pid")
        if pod.name in ready and not running:
            lab.start_pod_server(pod.name)
        elif pod.name not in ready and running:
            lab.stop_pod_server(pod.name)
    # web is dual-stack: a pod is an IPv4 and an IPv6 endpoint, both follow it
    L.wait_for(lambda: sum(
        1 for p in lab.cluster.desired_state().services[WEB].ports[0].endpoints
        if p.ready) == len(ready) * (2 if lab.dual_stack else 1), 10,
        what="Ready conditions to follow the servers")
    converge(lab)


def serving_again(lab, name):
    """Start a pod's server again and wait until the API says it is Ready and
    the bridges follow: the next test counts on every pod answering."""
    lab.start_pod_server(name)

    def ready():
        pod = lab.cluster.core.read_namespaced_pod(name, "default")
        return any(c.type == "Ready" and c.status == "True"
                   for c in (pod.status.conditions or ()))
    L.wait_for(ready, 15, what=f"{name} Ready again")
    converge(lab)


def answers(lab, client, n=24, vip=L.DEMO_VIP, port=80, url=None):
    """The bodies of ``n`` curls from ``client`` (pod names; "" for a failure)."""
    url = url or f"http://{vip}:{port}/"
    return [lab.curl(client, url) for _ in range(n)]


def who(lab, client, url, n=12):
    """Who answered ``n`` curls to ``url`` (failures left out)."""
    return set(answers(lab, client, n, url=url)) - {""}


class HeldConnection:
    """A TCP connection to the VIP kept open by a client process in a pod."""

    def __init__(self, lab, pod, vip=L.DEMO_VIP, port=80):
        self.proc = lab.net.get(pod).popen(
            ["python3", "-u", f"{HERE}/podclient.py", vip, str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "connected"

    def ping(self, word="ping"):
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self):
        self.proc.kill()
        self.proc.wait()


@contextlib.contextmanager
def services(lab, *bodies):
    """Create (or replace) Services for the duration of a block, then delete them."""
    try:
        for body in bodies:
            lab.cluster.apply_service(body)
        converge(lab)
        yield
    finally:
        for body in bodies:
            lab.cluster.delete_service(body["metadata"]["name"])
        converge(lab)


@contextlib.contextmanager
def node2_only(lab):
    """pod3 and pod4 (on node2) get label side=two."""
    kubelet = lab.cluster.kubelet
    try:
        for pod in ("pod3", "pod4"):
            kubelet.relabel(pod, {"app": "web", "side": "two"})
        yield {"app": "web", "side": "two"}
    finally:
        for pod in ("pod3", "pod4"):
            kubelet.relabel(pod, {"app": "web"})
        converge(lab)


STATUS = "http://127.0.0.1:19910"       # the shared lab controller's status endpoint


def metric(name, labels=""):
    """The sum of a Prometheus metric's samples (with these labels) from the lab."""
    with urllib.request.urlopen(STATUS + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + (labels or "")) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def normal(lines):
    """Flows without cookies and counters: what is installed, not when."""
    return sorted(re.sub(r"(cookie|duration|n_packets|n_bytes|idle_age|hard_age)=[^,]*, ?",
                         "", line) for line in lines)


# --- the multi-host lab -------------------------------------------------------------
NODE1, NODE2 = "192.168.100.1", "192.168.100.2"
EVERYONE = {"pod1", "pod2", "pod3", "pod4"}
# A Service over every pod (app=web), HTTP and DNS; keywords as kube_helpers.service.
web_service = functools.partial(raw_service, selector={"app": "web"},
                                ports=[{"name": "http", "port": 80, "targetPort": "http"},
                                       {"name": "dns", "port": 53, "protocol": "UDP",
                                        "targetPort": "dns"}])


def who_until(lab, client, url, want, timeout=20):
    """Who answered curls to ``url``, curling until every pod in ``want``
    answered (or the time is up)."""
    seen = set()
    deadline = time.monotonic() + timeout
    while not want <= seen and time.monotonic() < deadline:
        seen.add(lab.curl(client, url, timeout=1))
    return seen - {""}


def converged(lab, timeout=30):
    L.wait_for(lab.programmed, timeout, what="every host's bridge to match the API server")
