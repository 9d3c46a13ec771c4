"""An embedded API server, kubectl, and the one builder of each raw object tests create."""
import os
import subprocess
import sys
import threading

from nsx_proxy import model, translate
from topologies.apiserver import ApiServer
from topologies.apiserver.kinds import RESOURCES


def start_server(tmp_path, bookmark_interval=0.2):
    server = ApiServer(bookmark_interval=bookmark_interval).start()
    server.kubeconfig_path = server.kubeconfig(str(tmp_path / "kubeconfig"))
    return server


# The kubectl on PATH (any version) and Debian's 1.20, which scripts/setup.sh
# puts into the venv: old and new clients discover and validate differently.
KUBECTLS = {"path": "kubectl",
            "debian": os.path.join(os.path.dirname(sys.executable), "kubectl-debian")}


def kubectl(kubeconfig, *args, check=True, stdin=None, binary="kubectl"):
    env = dict(os.environ, KUBECONFIG=kubeconfig,
               HOME=os.path.dirname(kubeconfig))   # a fresh discovery cache
    proc = subprocess.run([binary] + list(args), input=stdin, capture_output=True,
                          text=True, env=env, timeout=60)
    if check and proc.returncode:
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc


def service(name, selector=None, ports=(("http", "TCP", 80, 8080),), vip=None, type_=None,
            ns="default", annotations=None, ingress=(), rv=None, **spec):
    """A Service as the API holds it (plain JSON).

    ``ports``: (name, protocol, port, targetPort) tuples or port dicts (None:
    no ports); ``vip``: spec.clusterIP; ``ingress``: load-balancer IPs in the
    status; any other keyword is a spec field (``externalIPs=[...]``).
    """
    meta = {"name": name, "namespace": ns}
    if annotations:
        meta["annotations"] = annotations
    if rv is not None:
        meta["resourceVersion"] = rv
    if ports is not None:
        spec["ports"] = [p if isinstance(p, dict) else
                         {"name": p[0], "protocol": p[1], "port": p[2], "targetPort": p[3]}
                         for p in ports]
    if selector:
        spec["selector"] = selector
    if vip:
        spec.setdefault("clusterIP", vip)
    if type_:
        spec["type"] = type_
    body = {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}
    if ingress:
        body["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in ingress]}}
    return body


def add_pod(api, name, ip, node="node1", labels=None, ready=True, ns="default", ports=()):
    api.create(RESOURCES["pods"], ns, {
        "metadata": {"name": name, "labels": labels or {"app": "web"}},
        "spec": {"nodeName": node, "containers": [
            {"name": "c", "image": "lab", "ports": [
                {"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports]}]}})
    set_pod_status(api, name, ip, ready, ns)


def set_pod_status(api, name, ip, ready, ns="default"):
    api.update(RESOURCES["pods"], ns, name, {"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}},
        "status")


def add_node(api, name, ip, cidr):
    api.create(RESOURCES["nodes"], None, {
        "metadata": {"name": name}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})


WEB = model.ServiceKey("default", "web")


class Recorder:
    """A source's consumer that keeps every state and change set it was given."""
    def __init__(self):
        self.states = []
        self.changes = []
        self.lock = threading.Lock()

    def __call__(self, state, change):
        with self.lock:
            self.states.append(state)
            self.changes.append(change)

    @property
    def last(self):
        return self.states[-1] if self.states else None

    def endpoints(self, key=WEB):
        svc = self.last.services.get(key) if self.last else None
        return None if svc is None else sorted(e.ip for e in svc.ports[0].endpoints)


class Rejects(list):
    def __call__(self, kind, name, reason):
        self.append((kind, name, reason))


def ep(ip, node="node1", pod="p", **conditions):
    return {"addresses": [ip], "nodeName": node, "conditions": conditions,
            "targetRef": {"kind": "Pod", "namespace": "default", "name": pod}}


def eps(*endpoints, ports=(("http", 8080),), name="web-1", family="IPv4", service="web"):
    return {"metadata": {"namespace": "default", "name": name,
                         "labels": {translate.SERVICE_NAME_LABEL: service}},
            "addressType": family,
            "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports],
            "endpoints": list(endpoints)}
