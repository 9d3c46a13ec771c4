"""One connected switch: a state machine driven by events.

FAUCET's ``Valve`` is the model: the Ryu app owns a ``Switch`` per datapath
and hands it the switch's events, one at a time, on the app's one event
thread; the ``Switch`` decides and returns the messages to send.  Nothing
here sends, sleeps or waits, and no green thread of its own touches it:
time passes only as ``now``, handed in with every event, and the app's clock
posts ``timer`` events (controller/app.py).  When the connection goes, the
object goes with it, so nothing about a switch (a bundle in flight, a
handshake, a meter xid, a token bucket, UDP flushes) can outlive it.

The events, each a method taking ``now`` (monotonic seconds) and returning
the messages to send, are listed in docs/architecture.md: the handshake,
a new state or bridge context, a bundle's barrier reply or error, the
audit's and the flow monitor's replies, the sweep's, a packet-in, the
clock's ``timer``, the disconnection.

One bundle is in flight at a time.  What changes meanwhile is merged and
goes out in the next bundle, from the event that ends this one (its barrier
reply, or the deadline).  So drift found while a bundle is out can only mark
a resync as due; the bundle that ends was planned before and counts as what
it was planned as (``bundle.InFlight.full``).
"""
import collections
import itertools
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional

from controller import bundle, cookies, ofmsg, pipeline, reject, wire
from controller.drift import DriftWatch
from controller.fragments import Plan
from controller.session import SwitchSession
from controller.sweep import Sweep
from nsx_proxy import changes, gc_pause

LOG = logging.getLogger("nsx_proxy")


@dataclass
class SyncResult:
    ok: bool
    plan: Plan
    seconds: float
    messages: int
    after: List[object] = field(default_factory=list)   # sent once committed


@dataclass
class Periods:
    """How often the timer-driven work runs, in seconds (controller/config.py)."""
    bundle_timeout: float = 30.0      # a bundle's barrier must be answered by then
    audit: float = 10.0               # drift audit; 0: off
    sweep: float = 60.0               # expiry of affinity entries over 65,535 s
    retry: float = 1.0                # after a sync that raised


