"""kube-proxy's health checks: which ports a node serves, what they answer,
how healthCheckNodePort is read and allocated; the servers' answers."""
import json

from kube_helpers import service
from nsx_proxy import healthcheck, model, translate
from kube_helpers import Rejects, ep, eps
from topologies.apiserver.api import Api
from topologies.apiserver.kinds import RESOURCES
from controller.health_server import HealthServer

SVC = RESOURCES["services"]


def local_lb(name="lb", port=31000, type_="LoadBalancer", **kw):
    return service(name, {"app": "web"}, type_=type_, vip="10.96.0.20",
                   externalTrafficPolicy="Local", healthCheckNodePort=port,
                   ports=[{"name": "http", "port": 80, "targetPort": "http"}], **kw)


def state_of(*pairs):
    rejects = Rejects()
    services = {}
    for raw, slices in pairs:
        s = translate.service(raw, slices, rejects)
        services[s.key] = s
    return model.ClusterState(services=services), rejects


def test_a_node_serves_each_local_services_port_with_its_ready_local_endpoints():
    slices = [eps(ep("10.1.1.2", ready=True), ep("10.1.1.3", ready=True),
                  ep("10.1.1.4", ready=False),                    # not ready: not counted
                  ep("10.1.1.5", ready=False, serving=True, terminating=True),
                  ep("10.1.2.2", node="node2", ready=True), service="lb")]
    state, _ = state_of((local_lb(), slices),
                        (service("plain", {"app": "web"}, vip="10.96.0.21"), []))
    key = model.ServiceKey("default", "lb")
    assert healthcheck.service_checks(state, "node1") == {31000: (key, 2)}
    assert healthcheck.service_checks(state, "node2") == {31000: (key, 1)}
    assert healthcheck.service_checks(state, "node3") == {31000: (key, 0)}


def test_a_dual_stack_service_counts_its_local_pods_once_not_once_per_family():
    slices = [eps(ep("10.1.1.2"), ep("10.1.1.3"), service="lb"),
              eps(ep("fd00:10:1:1::2"), ep("fd00:10:1:1::3"), service="lb",
                  name="lb-v6", family="IPv6")]
    dual = local_lb(clusterIPs=["10.96.0.20", "fd00:96::20"])
    state, _ = state_of((dual, slices))
    key = model.ServiceKey("default", "lb")
    assert healthcheck.service_checks(state, "node1") == {31000: (key, 2)}


def test_two_services_claiming_one_port_the_first_keeps_it_and_the_other_is_logged():
    state, _ = state_of((local_lb("a"), []), (local_lb("b"), []))
    rejects = Rejects()
    checks = healthcheck.service_checks(state, "node1", rejects)
    assert checks == {31000: (model.ServiceKey("default", "a"), 0)}
    assert rejects == [("service", "default/b", "healthCheckNodePort 31000 is already "
                        "default/a's; no health check served for this one")]


def test_the_port_is_read_only_where_kube_proxy_serves_it():
    def port_of(raw):
        rejects = Rejects()
        return translate.service(raw, [], rejects).health_check_node_port, rejects
    assert port_of(local_lb()) == (31000, [])
    assert port_of(local_lb(type_="NodePort"))[0] == 31000
    cluster = local_lb()
    cluster["spec"]["externalTrafficPolicy"] = "Cluster"
    assert port_of(cluster) == (None, [])
    port, rejects = port_of(local_lb(port=70000))
    assert port is None and rejects == [("service", "default/lb", "healthCheckNodePort "
                                         "70000 is not a port (1-65535); no health check "
                                         "served")]


def test_answers_are_kube_proxys():
    key = model.ServiceKey("default", "lb")
    status, headers, body = healthcheck.service_answer(key, 2, True)
    assert status == "200 OK" and ("X-Load-Balancing-Endpoint-Weight", "2") in headers
    assert json.loads(body) == {"service": {"namespace": "default", "name": "lb"},
                                "localEndpoints": 2, "serviceProxyHealthy": True}
    assert healthcheck.service_answer(key, 0, True)[0] == "503 Service Unavailable"
    assert healthcheck.service_answer(key, 3, False)[0] == "503 Service Unavailable"
    status, _, body = healthcheck.proxy_answer(1e9, 1e9 + 5, True)
    doc = json.loads(body)
    assert status == "200 OK" and doc["nodeEligible"] is True
    assert doc["lastUpdated"] == doc["currentTime"]      # healthy: "updated now"
    assert doc["currentTime"].startswith("2001-09-09T01:46:45")
    status, _, body = healthcheck.proxy_answer(1e9, 1e9 + 500, False)
    assert status == "503 Service Unavailable"
    assert json.loads(body)["lastUpdated"].startswith("2001-09-09T01:46:40")
    status, _, body = healthcheck.proxy_answer(1e9, 1e9, True, livez=True)
    assert status == "200 OK" and "nodeEligible" not in json.loads(body)
    assert healthcheck.proxy_answer(1e9, 1e9, True, node_eligible=False)[0] == \
        "503 Service Unavailable"


def test_the_api_server_allocates_the_port_for_local_load_balancers_only():
    api = Api()
    body = local_lb(port=None)
    body["spec"].pop("healthCheckNodePort")
    created = api.create(SVC, "default", body)
    port = created["spec"]["healthCheckNodePort"]
    assert 30000 <= port <= 32767 and port != created["spec"]["ports"][0]["nodePort"]
    updated = api.patch(SVC, "default", "lb", "application/merge-patch+json",
                        b'{"metadata": {"labels": {"x": "y"}}}')
    assert updated["spec"]["healthCheckNodePort"] == port             # kept
    cluster = api.patch(SVC, "default", "lb", "application/merge-patch+json",
                        b'{"spec": {"externalTrafficPolicy": "Cluster"}}')
    assert "healthCheckNodePort" not in cluster["spec"]                # released
    two = api.create(SVC, "default", service("two", {"app": "web"}, type_="NodePort", ports=[
        {"name": "a", "port": 80, "targetPort": 80},
        {"name": "b", "port": 81, "targetPort": 81}]))
    assert len({p["nodePort"] for p in two["spec"]["ports"]}) == 2    # never one for both


