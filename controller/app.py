"""The Ryu application: a thin shell around the compiler, diff and sessions.

Events in (switch connects, OVSDB changes, a new cluster state, replies),
messages out.  This is the only module that calls ``send_msg``.  Run it as::

    ryu-manager --config-file nsx-proxy.conf controller.app

Configuration (``[nsx_proxy]`` section of the config file)::

    source = kubernetes            # or: file (a YAML state file, for demos), none
    kubeconfig =                   # empty: in-cluster, else KUBECONFIG / ~/.kube/config
    min_sync_period = 0.5          # coalesce API events: at most one sync per period
    max_sync_period = 60           # and at least one per period
    relist_period = 600            # full relist of every watched resource
    state_file = /path/to/state.yaml   # with source = file
    ovsdb = unix:/var/run/openvswitch/db.sock
    bundle_timeout = 30
    reject_rate = 100              # RST / ICMP answers per second and bridge
    fip_pools = default=198.51.100.0/24;blue=198.51.101.0/24
    default_fip_pool = default
    status_port = 9910             # http://127.0.0.1:9910/state and /metrics; 0: off
"""
import collections
import itertools
import logging
import time

from ryu import cfg
from ryu.base import app_manager
from ryu.controller import ofp_event
from ryu.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER
from ryu.controller.handler import set_ev_cls
from ryu.lib import hub
from ryu.ofproto import ofproto_v1_3

from controller import cookies
from controller import ofmsg
from controller import pipeline
from controller import reject
from controller import status
from controller.udp_flush import stale_udp_entries
from controller.compiler import group_names
from controller.ovsdb_monitor import OvsdbMonitor
from controller.session import SwitchSession
from nsx_proxy import kube_source, lb_ipam, model
from nsx_proxy.kube_source import KubeSource
from nsx_proxy.runner import Hub
from nsx_proxy.yaml_source import YamlFileSource

LOG = logging.getLogger("nsx_proxy")

CONF = cfg.CONF
CONF.register_opts([
    cfg.StrOpt("source", default="kubernetes", choices=("kubernetes", "file", "none"),
               help="where the desired state comes from (none: another app in the "
                    "same ryu-manager calls set_state, as the benchmarks do)"),
    cfg.StrOpt("kubeconfig", default="",
               help="kubeconfig path; empty: in-cluster, else KUBECONFIG or ~/.kube/config"),
    cfg.FloatOpt("min_sync_period", default=0.5,
                 help="seconds: at most one sync per period, however many API events"),
    cfg.FloatOpt("max_sync_period", default=60.0,
                 help="seconds: at least one sync per period"),
    cfg.FloatOpt("relist_period", default=600.0,
                 help="seconds between full relists of each watched resource"),
    cfg.StrOpt("state_file", default="/var/lib/nsx-proxy/state.yaml",
               help="YAML file with nodes and services (the lab's state source)"),
    cfg.StrOpt("ovsdb", default="unix:/var/run/openvswitch/db.sock",
               help="OVSDB remote to read bridge and pod labels from"),
    cfg.FloatOpt("bundle_timeout", default=30.0,
                 help="seconds to wait for a bundle's commit before giving up"),
    cfg.StrOpt("fip_pools", default="",
               help="floating-IP pools for LoadBalancer services without an ingress IP: "
                    "NAME=CIDR[,CIDR];NAME2=CIDR (empty: no allocation)"),
    cfg.StrOpt("default_fip_pool", default="",
               help="the pool used when neither the service nor its namespace names one "
                    "(annotation nsx-proxy.io/fip-pool)"),
    cfg.IntOpt("status_port", default=9910,
               help="localhost port of the read-only /state and /metrics endpoint; 0: off"),
    cfg.IntOpt("reject_rate", default=100,
               help="refused connections answered (RST / ICMP) per second and bridge; "
                    "the bridge's meter drops the rest before they reach us"),
], group="nsx_proxy")


def _listeners(svc):
    return {(p.protocol, p.port) for p in svc.ports}


class _Pending:
    """A bundle in flight: its messages by xid, errors seen, a done event."""

    def __init__(self, items_by_xid, barrier_xid):
        self.items_by_xid = items_by_xid
        self.barrier_xid = barrier_xid
        self.errors = []
        self.done = hub.Event()


