"""HTTP front of the lab's API server: Kubernetes REST paths onto api.Api.

Paths: ``/api/v1/[namespaces/NS/]RESOURCE[/NAME[/status]]`` and
``/apis/GROUP/VERSION/...`` the same way, plus discovery (``/api``,
``/apis``, the resource lists) and ``/version``, ``/healthz``, ``/readyz``.
Watches (``?watch=true``) stream one JSON event per line over chunked
HTTP/1.1, resume from ``resourceVersion``, send BOOKMARK events when asked
(``allowWatchBookmarks``) and an ERROR 410 when the version was compacted.

``stop()`` closes the listener and every open connection, like a killed
process; ``start()`` again serves the same store on the same port.
"""
import base64
import json
import logging
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from topologies.apiserver import tables
from topologies.apiserver.api import Api
from topologies.apiserver.errors import ApiError
from topologies.apiserver.kinds import RESOURCES
from topologies.apiserver.selectors import parse_fields, parse_labels
from topologies.apiserver.store import parse_rv

LOG = logging.getLogger(__name__)
OPENAPI_V2_PROTOBUF = "application/octet-stream"     # a protobuf-encoded Document
VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0-nsx-proxy-lab",
           "platform": "linux/amd64", "goVersion": "n/a (python)"}


def _resource_list(group_version, resources):
    out = []
    for r in resources:
        out.append({"name": r.name, "singularName": r.singular, "namespaced": r.namespaced,
                    "kind": r.kind, "shortNames": list(r.short),
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
        if r.status:
            out.append({"name": f"{r.name}/status", "singularName": "", "kind": r.kind,
                        "namespaced": r.namespaced, "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": group_version, "resources": out}


def _discovery(path):
    """Discovery documents by path, or None."""
    core = [r for r in RESOURCES.values() if not r.group]
    groups = {}
    for r in RESOURCES.values():
        if r.group:
            groups.setdefault((r.group, r.version), []).append(r)
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
    if path == "/api/v1":
        return _resource_list("v1", core)
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
             "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}}
            for g, v in sorted(groups)]}
    for (g, v), rs in groups.items():
        if path == f"/apis/{g}":
            return {"kind": "APIGroup", "apiVersion": "v1", "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                    "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}}
        if path == f"/apis/{g}/{v}":
            return _resource_list(f"{g}/{v}", rs)
    if path == "/version":
        return VERSION
    return _openapi(path)


def _openapi(path):
    """Just enough OpenAPI v3 for kubectl to know the server validates fields.

    kubectl asks whether each kind's PATCH takes ``fieldValidation``; if so
    it leaves validation to the server (which checks the fields it knows)
    instead of downloading full schemas to validate on the client.
    """
    gvs = sorted({(r.group, r.version) for r in RESOURCES.values()})

    def gv_path(group, version):
        return f"apis/{group}/{version}" if group else f"api/{version}"
    if path == "/openapi/v3":
        return {"paths": {gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{gv_path(g, v)}"}
                          for g, v in gvs}}
    for group, version in gvs:
        if path != f"/openapi/v3/{gv_path(group, version)}":
            continue
        paths = {}
        for r in RESOURCES.values():
            if (r.group, r.version) != (group, version):
                continue
            scope = "namespaces/{namespace}/" if r.namespaced else ""
            paths[f"/{gv_path(group, version)}/{scope}{r.name}/{{name}}"] = {"patch": {
                "x-kubernetes-group-version-kind": {"group": group, "version": version,
                                                    "kind": r.kind},
                "parameters": [{"name": "fieldValidation", "in": "query",
                                "schema": {"type": "string"}}],
                "responses": {}}}
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.31.0"},
                "paths": paths}
    return None


def _flag(value) -> bool:
    """A boolean query parameter, parsed like Go's strconv.ParseBool."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that went away mid-request (an agent killed or restarted)
        is no error of ours; anything else prints its traceback as usual."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _count(value) -> int:
    """A list's ``limit``: a positive count, else 0 (everything)."""
    try:
        return max(int(value or 0), 0)
    except ValueError:
        raise ApiError(400, "BadRequest", f"invalid limit {value!r}") from None


def _continued(token):
    """(the first page's resourceVersion, the last key it sent) of a continue
    token, or (None, None) for a first page."""
    if not token:
        return None, None
    try:
        rv, ns, name = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(rv), (str(ns), str(name))
    except (ValueError, TypeError):
        raise ApiError(400, "BadRequest", "invalid continue token") from None


