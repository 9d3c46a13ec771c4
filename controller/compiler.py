"""The compiler: (cluster state, bridge context) -> the bridge's fragments.

The fragments themselves are pure functions in node_fragments.py and
gateway_fragments.py; this module decides which objects a bridge needs and
reuses the fragment of every object that did not change.  Its output is a
:data:`~controller.fragments.BridgeState`: fragment key (which object) ->
that object's flows and groups.  Fragments never share a flow key, so the
diff can work object by object.
"""
import logging
from types import MappingProxyType
from typing import Dict, FrozenSet, Hashable, Mapping, Optional, Set, Tuple, Union

from controller import cookies
from controller.bridges import BridgeContext, ROLE_NODE
from controller.fragments import Fragment
from controller.gateway_fragments import (
    gateway_fip_fragment, gateway_fragment, gateway_node_fragment,
    gateway_vip_fragment, serving_nodes)
from controller.names import service_key, vip_key
from controller.nat_fragments import floating_ip_fragment, local_node_fragment
from controller.node_fragments import (
    node_fragment, pipeline_fragment, pod_fragment, service_fragment, skipped_ports,
    vip_fragment)
from nsx_proxy import changes, model

LOG = logging.getLogger(__name__)

# fragment keys that may have changed: a set of them, or changes.ALL
Keys = Union[FrozenSet[Hashable], type(changes.ALL)]