class ServiceProxy(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conf = CONF.nsx_proxy
        self.state = model.ClusterState()
        self.state_received = None           # whether a source delivered yet
        self.contexts = {}                   # dpid -> BridgeContext (OVSDB)
        self.datapaths = {}                  # dpid -> Ryu datapath
        self.sessions = {}                   # dpid -> SwitchSession
        self._kicks = {}                     # dpid -> hub.Event
        self._pending = {}                   # dpid -> _Pending
        self._stats = {}                     # dpid -> (cookies, groups, outstanding)
        self.group_ids = cookies.GroupIds()
        self._bundle_ids = itertools.count(1)
        self._meter_xids = {}                # dpid -> xid of its meter add (may fail: exists)
        self._reject_buckets = {}            # dpid -> reject.TokenBucket
        self._udp_flushes = {}               # dpid -> [StaleUdp] to flush after a commit
        self.commit_listeners = []           # callables(dpid, plan, seconds); benchmarks
        self.source = None
        self.switch_connects = collections.Counter()     # dpid -> connections
        self.bundle_failures = collections.Counter()     # dpid -> refused/unconfirmed
        self._event_at = None                # first API event behind the current state
        self._event_observed = set()         # dpids that reported it already
        self.metrics = status.Metrics(self)

    def start(self):
        super().start()
        OvsdbMonitor(self.conf.ovsdb, self.set_contexts, hub.spawn, hub.sleep).start()
        if self.conf.status_port:
            try:
                status.serve(self, self.metrics, self.conf.status_port, hub.spawn)
            except OSError as exc:   # the proxy itself must keep working
                LOG.error("status endpoint on port %d unavailable: %s",
                          self.conf.status_port, exc)
        if self.conf.source == "none":
            pass
        elif self.conf.source == "file":
            YamlFileSource(self.conf.state_file, self.set_state,
                           hub.spawn, hub.sleep).start()
        else:
            self.source = KubeSource(
                kube_source.api_client(self.conf.kubeconfig or None), self.set_state,
                Hub(hub.spawn, hub.sleep, hub.Event),
                min_interval=self.conf.min_sync_period,
                max_interval=self.conf.max_sync_period,
                relist_period=self.conf.relist_period, ipam=self._ipam())
            self.source.start()

    def _ipam(self):
        pools = lb_ipam.parse_pools(self.conf.fip_pools)
        if not pools:
            return None
        return lb_ipam.Ipam(pools, self.conf.default_fip_pool or None)

    # --- inputs ----------------------------------------------------------------
    def set_state(self, state: model.ClusterState) -> None:
        """A new desired cluster state from a source."""
        previous, self.state = self.state, state
        self.state_received = time.monotonic()
        self._event_at = getattr(self.source, "last_event_at", None)
        self._event_observed = set()
        stale = stale_udp_entries(previous, state)
        if stale:
            for dpid in self.sessions:
                self._udp_flushes.setdefault(dpid, []).extend(stale)
        # Free group ids of vanished services or ports (a walk over every
        # service, so only when something could have vanished).
        old = previous.services
        if old.keys() - state.services.keys() or any(
                _listeners(old.get(k, svc)) != _listeners(svc)
                for k, svc in state.services.items() if old.get(k) is not svc):
            self.group_ids.release_unused(self._service_port_names(state))
        self._kick_all()

    @staticmethod
    def _service_port_names(state):
        return {name for svc in state.services.values() for name in group_names(svc)}

    def set_contexts(self, contexts) -> None:
        """A new {dpid: BridgeContext} snapshot from OVSDB."""
        self.contexts = contexts
        for dpid, session in self.sessions.items():
            if dpid in contexts:
                session.set_context(contexts[dpid])
        self._kick_all()

    def _kick_all(self):
        for event in self._kicks.values():
            event.set()

    # --- switch lifecycle -----------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _switch_features(self, ev):
        dp = ev.msg.datapath
        parser = dp.ofproto_parser
        LOG.info("switch %016x connected from %s", dp.id, dp.address)
        self.switch_connects[dp.id] += 1
        self.datapaths[dp.id] = dp
        self._stats[dp.id] = ([], [], 2)
        # The reject meter first (flows refer to it).  After a controller
        # restart it exists already: that error is expected and ignored.
        rate = max(1, self.conf.reject_rate)
        meter = ofmsg.meter_add(dp, pipeline.REJECT_METER, rate, rate)
        dp.set_xid(meter)
        self._meter_xids[dp.id] = meter.xid
        dp.send_msg(meter)
        self._reject_buckets[dp.id] = reject.TokenBucket(rate, rate)
        # What is on the switch already: table 0 tells the last round (every
        # round has flows there), group descriptions tell which ids exist.
        dp.send_msg(parser.OFPFlowStatsRequest(dp, 0, 0, dp.ofproto.OFPP_ANY,
                                               dp.ofproto.OFPG_ANY, 0, 0,
                                               parser.OFPMatch()))
        dp.send_msg(parser.OFPGroupDescStatsRequest(dp, 0))

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _flow_stats(self, ev):
        self._collect(ev, lambda body, acc: acc[0].extend(s.cookie for s in body))

    @set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, MAIN_DISPATCHER)
    def _group_desc(self, ev):
        self._collect(ev, lambda body, acc: acc[1].extend(g.group_id for g in body))

    def _collect(self, ev, add):
        dp = ev.msg.datapath
        acc = self._stats.get(dp.id)
        if acc is None:
            return
        add(ev.msg.body, acc)
        if ev.msg.flags & dp.ofproto.OFPMPF_REPLY_MORE:
            return
        flows, groups, outstanding = acc
        if outstanding > 1:
            self._stats[dp.id] = (flows, groups, outstanding - 1)
            return
        del self._stats[dp.id]
        self._start_session(dp, flows, groups)

    def _start_session(self, dp, table0_cookies, group_ids):
        session = SwitchSession(dp.id, self.group_ids)
        session.learn_switch(table0_cookies, group_ids)
        if dp.id in self.contexts:
            session.set_context(self.contexts[dp.id])
        else:
            LOG.warning("switch %016x has no nsx-proxy-role in OVSDB yet; waiting",
                        dp.id)
        self.sessions[dp.id] = session
        kick = self._kicks[dp.id] = hub.Event()
        kick.set()
        hub.spawn(self._sync_loop, dp, session, kick)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _switch_gone(self, ev):
        dp = ev.datapath
        if dp.id is None or self.datapaths.get(dp.id) is not dp:
            return
        LOG.info("switch %016x disconnected", dp.id)
        for table in (self.datapaths, self.sessions, self._stats, self._udp_flushes,
                      self._meter_xids):
            table.pop(dp.id, None)
        kick = self._kicks.pop(dp.id, None)
        if kick:
            kick.set()                       # let the sync loop notice and exit
        pending = self._pending.pop(dp.id, None)
        if pending:
            pending.errors.append((None, "switch disconnected"))
            pending.done.set()

    # --- syncing ----------------------------------------------------------------
    def _sync_loop(self, dp, session, kick):
        while self.sessions.get(dp.id) is session:
            kick.wait()
            kick.clear()
            if self.sessions.get(dp.id) is not session:
                return
            if not session.ready or self.state_received is None:
                continue     # no flows are removed before a source delivered
            try:
                self._sync_once(dp, session)
            except Exception:
                LOG.exception("switch %016x: sync failed; full resync next", dp.id)
                session.needs_resync = True
                hub.sleep(1)
                kick.set()

    def _sync_once(self, dp, session):
        started = time.monotonic()
        want, plan, stale = session.plan(self.state)
        if not len(plan) and not stale:
            if session.needs_resync:
                session.committed(want, plan, started)
            return
        pairs = ofmsg.plan_messages(dp, plan, session.generation, stale)
        ok, failed_items, reason = self._send_bundle(dp, pairs)
        if ok:
            session.committed(want, plan, started)
            self._flush_udp(dp, session)
            elapsed = time.monotonic() - started
            self.metrics.sync_seconds.labels(status.bridge_name(self, dp.id)).observe(elapsed)
            if self._event_at is not None and dp.id not in self._event_observed:
                self._event_observed.add(dp.id)
                self.metrics.event_to_programmed.observe(time.monotonic() - self._event_at)
            LOG.debug("switch %016x: bundle of %d messages committed in %.1f ms",
                      dp.id, len(pairs), elapsed * 1000)
            for listener in self.commit_listeners:
                listener(dp.id, plan, elapsed)
        else:
            self.bundle_failures[dp.id] += 1
            session.failed(want, plan, failed_items, reason)
            kick = self._kicks.get(dp.id)
            if kick is not None:
                kick.set()               # retry at once without what failed

    def _flush_udp(self, dp, session):
        """The endpoints are out of the groups now: drop their UDP entries."""
        stale = self._udp_flushes.pop(dp.id, None)
        if not stale or session.compiler is None:
            return
        zone = session.compiler.ctx.ct_zone
        for entry in sorted(set(stale)):
            LOG.info("switch %016x: flushing UDP conntrack %s:%d -> %s:%d (endpoint gone)",
                     dp.id, entry.frontend_ip, entry.frontend_port, entry.endpoint_ip,
                     entry.endpoint_port)
            dp.send_msg(ofmsg.ct_flush(dp, zone, 17, (entry.frontend_ip, entry.frontend_port),
                                       (entry.endpoint_ip, entry.endpoint_port)))

    def _send_bundle(self, dp, pairs):
        """Send one atomic bundle and wait for it; (ok, failed items, reason)."""
        bundle_id = next(self._bundle_ids) & 0xFFFFFFFF
        msgs = ofmsg.bundle(dp, bundle_id, [m for m, _ in pairs])
        items_by_xid = {}
        for msg in msgs:
            dp.set_xid(msg)
        for add_msg, (_, item) in zip(msgs[1:-1], pairs):
            items_by_xid[add_msg.xid] = item
        barrier = dp.ofproto_parser.OFPBarrierRequest(dp)
        dp.set_xid(barrier)
        pending = self._pending[dp.id] = _Pending(items_by_xid, barrier.xid)
        LOG.debug("switch %016x: bundle %d with %d messages", dp.id, bundle_id, len(pairs))
        for msg in msgs:
            dp.send_msg(msg)
        dp.send_msg(barrier)
        if not pending.done.wait(timeout=self.conf.bundle_timeout):
            self._pending.pop(dp.id, None)
            return False, [], "no reply within %ss" % self.conf.bundle_timeout
        self._pending.pop(dp.id, None)
        if pending.errors:
            failed = [pending.items_by_xid[xid] for xid, _ in pending.errors
                      if pending.items_by_xid.get(xid) is not None]
            return False, failed, "; ".join(why for _, why in pending.errors)
        return True, [], ""

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier_reply(self, ev):
        pending = self._pending.get(ev.msg.datapath.id)
        if pending and ev.msg.xid == pending.barrier_xid:
            pending.done.set()

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        """A refused new connection: answer with a TCP RST or ICMP unreachable."""
        msg = ev.msg
        dp = msg.datapath
        if cookies.kind_of(msg.cookie) not in (cookies.KIND_SERVICE_PORT, cookies.KIND_VIP):
            return
        bucket = self._reject_buckets.get(dp.id)
        if bucket is None or not bucket.take():
            return
        answer = reject.reply_for(bytes(msg.data))
        if answer is None:
            return
        parser, ofp = dp.ofproto_parser, dp.ofproto
        dp.send_msg(parser.OFPPacketOut(
            dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
            actions=[parser.OFPActionOutput(msg.match["in_port"])], data=answer))

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev):
        msg = ev.msg
        if self._meter_xids.get(msg.datapath.id) == msg.xid:
            LOG.debug("switch %016x: expected error type=%d code=%d (meter exists)",
                      msg.datapath.id, msg.type, msg.code)
            return
        pending = self._pending.get(msg.datapath.id)
        LOG.error("switch %016x: error type=%d code=%d for xid %d",
                  msg.datapath.id, msg.type, msg.code, msg.xid)
        if pending is not None:
            pending.errors.append((msg.xid, f"error type={msg.type} code={msg.code}"))