def _call(app, path="/"):
    out = {}

    def start_response(status, headers):
        out["status"], out["headers"] = status, dict(headers)
    body = b"".join(app({"PATH_INFO": path}, start_response))
    return out["status"], out["headers"], body


def test_the_servers_answer_from_the_latest_state_and_proxy_health():
    healthy = [True]
    server = HealthServer(spawn=None, kill=None,
                          proxy_status=lambda: (healthy[0], 1e9, 1e9 + 1))
    key = model.ServiceKey("default", "lb")
    server.checks = {31000: (key, 1)}
    app = server._service_app(31000)
    status, headers, body = _call(app)
    assert status == "200 OK" and json.loads(body)["localEndpoints"] == 1
    server.checks = {31000: (key, 0)}                 # its last local pod went
    assert _call(app)[0] == "503 Service Unavailable"
    server.checks = {31000: (key, 1)}
    healthy[0] = False                                # the proxy stopped syncing
    assert json.loads(_call(app)[2])["serviceProxyHealthy"] is False
    assert _call(server._proxy_app, "/healthz")[0] == "503 Service Unavailable"
    healthy[0] = True
    assert _call(server._proxy_app, "/livez")[0] == "200 OK"
    assert _call(server._proxy_app, "/other")[0] == "404 Not Found"
    server.checks = {}                                # the service went away
    assert _call(app)[0] == "404 Not Found"


def test_a_port_in_use_costs_only_its_listener_with_one_line(caplog):
    """Something else on the node holds a healthCheckNodePort (or the
    /healthz port): one line naming the service and port, every other port is
    served, and the busy one is not retried (and logged) on every sync."""
    import socket
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    spawned, killed = [], []
    server = HealthServer(spawn=lambda *a, **kw: spawned.append(a) or len(spawned),
                          kill=killed.append, proxy_status=lambda: (True, 0, 0),
                          bind_host="127.0.0.1")
    try:
        server.serve_proxy(f"127.0.0.1:{taken}")
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        free_port = free.getsockname()[1]
        free.close()
        checks = {taken: (model.ServiceKey("default", "busy"), 1),
                  free_port: (model.ServiceKey("default", "fine"), 1)}
        server.update(checks)
        server.update(checks)                          # the next sync: not retried
        lines = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(lines) == 2
        assert f"127.0.0.1:{taken} unavailable" in lines[0]
        assert "default/busy" in lines[1] and str(taken) in lines[1]
        assert list(server._listeners) == [free_port] and len(spawned) == 1
        server.update({})                              # both services went
        assert killed == [1] and not server._listeners
    finally:
        busy.close()
        for sock, _ in server._listeners.values():
            sock.close()


def test_a_health_check_port_answers_on_both_families_and_healthz_takes_brackets():
    """kube-proxy serves healthCheckNodePort from both proxiers of a
    dual-stack node: the listener takes IPv4 and IPv6 connections alike."""
    import socket
    import eventlet
    server = HealthServer(spawn=eventlet.spawn, kill=eventlet.kill,
                          proxy_status=lambda: (True, 1e9, 1e9))
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    key = model.ServiceKey("default", "lb")
    server.update({port: (key, 2)})
    server.serve_proxy(f"[::1]:{port + 1}" if port < 65535 else "")
    try:
        for host in ("127.0.0.1", "::1"):
            with eventlet.Timeout(5):
                conn = eventlet.connect((host, port), socket.AF_INET6 if ":" in host
                                        else socket.AF_INET)
                conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
                reply = b""
                while chunk := conn.recv(4096):
                    reply += chunk
                conn.close()
            assert reply.startswith(b"HTTP/1.1 200") and b'"localEndpoints": 2' in reply, host
        if server._proxy is not None:
            assert server._proxy[0].getsockname()[0] == "::1"
    finally:
        server.update({})
        if server._proxy is not None:
            server._proxy[0].close()


def test_the_checks_follow_change_sets_and_agree_with_a_full_walk():
    """ServiceChecks looks only at the Services a change names; after each
    change it answers what service_checks' walk of every Service answers."""
    from nsx_proxy import changes
    slices = [eps(ep("10.1.1.2", ready=True), service="lb")]
    other = local_lb(name="lb2", port=31001)
    plain = (service("plain", {"app": "web"}, vip="10.96.0.21"), [])
    first, _ = state_of((local_lb(), slices), (other, []), plain)
    checks = healthcheck.ServiceChecks("node1")
    assert checks.update(first, changes.EVERYTHING) == \
        healthcheck.service_checks(first, "node1") and len(first.services) == 3
    no_port = service("lb2", {"app": "web"}, vip="10.96.0.20",
                      ports=[{"name": "http", "port": 80, "targetPort": "http"}])
    second, _ = state_of((local_lb(), slices), (no_port, []), plain)
    got = checks.update(second, changes.between(first, second))
    assert got == healthcheck.service_checks(second, "node1") and set(got) == {31000}
    third, _ = state_of((other, []), plain)
    got = checks.update(third, changes.between(second, third))
    assert got == healthcheck.service_checks(third, "node1") and set(got) == {31001}
    assert set(checks.update(first, changes.ChangeSet())) == {31001}   # told nothing