class Compiler:
    """Compiles states for one bridge, reusing fragments of unchanged objects.

    Its output is a pure function of (state, ctx); the memo and the patch
    path only make it fast.  The compiler owns "what changed": the switch
    tells it each change set (``note``), and ``desired`` answers with the
    fragments and the keys of the ones that may differ from its last
    answer: a frozenset, or :data:`~nsx_proxy.changes.ALL`.  When only
    services without external IPs changed, the last output is patched for
    exactly those services (a one-endpoint change at 10,000 services touches
    one fragment and walks nothing else); anything else recompiles from the
    memo.  A new context (a pod plugged in) gets a new Compiler.
    """

    def __init__(self, ctx: BridgeContext, group_ids: cookies.GroupIds):
        self.ctx = ctx
        self._group_ids = group_ids
        self._memo: Dict[Hashable, tuple] = {}
        self._last = None                    # (state, output) of the last call
        self._change = changes.EVERYTHING    # what changed since the last call

    def note(self, change: changes.ChangeSet) -> None:
        """The cluster state changed like this (merged until the next call)."""
        self._change = self._change.merge(change)

    def compile(self, state: model.ClusterState) -> Dict[Hashable, Fragment]:
        """The bridge's desired fragments for ``state``, as a dict the caller
        owns (what changed since the last call is worked out by comparing)."""
        if self._last is not None:
            self.note(changes.between(self._last[0], state))
        return dict(self.desired(state)[0])

    def desired(self, state: model.ClusterState) -> Tuple[Mapping[Hashable, Fragment], Keys]:
        """(the desired fragments, the keys that may differ from the last
        call's output: a frozenset or ALL), given every change since the
        last call was noted.  The fragments are a read-only view of the
        compiler's own dict, which its next call patches in place: read
        it, copy what must outlive that call (copying 20,000 entries on every
        change would cost 80 us of a 1 ms change)."""
        change, self._change = self._change, changes.ChangeSet()
        patched = None
        if self._last is not None:
            last_state, last_out = self._last
            before = [last_state.services[k] for k in change.services
                      if k in last_state.services] if not change.everything else ()
            after = [state.services[k] for k in change.services if k in state.services] \
                if not change.everything else ()
            # Nodes, floating IPs and outside IPs (shared between services,
            # and the gateway's whole job) take the full path; anything else
            # patches a node's fragments and leaves the gateway as it is.
            if not (change.everything or change.nodes or change.floating_ips
                    or any(s.outside_ips for s in before + after)):
                patched = self._patch(last_out, before, after, state) \
                    if self.ctx.role == ROLE_NODE else (last_out, frozenset())
        if patched is None:
            out, touched = self._full(state), changes.ALL
        else:
            out, touched = patched
        self._last = (state, out)
        return MappingProxyType(out), touched

    def _cached(self, key, source, build) -> Tuple[Optional[Fragment], Hashable]:
        """(the fragment for ``key`` built from ``source``, the key object the
        memo holds): remembered, as (source, fragment, key), until the
        source changes."""
        hit = self._memo.get(key)
        if hit is not None and (hit[0] is source or hit[0] == source):
            return hit[1], hit[2]
        try:
            frag = build()
        except Exception as exc:   # noqa: BLE001 - a bug costs this object only
            LOG.error("bridge %s: cannot compile %s (%s: %s); %s", self.ctx.name, key,
                      type(exc).__name__, exc, "keeping its last flows" if hit
                      else "skipped until it changes")
            frag = hit[1] if hit is not None else None   # None: skip it
        # remembered, a skip too (not retried and logged until it changes),
        # with the key object first seen (see _put)
        kept = key if hit is None else hit[2]
        self._memo[key] = (source, frag, kept)
        return frag, kept

    def _put(self, out, key, source, build) -> Hashable:
        """Put ``key``'s fragment in ``out``; returns the key object kept."""
        frag, kept = self._cached(key, source, build)
        if frag is not None:
            # the memo's key string, not the equal one built for this call:
            # a second full compile would hold 20,000 keys twice (1.3 MB)
            out[kept] = frag
        else:
            out.pop(key, None)
        return kept

    def _build_service(self, svc, node, previous) -> Fragment:
        for port in skipped_ports(self.ctx, svc):
            LOG.warning("bridge %s: service %s port SCTP/%d skipped: the %s datapath's "
                        "conntrack cannot NAT SCTP", self.ctx.name, svc.key, port.port,
                        self.ctx.datapath_type or "system")
        return service_fragment(self.ctx, svc, self._group_ids, node, previous)

    def _service(self, out, key, svc, node) -> list:
        ctx = self.ctx
        skey = service_key(key)
        # the service's last fragment: a split pool keeps its layout (only
        # the parts an endpoint change touches are rewritten)
        last = self._memo.get(skey)
        kept = [self._put(out, skey, (svc, node), lambda: self._build_service(
            svc, node, last[1] if last is not None else None))]
        for ip in svc.cluster_ips:
            kept.append(self._put(out, vip_key(ip), ip, lambda: vip_fragment(ctx, ip)))
        return kept

    def _patch(self, out, before, after, state) -> tuple:
        """A node's fragments with only these services compiled again."""
        new = state.services                 # ``out`` is patched in place: no copy
        touched: Set[Hashable] = set()
        for svc in before:                   # drop old versions first: a VIP may move
            for key in [service_key(svc.key)] + [vip_key(ip) for ip in svc.cluster_ips]:
                out.pop(key, None)
                touched.add(key)
                if svc.key not in new:
                    self._memo.pop(key, None)
        node = state.nodes.get(self.ctx.node)
        for svc in after:
            # the key objects ``out`` holds: the session keeps its installed
            # state under these (a new service's keys otherwise live twice)
            touched.update(self._service(out, svc.key, svc, node))
        return out, frozenset(touched)

    def _full(self, state):
        ctx = self.ctx
        out: Dict[Hashable, Fragment] = {}
        self._put(out, "pipeline", ctx, lambda: pipeline_fragment(ctx))
        if ctx.role != ROLE_NODE:
            return self._gateway(out, state)
        for pod in ctx.pods:
            key = f"pod/{pod.full_name}"
            self._put(out, key, pod, lambda: pod_fragment(ctx, pod))
        if ctx.uplink is not None:
            for node in state.nodes.values():
                if node.name != ctx.node and node.compute:   # a bridge to route to
                    key = f"node/{node.name}"
                    self._put(out, key, node, lambda: node_fragment(ctx, node))
        shared_vips = set()
        node = state.nodes.get(ctx.node)
        if node is not None:
            self._put(out, "local-node", node, lambda: local_node_fragment(ctx, node))
        for fip in state.floating_ips.values():
            if fip.node == ctx.node:
                key = f"fip/{fip.ip}"
                self._put(out, key, fip, lambda: floating_ip_fragment(ctx, fip))
        for skey, svc in state.services.items():
            self._service(out, skey, svc, node)
            shared_vips.update(svc.outside_ips)
        for ip in shared_vips - {ip for s in state.services.values() for ip in s.cluster_ips}:
            self._put(out, vip_key(ip), ip, lambda: vip_fragment(ctx, ip))
        return self._forget_stale(out)

    def _forget_stale(self, out):
        stale = set(self._memo) - set(out)
        for key in stale:
            del self._memo[key]
        return out

    def _gateway(self, out, state):
        ctx = self.ctx
        if ctx.uplink is None or not ctx.fabric_ip:
            return out                       # not wired up (yet): skeleton only
        self._put(out, "gateway", ctx, lambda: gateway_fragment(ctx))
        for node in state.nodes.values():
            if not node.compute:             # the gateway host: no bridge behind it
                continue
            key = f"gw-node/{node.name}"
            self._put(out, key, node, lambda: gateway_node_fragment(ctx, node))
        ips = {ip for s in state.services.values()   # IPv6 only where it is routed
               for ip in s.outside_ips if ctx.routes_ipv6 or ":" not in ip}
        for ip in sorted(ips):
            nodes = tuple(serving_nodes(state, ip))
            key = f"gw-vip/{ip}"
            self._put(out, key, nodes, lambda: gateway_vip_fragment(
                ctx, ip, nodes, self._group_ids))
        for fip in state.floating_ips.values():
            node = state.nodes.get(fip.node)
            if node is not None:
                key = f"gw-fip/{fip.ip}"
                self._put(out, key, (fip, node),
                                        lambda: gateway_fip_fragment(ctx, fip, node))
        return self._forget_stale(out)
