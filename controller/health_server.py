"""kube-proxy's health servers on the node: one HTTP listener per Service
``healthCheckNodePort`` (on every node address of both families, as
kube-proxy's two proxiers of a dual-stack node serve it) and the proxy's
``/healthz`` (``healthz_bind_address``, 0.0.0.0:10256 by default, IPv4 as
kube-proxy's; ``[::]:10256`` for IPv6).  Answers come from
nsx_proxy.healthcheck.

Only a node agent serves them (it runs in the node's network namespace, as
kube-proxy does with the host network); the central mode of the lab has no
node to answer for.  Listeners follow the state: a port that appears is
opened, one that goes is closed, a port that cannot be bound (in use by
something else on the node) is one log line and skipped.
"""
import logging
import socket

from nsx_proxy import healthcheck

LOG = logging.getLogger(__name__)


class HealthServer:
    def __init__(self, spawn, kill, proxy_status, bind_host="::"):
        """``proxy_status()`` -> (healthy, last_updated wall time, now wall time)."""
        self._spawn, self._kill = spawn, kill
        self._proxy_status = proxy_status
        self.bind_host = bind_host
        self.checks = {}                     # port -> (ServiceKey, ready local endpoints)
        self._listeners = {}                 # port -> (socket, green thread)
        self._failed = set()                 # ports that could not be bound (logged)
        self._proxy = None                   # the /healthz listener

    # --- the proxy's own /healthz ----------------------------------------------------
    def serve_proxy(self, address: str):
        """``HOST:PORT`` (kube-proxy's --healthz-bind-address); empty: off."""
        if not address:
            return
        host, _, port = address.rpartition(":")
        try:
            self._proxy = self._listen(host.strip("[]") or "0.0.0.0", int(port),
                                       self._proxy_app)
        except (OSError, ValueError) as exc:
            LOG.error("proxy health endpoint %s unavailable: %s", address, exc)
            return
        LOG.info("proxy health endpoint on http://%s/healthz", address)

    def _proxy_app(self, environ, start_response):
        path = environ.get("PATH_INFO")
        if path not in ("/healthz", "/livez"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"try /healthz or /livez\n"]
        healthy, last, now = self._proxy_status()
        status, headers, body = healthcheck.proxy_answer(last, now, healthy,
                                                         livez=path == "/livez")
        start_response(status, headers)
        return [body]

    # --- per-service health checks ---------------------------------------------------
    def update(self, checks):
        """The new {port: (service, local endpoints)}: open and close listeners."""
        self.checks = dict(checks)
        for port in [p for p in self._listeners if p not in checks]:
            sock, thread = self._listeners.pop(port)
            self._kill(thread)
            sock.close()
            LOG.info("health check port %d closed", port)
        self._failed &= set(checks)
        for port, (key, _) in sorted(checks.items()):
            if port in self._listeners or port in self._failed:
                continue
            try:
                self._listeners[port] = self._listen(self.bind_host, port,
                                                     self._service_app(port))
            except OSError as exc:
                self._failed.add(port)
                LOG.error("service %s: cannot serve healthCheckNodePort %d: %s", key, port,
                          exc)
                continue
            LOG.info("service %s: health check on port %d", key, port)

    def _service_app(self, port):
        def app(environ, start_response):
            check = self.checks.get(port)
            if check is None:            # closing: the service went away
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"no such service\n"]
            healthy, _, _ = self._proxy_status()
            status, headers, body = healthcheck.service_answer(check[0], check[1], healthy)
            start_response(status, headers)
            return [body]
        return app

    def _listen(self, host, port, app):
        import eventlet
        import eventlet.wsgi
        sock = self._socket(eventlet, host, port)
        thread = self._spawn(eventlet.wsgi.server, sock, app,
                             log=logging.getLogger("nsx_proxy.health.access"),
                             log_output=False)
        return sock, thread

    @staticmethod
    def _socket(eventlet, host, port):
        """A listening socket on ``host``: "::" takes both families (IPv4 as
        mapped addresses), or IPv4 alone where the node has no IPv6."""
        if ":" not in host:
            return eventlet.listen((host, port))
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if host == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, port))
            sock.listen(50)
        except OSError:
            sock.close()
            if host != "::":
                raise
            return eventlet.listen(("0.0.0.0", port))   # no IPv6 on this node
        return eventlet.greenio.GreenSocket(sock)