def route(path):
    """(resource, namespace, name, subresource) of a resource path, or None."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    ns = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    if not rest or rest[0] not in RESOURCES or RESOURCES[rest[0]].group != group:
        return None
    res = RESOURCES[rest[0]]
    name = rest[1] if len(rest) > 1 else None
    if (ns is not None and not res.namespaced) or (res.namespaced and ns is None and name):
        return None
    sub = rest[2] if len(rest) > 2 else None
    if len(rest) > 3 or sub not in (None, "status"):
        return None
    return res, ns, name, sub


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nsx-proxy-lab-apiserver"

    def log_message(self, fmt, *args):
        LOG.debug("%s " + fmt, self.address_string(), *args)

    def setup(self):
        super().setup()
        # Headers and body go out as two writes; without NODELAY the second
        # waits for the client's delayed ACK (40 ms per request).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner.track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.owner.track(self.connection, False)

    # --- responses -------------------------------------------------------------
    def _send_json(self, code, body):
        self._send_bytes(code, json.dumps(body).encode())

    def _send_bytes(self, code, data):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _openapi_v2(self):
        """An empty OpenAPI v2 document: older kubectl (Debian's 1.20) downloads
        it to validate on the client and skips kinds it has no schema for."""
        if "protobuf" in self.headers.get("Accept", ""):
            data, ctype = b"\x0a\x032.0", OPENAPI_V2_PROTOBUF   # {swagger: "2.0"}
        else:
            data = json.dumps({"swagger": "2.0", "info": {"title": "Kubernetes",
                                                          "version": "v1.31.0"},
                               "paths": {}, "definitions": {}}).encode()
            ctype = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, obj):
        data = json.dumps(obj).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self):
        try:
            return json.loads(self._body() or b"{}")
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"invalid JSON body: {exc}") from None

    # --- dispatch --------------------------------------------------------------
    def _dispatch(self, method):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        api: Api = self.server.owner.api
        try:
            if method == "GET" and url.path in ("/healthz", "/readyz", "/livez"):
                data = b"ok"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(data)
                return
            if method == "GET" and url.path == "/openapi/v2":
                self._openapi_v2()
                return
            doc = _discovery(url.path.rstrip("/")) if method == "GET" else None
            if doc is not None:
                self._send_json(200, doc)
                return
            target = route(url.path)
            if target is None:
                raise ApiError(404, "NotFound", "the server could not find the requested "
                               "resource")
            res, ns, name, sub = target
            self.server.owner.record(method, query, res, ns, name, sub)
            if method == "GET" and name is None:
                if _flag(query.get("watch")):
                    self._watch(api, res, ns, query)
                else:
                    self._list(api, res, ns, query)
                return
            if method == "GET":
                obj = api.get(res, ns, name)
                self._send_json(200, tables.maybe_table(self.headers.get("Accept", ""),
                                                        res, [obj], obj["metadata"]))
            elif method == "POST" and name is None:
                self._send_json(201, api.create(res, ns, self._json_body()))
            elif method == "PUT" and name:
                self._send_json(200, api.update(res, ns, name, self._json_body(), sub))
            elif method == "PATCH" and name:
                self._send_json(200, api.patch(res, ns, name,
                                               self.headers.get("Content-Type", ""),
                                               self._body(), sub))
            elif method == "DELETE" and name:
                options = self._json_body()
                grace = query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
                self._send_json(200, api.delete(res, ns, name,
                                                None if grace is None else int(grace)))
            else:
                raise ApiError(405, "MethodNotAllowed",
                               f"the server does not allow this method on the requested "
                               f"resource")
        except ApiError as exc:
            self._send_json(exc.code, exc.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # --- list and watch ----------------------------------------------------------
    @staticmethod
    def _predicate(query):
        labels = parse_labels(query.get("labelSelector"))
        fields = parse_fields(query.get("fieldSelector"))
        return lambda o, lbs=None: labels(o["metadata"].get("labels") if lbs is None
                                          else lbs) and fields(o)

    @staticmethod
    def _selected(events, ns, predicate):
        """Watch events as a selecting watcher sees them: an object whose
        labels move it out of the selection is DELETED for it, one that moves
        in is ADDED (what the API server's watch cache does)."""
        out = []
        for ev in events:
            if ns is not None and ev.obj["metadata"].get("namespace") != ns:
                continue
            now = predicate(ev.obj)
            if ev.type != "MODIFIED":
                if now:
                    out.append((ev.type, ev.obj))
                continue
            before = ev.old_labels is not None and predicate(ev.obj, ev.old_labels)
            if now and before:
                out.append(("MODIFIED", ev.obj))
            elif now:
                out.append(("ADDED", ev.obj))
            elif before:
                out.append(("DELETED", ev.obj))
        return out

    def _list(self, api, res, ns, query):
        accept = self.headers.get("Accept", "")
        if tables.wants_table(accept):
            items, rv = api.store.list(res.name, ns, self._predicate(query))
            self._send_json(200, tables.maybe_table(accept, res, items,
                                                    {"resourceVersion": str(rv)}, as_list=True))
            return
        # Pages as kube-apiserver makes them: ``limit`` objects, then a
        # continue token (the first page's resourceVersion and the last key);
        # every page says that first resourceVersion, so a watch from it
        # replays what changed while the pages were read.  resourceVersion=0
        # is served whole, as from kube-apiserver's watch cache.
        limit = 0 if query.get("resourceVersion") == "0" else _count(query.get("limit"))
        snapshot, after = _continued(query.get("continue"))
        if snapshot is not None:
            api.store.check_resumable(snapshot)
        items, rv, more = api.store.list_json(res.name, ns, self._predicate(query),
                                              limit, after)
        meta = {"resourceVersion": str(snapshot or rv)}
        if more is not None:
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps([snapshot or rv, *more]).encode()).decode()
        head = json.dumps({"kind": f"{res.kind}List", "apiVersion": res.api_version,
                           "metadata": meta})
        self._send_bytes(200, (head[:-1] + ', "items": ' + items + "}").encode())

    def _watch(self, api, res, ns, query):
        owner, store = self.server.owner, api.store
        predicate = self._predicate(query)
        rv = parse_rv(query.get("resourceVersion"))
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        bookmarks = _flag(query.get("allowWatchBookmarks"))
        with store.cond:
            if not rv:                       # "" or "0": current state first
                items, last = store.list(res.name, ns, predicate)
                pending = [("ADDED", o) for o in items]
            else:
                try:
                    store.check_resumable(rv)
                except ApiError as exc:
                    pending, last = [("ERROR", exc.status())], None
                else:
                    pending, last = [], rv
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        # The connection ends with the watch: say so, or a client's pool
        # reuses it for its next request and finds it closed.
        self.send_header("Connection", "close")
        self.end_headers()
        next_bookmark = time.monotonic() + owner.bookmark_interval
        try:
            while True:
                for etype, obj in pending:
                    if etype != "ERROR":
                        obj = dict(obj, apiVersion=res.api_version, kind=res.kind)
                    self._chunk({"type": etype, "object": obj})
                if last is None or owner.stopping or time.monotonic() >= deadline:
                    break
                if bookmarks and time.monotonic() >= next_bookmark:
                    next_bookmark = time.monotonic() + owner.bookmark_interval
                    self._chunk({"type": "BOOKMARK", "object": {
                        "kind": res.kind, "apiVersion": res.api_version,
                        "metadata": {"resourceVersion": str(last)}}})
                with store.cond:
                    try:
                        events = store.events_after(res.name, last)
                        if not events:
                            store.cond.wait(timeout=max(0.0, min(
                                0.5, deadline - time.monotonic(),
                                next_bookmark - time.monotonic())))
                            events = store.events_after(res.name, last)
                    except ApiError as exc:
                        pending, last = [("ERROR", exc.status())], None
                        continue
                    pending = self._selected(events, ns, predicate)
                    last = store.rv          # nothing newer of this resource up to here
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        self.close_connection = True


class ApiServer:
    """The lab's API server on 127.0.0.1:port; ``url`` and ``kubeconfig()`` for clients."""

    def __init__(self, port=0, host="127.0.0.1", api=None, bookmark_interval=5.0):
        self.api = api or Api()
        self.host, self.port = host, port
        self.bookmark_interval = bookmark_interval
        self.stopping = False
        # (verb, API group, resource, subresource, namespace or None) of every request
        # served: what a client really needs, to check an RBAC role against
        self.audit = set()
        self._httpd = None
        self._conns = set()
        self._lock = threading.Lock()

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    _VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}

    def record(self, method, query, res, ns, name, sub):
        if method == "GET":
            verb = "get" if name else "watch" if _flag(query.get("watch")) \
                else "list"
        else:
            verb = self._VERBS.get(method, method.lower())
        self.audit.add((verb, res.group, res.name, sub or "", ns))

    def track(self, conn, alive):
        with self._lock:
            (self._conns.add if alive else self._conns.discard)(conn)

    def start(self):
        self.stopping = False
        httpd = _Server((self.host, self.port), _Handler, bind_and_activate=False)
        httpd.allow_reuse_address = True
        httpd.daemon_threads = True
        httpd.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        httpd.server_bind()
        httpd.server_activate()
        httpd.owner = self
        self.port = httpd.server_address[1]
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, name="apiserver", daemon=True).start()
        LOG.info("API server listening on %s", self.url)
        return self

    def stop(self):
        """Close the listener and cut every connection (watches end abruptly)."""
        self.stopping = True
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.api.store.cond:
            self.api.store.cond.notify_all()

    def kubeconfig(self, path):
        """Write a kubeconfig for this server (kubectl and the Python client read it)."""
        doc = {"apiVersion": "v1", "kind": "Config", "current-context": "lab",
               "clusters": [{"name": "lab", "cluster": {"server": self.url}}],
               "users": [{"name": "lab", "user": {}}],
               "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab",
                                                        "namespace": "default"}}]}
        with open(path, "w") as fh:
            json.dump(doc, fh, indent=2)
        return path

