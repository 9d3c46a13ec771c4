"""The Kubernetes API as a state source: reflectors -> caches -> model.

Three reflectors (Services, EndpointSlices, Nodes) keep raw caches and mark
what changed; a rate-limited runner turns the caches into a ClusterState:

* nothing is delivered until every reflector has listed once, so a
  restarting controller never compiles "no services" and blackholes
  working VIPs;
* only services whose object or slices changed are translated again, and
  an unchanged translation keeps its old object, so the compiler's fast
  path (identity) sees exactly what changed;
* bad objects are logged once, counted and skipped (validate.RejectLog).

Config: the kubeconfig is found the way kubectl finds it (an explicit path,
else in-cluster, else ``KUBECONFIG`` / ``~/.kube/config``).
"""
import dataclasses
import logging
import os
import time
from types import MappingProxyType

from kubernetes import client, config

from nsx_proxy import lb_ipam, model, translate, validate
from nsx_proxy.reflector import Reflector
from nsx_proxy.runner import BoundedFrequencyRunner
from nsx_proxy.validate import Invalid

LOG = logging.getLogger(__name__)


def api_client(kubeconfig=None) -> client.ApiClient:
    """An ApiClient configured like kubectl would be."""
    cfg = client.Configuration()
    if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=cfg)
    else:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.retries = 0        # the reflectors back off themselves, with jitter, forever
    return client.ApiClient(cfg)


def _key(obj):
    meta = obj.get("metadata") or {}
    return meta.get("namespace"), meta.get("name")


