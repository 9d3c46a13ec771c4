"""The Ryu application: a thin shell around the per-switch objects.

Events in (switch connects, OVSDB changes, a new cluster state, replies,
the clock's tick), messages out; each handler hands its event and the time
to the datapath's Switch and sends what it returns.  Every event, including
those that start in another green thread (the cluster source, the OVSDB
monitor, the clock), is posted to this app's one Ryu event queue, so one
thread changes a Switch and one place sends (FAUCET's shape).  Run it as::

    ryu-manager --config-file nsx-proxy.conf controller.app   # options: config.py
"""
import collections
import itertools
import logging
import os
import signal
import time

from ryu.base import app_manager
from ryu.controller import ofp_event
from ryu.controller.controller import datapath_connection_factory
from ryu.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER
from ryu.controller.handler import set_ev_cls
from ryu.lib import hub
from ryu.ofproto import ofproto_common, ofproto_v1_3

from controller import bridges, config, cookies, names, pipeline, ryu_compat, status, wire
from controller.events import EventContexts, EventState, EventTick
from controller.health_server import HealthServer
from controller.ovsdb_monitor import OvsdbMonitor
from controller.switch import Periods, Switch
from nsx_proxy import changes, healthcheck, heap_snapshot, kube_source, model, validate
from nsx_proxy.kube_source import KubeSource
from nsx_proxy.runner import Hub
from nsx_proxy.yaml_source import YamlFileSource

_SEND_RUN = 256 * 1024

# the drift audit reads groups' bytes and bucket counts, not Ryu's parse of them
ryu_compat.parse_group_buckets_lazily()
ryu_compat.parse_group_stats_lazily()
ryu_compat.drop_packet_class_caches()   # 4.6 MB of import-time isinstance caches

LOG = logging.getLogger("nsx_proxy")

CONF = config.CONF

# Trigger times (kube-proxy's SLI) kept while no bundle commits; the oldest go.
MAX_PENDING_TRIGGERS = 10000

# The clock's period, seconds: how often Switch.timer looks at what is due.
TICK = 0.5


