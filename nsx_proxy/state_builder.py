"""Raw API objects -> the next ClusterState and what changed (the change set).

Incremental: only services whose object or slices changed are translated
again, and an unchanged translation keeps its old object, so everything
downstream can tell "unchanged" by identity.  The frontend collision rules
(validate.claim_frontends) and the pods' floating IPs are worked out again
only when a frontend, a node or an annotated pod changed.  Bad objects are
logged once, counted and skipped (validate.RejectLog).  No I/O.

Nothing is lost when a step raises.  A build that fails hands the cache's
dirty marks back and forgets its shortcuts, so the next build redoes the
work from scratch; and the change set of a build stays *pending* here until
the caller says it was handed on (:meth:`StateBuilder.delivered`): the next
build's change set includes it, so a consumer that raised sees it again.
"""
import dataclasses
import logging
from types import MappingProxyType

from nsx_proxy import changes, model, translate, validate
from nsx_proxy.validate import Invalid

LOG = logging.getLogger("nsx_proxy.kube_source")


def _frontends(svc):
    if svc is None:
        return None
    return (svc.cluster_ips, svc.external_ips, svc.load_balancer_ips, svc.type,
            tuple((p.protocol, p.port, p.node_port) for p in svc.ports))


def floating_ips(pods, services, reject):
    """Pods' floating IPs; one that is taken (by a pod first in name order,
    or by a service frontend) is rejected."""
    taken = {ip for svc in services.values() for ip in svc.frontend_ips}
    out = []
    for key in sorted(pods):
        name = f"{key[0]}/{key[1]}"
        try:
            fip = translate.floating_ip(pods[key])
        except Invalid as exc:
            reject("pod", name, str(exc))
            continue
        except Exception as exc:   # noqa: BLE001 - a bug costs this object only
            reject("pod", name, f"internal error translating it: {type(exc).__name__}: {exc}")
            continue
        if fip is None:
            continue
        if fip.ip in taken:
            reject("pod", name, f"floating IP {fip.ip} is already in use")
            continue
        taken.add(fip.ip)
        out.append(fip)
    return tuple(out)


class StateBuilder:
    def __init__(self, rejects: validate.RejectLog, external_cidrs=()):
        self.rejects = rejects
        self.external_cidrs = external_cidrs  # where externalIPs may be (empty: anywhere)
        self.state = model.ClusterState()     # the last state built
        self._translated = {}                 # ServiceKey -> model.Service
        self._nodes = {}                      # name -> model.Node
        self._claimed = None                  # ServiceKey -> service after the claim rules
        self._fips = ()
        self.last_dirty = None                # service keys the last build took
        self._undelivered = None              # ChangeSet built but not handed on yet
        self._undelivered_dirty = frozenset()

    def delivered(self) -> None:
        """What the last build returned has been handed on: its changes are done."""
        self._undelivered, self._undelivered_dirty = None, frozenset()

    def build(self, cache):
        """(the next ClusterState, the ChangeSet since the last *delivered* one)."""
        marks = cache.take_dirty()
        try:
            state, change = self._build(cache, *marks)
        except BaseException:
            cache.give_back_dirty(*marks)
            self._claimed = None              # recompute the claim rules from scratch
            raise
        if self._undelivered is not None:
            change = self._undelivered.merge(change)
        self._undelivered = change
        # raw objects changed (the LB writer's cue), undelivered ones included
        self._undelivered_dirty = self.last_dirty = self._undelivered_dirty | marks[0]
        return state, change

    def _build(self, cache, dirty, nodes_dirty, pods_dirty, trigger_times):
        before = {key: self._translated.get(key) for key in dirty}
        for key in dirty:
            self._translate_service(cache, key)
        if nodes_dirty:
            self._translate_nodes(cache)
        frontends_changed = self._claimed is None or any(
            _frontends(before[k]) != _frontends(self._translated.get(k)) for k in dirty)
        services = self._claim(dirty, before, frontends_changed)
        # Floating IPs depend on the pods and on which IPs services hold; an
        # endpoint change (the common case at scale) touches neither.
        if pods_dirty or frontends_changed:
            self._fips = floating_ips(cache.pods, services, self.rejects.reject)
        state = model.ClusterState(
            services=MappingProxyType(services), nodes=MappingProxyType(dict(self._nodes)),
            floating_ips=MappingProxyType({f.ip: f for f in self._fips}))
        # The claim rules may move an IP between services nobody touched.
        touched = (self.state.services.keys() | services.keys()) if frontends_changed \
            else dirty
        change = changes.compute(self.state, state, touched, trigger_times)
        self.state = state
        return state, change

    def _translate_service(self, cache, key):
        raw = cache.services.get(key)
        if raw is None or translate.ignored_reason(raw):
            self._translated.pop(key, None)
            return
        try:
            svc = translate.service(raw, cache.slices_of(key),
                                    self.rejects.reject)
        except Invalid as exc:
            self.rejects.reject("service", str(key), str(exc))
            self._translated.pop(key, None)
            return
        except Exception as exc:   # noqa: BLE001 - a bug costs this object only
            self.rejects.reject("service", str(key), f"internal error translating it: "
                                f"{type(exc).__name__}: {exc}")
            self._translated.pop(key, None)
            return
        if self._translated.get(key) != svc:
            self._translated[key] = svc

    def _translate_nodes(self, cache):
        nodes = {}
        for name, raw in cache.nodes.items():
            try:
                node = translate.node(raw, self.rejects.reject)
            except Invalid as exc:
                self.rejects.reject("node", name, str(exc))
                continue
            except Exception as exc:   # noqa: BLE001 - a bug costs this object only
                self.rejects.reject("node", name, f"internal error translating it: "
                                    f"{type(exc).__name__}: {exc}")
                continue
            old = self._nodes.get(name)
            nodes[name] = old if old == node else node
        self._nodes = nodes

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
                else:                        # the rules dropped IPs or nodePorts
                    claimed[key] = dataclasses.replace(
                        new, external_ips=prev.external_ips,
                        load_balancer_ips=prev.load_balancer_ips,
                        ports=tuple(n if n.node_port == o.node_port else
                                    dataclasses.replace(n, node_port=o.node_port)
                                    for n, o in zip(new.ports, prev.ports)))
        else:
            # keyed by the cache's key objects, not a new ServiceKey per
            # service (10,000 of them held for good: 0.6 MB)
            keys = {key: key for key in self._translated}
            claimed = {keys[svc.key]: svc for svc in
                       validate.claim_frontends(self._translated.values(), self.rejects,
                                                self.external_cidrs)}
        self._claimed = claimed
        return dict(claimed)