class KubeSource:
    def __init__(self, api, on_change, hub, min_interval=0.5, max_interval=60.0,
                 relist_period=600.0, rejects=None, ipam=None):
        self._on_change = on_change
        self._hub = hub
        self.ipam = ipam                     # lb_ipam.Ipam, or None: no allocation
        self._ipam_pending = {}              # ServiceKey -> IP being written
        self.pods = {}                       # (ns, name) -> raw Pod with a floating IP
        self.namespaces = {}                 # name -> raw Namespace
        self._fips_dirty = True
        self._fips = ()
        self.rejects = rejects or validate.RejectLog(LOG)
        self.services = {}                   # ServiceKey -> raw Service
        self.slices = {}                     # (ns, name) -> raw EndpointSlice
        self.slices_by_service = {}          # ServiceKey -> {(ns, name): raw slice}
        self.nodes = {}                      # name -> raw Node
        self._translated = {}                # ServiceKey -> model.Service
        self._nodes = {}                     # name -> model.Node
        self._dirty = set()                  # ServiceKeys to translate again
        self._nodes_dirty = True
        self._claimed = None                 # ServiceKey -> service after the claim rules
        self._pending_since = None           # when the first undelivered event came
        self.last_event_at = None            # that time, for the state delivered last
        self.syncs = 0
        core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
        common = dict(hub=hub, relist_period=relist_period, listed=self._changed)
        self.reflectors = [
            Reflector("services", core.list_service_for_all_namespaces,
                      self._replace_services, self._service_event, **common),
            Reflector("endpointslices", discovery.list_endpoint_slice_for_all_namespaces,
                      self._replace_slices, self._slice_event, **common),
            Reflector("nodes", core.list_node, self._replace_nodes, self._node_event,
                      **common),
            Reflector("pods", core.list_pod_for_all_namespaces, self._replace_pods,
                      self._pod_event, **common),
            Reflector("namespaces", core.list_namespace, self._replace_namespaces,
                      self._namespace_event, **common),
        ]
        self.core = core
        self.runner = BoundedFrequencyRunner("kubernetes sync", self.sync, hub,
                                             min_interval, max_interval)

    def start(self):
        for reflector in self.reflectors:
            reflector.start()
        self.runner.start()

    def stop(self):
        for reflector in self.reflectors:
            reflector.stop()
        self.runner.stop()

    @property
    def synced(self) -> bool:
        return all(r.synced for r in self.reflectors)

    # --- cache updates (reflector threads) ------------------------------------------
    def _changed(self):
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        if self.synced:
            self.runner.request()

    def _service_event(self, etype, obj):
        key = model.ServiceKey(*_key(obj))
        if etype == "DELETED":
            self.services.pop(key, None)
        else:
            self.services[key] = obj
        self._dirty.add(key)
        self._changed()

    def _replace_services(self, items):
        fresh = {model.ServiceKey(*_key(o)): o for o in items}
        for key in self.services.keys() | fresh.keys():
            old, new = self.services.get(key), fresh.get(key)
            if old is None or new is None or _rv(old) != _rv(new):
                self._dirty.add(key)
        self.services = fresh
        self._changed()

    def _index_slice(self, key, obj):
        old = self.slices.pop(key, None)
        if old is not None:
            owner = translate.slice_service(old)
            self.slices_by_service.get(owner, {}).pop(key, None)
            self._dirty.add(owner)
        if obj is not None:
            self.slices[key] = obj
            owner = translate.slice_service(obj)
            if owner is not None:
                self.slices_by_service.setdefault(owner, {})[key] = obj
                self._dirty.add(owner)

    def _slice_event(self, etype, obj):
        self._index_slice(_key(obj), None if etype == "DELETED" else obj)
        self._changed()

    def _replace_slices(self, items):
        fresh = {_key(o): o for o in items}
        for key in list(self.slices):
            if key not in fresh:
                self._index_slice(key, None)
        for key, obj in fresh.items():
            if key not in self.slices or _rv(self.slices[key]) != _rv(obj):
                self._index_slice(key, obj)
        self._changed()

    def _node_event(self, etype, obj):
        name = _key(obj)[1]
        if etype == "DELETED":
            self.nodes.pop(name, None)
        else:
            self.nodes[name] = obj
        self._nodes_dirty = True
        self._changed()

    def _replace_nodes(self, items):
        self.nodes = {_key(o)[1]: o for o in items}
        self._nodes_dirty = True
        self._changed()

    def _pod_event(self, etype, obj):
        """Only pods that ask for a floating IP are kept (all pods would be a lot)."""
        key = _key(obj)
        wanted = ((obj.get("metadata") or {}).get("annotations") or {}).get(
            translate.FLOATING_IP_ANNOTATION)
        if etype == "DELETED" or not wanted:
            if self.pods.pop(key, None) is None:
                return
        else:
            self.pods[key] = obj
        self._fips_dirty = True
        self._changed()

    def _replace_pods(self, items):
        self.pods = {}
        for obj in items:
            self._pod_event("ADDED", obj)
        self._fips_dirty = True
        self._changed()

    def _namespace_event(self, etype, obj):
        name = _key(obj)[1]
        if etype == "DELETED":
            self.namespaces.pop(name, None)
        else:
            self.namespaces[name] = obj
        self._changed()

    def _replace_namespaces(self, items):
        self.namespaces = {_key(o)[1]: o for o in items}
        self._changed()

    # --- translation (runner thread) ----------------------------------------------
    def _translate_service(self, key):
        raw = self.services.get(key)
        if raw is None or translate.ignored_reason(raw):
            self._translated.pop(key, None)
            return
        name = str(key)
        try:
            svc = translate.service(raw, self.slices_by_service.get(key, {}).values(),
                                    self.rejects.reject)
        except Invalid as exc:
            self.rejects.reject("service", name, str(exc))
            self._translated.pop(key, None)
            return
        if self._translated.get(key) != svc:
            self._translated[key] = svc

    def _translate_nodes(self):
        nodes = {}
        for name, raw in self.nodes.items():
            try:
                node = translate.node(raw)
            except Invalid as exc:
                self.rejects.reject("node", name, str(exc))
                continue
            old = self._nodes.get(name)
            nodes[name] = old if old == node else node
        self._nodes = nodes

    def sync(self):
        """Deliver the current ClusterState (no-op before every initial list)."""
        if not self.synced:
            return None
        dirty = set()
        while self._dirty:
            dirty.add(self._dirty.pop())
        dirty.discard(None)
        before = {key: self._translated.get(key) for key in dirty}
        for key in dirty:
            self._translate_service(key)
        if self._nodes_dirty:
            self._nodes_dirty = False
            self._translate_nodes()
        frontends_changed = self._claimed is None or any(
            _frontends(before[k]) != _frontends(self._translated.get(k)) for k in dirty)
        services = self._claim(dirty, before, frontends_changed)
        # Floating IPs depend on the pods and on which IPs services hold; an
        # endpoint change (the common case at scale) touches neither.
        if self._fips_dirty or frontends_changed:
            self._fips_dirty = False
            self._fips = self._translate_fips(services)
        state = model.ClusterState(services=MappingProxyType(services),
                                   nodes=MappingProxyType(dict(self._nodes)),
                                   floating_ips=MappingProxyType(
                                       {f.ip: f for f in self._fips}))
        if self.ipam is not None:
            self._allocate()
        self.syncs += 1
        self.last_event_at, self._pending_since = self._pending_since, None
        LOG.debug("sync %d: %d services (%d retranslated), %d nodes",
                  self.syncs, len(state.services), len(dirty), len(state.nodes))
        self._on_change(state)
        return state

    def _translate_fips(self, services):
        """Pods' floating IPs; one that is taken (by a pod first in name order,
        or by a service frontend) is rejected."""
        taken = {ip for svc in services.values()
                 for ip in svc.frontend_ips}
        out = []
        for key in sorted(self.pods):
            name = f"{key[0]}/{key[1]}"
            try:
                fip = translate.floating_ip(self.pods[key])
            except Invalid as exc:
                self.rejects.reject("pod", name, str(exc))
                continue
            if fip is None:
                continue
            if fip.ip in taken:
                self.rejects.reject("pod", name, f"floating IP {fip.ip} is already in use")
                continue
            taken.add(fip.ip)
            out.append(fip)
        return tuple(out)

    def _allocate(self):
        """Write LB IPs from the pools to services that need one (or release)."""
        for key, ip in list(self._ipam_pending.items()):   # written and seen back?
            svc = self.services.get(key)
            seen = lb_ipam.ingress_ips(svc) if svc else ()
            if svc is None or (ip in seen if ip else not seen):
                del self._ipam_pending[key]
        plan = self.ipam.plan(self.services, self.namespaces, self.rejects.reject,
                              reserved={ip for ip in self._ipam_pending.values() if ip})
        for key, ip in plan.items():
            if key in self._ipam_pending:
                continue                     # being written; wait to see it back
            self._ipam_pending[key] = ip
            self._hub.spawn(self._write_lb_status, key, ip)

    def _write_lb_status(self, key, ip):
        ingress = [{"ip": ip}] if ip else None
        try:
            self.core.patch_namespaced_service_status(
                key.name, key.namespace, {"status": {"loadBalancer": {"ingress": ingress}}})
            LOG.info("service %s: load-balancer IP %s", key,
                     f"{ip} allocated" if ip else "released")
        except Exception as exc:  # retried on the next sync
            LOG.warning("service %s: cannot write load-balancer status: %s", key, exc)
            self._ipam_pending.pop(key, None)
        self.runner.request()

    def _claim(self, dirty, before, frontends_changed):
        """validate.claim_frontends, redone only when some frontend changed.

        The rules compare every service with every other (in name order), a
        50 ms walk at 10,000 services; but when the changed services kept
        their VIPs and ports (an endpoint change, the common case) the
        outcome for everyone is the one already computed.
        """
        if not frontends_changed:
            claimed = dict(self._claimed)
            for key in dirty:
                new, prev = self._translated.get(key), claimed.get(key)
                if new is None or prev is None:
                    continue                 # gone, or rejected by the rules before
                if prev is before[key]:
                    claimed[key] = new
                else:                        # the rules dropped some of its IPs
                    claimed[key] = dataclasses.replace(
                        new, external_ips=prev.external_ips,
                        load_balancer_ips=prev.load_balancer_ips)
        else:
            claimed = {svc.key: svc for svc in
                       validate.claim_frontends(self._translated.values(), self.rejects)}
        self._claimed = claimed
        return dict(claimed)


def _frontends(svc):
    if svc is None:
        return None
    return (svc.cluster_ip, svc.external_ips, svc.load_balancer_ips,
            tuple((p.protocol, p.port) for p in svc.ports))


def _rv(obj):
    return (obj.get("metadata") or {}).get("resourceVersion")
