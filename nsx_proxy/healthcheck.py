"""What kube-proxy's two health servers answer, as pure functions.

* The service health server: for every Service with externalTrafficPolicy
  Local and a ``healthCheckNodePort``, each node answers on that port with
  HTTP 200 and its number of ready local endpoints, or 503 when it has
  none, so an external load balancer sends only to nodes that can serve
  locally.  Only *ready* endpoints count: a node whose pods are all
  terminating fails the check and the load balancer drains it (KEP-1669).
* The proxy's own ``/healthz`` (port 10256 by default): 200 while the
  proxy keeps its rules in sync, 503 otherwise.

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
    out = {}
    # Runs on every sync: sort only the few services that have a port.
    for svc in sorted((s for s in state.services.values()
                       if s.health_check_node_port is not None), key=lambda s: s.key):
        port = svc.health_check_node_port
        if port in out:
            if reject is not None:
                reject("service", str(svc.key), f"healthCheckNodePort {port} is already "
                       f"{out[port][0]}'s; no health check served for this one")
            continue
        local = {e.ip for p in svc.ports for e in p.endpoints
                 if e.node == node and e.ready}
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


def proxy_answer(last_updated: float, now: float, healthy: bool,
                 node_eligible: bool = True) -> Answer:
    """``/healthz`` (and ``/livez``): wall-clock times, as kube-proxy reports them."""
    body = json.dumps({"lastUpdated": _stamp(last_updated), "currentTime": _stamp(now),
                       "nodeEligible": node_eligible}).encode() + b"\n"
    return ("200 OK" if healthy else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff"),
             ("Content-Length", str(len(body)))], body)
