"""A state source that reads a YAML file and re-reads it when it changes.

The lab writes this file; it stands in for the Kubernetes API until the
watch-based source lands, and stays useful for demos without a cluster.
The format mirrors what translation from Services and EndpointSlices yields::

    nodes:
      - {name: node1, internalIP: 192.168.100.1, podCIDR: 10.1.1.0/24}
    services:
      - namespace: default
        name: web
        clusterIP: 10.96.0.10
        ports:
          - {name: http, protocol: TCP, port: 80, targetPort: 8080}
        endpoints:
          - {ip: 10.1.1.2, node: node1, pod: default/pod1, ready: true,
             ports: {http: 8080}}      # optional: resolves named targetPorts

Bad entries are logged and skipped one by one (see validate.RejectLog).
"""
import dataclasses
import logging
import os

import yaml

from nsx_proxy import model
from nsx_proxy import translate
from nsx_proxy import validate
from nsx_proxy.validate import Invalid

LOG = logging.getLogger(__name__)


def _endpoint(raw, sport: model.ServicePort) -> model.Endpoint:
    ip = validate.ipv4(raw.get("ip"), "endpoint IP")
    ports = raw.get("ports") or {}
    number = ports.get(sport.name, sport.target_port)
    if isinstance(number, str):
        raise Invalid(f"endpoint {ip} has no port named {number!r}")
    return model.Endpoint(
        ip=ip, port=validate.port(number, "endpoint port"),
        node=raw.get("node"), pod=raw.get("pod"),
        ready=bool(raw.get("ready", True)),
        serving=bool(raw.get("serving", raw.get("ready", True))),
        terminating=bool(raw.get("terminating", False)))


def parse_service(raw, rejects: validate.RejectLog):
    """One service, or None when the service as a whole is unusable."""
    name = f"{raw.get('namespace', 'default')}/{raw.get('name', '?')}"
    try:
        if not raw.get("name"):
            raise Invalid("has no name")
        cluster_ip = validate.ipv4(raw.get("clusterIP"), "clusterIP")
        stype = validate.service_type(raw.get("type"))
        external_ips = tuple(validate.ipv4(ip, "externalIP")
                             for ip in raw.get("externalIPs") or ())
    except Invalid as exc:
        rejects.reject("service", name, str(exc))
        return None
    ports = []
    for sport in translate.service_ports(name, raw.get("ports"), rejects.reject):
        label = f"{name} port {sport.name or sport.port}"
        endpoints = []
        for raw_ep in raw.get("endpoints") or ():
            try:
                endpoints.append(_endpoint(raw_ep, sport))
            except Invalid as exc:
                rejects.reject("endpoint", label, str(exc))
        ports.append(dataclasses.replace(sport, endpoints=tuple(endpoints)))
    return model.Service(
        namespace=raw.get("namespace", "default"), name=raw["name"],
        cluster_ip=cluster_ip, ports=tuple(ports), type=stype,
        external_ips=external_ips)


def parse_node(raw, rejects: validate.RejectLog):
    name = raw.get("name") or "?"
    try:
        return model.Node(name=name,
                          internal_ip=validate.ipv4(raw.get("internalIP"), "internalIP"),
                          pod_cidr=validate.pod_cidr(raw.get("podCIDR"), "podCIDR"))
    except Invalid as exc:
        rejects.reject("node", name, str(exc))
        return None


def parse_state(doc, rejects: validate.RejectLog, external_cidrs=()) -> model.ClusterState:
    """Turn a parsed YAML document into a ClusterState, skipping bad entries."""
    doc = doc or {}
    parsed = (parse_service(raw, rejects) for raw in doc.get("services") or ())
    services = validate.claim_frontends([s for s in parsed if s], rejects, external_cidrs)
    nodes = [n for n in (parse_node(r, rejects) for r in doc.get("nodes") or ()) if n]
    return model.ClusterState.build(services, nodes)


class YamlFileSource:
    """Polls a file's mtime and calls ``on_change(ClusterState)`` on edits.

    ``spawn``/``sleep`` come from the host (Ryu's hub), so this never blocks
    the event loop.  A file that is missing or fails to parse keeps the last
    good state: a half-written file must not wipe the flows.
    """

    def __init__(self, path, on_change, spawn, sleep, interval=0.2, external_cidrs=()):
        self.path = path
        self.external_cidrs = external_cidrs
        self._on_change = on_change
        self._spawn = spawn
        self._sleep = sleep
        self._interval = interval
        self._stamp = None
        self.rejects = validate.RejectLog(LOG)

    def start(self):
        return self._spawn(self._loop)

    def poll_once(self) -> bool:
        """Re-read the file if it changed; True when a new state was delivered."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._stamp != "missing":
                LOG.warning("state file %s does not exist yet; waiting", self.path)
                self._stamp = "missing"
            return False
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            with open(self.path) as fh:
                doc = yaml.safe_load(fh)
            if doc is not None and not isinstance(doc, dict):
                raise ValueError("top level must be a mapping")
        except (OSError, ValueError, yaml.YAMLError) as exc:
            LOG.error("cannot read state file %s, keeping the last good state: %s",
                      self.path, exc)
            return False
        state = parse_state(doc, self.rejects, self.external_cidrs)
        LOG.info("state file %s: %d services, %d nodes",
                 self.path, len(state.services), len(state.nodes))
        try:
            self._on_change(state)
        except BaseException:
            self._stamp = None          # not handed on: the next poll delivers it again
            raise
        return True

    def _loop(self):
        while True:
            try:
                self.poll_once()
            except Exception:  # never let the source thread die silently
                LOG.exception("state file poll failed")
            self._sleep(self._interval)
