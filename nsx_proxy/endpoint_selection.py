"""Which endpoints a node sends a service port's new connections to.

kube-proxy's rules (its CategorizeEndpoints), as pure functions of the
model and the client's node:

* cluster endpoints: the ready ones; with none ready, the serving-but-
  terminating ones (KEP-1669), so a rolling update never blackholes;
* topology-aware routing (hints): if the service asks for it
  (trafficDistribution PreferClose / PreferSameZone / PreferSameNode, or the
  topology-mode annotation), node hints come first: every ready endpoint
  carries node hints and one is hinted for this node -> only those; else
  zone hints: the node has a zone, every ready endpoint carries zone hints
  and one is hinted for it -> only those; otherwise all of them (kube-proxy's
  topologyModeFromHints, with its fallbacks);
* internalTrafficPolicy Local: traffic to the cluster IP uses only this
  node's endpoints (ready, else serving-but-terminating); none means the
  connection is rejected, never sent to another node.

* externalTrafficPolicy Local: the same for nodePorts, external and
  load-balancer IPs (the client's source IP is kept; the gateway only sends
  to nodes that have a local endpoint).

``Selection.internal`` serves the cluster IP; ``Selection.external`` serves
nodePorts, external and load-balancer IPs.
"""
from typing import NamedTuple, Optional, Tuple

from nsx_proxy import model

Endpoints = Tuple[model.Endpoint, ...]


class Selection(NamedTuple):
    internal: Endpoints
    external: Endpoints


def _sorted(endpoints) -> Endpoints:
    return tuple(sorted(endpoints, key=lambda e: (e.ip, e.port)))


def _usable(endpoints) -> Endpoints:
    endpoints = list(endpoints)
    ready = [e for e in endpoints if e.ready]
    if ready:
        return _sorted(ready)
    return _sorted(e for e in endpoints if e.serving and e.terminating)


def cluster_endpoints(svc: model.Service, port: model.ServicePort,
                      node: Optional[model.Node]) -> Endpoints:
    usable = _usable(port.endpoints)
    if not (svc.topology_aware and node is not None):
        return usable
    ready = [e for e in port.endpoints if e.ready]
    if ready and all(e.node_hints for e in ready):
        here = [e for e in ready if node.name in e.node_hints]
        if here:
            return _sorted(here)
    if not node.zone or not ready or any(not e.zones for e in ready):
        return usable                       # hints missing somewhere: ignore them all
    in_zone = [e for e in ready if node.zone in e.zones]
    return _sorted(in_zone) if in_zone else usable


def local_endpoints(port: model.ServicePort, node_name: Optional[str]) -> Endpoints:
    return _usable(e for e in port.endpoints if node_name and e.node == node_name)


def select(svc: model.Service, port: model.ServicePort,
           node_name: Optional[str], node: Optional[model.Node]) -> Selection:
    cluster = cluster_endpoints(svc, port, node)
    local = None
    if model.LOCAL in (svc.internal_traffic_policy, svc.external_traffic_policy):
        local = local_endpoints(port, node_name)
    return Selection(
        internal=local if svc.internal_traffic_policy == model.LOCAL else cluster,
        external=local if svc.external_traffic_policy == model.LOCAL else cluster)
