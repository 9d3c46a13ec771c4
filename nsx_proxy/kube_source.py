"""The Kubernetes API as a state source: reflectors -> cache -> state builder.

Five reflectors (Services, EndpointSlices, Nodes, Pods, Namespaces) fill a
:class:`~nsx_proxy.kube_cache.KubeCache`; a rate-limited runner asks the
:class:`~nsx_proxy.state_builder.StateBuilder` for the next ClusterState and
its change set and hands both on (``on_change(state, change)``):

* nothing is delivered until every reflector has listed once, so a
  restarting controller never compiles "no services" and blackholes
  working VIPs;
* only what changed is translated again (see state_builder);
* LoadBalancer IPs from the pools are written by the LbStatusWriter, in an
  agent only while it holds the writer Lease (nsx_proxy.leader).

Config: the kubeconfig is found the way kubectl finds it (an explicit path,
else in-cluster, else ``KUBECONFIG`` / ``~/.kube/config``).
"""
import functools
import logging
import time

from nsx_proxy import gc_pause, translate, validate
from nsx_proxy.kube_cache import KubeCache
from nsx_proxy.kube_client import client, load_config
from nsx_proxy.lb_writer import LbStatusWriter
from nsx_proxy.leader import Elector
from nsx_proxy.reflector import Reflector
from nsx_proxy.runner import BoundedFrequencyRunner
from nsx_proxy.state_builder import StateBuilder

LOG = logging.getLogger(__name__)

# kube-proxy's informer filter for Services and EndpointSlices (cmd/kube-proxy
# builds it from two DoesNotExist requirements): objects that ask for another
# service proxy, and the slices of headless Services, are never even listed.
SERVICE_SELECTOR = f"!{translate.HEADLESS_LABEL},!{translate.SERVICE_PROXY_NAME_LABEL}"


def api_client(kubeconfig=None) -> client.ApiClient:
    """An ApiClient configured like kubectl would be."""
    cfg = client.Configuration()
    load_config(kubeconfig, cfg)
    cfg.retries = 0        # the reflectors back off themselves, with jitter, forever
    return client.ApiClient(cfg)


class KubeSource:
    def __init__(self, api, on_change, hub, min_interval=0.5, max_interval=60.0,
                 relist_period=600.0, rejects=None, ipam=None, node_name=None,
                 election=None, external_cidrs=()):
        self._on_change = on_change
        self.rejects = rejects or validate.RejectLog(LOG)
        self.cache = KubeCache()
        self.builder = StateBuilder(self.rejects, external_cidrs)
        self._pending_since = None           # when the first undelivered event came
        self.last_event_at = None            # that time, for the state delivered last
        self.syncs = 0
        core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
        self._namespaces_planned = None      # the namespaces the writer last planned with
        self.lb_writer = None if ipam is None else LbStatusWriter(
            ipam, core, hub.spawn, self.rejects.reject, self._changed)
        # With ``election`` (namespace, lease name, identity and timings), the
        # writer writes only while this agent holds the lease; without it,
        # this process is the one writer (the lab's central controller).
        self.elector = None if ipam is None or election is None else Elector(
            api, on_change=self._leadership, hub=hub, **election)
        cache = self.cache
        common = dict(hub=hub, relist_period=relist_period, listed=self._changed)
        # A node agent needs only its own node's pods (their floating IPs):
        # the API server filters, so a 100-node cluster's pods are not all read.
        list_pods = core.list_pod_for_all_namespaces if node_name is None else \
            functools.partial(core.list_pod_for_all_namespaces,
                              field_selector=f"spec.nodeName={node_name}")
        self.reflectors = [
            Reflector(name, list_fn, self._then_sync(replace), self._then_sync(event),
                      **common)
            for name, list_fn, replace, event in (
                ("services", functools.partial(core.list_service_for_all_namespaces,
                                               label_selector=SERVICE_SELECTOR),
                 cache.replace_services, cache.service_event),
                ("endpointslices", functools.partial(
                    discovery.list_endpoint_slice_for_all_namespaces,
                    label_selector=SERVICE_SELECTOR),
                 cache.replace_slices, cache.slice_event),
                ("nodes", core.list_node, cache.replace_nodes, cache.node_event),
                ("pods", list_pods, cache.replace_pods, cache.pod_event),
                ("namespaces", core.list_namespace, cache.replace_namespaces,
                 cache.namespace_event))]
        self.runner = BoundedFrequencyRunner("kubernetes sync", self.sync, hub,
                                             min_interval, max_interval)

    def start(self):
        for reflector in self.reflectors:
            reflector.start()
        self.runner.start()
        if self.elector is not None:
            self.elector.start()

    def stop(self):
        if self.elector is not None:
            self.elector.stop()
        for reflector in self.reflectors:
            reflector.stop()
        self.runner.stop()

    @property
    def writes(self) -> bool:
        """Whether this process writes LoadBalancer IPs now."""
        return self.lb_writer is not None and (self.elector is None or self.elector.leading)

    def _leadership(self, leading):
        # A new leader plans from what the API shows now, not from writes it
        # planned in an earlier term.
        self.lb_writer.pending.clear()
        self.lb_writer.replan()
        self._changed()

    @property
    def pending_since(self):
        """When the oldest API event not yet handed on arrived (monotonic;
        None: none is waiting): kube-proxy's QueuedUpdate."""
        return self._pending_since

    @property
    def synced(self) -> bool:
        return all(r.synced for r in self.reflectors)

    def _then_sync(self, update):
        """A cache update that asks for a sync unless it says it changed nothing."""
        def handler(*args):
            if update(*args) is not False:
                self._changed()
        return handler

    def _changed(self):
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        if self.synced:
            self.runner.request()

    def sync(self):
        """Deliver the current ClusterState (no-op before every initial list).

        A change is done only once it has been handed on: if any step below
        raises, the builder keeps the change set pending (and the cache its
        dirty marks), the runner retries soon, and the next sync delivers
        this one's changes with its own.  Objects that break a step are
        rejected one by one inside it (translation, the pool plan, the
        compiler), so a retry does not meet the same exception again."""
        if not self.synced:
            return None
        with gc_pause.paused():       # the first build: 10,000 services at once
            state, change = self.builder.build(self.cache)
        if self.writes:
            moved = self.cache.namespaces_version != self._namespaces_planned
            self.lb_writer.sync(self.cache.services, self.cache.namespaces,
                                changed=None if moved else self.builder.last_dirty)
            self._namespaces_planned = self.cache.namespaces_version
        self.syncs += 1
        LOG.debug("sync %d: %d services (%d changed), %d nodes",
                  self.syncs, len(state.services), len(change.services), len(state.nodes))
        self.last_event_at = self._pending_since     # the consumer reads it
        self._on_change(state, change)
        self.builder.delivered()
        self._pending_since = None
        return state