class Switch:
    def __init__(self, dp, group_ids: cookies.GroupIds, bundle_ids, periods=None,
                 reject_rate=100, counters=None, audit_groups_every=3,
                 on_synced: Callable[[SyncResult], None] = None):
        self.dp = dp
        self.dpid = dp.id
        # (dpid, what) -> count: "quarantined encode" / "quarantined refused"
        # (objects skipped), "drift" (repairs); shared with the app, so the
        # counts outlive one connection
        self.counters = counters if counters is not None else collections.Counter()
        self.periods = periods or Periods()
        self.on_synced = on_synced or (lambda result: None)
        self.session: Optional[SwitchSession] = None   # once the handshake is done
        self.context = None
        self.state = None                 # the newest cluster state (None: none yet)
        self.alive = True
        self.pending: Optional[bundle.InFlight] = None
        self.commits = 0                  # bundles committed on this connection
        self._group_ids = group_ids
        self._bundle_ids = bundle_ids
        self._due = False                 # a bundle is wanted (something changed)
        self._retry_at = 0.0              # no bundle before this (after a failure)
        self._audit_at = self._sweep_at = None   # set when the session starts
        self._stats = ([], [], 2)         # table-0 cookies, group ids, replies to come
        self._meter_xid = None
        self.reject_rate = max(1, reject_rate)
        self._reject_bucket = None
        self._udp_flushes: List[changes.StaleUdp] = []
        self.sweep = Sweep(dp, group_ids)
        self.drift = DriftWatch(dp, audit_groups_every)

    @property
    def ready(self) -> bool:
        return self.session is not None and self.session.ready

    @property
    def idle(self) -> bool:
        """No bundle out and none wanted: what it was told is programmed."""
        return self.pending is None and not self._due

    # --- the handshake ---------------------------------------------------------------
    def connected(self, now) -> list:
        """A miss_send_len, the reject meter (flows refer to it; after a controller
        restart it exists already, an error that is expected), then what is on
        the switch: table 0 tells the last round (every round has flows there),
        group descriptions tell which ids exist."""
        dp = self.dp
        parser, ofp = dp.ofproto_parser, dp.ofproto
        self._reject_bucket = reject.TokenBucket(self.reject_rate, self.reject_rate, now)
        meter = ofmsg.meter_add(dp, pipeline.REJECT_METER, self.reject_rate, self.reject_rate)
        dp.set_xid(meter)
        self._meter_xid = meter.xid
        # OpenFlow's default miss_send_len (128), said out loud: a connection
        # to the bridge's management socket (bridge_dialer) gets no packet-in
        # (the reject path) until it sets one; a controller target's has it
        return [parser.OFPSetConfig(dp, ofp.OFPC_FRAG_NORMAL, 128),
                meter,
                parser.OFPFlowStatsRequest(dp, 0, 0, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0,
                                           parser.OFPMatch()),
                parser.OFPGroupDescStatsRequest(dp, 0),
                # every flow someone else adds, deletes or modifies, as it
                # happens (not in SessionAffinity, where the learn action
                # and idle timeouts change entries all the time)
                wire.flow_monitor_request(
                    [t for t in pipeline.TABLES if t is not pipeline.SESSION_AFFINITY],
                    bundle.next_xid(dp))]

    def stats_reply(self, now, cookies_seen=(), groups_seen=(), more=False) -> list:
        """One part of the handshake's flow or group stats reply; once both
        are in, the session starts and the first bundle goes out."""
        if self._stats is None:
            return []
        flows, groups, outstanding = self._stats
        flows.extend(cookies_seen)
        groups.extend(groups_seen)
        if more or outstanding > 1:
            self._stats = (flows, groups, outstanding - (not more))
            return []
        self._stats = None
        self.session = SwitchSession(self.dpid, self._group_ids)
        self.session.learn_switch(flows, groups)
        if self.context is not None:
            self.session.set_context(self.context)
        else:
            LOG.warning("switch %016x has no nsx-proxy-role in OVSDB yet; waiting",
                        self.dpid)
        self._audit_at = now + self.periods.audit
        self._sweep_at = now + self.periods.sweep
        self._due = True
        return self._next(now)

    # --- inputs ------------------------------------------------------------------------
    def context_changed(self, ctx, now) -> list:
        self.context = ctx
        if self.session is not None:
            self.session.set_context(ctx)
        self._due = True
        return self._next(now)

    def state_changed(self, state, change: changes.ChangeSet, now) -> list:
        self.state = state
        if self.session is not None:
            self.session.note(change)
        self._udp_flushes.extend(change.udp_gone)
        self._due = True
        return self._next(now)

    def timer(self, now) -> list:
        """Time passed: a bundle past its deadline fails, the audit and the
        sweep run at their periods, a sync that raised is tried again."""
        out = []
        if self.pending is not None and now >= self.pending.deadline:
            out += self._end([(None, f"no reply within {self.periods.bundle_timeout}s")],
                             now)
        if not self.ready:
            return _then(out, self._next(now))
        if self.periods.audit > 0 and now >= self._audit_at:
            self._audit_at = now + self.periods.audit
            out += self._audit()
        if now >= self._sweep_at:
            self._sweep_at = now + self.periods.sweep
            if self.state is not None:
                out += self.sweep.requests(self.state)
        return _then(out, self._next(now))

    # --- bundles -----------------------------------------------------------------------
    def _next(self, now) -> Iterable:
        """The next bundle, if one is wanted and none is in flight.  A plan of
        ``STREAM_AT`` steps or more comes as a generator that encodes while
        the app sends (the two overlap on two cores: a cold sync of 10,000
        services went from 1.10 s to 0.92 s); a smaller one as a list, every
        message encoded and checked before anything is sent.  A step that
        cannot be encoded discards a streamed bundle (its end quarantines the
        object and plans again); in a checked one, it is quarantined at once."""
        if not self._due or self.pending is not None or not self.ready \
                or self.state is None or now < self._retry_at:
            return []
        self._due = False
        session = self.session
        try:
            with gc_pause.paused():
                for attempt in range(3):   # each pass quarantines what failed to encode
                    want, plan, stale, keys = session.plan(self.state)
                    if not len(plan) and not stale:
                        if session.needs_resync:
                            session.committed(want, keys, full=True)
                        return []
                    pending = self.pending = bundle.InFlight(
                        now + self.periods.bundle_timeout, want, plan, keys, now,
                        full=session.needs_resync)
                    msgs = pending.messages(self.dp, stale, session.generation,
                                            next(self._bundle_ids) & 0xFFFFFFFF,
                                            self.drift.digests)
                    if len(plan) >= bundle.STREAM_AT:
                        return msgs
                    msgs = list(msgs)
                    if not pending.bad:
                        return msgs
                    self.pending = None
                    self._quarantine(pending)
                raise RuntimeError("objects kept failing to encode")
        except Exception:                 # noqa: BLE001 - a bug: start over cleanly
            self.failed(now)
            return []

    def failed(self, now) -> None:
        """Planning, encoding or sending raised: one traceback, then a full
        resync from a clean round, tried again after ``periods.retry``."""
        LOG.exception("switch %016x: sync failed; full resync next", self.dpid)
        self.pending = None
        if self.session is not None:
            self.session.needs_resync = True
        self._due = True
        self._retry_at = now + self.periods.retry

    def _quarantine(self, pending) -> None:
        """Objects whose messages could not be encoded: skipped until they change."""
        self.counters[(self.dpid, "quarantined encode")] += len(
            self.session.unencodable(pending.want, pending.plan, pending.bad))

    def barrier_reply(self, xid, now) -> list:
        if self.pending is None or xid != self.pending.barrier_xid:
            return []
        return _then(self._end(self.pending.errors, now), self._next(now))

    def error(self, xid, err_type, code, now) -> list:
        if xid == self._meter_xid:
            LOG.debug("switch %016x: expected error type=%d code=%d (meter exists)",
                      self.dpid, err_type, code)
            return []
        for name, watch in (("sweep", self.sweep), ("drift audit", self.drift)):
            if watch.is_reply(xid):
                # a statistics request of ours failed: that read ends (the next
                # period asks again); no reason to fail a bundle in flight
                LOG.warning("switch %016x: error type=%d code=%d for a %s request; "
                            "asking again next period", self.dpid, err_type, code, name)
                watch.request_failed(xid)
                return []
        LOG.error("switch %016x: error type=%d code=%d for xid %d",
                  self.dpid, err_type, code, xid)
        if self.pending is not None:
            self.pending.errors.append((xid, f"error type={err_type} code={code}"))
        return []

    def _end(self, errors, now) -> list:
        """The bundle in flight is over: its barrier was answered (``errors``:
        what the switch refused), or not in time, or the switch went.  What
        to send now that it is (UDP flushes, an audit); the caller then asks
        ``_next`` for the next bundle, if something changed meanwhile."""
        pending, self.pending = self.pending, None
        session = self.session
        result = SyncResult(False, pending.plan, now - pending.started, pending.count)
        if pending.discarded:
            self._quarantine(pending)
            self._due = True               # plan again without the quarantined objects
        if errors:
            failed = [pending.items_by_xid[xid] for xid, _ in errors
                      if pending.items_by_xid.get(xid) is not None]
            blamed = session.failed(pending.want, pending.plan, failed,
                                    "; ".join(why for _, why in errors))
            self.counters[(self.dpid, "quarantined refused")] += len(blamed)
            self._due = True               # retry at once without what failed
        elif not pending.discarded:
            result = self._committed(pending, now)
        self.on_synced(result)
        return result.after

    def _committed(self, pending, now) -> SyncResult:
        session = self.session
        if pending.full:
            # every flow was written again: changes the monitor reported
            # before this barrier's reply are overwritten
            self.drift.repaired()
        session.committed(pending.want, pending.keys, pending.full)
        self.commits += 1
        LOG.info("switch %016x: committed %s in %.1f ms", self.dpid,
                 pending.plan.summary(), (now - pending.started) * 1000)
        if session.needs_resync:
            self._due = True               # drift found while this bundle was out
        if pending.full:
            gc_pause.settled()              # long-lived now: frozen, free pages back
        after = self._flushes()
        if self.drift.seen:           # the monitor saw a change while the bundle was out
            after += self._audit()
        return SyncResult(True, pending.plan, now - pending.started, pending.count, after)

    def _flushes(self) -> list:
        """The endpoints are out of the groups now: drop their UDP entries."""
        stale, self._udp_flushes = self._udp_flushes, []
        if not stale or self.session.compiler is None:
            return []
        zone = self.session.compiler.ctx.ct_zone
        out = []
        for entry in sorted(set(stale)):
            LOG.info("switch %016x: flushing UDP conntrack %s:%d -> %s:%d (endpoint gone)",
                     self.dpid, entry.frontend_ip, entry.frontend_port, entry.endpoint_ip,
                     entry.endpoint_port)
            out.append(ofmsg.ct_flush(self.dp, zone, 17,
                                      (entry.frontend_ip, entry.frontend_port),
                                      (entry.endpoint_ip, entry.endpoint_port)))
        return out

    # --- session affinity longer than a learn action's timeout (controller/sweep.py) -----
    def sweep_reply(self, xid, stats, more, now) -> list:
        return self.sweep.reply(xid, stats, more, now)

    # --- drift (controller/drift.py) ----------------------------------------------------
    def _audit(self) -> list:
        """The audit's requests, unless a bundle is out or a resync is due."""
        if not self.ready or self.pending is not None or self.session.needs_resync:
            return []
        return self.drift.requests(self.session.generation, self.commits)

    def audit_reply(self, xid, now, flows=None, groups=(), meters=None, more=False) -> list:
        audit = self.drift.reply(xid, flows, groups, meters, more)
        if audit is None:                  # more replies to come
            return []
        out = []
        if audit.meter_missing:
            out.append(ofmsg.meter_add(self.dp, pipeline.REJECT_METER, self.reject_rate,
                                       self.reject_rate))
        session = self.session
        if audit.commits != self.commits:
            # a bundle landed meanwhile: the counts are of another state; ask
            # again later (at once, if the flow monitor saw a change).  (A
            # bundle still out is fine: OVS answered before it applied it,
            # and ``installed`` is still what was there before it.)
            if audit.forced:
                self.drift.seen = True
                out += self._audit()
            return out
        drifted = self.drift.judge(audit, session.installed, session.generation)
        if drifted is not None:
            self.counters[(self.dpid, "drift")] += 1
            session.redo(drifted)
            self._due = True
        elif self.drift.seen:                # the monitor saw more while we counted
            out += self._audit()
        return _then(out, self._next(now))

    def flow_monitor_updates(self, data: bytes, now) -> list:
        if not self.ready or self.session.needs_resync:
            return []                     # everything is written again anyway
        if self.drift.flow_updates(data, self.session.installed, self.session.generation):
            return self._audit()          # [] while a bundle or an audit is in flight
        return []

    def flow_monitor_paused(self, resumed: bool, now) -> list:
        return self._audit() if self.drift.monitor_paused(resumed) else []

    # --- refused connections --------------------------------------------------------------
    def packet_in(self, cookie, in_port, data, now) -> list:
        """A refused new connection: answer with a TCP RST or ICMP unreachable."""
        if cookies.kind_of(cookie) not in (cookies.KIND_SERVICE_PORT, cookies.KIND_VIP):
            return []
        if not self._reject_bucket.take(now):
            return []
        answer = reject.reply_for(bytes(data))
        if answer is None:
            return []
        dp = self.dp
        parser, ofp = dp.ofproto_parser, dp.ofproto
        return [parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER,
                                    in_port=ofp.OFPP_CONTROLLER,
                                    actions=[parser.OFPActionOutput(in_port)], data=answer)]

    # --- the end --------------------------------------------------------------------------
    def disconnected(self, now) -> None:
        LOG.info("switch %016x disconnected", self.dpid)
        self.alive = False
        if self.pending is not None:
            self._end([(None, "switch disconnected")], now)


def _then(out: list, more: Iterable) -> Iterable:
    """``out``, then ``more``: a list, unless ``more`` is a streamed bundle."""
    return out + more if isinstance(more, list) else itertools.chain(out, more)
