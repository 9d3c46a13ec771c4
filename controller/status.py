"""What the proxy did, for people and tools: a read-only HTTP endpoint on localhost.

``GET /state``   the desired state as the controller implements it, with the
                 group ids and cookies a user needs to find it in OVS (JSON;
                 the ``nsx-proxy`` CLI reads it);
``GET /metrics`` Prometheus metrics.

It binds to 127.0.0.1 only: it is for the node's operator, not the network.
The metrics are collected at scrape time from the app's own bookkeeping
(sessions, the source's reflectors and reject counts) plus two histograms the
app observes (sync duration, event to programmed).
"""
import json
import logging

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from controller import cookies
from controller.compiler import external_group_name, flatten, service_port_name

LOG = logging.getLogger(__name__)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self, app):
        self.registry = CollectorRegistry()
        self.sync_seconds = Histogram(
            "nsx_proxy_sync_duration_seconds",
            "one switch sync: plan, bundle sent, commit confirmed", ["bridge"],
            buckets=BUCKETS, registry=self.registry)
        self.event_to_programmed = Histogram(
            "nsx_proxy_event_to_programmed_seconds",
            "first Kubernetes event of a change to its bundle committed on a switch",
            buckets=BUCKETS, registry=self.registry)
        self.registry.register(_AppCollector(app))

    def scrape(self) -> bytes:
        return generate_latest(self.registry)


class _AppCollector:
    """Gauges and counters read from the app when Prometheus scrapes."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        app = self.app
        flows = GaugeMetricFamily("nsx_proxy_flows", "flows installed", labels=["bridge"])
        groups = GaugeMetricFamily("nsx_proxy_groups", "groups installed", labels=["bridge"])
        for dpid, session in app.sessions.items():
            name = bridge_name(app, dpid)
            f, g = flatten(session.installed) if session.installed else ({}, {})
            flows.add_metric([name], len(f))
            groups.add_metric([name], len(g))
        yield flows
        yield groups
        state = app.state
        yield GaugeMetricFamily("nsx_proxy_services", "services programmed",
                                value=len(state.services))
        yield GaugeMetricFamily("nsx_proxy_endpoints", "endpoints of all service ports",
                                value=sum(len(p.endpoints) for s in state.services.values()
                                          for p in s.ports))
        for metric, help_text, attr in (
                ("nsx_proxy_switch_connects", "OpenFlow connections from switches",
                 "switch_connects"),
                ("nsx_proxy_bundle_failures", "bundles a switch refused or never confirmed",
                 "bundle_failures")):
            family = CounterMetricFamily(metric, help_text, labels=["bridge"])
            for dpid, count in getattr(app, attr).items():
                family.add_metric([bridge_name(app, dpid)], count)
            yield family
        source = app.source
        if source is not None and hasattr(source, "reflectors"):
            restarts = CounterMetricFamily("nsx_proxy_watch_restarts",
                                           "watches ended and started again", labels=["resource"])
            relists = CounterMetricFamily("nsx_proxy_relists",
                                          "full lists (start, 410 Gone, periodic)",
                                          labels=["resource"])
            errors = CounterMetricFamily("nsx_proxy_watch_errors",
                                         "list or watch failures (then backoff)",
                                         labels=["resource"])
            for r in source.reflectors:
                restarts.add_metric([r.name], r.watch_restarts)
                relists.add_metric([r.name], r.lists)
                errors.add_metric([r.name], r.errors)
            yield restarts
            yield relists
            yield errors
        rejects = CounterMetricFamily("nsx_proxy_rejected_objects",
                                      "objects (or parts) skipped as invalid", labels=["reason"])
        if source is not None:
            for reason, count in sorted(source.rejects.counts.items()):
                rejects.add_metric([reason], count)
        yield rejects


def bridge_name(app, dpid):
    ctx = app.contexts.get(dpid)
    return ctx.name if ctx is not None else f"{dpid:016x}"


def state_view(app) -> dict:
    """The JSON of GET /state (pure over the app's data)."""
    ids = app.group_ids
    bridges = []
    for dpid, ctx in sorted(app.contexts.items()):
        session = app.sessions.get(dpid)
        bridges.append({
            "dpid": f"{dpid:016x}", "name": ctx.name, "role": ctx.role, "node": ctx.node,
            "ct_zone": ctx.ct_zone, "snat_zone": ctx.snat_zone,
            "generation": session.generation if session else None,
            "connected": dpid in app.datapaths,
            "pods": [{"name": p.full_name, "ip": p.ip, "mac": p.mac, "ofport": p.ofport}
                     for p in ctx.pods],
            "uplink": ctx.uplink, "router_mac": ctx.router_mac if ctx.pod_cidr else None})
    services = []
    for svc in sorted(app.state.services.values(), key=lambda s: s.key):
        ports = []
        for port in svc.ports:
            gid = ids.peek(service_port_name(svc, port))
            ports.append({
                "name": port.name, "protocol": port.protocol, "port": port.port,
                "node_port": port.node_port, "target_port": port.target_port,
                "group_id": gid, "external_group_id": ids.peek(external_group_name(svc, port)),
                "cookie": f"{cookies.make(cookies.KIND_SERVICE_PORT, gid or 0):#018x}",
                "endpoints": [{"ip": e.ip, "port": e.port, "node": e.node, "pod": e.pod,
                               "ready": e.ready, "serving": e.serving,
                               "terminating": e.terminating, "zones": list(e.zones)}
                              for e in port.endpoints]})
        services.append({
            "namespace": svc.namespace, "name": svc.name, "type": svc.type,
            "cluster_ip": svc.cluster_ip, "external_ips": list(svc.external_ips),
            "load_balancer_ips": list(svc.load_balancer_ips),
            "external_traffic_policy": svc.external_traffic_policy,
            "internal_traffic_policy": svc.internal_traffic_policy,
            "session_affinity_timeout": svc.affinity_timeout, "ports": ports})
    return {"bridges": bridges, "services": services,
            "nodes": [{"name": n.name, "internal_ip": n.internal_ip, "pod_cidr": n.pod_cidr,
                       "zone": n.zone} for n in app.state.nodes.values()],
            "floating_ips": [{"ip": f.ip, "pod": f.pod, "pod_ip": f.pod_ip, "node": f.node}
                             for f in app.state.floating_ips.values()]}


def wsgi_app(app, metrics):
    def handle(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body, ctype = metrics.scrape(), "text/plain; version=0.0.4"
        elif path == "/state":
            body, ctype = json.dumps(state_view(app), indent=1).encode(), "application/json"
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"try /state or /metrics\n"]
        start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [body]
    return handle


def serve(app, metrics, port, spawn):
    """Serve /state and /metrics on 127.0.0.1:port in a green thread."""
    import eventlet
    import eventlet.wsgi
    sock = eventlet.listen(("127.0.0.1", port))
    LOG.info("status endpoint on http://127.0.0.1:%d (/state, /metrics)", port)
    return spawn(eventlet.wsgi.server, sock, wsgi_app(app, metrics),
                 log=logging.getLogger("nsx_proxy.status.access"), log_output=False)