class ServiceProxy(app_manager.RyuApp):
    """Ryu events in, a Switch per datapath decides, messages out (``_send``)."""
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conf = CONF.nsx_proxy
        heap_snapshot.install()              # only under PYTHONTRACEMALLOC: SIGUSR2 dumps
        self.state = model.ClusterState()
        self.state_received = None           # when a source last delivered (None: never)
        self.contexts = {}                   # dpid -> BridgeContext (OVSDB)
        self.switches = {}                   # dpid -> Switch (connected datapaths)
        self.group_ids = cookies.GroupIds()
        self._bundle_ids = itertools.count(1)
        self.commit_listeners = []           # callables(dpid, plan, seconds); benchmarks
        self.source = None
        self.switch_connects = collections.Counter()     # dpid -> connections
        self.bundle_failures = collections.Counter()     # dpid -> refused/unconfirmed
        self.counters = collections.Counter()            # (dpid, what): see Switch
        self._event_at = None                # first API event behind the current state
        self._event_observed = set()         # dpids that reported it already
        # trigger times of changes handed to switches, not yet live; bounded:
        # with no switch committing (none connected yet) the oldest go
        self._trigger_times = collections.deque(maxlen=MAX_PENDING_TRIGGERS)
        self.metrics = status.Metrics(self)
        self.node_name = self.conf.node_name or os.environ.get("NODE_NAME", "")
        self._foreign = set()                # dpids of bridges another agent programs
        self.health = None                   # kube-proxy's health servers (agent mode)
        self.checks = healthcheck.ServiceChecks(self.node_name)   # ... their answers
        self.node_setup = config.node_setup(self.conf, self.node_name)   # or None
        self.dialer = config.bridge_dialer(self.conf, datapath_connection_factory,
                                           hub.spawn, hub.sleep)     # or None: OVS dials
        try:
            self.node_port_cidrs = bridges.parse_nodeport_addresses(
                self.conf.nodeport_addresses)
            self.external_cidrs = validate.external_ip_cidrs(self.conf.external_ip_cidrs)
        except ValueError as exc:            # kube-proxy refuses to start; say why
            raise SystemExit(f"nsx-proxy: {exc}") from None
        self.last_programmed = time.time()   # wall time of the last committed bundle
        self._queued_since = None            # a change handed to switches, not yet live

    def start(self):
        super().start()
        hub.spawn(self._clock)
        OvsdbMonitor(self.conf.ovsdb, self.set_contexts, hub.spawn, hub.sleep).start()
        if self.conf.status_port:
            try:
                status.serve(self, self.metrics, self.conf.status_port, hub.spawn)
            except OSError as exc:   # the proxy itself must keep working
                LOG.error("status endpoint on port %d unavailable: %s",
                          self.conf.status_port, exc)
        if self.node_name:
            LOG.info("agent for node %s%s: programming only its bridges", self.node_name,
                     " and the gateway" if self.conf.gateway else "")
            self.health = HealthServer(hub.spawn, hub.kill, self._proxy_status)
            self.health.serve_proxy(self.conf.healthz_bind_address)
        if self.conf.source == "file":
            YamlFileSource(self.conf.state_file, self.set_state, hub.spawn, hub.sleep,
                           external_cidrs=self.external_cidrs).start()
        elif self.conf.source == "kubernetes":
            self.source = KubeSource(
                kube_source.api_client(self.conf.kubeconfig or None), self.set_state,
                Hub(hub.spawn, hub.sleep, hub.Event),
                min_interval=self.conf.min_sync_period,
                max_interval=self.conf.max_sync_period,
                relist_period=self.conf.relist_period, ipam=config.ipam(self.conf),
                node_name=None if self.conf.gateway else (self.node_name or None),
                election=config.election(self.conf, self.node_name),
                external_cidrs=self.external_cidrs)
            if self.source.elector is not None:
                # A rollout stops agents with SIGTERM: hand the writer Lease back
                # first, so another agent takes it at its next retry, not later.
                signal.signal(signal.SIGTERM, lambda *_: hub.spawn(self._terminate))
            self.source.start()

    def _terminate(self):
        """SIGTERM: release the Lease (for at most 2 s: a lost API server must not hold us)."""
        hub.spawn(lambda: (hub.sleep(2), os._exit(0)))
        held = self.source.elector.leading
        try:
            self.source.stop()
        finally:
            LOG.info("stopped on SIGTERM%s", "; writer Lease handed back" if held else "")
            logging.shutdown()
            os._exit(0)

    def proxy_health(self, now):
        """(healthy, why not): kube-proxy's verdict, for every health
        endpoint: no change waits longer than two of the longest sync
        periods, from its API event (or its hand-over) to a committed bundle."""
        waiting = [t for t in (getattr(self.source, "pending_since", None),
                               self._queued_since) if t is not None]
        return healthcheck.proxy_health(min(waiting, default=None), now,
                                        2 * self.conf.max_sync_period)

    def _proxy_status(self):
        """(healthy, last programmed, now), wall clock: for kube-proxy's /healthz."""
        return self.proxy_health(time.monotonic())[0], self.last_programmed, time.time()

    # --- inputs ----------------------------------------------------------------
    def set_state(self, state: model.ClusterState, change: changes.ChangeSet = None) -> None:
        """A new desired cluster state from a source, and what changed (a
        source that does not track its changes may leave that out)."""
        # Nothing is taken as received until every step below has run: if one
        # raises, the source keeps this change pending and hands it on again.
        previous = self.state
        if self.state_received is None:
            change = changes.EVERYTHING
        elif change is None:
            change = changes.between(previous, state)
        names.release_group_ids(self.group_ids, previous, state, change,
                                pipeline.MAX_BUCKETS_PER_GROUP)
        if self.health is not None:         # only the Services the change names
            rejects = getattr(self.source, "rejects", None)
            self.checks.reject = rejects.reject if rejects else None
            self.health.update(self.checks.update(state, change))
        if self.node_setup is not None:     # this node's bridge, as its Node says
            self.node_setup.update(state.nodes.values(), state.services, change)
        self.state = state
        self.state_received = time.monotonic()
        self._event_at = getattr(self.source, "last_event_at", None)
        self._event_observed = set()
        self._trigger_times.extend(change.trigger_times)
        if self._queued_since is None:      # kube-proxy's QueuedUpdate
            self._queued_since = self._event_at or self.state_received
        self.send_event(self.name, EventState(state, change))

    @set_ev_cls(EventState)
    def _state(self, ev):
        for switch in list(self.switches.values()):
            self._handle(switch, lambda now: switch.state_changed(ev.state, ev.change, now))
        self._settled()

    def _settled(self) -> None:
        """kube-proxy's Updated: no switch has a bundle out or one to send,
        so every change handed over is programmed (or changed nothing)."""
        if self._queued_since is not None and all(s.idle for s in self.switches.values()):
            self._queued_since = None

    def set_contexts(self, contexts) -> None:
        """A new {dpid: BridgeContext} snapshot from OVSDB (in agent mode, only
        this node's bridges, and the gateway's where this agent is it); called
        in the OVSDB monitor's green thread, handled in the app's."""
        self.send_event(self.name, EventContexts(contexts))

    @set_ev_cls(EventContexts)
    def _contexts(self, ev):
        contexts, others = bridges.BridgeContext.programmed_here(
            ev.contexts, self.node_name, self.conf.gateway, self.node_port_cidrs)
        for dpid, ctx in others.items():
            if dpid not in self._foreign:
                self._foreign.add(dpid)
                LOG.warning("bridge %s (%s %s) is not this agent's (node %s); left alone",
                            ctx.name, ctx.role, ctx.node or "", self.node_name)
        self.contexts = contexts
        if self.dialer is not None:            # bridge_connection mgmt: we dial them
            self.dialer.want(ctx.name for ctx in contexts.values())
        for dpid, switch in list(self.switches.items()):
            if dpid in contexts:
                self._handle(switch, lambda now, ctx=contexts[dpid]:
                             switch.context_changed(ctx, now))

    def _clock(self):
        """Timers as events, as FAUCET posts them: the Switch decides what is due."""
        while True:
            hub.sleep(TICK)
            self.send_event(self.name, EventTick())

    @set_ev_cls(EventTick)
    def _tick(self, ev):
        for switch in list(self.switches.values()):
            self._handle(switch, switch.timer)

    def _handle(self, switch, event_fn) -> None:
        """Hand one event to a Switch, with the time, and send what it returns.
        A bug anywhere in it ends with one traceback and a full resync."""
        now = time.monotonic()
        try:
            self._send(switch.dp, event_fn(now))
        except Exception:                 # noqa: BLE001 - the switch starts over
            switch.failed(now)
        self._settled()

    # --- switch lifecycle -----------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _switch_features(self, ev):
        dp = ev.msg.datapath
        if self.dialer is not None and not self.dialer.dialed(dp.address, dp.id):
            return dp.close()                  # a second connection: we dial this one
        LOG.info("switch %016x connected from %s", dp.id, dp.address)
        self.switch_connects[dp.id] += 1
        conf = self.conf
        switch = self.switches[dp.id] = Switch(
            dp, self.group_ids, self._bundle_ids,
            Periods(conf.bundle_timeout, conf.audit_period, conf.affinity_sweep_period),
            conf.reject_rate, counters=self.counters,
            audit_groups_every=conf.audit_groups_every,
            on_synced=lambda result: self._synced(switch, result))

        def connected(now):
            out = switch.connected(now)
            if dp.id in self.contexts:
                out += switch.context_changed(self.contexts[dp.id], now)
            if self.state_received is not None:
                out += switch.state_changed(self.state, changes.EVERYTHING, now)
            return out
        self._handle(switch, connected)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _flow_stats(self, ev):
        switch, msg = self._switch(ev.msg.datapath), ev.msg
        if switch is not None and switch.sweep.is_reply(msg.xid):
            self._handle(switch, lambda now: switch.sweep_reply(msg.xid, msg.body,
                                                                wire.more(msg), now))
        else:
            self._stats_reply(ev, cookies_seen=[s.cookie for s in msg.body])

    @set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, MAIN_DISPATCHER)
    def _group_desc(self, ev):
        switch, msg = self._switch(ev.msg.datapath), ev.msg
        if switch is not None and switch.drift.is_reply(msg.xid):
            self._handle(switch, lambda now: switch.audit_reply(
                msg.xid, now, groups=wire.group_descs(bytes(msg.buf)), more=wire.more(msg)))
        else:
            self._stats_reply(ev, groups_seen=[g.group_id for g in msg.body])

    @set_ev_cls(ofp_event.EventOFPGroupStatsReply, MAIN_DISPATCHER)
    def _group_stats(self, ev):
        switch, msg = self._switch(ev.msg.datapath), ev.msg
        if switch is not None and switch.drift.is_reply(msg.xid):
            self._handle(switch, lambda now: switch.audit_reply(
                msg.xid, now, groups=[(g.group_id, g.bucket_count) for g in msg.body],
                more=wire.more(msg)))

    @set_ev_cls(ofp_event.EventOFPAggregateStatsReply, MAIN_DISPATCHER)
    def _aggregate(self, ev):
        switch, msg = self._switch(ev.msg.datapath), ev.msg
        if switch is not None and switch.drift.is_reply(msg.xid):
            self._handle(switch, lambda now: switch.audit_reply(
                msg.xid, now, flows=msg.body.flow_count))

    @set_ev_cls(ofp_event.EventOFPMeterConfigStatsReply, MAIN_DISPATCHER)
    def _meters(self, ev):
        switch, msg = self._switch(ev.msg.datapath), ev.msg
        if switch is not None and switch.drift.is_reply(msg.xid):
            self._handle(switch, lambda now: switch.audit_reply(
                msg.xid, now, meters=[m.meter_id for m in msg.body], more=wire.more(msg)))

    @set_ev_cls(ofp_event.EventOFPExperimenterStatsReply, MAIN_DISPATCHER)
    def _flow_monitor(self, ev):
        switch, body = self._switch(ev.msg.datapath), ev.msg.body
        if switch is not None and body.experimenter == ofproto_common.ONF_EXPERIMENTER_ID \
                and body.exp_type == wire.ONF_FLOW_MONITOR:
            self._handle(switch, lambda now: switch.flow_monitor_updates(bytes(body.data),
                                                                         now))

    @set_ev_cls(ofp_event.EventOFPExperimenter, MAIN_DISPATCHER)
    def _flow_monitor_paused(self, ev):
        switch, msg = self._switch(ev.msg.datapath), ev.msg
        if switch is not None and msg.experimenter == ofproto_common.ONF_EXPERIMENTER_ID \
                and msg.exp_type in (wire.ONF_FLOW_MONITOR_PAUSED,
                                     wire.ONF_FLOW_MONITOR_RESUMED):
            self._handle(switch, lambda now: switch.flow_monitor_paused(
                msg.exp_type == wire.ONF_FLOW_MONITOR_RESUMED, now))

    def _stats_reply(self, ev, **seen):
        switch = self._switch(ev.msg.datapath)
        if switch is not None:
            self._handle(switch, lambda now: switch.stats_reply(now, more=wire.more(ev.msg),
                                                                **seen))

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _switch_gone(self, ev):
        switch = self._switch(ev.datapath)
        if switch is not None:
            del self.switches[switch.dpid]
            switch.disconnected(time.monotonic())

    def _switch(self, dp):
        switch = self.switches.get(dp.id)
        return switch if switch is not None and switch.dp is dp else None

    @staticmethod
    def _send(dp, msgs):
        """Send what a Switch returned: encoded messages in runs of up to
        256 KiB (one queue hand-over and sendall() each: a fifth of a cold
        sync when 50,000 went alone), yielding after each so that Ryu
        writes it while a streamed bundle encodes the next one."""
        run, size = [], 0
        for msg in msgs:
            if isinstance(msg, bytes):
                run.append(msg)
                size += len(msg)
                if size >= _SEND_RUN:
                    dp.send(b"".join(run))
                    run, size = [], 0
                    hub.sleep(0)
                continue
            if run:
                dp.send(b"".join(run))
                run, size = [], 0
            if msg.buf is not None:
                dp.send(msg.buf)
            else:
                dp.send_msg(msg)
        if run:
            dp.send(b"".join(run))

    # --- results -------------------------------------------------------------------
    def _synced(self, switch, result):
        """Metrics and listeners after a bundle (the Switch returns what to send)."""
        if not result.ok:
            self.bundle_failures[switch.dpid] += 1
            return
        self.last_programmed = time.time()
        first = self._event_at is not None and switch.dpid not in self._event_observed
        self._event_observed.add(switch.dpid)
        self.metrics.committed(status.bridge_name(self, switch.dpid), result.seconds,
                               self.last_programmed, self._trigger_times,
                               time.monotonic() - self._event_at if first else None)
        self._trigger_times.clear()
        for listener in self.commit_listeners:
            listener(switch.dpid, result.plan, result.seconds)

    # --- replies ------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier_reply(self, ev):
        switch = self._switch(ev.msg.datapath)
        if switch is not None:
            self._handle(switch, lambda now: switch.barrier_reply(ev.msg.xid, now))

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev):
        switch = self._switch(ev.msg.datapath)
        if switch is not None:
            self._handle(switch, lambda now: switch.error(ev.msg.xid, ev.msg.type,
                                                          ev.msg.code, now))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        msg = ev.msg
        switch = self._switch(msg.datapath)
        if switch is not None:
            self._handle(switch, lambda now: switch.packet_in(
                msg.cookie, msg.match["in_port"], msg.data, now))
