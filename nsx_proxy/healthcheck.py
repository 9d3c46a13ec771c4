"""Health, in one place: what kube-proxy's two health servers answer, and
the one verdict of "is the proxy healthy" every health endpoint gives.
Pure functions; the sockets live in controller/health_server.py (kube-proxy's
ports) and controller/status.py (the probe port).

* The service health server: for every Service with externalTrafficPolicy
  Local and a ``healthCheckNodePort``, each node answers on that port with
  HTTP 200 and its number of ready local endpoints, or 503 when it has
  none, so an external load balancer sends only to nodes that can serve
  locally.  Only *ready* endpoints count: a node whose pods are all
  terminating fails the check and the load balancer drains it (KEP-1669).
* The proxy's own ``/healthz`` and ``/livez`` (port 10256 by default):
  kube-proxy's verdict (``proxy_health``): healthy unless a change it was
  told of has waited longer than ``timeout`` (two of its longest sync
  periods) to be programmed; healthy while starting up, before any change.
  200 or 503, with kube-proxy's JSON.
* The probe port's ``/healthz`` (127.0.0.1:status_port, for the DaemonSet's
  exec probe) gives the same verdict as plain text with the reason, 200 or
  503; its ``/readyz`` says whether every list arrived and every bridge is
  programmed (controller/status.py), which kube-proxy does not have.

The bodies and headers are kube-proxy's (pkg/proxy/healthcheck), so
existing load-balancer health checks and dashboards read them unchanged.
The sockets live in controller/health_server.py.
"""
import datetime
import json
from typing import Dict, List, Tuple

from nsx_proxy import model

Answer = Tuple[str, List[Tuple[str, str]], bytes]       # status, headers, body


def service_checks(state: model.ClusterState, node: str,
                   reject=None) -> Dict[int, Tuple[model.ServiceKey, int]]:
    """{healthCheckNodePort: (service, ready local endpoints)} on ``node``.
    Two services claiming one port: the first by namespace/name keeps it,
    the other is reported to ``reject(kind, name, reason)``."""
    return _checks((s for s in state.services.values()
                    if s.health_check_node_port is not None), node, reject)


class ServiceChecks:
    """``service_checks`` kept up to date from change sets: only the
    Services a change names are looked at (walking 10,000 of them was 0.44 ms,
    two fifths of what a change cost the source side)."""

    def __init__(self, node: str, reject=None):
        self.node, self.reject = node, reject
        self._with_port = {}                 # ServiceKey -> Service with a port

    def update(self, state: model.ClusterState, change) -> Dict[int, tuple]:
        if change.everything:
            self._with_port = {k: s for k, s in state.services.items()
                               if s.health_check_node_port is not None}
        else:
            for key in change.services:
                svc = state.services.get(key)
                if svc is not None and svc.health_check_node_port is not None:
                    self._with_port[key] = svc
                else:
                    self._with_port.pop(key, None)
        return _checks(self._with_port.values(), self.node, self.reject)


def _checks(services, node, reject):
    out = {}
    for svc in sorted(services, key=lambda s: s.key):
        port = svc.health_check_node_port
        if port in out:
            if reject is not None:
                reject("service", str(svc.key), f"healthCheckNodePort {port} is already "
                       f"{out[port][0]}'s; no health check served for this one")
            continue
        # of the primary family: kube-proxy's proxier of each family counts
        # its own, and a dual-stack Service's pods are the same in both
        v6 = ":" in svc.cluster_ip
        local = {e.ip for p in svc.ports for e in p.endpoints
                 if e.node == node and e.ready and (":" in e.ip) == v6}
        out[port] = (svc.key, len(local))
    return out


def service_answer(key: model.ServiceKey, local: int, proxy_healthy: bool) -> Answer:
    body = json.dumps({"service": {"namespace": key.namespace, "name": key.name},
                       "localEndpoints": local, "serviceProxyHealthy": proxy_healthy},
                      indent=2).encode() + b"\n"
    ok = local > 0 and proxy_healthy
    return ("200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff"),
             ("X-Load-Balancing-Endpoint-Weight", str(local)),
             ("Content-Length", str(len(body)))], body)


def _stamp(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).isoformat()


def proxy_health(pending_since, now: float, timeout: float) -> Tuple[bool, List[str]]:
    """(healthy, why not): kube-proxy's ProxyHealthServer verdict.
    ``pending_since``: when the oldest change not yet programmed arrived
    (None: nothing is waiting), on the same clock as ``now``."""
    if pending_since is None or now - pending_since < timeout:
        return True, []
    return False, [f"a change has waited {now - pending_since:.0f} s to be programmed "
                   f"(more than {timeout:.0f} s)"]


def proxy_answer(last_updated: float, now: float, healthy: bool,
                 node_eligible: bool = True, livez: bool = False) -> Answer:
    """``/healthz`` (``livez``: ``/livez``, which leaves node eligibility out)
    with wall-clock times, as kube-proxy reports them: a healthy proxy says
    it was updated now."""
    doc = {"lastUpdated": _stamp(now if healthy else last_updated),
           "currentTime": _stamp(now)}
    if not livez:
        doc["nodeEligible"] = node_eligible
        healthy = healthy and node_eligible
    body = json.dumps(doc).encode() + b"\n"
    return ("200 OK" if healthy else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff"),
             ("Content-Length", str(len(body)))], body)
