"""What the proxy did, for people and tools: a read-only HTTP endpoint on localhost.

``GET /state``   the desired state as the controller implements it, with the
                 group ids and cookies a user needs to find it in OVS: each
                 service's frontends and groups, each cookie's owner, the
                 table names (JSON; the ``nsx-proxy`` CLI needs nothing else);
``GET /metrics`` Prometheus metrics.
``GET /healthz`` kube-proxy's verdict (nsx_proxy/healthcheck.py: no change
                 has waited more than two of the longest sync periods to be
                 programmed), as text: 200 "ok", or 503 with the reason;
``GET /readyz``  200 once every initial list arrived and every local bridge
                 is programmed; otherwise 503 with the reasons, one a line
                 (the DaemonSet's liveness and readiness probes).

It binds to 127.0.0.1 only: it is for the node's operator, not the network.
The metrics are collected at scrape time from the app's own bookkeeping
(sessions, the source's reflectors and reject counts) plus two histograms the
app observes (sync duration, event to programmed).
"""
import collections
import json
import logging
import time

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from controller import cookies, pipeline
from controller.names import (
    external_group_name, family_group_name, gateway_group_name, part_name, pool_parts,
    service_port_name, spread_per_flow)

LOG = logging.getLogger(__name__)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# kube-proxy's own (pkg/proxy/metrics), so its dashboards and SLO alerts work
# unchanged: sync_proxy_rules 1 ms doubling 15 times; network programming
# 0, 0.25, 0.5, 1..59 s, 60..115 s by 5, 120..300 s by 30.
KUBE_PROXY_SYNC_BUCKETS = tuple(0.001 * 2 ** i for i in range(15))
KUBE_PROXY_PROGRAMMING_BUCKETS = ((0.0, 0.25, 0.5) + tuple(float(s) for s in range(1, 60))
                                  + tuple(float(s) for s in range(60, 120, 5))
                                  + tuple(float(s) for s in range(120, 301, 30)))


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
        # kube-proxy's sync_proxy_rules_last_timestamp_seconds, per bridge; with
        # the time of the first API event behind what was committed, a change
        # written at T is live on that bridge once the event time is >= T.
        self.last_programmed = Gauge(
            "nsx_proxy_last_programmed_timestamp_seconds",
            "wall-clock time of the last bundle committed on a switch", ["bridge"],
            registry=self.registry)
        self.programmed_event = Gauge(
            "nsx_proxy_programmed_event_timestamp_seconds",
            "wall-clock time of the first Kubernetes event behind the state last "
            "committed on a switch", ["bridge"], registry=self.registry)
        self.network_programming = Histogram(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds (kube-proxy's SLI: from "
            "an EndpointSlice's last-change-trigger-time to the change programmed)",
            buckets=KUBE_PROXY_PROGRAMMING_BUCKETS, registry=self.registry)
        self.sync_proxy_rules = Histogram(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds (here: one bundle, plan to commit)",
            buckets=KUBE_PROXY_SYNC_BUCKETS, registry=self.registry)
        self.sync_proxy_rules_last = Gauge(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced", registry=self.registry)
        self.registry.register(_AppCollector(app))


    def committed(self, bridge, seconds, wall, trigger_times, event_age=None) -> None:
        """A bundle committed on ``bridge`` at ``wall`` after ``seconds``.
        kube-proxy's SLI: a change is programmed with the first bundle that
        carries it (an agent has one node bridge; centrally, the first one),
        measured from each trigger time; ``event_age``: the first API event
        behind it, the first time this bridge commits it."""
        self.sync_seconds.labels(bridge).observe(seconds)
        self.last_programmed.labels(bridge).set(wall)
        self.sync_proxy_rules.observe(seconds)
        self.sync_proxy_rules_last.set(wall)
        for when in trigger_times:
            self.network_programming.observe(max(0.0, wall - when))
        if event_age is not None:
            self.event_to_programmed.observe(event_age)
            self.programmed_event.labels(bridge).set(time.time() - event_age)

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
        for dpid, switch in app.switches.items():
            name = bridge_name(app, dpid)
            installed = switch.session.installed if switch.session else {}
            # Fragments never share a flow or group (the golden tests and the
            # drift audit's flatten() check it), so counting per fragment is
            # exact and spares each scrape a dict of every flow (50,000 at
            # 10k services: tens of ms on the agent's one event loop).
            flows.add_metric([name], sum(len(f.flows) for f in installed.values()))
            groups.add_metric([name], sum(len(f.groups) for f in installed.values()))
        yield flows
        yield groups
        state = app.state
        yield GaugeMetricFamily("nsx_proxy_services", "services programmed",
                                value=len(state.services))
        endpoints, per_family = 0, collections.Counter()
        for svc in state.services.values():        # one walk of 10,000 per scrape
            endpoints += sum(len(p.endpoints) for p in svc.ports)
            for kind, addresses in (("cluster", svc.cluster_ips),
                                    ("external", svc.external_ips),
                                    ("load_balancer", svc.load_balancer_ips)):
                for ip in addresses:
                    per_family[kind, "IPv6" if ":" in ip else "IPv4"] += 1
        yield GaugeMetricFamily("nsx_proxy_endpoints", "endpoints of all service ports",
                                value=endpoints)
        ips = GaugeMetricFamily("nsx_proxy_cluster_ips", "cluster IPs programmed, per "
                                "address family", labels=["family"])
        outside = GaugeMetricFamily("nsx_proxy_outside_ips", "externalIPs and load-balancer "
                                    "IPs programmed, per kind and address family",
                                    labels=["kind", "family"])
        for family in ("IPv4", "IPv6"):
            ips.add_metric([family], per_family["cluster", family])
            for kind in ("external", "load_balancer"):
                outside.add_metric([kind, family], per_family[kind, family])
        yield ips
        yield outside
        for metric, help_text, attr in (
                ("nsx_proxy_switch_connects", "OpenFlow connections from switches",
                 "switch_connects"),
                ("nsx_proxy_bundle_failures", "bundles a switch refused or never confirmed",
                 "bundle_failures")):
            family = CounterMetricFamily(metric, help_text, labels=["bridge"])
            for dpid, count in getattr(app, attr).items():
                family.add_metric([bridge_name(app, dpid)], count)
            yield family
        drift = CounterMetricFamily("nsx_proxy_drift_repairs",
                                    "times a switch was found not to hold what was "
                                    "installed and was reinstalled", labels=["bridge"])
        for (dpid, what), count in sorted(app.counters.items()):
            if what == "drift":
                drift.add_metric([bridge_name(app, dpid)], count)
        yield drift
        skipped = CounterMetricFamily(
            "nsx_proxy_quarantined_objects",
            "objects left out of a switch's bundles until they change (reason: encode = "
            "a message could not be encoded, refused = the switch refused it)",
            labels=["bridge", "reason"])
        for (dpid, what), count in sorted(app.counters.items()):
            if what.startswith("quarantined "):
                skipped.add_metric([bridge_name(app, dpid), what.split()[1]], count)
        yield skipped
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
        runner = getattr(source, "runner", None)
        if runner is not None:
            yield CounterMetricFamily(
                "nsx_proxy_sync_failures", "syncs that raised (their changes stay pending "
                "and are retried)", value=runner.failures)
        rejects = CounterMetricFamily("nsx_proxy_rejected_objects",
                                      "objects (or parts) skipped as invalid", labels=["reason"])
        if source is not None:
            for reason, count in sorted(source.rejects.counts.items()):
                rejects.add_metric([reason], count)
        yield rejects
        elector = getattr(source, "elector", None)
        if elector is not None:
            yield GaugeMetricFamily("nsx_proxy_leader", "1 while this agent holds the "
                                    "Lease that elects the one writing to the API",
                                    value=int(elector.leading))


def readiness(app):
    """(ready, reasons not to be): every initial list arrived and every local
    bridge is connected and programmed."""
    reasons = []
    source = app.source
    if source is not None and not source.synced:
        waiting = [r.name for r in source.reflectors if not r.synced]
        reasons.append(f"waiting for the initial lists of {', '.join(waiting)} "
                       "(is the API server reachable?)")
    elif app.state_received is None:
        reasons.append("no cluster state yet")
    if not app.contexts:
        reasons.append(f"no bridge in OVSDB is labelled for node {app.node_name}"
                       if app.node_name else "no bridge in OVSDB has nsx-proxy-role")
    for dpid, ctx in sorted(app.contexts.items()):
        switch = app.switches.get(dpid)
        if switch is None:
            reasons.append(f"bridge {ctx.name} is not connected")
        elif not switch.ready or switch.session.needs_resync:
            reasons.append(f"bridge {ctx.name} is not programmed yet")
    return not reasons, reasons


def bridge_name(app, dpid):
    ctx = app.contexts.get(dpid)
    return ctx.name if ctx is not None else f"{dpid:016x}"


def _parts(ids, name, first, parts):
    """The group ids of a pool's parts (the first is the pool's own), as allocated."""
    if first is None:
        return []
    rest = (ids.peek(part_name(name, i)) for i in range(1, parts))
    return [first] + [gid for gid in rest if gid is not None]


def _hex(cookie) -> str:
    return f"{cookie:#018x}"


def _cookie(kind, object_id) -> str:
    return _hex(cookies.make(kind, object_id))


def state_view(app) -> dict:
    """The JSON of GET /state (pure over the app's data).

    Explicit about everything a reader of ``ovs-ofctl`` output needs, so
    tools never re-derive the compiler's rules: ``cookies`` maps every cookie
    the proxy uses (generation bits cleared; mask ``cookie_mask``) to the
    object that owns it, each service lists its frontends, groups and the
    cookie of each port, and ``tables`` names every table.
    """
    ids = app.group_ids
    owners = {_cookie(cookies.KIND_PIPELINE, 0): "pipeline",
              _cookie(cookies.KIND_PIPELINE, 1): "gateway pipeline"}
    bridges = []
    for dpid, ctx in sorted(app.contexts.items()):
        switch = app.switches.get(dpid)
        session = switch.session if switch else None
        pods = []
        for p in ctx.pods:
            cookie = _hex(cookies.for_name(cookies.KIND_POD, p.full_name))
            owners[cookie] = f"pod {p.full_name}"
            pods.append({"name": p.full_name, "ip": p.ip, "ip6": p.ip6, "mac": p.mac,
                         "ofport": p.ofport, "cookie": cookie})
        bridges.append({
            "dpid": f"{dpid:016x}", "name": ctx.name, "role": ctx.role, "node": ctx.node,
            "ct_zone": ctx.ct_zone, "snat_zone": ctx.snat_zone,
            "generation": session.generation if session else None,
            "connected": switch is not None, "pods": pods,
            "uplink": ctx.uplink, "router_mac": ctx.router_mac if ctx.pod_cidr else None,
            "pod_cidr6": ctx.pod_cidr6})
    nodes = []
    for n in app.state.nodes.values():
        cookie = _hex(cookies.for_name(cookies.KIND_NODE, n.name))
        owners[cookie] = f"node {n.name}"
        nodes.append({"name": n.name, "internal_ip": n.internal_ip, "pod_cidr": n.pod_cidr,
                      "internal_ip6": n.internal_ip6, "pod_cidr6": n.pod_cidr6,
                      "zone": n.zone, "cookie": cookie})
    services = []
    for svc in sorted(app.state.services.values(), key=lambda s: s.key):
        ports, frontends = [], []
        for ip in svc.frontend_ips:
            owners[_hex(cookies.for_ip(cookies.KIND_VIP, ip))] = f"service IP {ip}"
        for ip in svc.outside_ips:
            gid = ids.peek(gateway_group_name(ip))
            if gid is not None:
                owners[_cookie(cookies.KIND_VIP, gid)] = f"gateway route of {ip}"
        for port in svc.ports:
            gid = ids.peek(service_port_name(svc, port))
            ext = ids.peek(external_group_name(svc, port))
            # a dual-stack (or IPv6) service's IPv6 pool: a group of its own
            gid6 = ids.peek(family_group_name(service_port_name(svc, port), "::"))
            ext6 = ids.peek(family_group_name(external_group_name(svc, port), "::"))
            parts = pool_parts(svc, port, len(port.endpoints), pipeline.MAX_BUCKETS_PER_GROUP)
            what = f"service {svc.key} {port.protocol}/{port.port}"
            for group in (gid, ext, gid6, ext6):
                if group is not None:
                    owners[_cookie(cookies.KIND_SERVICE_PORT, group)] = what
                    owners[_cookie(cookies.KIND_AFFINITY, group)] = "affinity entry of " + what
            frontends += [{"ip": ip, "protocol": port.protocol, "port": port.port}
                          for ip in svc.frontend_ips]
            if port.node_port and svc.node_ports:      # on InternalIPs of its families
                families = {":" in ip for ip in svc.cluster_ips}
                frontends += [{"ip": ip, "protocol": port.protocol, "port": port.node_port}
                              for n in nodes for ip in (n["internal_ip"], n["internal_ip6"])
                              if ip and (":" in ip) in families]
            ports.append({
                "name": port.name, "protocol": port.protocol, "port": port.port,
                "node_port": port.node_port, "target_port": port.target_port,
                "group_id": gid, "external_group_id": ext, "ipv6_group_id": gid6,
                "external_ipv6_group_id": ext6,
                # a pool too large for one group is split: every part's group
                "group_ids": _parts(ids, service_port_name(svc, port), gid, parts),
                "external_group_ids": _parts(ids, external_group_name(svc, port), ext,
                                             parts),
                # UDP without affinity: no group; the ids are the pools' reg4
                # values in UdpSpread's flows (controller/udp_pool.py)
                "spread_per_flow": spread_per_flow(svc, port),
                "cookie": _cookie(cookies.KIND_SERVICE_PORT, gid or 0),
                "endpoints": [{"ip": e.ip, "port": e.port, "node": e.node, "pod": e.pod,
                               "ready": e.ready, "serving": e.serving,
                               "terminating": e.terminating, "zones": list(e.zones)}
                              for e in port.endpoints]})
        services.append({
            "namespace": svc.namespace, "name": svc.name, "type": svc.type,
            "cluster_ip": svc.cluster_ip, "cluster_ips": list(svc.cluster_ips),
            "external_ips": list(svc.external_ips),
            "load_balancer_ips": list(svc.load_balancer_ips), "frontends": frontends,
            "external_traffic_policy": svc.external_traffic_policy,
            "internal_traffic_policy": svc.internal_traffic_policy,
            "session_affinity_timeout": svc.affinity_timeout, "ports": ports})
    fips = []
    for f in app.state.floating_ips.values():
        cookie = _hex(cookies.for_ip(cookies.KIND_FLOATING_IP, f.ip))
        owners[cookie] = f"floating IP {f.ip} of {f.pod}"
        fips.append({"ip": f.ip, "pod": f.pod, "pod_ip": f.pod_ip, "node": f.node,
                     "cookie": cookie})
    return {"bridges": bridges, "services": services, "nodes": nodes,
            "floating_ips": fips, "cookies": owners,
            "cookie_mask": _hex(cookies.OBJECT_MASK),
            "tables": {str(t.id): t.name for t in pipeline.TABLES}}


def wsgi_app(app, metrics, clock=None):
    clock = clock or time.monotonic

    def probe(start_response, result, bad_status):
        ok, reasons = result
        body = ("ok\n" if ok else "".join(r + "\n" for r in reasons)).encode()
        start_response("200 OK" if ok else bad_status,
                       [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    def handle(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return probe(start_response, app.proxy_health(clock()), "503 Service Unavailable")
        if path == "/readyz":
            return probe(start_response, readiness(app), "503 Service Unavailable")
        if path == "/metrics":
            body, ctype = metrics.scrape(), "text/plain; version=0.0.4"
        elif path == "/state":
            body, ctype = json.dumps(state_view(app), indent=1).encode(), "application/json"
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"try /state, /metrics, /healthz or /readyz\n"]
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
