"""One connected switch: everything the controller keeps about it, in one object.

FAUCET's ``Valve`` is the model: the Ryu app owns a ``Switch`` per datapath
and forwards it the switch's events; the ``Switch`` decides and returns the
messages to send.  When the connection goes, the object goes with it, so
nothing about a switch (a pending bundle, a handshake, a meter xid, a token
bucket, UDP flushes) can outlive its connection by accident.

Lifecycle, each step a method::

    hello()                  -> the reject meter, flow and group stats requests,
                                and the flow monitor (controller/drift.py)
    stats_reply(...)         -> True once both replies are in: the session starts
    set_context(ctx)         OVSDB says what the bridge is
    note(change)             the cluster state changed (a change set)
    begin_sync(state)        -> one atomic bundle and its barrier, or None
    barrier_reply(xid) / error(xid, ...)
    end_sync(answered)       -> SyncResult (and UDP conntrack flushes to send)
    packet_in(...)           -> a TCP RST / ICMP unreachable, rate-limited
    audit_requests() / audit_reply(...) / flow_monitor_updates(...)
                             -> drift found and repaired (controller/drift.py)
    disconnected()           a bundle in flight fails; the object is dropped

No Ryu event machinery here (the messages are built with Ryu's parser, in
``ofmsg``), so a test drives it with a fake datapath.
"""
import collections
import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Iterable, List, Optional

from controller import bundle, cookies, ofmsg, pipeline, reject, wire
from controller.drift import DriftWatch
from controller.fragments import Plan
from controller.session import SwitchSession
from controller.sweep import Sweep
from nsx_proxy import changes

LOG = logging.getLogger("nsx_proxy")


@dataclass
class SyncResult:
    ok: bool
    plan: Plan
    seconds: float
    messages: int
    after: List[object] = field(default_factory=list)   # to send once committed


class _Pending:
    """A bundle in flight: its messages by xid, errors seen, a done event."""

    def __init__(self, items_by_xid, barrier_xid, done, want, plan, started, count, full):
        self.items_by_xid = items_by_xid
        # planned as a resync (everything written again)?  Decided when
        # planned: drift found while the bundle is out does not make it one.
        self.full = full
        self.barrier_xid = barrier_xid
        self.errors = []
        self.discarded = False            # a streamed bundle closed without commit
        self.done = done
        self.want, self.plan, self.started, self.count = want, plan, started, count


class Switch:
    def __init__(self, dp, group_ids: cookies.GroupIds, make_event, bundle_ids,
                 reject_rate=100, clock=time.monotonic, counters=None,
                 audit_groups_every=3):
        self.dp = dp
        # (dpid, what) -> count: "quarantined encode" / "quarantined refused"
        # (objects skipped), "drift" (repairs); shared with the app, so the
        # counts outlive one connection
        self.counters = counters if counters is not None else collections.Counter()
        self.dpid = dp.id
        self.session: Optional[SwitchSession] = None   # once the handshake is done
        self.context = None
        self.kick = make_event()          # set: a sync is due
        self.alive = True
        self._group_ids = group_ids
        self._make_event = make_event
        self._bundle_ids = bundle_ids
        self._clock = clock
        self._stats = ([], [], 2)         # table-0 cookies, group ids, replies to come
        self._meter_xid = None
        self.reject_rate = max(1, reject_rate)
        self._reject_bucket = reject.TokenBucket(self.reject_rate, self.reject_rate, clock)
        self._udp_flushes: List[changes.StaleUdp] = []
        self.pending: Optional[_Pending] = None
        self.sweep = Sweep(self)
        self.drift = DriftWatch(self, audit_groups_every)
        self.commits = 0                  # bundles committed on this connection

    @property
    def ready(self) -> bool:
        return self.session is not None and self.session.ready

    # --- handshake --------------------------------------------------------------
    def hello(self) -> list:
        """The reject meter first (flows refer to it; after a controller
        restart it exists already, an error that is expected), then what is on
        the switch: table 0 tells the last round (every round has flows there),
        group descriptions tell which ids exist."""
        dp = self.dp
        parser, ofp = dp.ofproto_parser, dp.ofproto
        meter = ofmsg.meter_add(dp, pipeline.REJECT_METER, self.reject_rate, self.reject_rate)
        dp.set_xid(meter)
        self._meter_xid = meter.xid
        return [meter,
                parser.OFPFlowStatsRequest(dp, 0, 0, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0,
                                           parser.OFPMatch()),
                parser.OFPGroupDescStatsRequest(dp, 0),
                # every flow someone else adds, deletes or modifies, as it
                # happens (not in SessionAffinity, where the learn action
                # and idle timeouts change entries all the time)
                wire.flow_monitor_request(
                    [t for t in pipeline.TABLES if t is not pipeline.SESSION_AFFINITY],
                    bundle.next_xid(dp))]

    def stats_reply(self, cookies_seen=(), groups_seen=(), more=False) -> bool:
        """One part of the flow or group stats reply; True when the session started."""
        if self._stats is None:
            return False
        flows, groups, outstanding = self._stats
        flows.extend(cookies_seen)
        groups.extend(groups_seen)
        if more:
            return False
        if outstanding > 1:
            self._stats = (flows, groups, outstanding - 1)
            return False
        self._stats = None
        self.session = SwitchSession(self.dpid, self._group_ids)
        self.session.learn_switch(flows, groups)
        if self.context is not None:
            self.session.set_context(self.context)
        else:
            LOG.warning("switch %016x has no nsx-proxy-role in OVSDB yet; waiting",
                        self.dpid)
        self.kick.set()
        return True

    # --- inputs ---------------------------------------------------------------------
    def set_context(self, ctx) -> None:
        self.context = ctx
        if self.session is not None:
            self.session.set_context(ctx)
        self.kick.set()

    def note(self, change: changes.ChangeSet) -> None:
        if self.session is not None:
            self.session.note(change)
        self._udp_flushes.extend(change.udp_gone)
        self.kick.set()

    # --- syncing --------------------------------------------------------------------
    def begin_sync(self, state) -> Optional[Iterable]:
        """The next bundle (open, adds, commit) and a barrier, or None if
        nothing is to be done.  Nothing is removed before ``state`` exists.
        A plan of ``STREAM_AT`` steps or more comes as a generator that
        encodes while the caller sends (see ``_stream``); a smaller one as a
        list, every message encoded and checked before anything is sent."""
        if not self.ready or state is None:
            return None
        started = self._clock()
        session = self.session
        with bundle.gc_paused():
            first = session.plan(state)
            if len(first[1]) >= bundle.STREAM_AT:
                return self._stream(*first, started, session.needs_resync)
            return self._begin_sync(state, session, started, first)

    def _begin_sync(self, state, session, started, first):
        for attempt in range(3):  # each pass quarantines what it could not encode
            want, plan, stale = first if attempt == 0 else session.plan(state)
            if not len(plan) and not stale:
                if session.needs_resync:
                    session.committed(want, plan, started, full=True)
                return None
            pairs, msgs = self._encode(plan, stale)
            bad = {item: why for item, _, why in pairs if why is not None}
            if not bad:
                break
            self.counters[(self.dpid, "quarantined encode")] += len(
                session.unencodable(want, plan, bad))
        else:
            raise RuntimeError("objects kept failing to encode")
        dp = self.dp
        items = {xid: item for item, xid, _ in pairs}
        barrier = dp.ofproto_parser.OFPBarrierRequest(dp)
        dp.set_xid(barrier)
        self.pending = _Pending(items, barrier.xid, self._make_event(), want, plan,
                                started, len(pairs), session.needs_resync)
        LOG.debug("switch %016x: bundle %d with %d messages", self.dpid, msgs[0].bundle_id,
                  len(pairs))
        return msgs + [barrier]

    def _stream(self, want, plan, stale, started, full):
        """A large bundle as a generator: each message is encoded when the
        caller asks for it, so OVS parses the first runs while the rest are
        encoded (the two overlap on two cores; a cold sync of 10,000
        services went from 1.10 s to 0.92 s).  A message that cannot be
        encoded quarantines its object as in the eager path, but part of
        the bundle is on the switch already: it is discarded instead of
        committed, ``end_sync`` says not ok and kicks, and the next pass
        plans again from the newest state without that object."""
        dp = self.dp
        bundle_id = next(self._bundle_ids) & 0xFFFFFFFF
        opening = bundle.control(dp, bundle_id, dp.ofproto.ONF_BCT_OPEN_REQUEST)
        items = {}
        pending = self.pending = _Pending(items, None, self._make_event(), want, plan,
                                          started, 0, full)
        yield opening
        bad = {}
        with bundle.gc_paused():  # held across the yields: a green thread's GC pause
            for item, xid, raw, why in bundle.steps(dp, plan, stale, self.session.generation,
                                                    bundle_id):
                if why is not None:
                    bad[item] = why
                elif not bad:        # after a failure: only look for more of them
                    items[xid] = item
                    pending.count += 1
                    yield raw
        if bad:
            self.counters[(self.dpid, "quarantined encode")] += len(
                self.session.unencodable(want, plan, bad))
            pending.discarded = True
            close = bundle.control(dp, bundle_id, dp.ofproto.ONF_BCT_DISCARD_REQUEST)
        else:
            close = bundle.control(dp, bundle_id, dp.ofproto.ONF_BCT_COMMIT_REQUEST)
        barrier = dp.ofproto_parser.OFPBarrierRequest(dp)
        dp.set_xid(barrier)
        pending.barrier_xid = barrier.xid
        LOG.debug("switch %016x: streamed bundle %d with %d messages", self.dpid, bundle_id,
                  pending.count)
        yield close
        yield barrier

    def _encode(self, plan, stale):
        """The bundle, each message encoded here, one by one, so a message
        that cannot be encoded (a value out of range, a bug) is pinned on its
        object before anything is sent.  Returns ([(plan item, xid, why it
        failed or None)], [open, bundle-add bytes..., commit])."""
        dp = self.dp
        bundle_id = next(self._bundle_ids) & 0xFFFFFFFF
        opening = bundle.control(dp, bundle_id, dp.ofproto.ONF_BCT_OPEN_REQUEST)
        steps = list(bundle.steps(dp, plan, stale, self.session.generation, bundle_id))
        commit = bundle.control(dp, bundle_id, dp.ofproto.ONF_BCT_COMMIT_REQUEST)
        return ([(item, xid, why) for item, xid, _, why in steps],
                [opening] + [raw for _, _, raw, _ in steps] + [commit])

    def barrier_reply(self, xid) -> None:
        if self.pending is not None and xid == self.pending.barrier_xid:
            self.pending.done.set()

    def error(self, xid, err_type, code) -> None:
        if xid == self._meter_xid:
            LOG.debug("switch %016x: expected error type=%d code=%d (meter exists)",
                      self.dpid, err_type, code)
            return
        if self.sweep.is_reply(xid) or self.is_audit_reply(xid):
            # a statistics request of ours failed: that read ends (the next
            # period asks again); it is no reason to fail a bundle in flight
            LOG.warning("switch %016x: error type=%d code=%d for a %s request; "
                        "asking again next period", self.dpid, err_type, code,
                        "sweep" if self.sweep.is_reply(xid) else "drift audit")
            self.sweep.request_failed(xid)
            if self.is_audit_reply(xid):
                self.drift.request_failed()
            return
        LOG.error("switch %016x: error type=%d code=%d for xid %d",
                  self.dpid, err_type, code, xid)
        if self.pending is not None:
            self.pending.errors.append((xid, f"error type={err_type} code={code}"))

    def end_sync(self, answered: bool, timeout: float = 0) -> SyncResult:
        """The bundle's outcome, once its barrier was answered (or not in time)."""
        pending, self.pending = self.pending, None
        session = self.session
        elapsed = self._clock() - pending.started
        if not answered:
            errors = [(None, f"no reply within {timeout}s")]
        else:
            errors = pending.errors
        if pending.discarded and not errors:
            self.kick.set()                # plan again without the quarantined object
            return SyncResult(False, pending.plan, elapsed, pending.count)
        if errors or session is None:
            failed = [pending.items_by_xid[xid] for xid, _ in errors
                      if pending.items_by_xid.get(xid) is not None]
            if session is not None:
                blamed = session.failed(pending.want, pending.plan, failed,
                                        "; ".join(why for _, why in errors))
                self.counters[(self.dpid, "quarantined refused")] += len(blamed)
                self.kick.set()            # retry at once without what failed
            return SyncResult(False, pending.plan, elapsed, pending.count)
        full = pending.full
        if full:
            # every flow was written again: changes the monitor reported
            # before this barrier's reply are overwritten
            self.drift.repaired()
        session.committed(pending.want, pending.plan, pending.started, full)
        self.commits += 1
        if session.needs_resync:
            self.kick.set()           # drift found while this bundle was out: repair now
        if full:
            # Millions of long-lived objects now: move them out of the cyclic
            # collector's way, or every full collection walks them all (the
            # tail of the change latency).
            gc.freeze()
        LOG.debug("switch %016x: bundle of %d messages committed in %.1f ms",
                  self.dpid, pending.count, elapsed * 1000)
        after = self._flushes()
        if self.drift.seen:           # the monitor saw a change while the bundle was out
            after += self.drift.requests()
        return SyncResult(True, pending.plan, elapsed, pending.count, after)

    def sync_failed(self) -> None:
        """Planning or encoding raised: start over from a clean round."""
        self.pending = None
        if self.session is not None:
            self.session.needs_resync = True

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

    # --- session affinity longer than a learn action's timeout (controller/sweep.py) ---
    def sweep_requests(self, state) -> list:
        return self.sweep.requests(state) if self.ready and state is not None else []

    def is_sweep_reply(self, xid) -> bool:
        return self.sweep.is_reply(xid)

    def sweep_reply(self, xid, stats, more=False) -> list:
        return self.sweep.reply(xid, stats, more)

    # --- drift (controller/drift.py) --------------------------------------------------
    def audit_requests(self) -> list:
        return self.drift.requests()

    def is_audit_reply(self, xid) -> bool:
        return self.drift.is_reply(xid)

    def audit_reply(self, xid, flows=None, groups=(), meters=None, more=False) -> list:
        return self.drift.reply(xid, flows, groups, meters, more)

    def flow_monitor_updates(self, data: bytes) -> list:
        return self.drift.flow_updates(data)

    def flow_monitor_paused(self, resumed: bool) -> list:
        return self.drift.monitor_paused(resumed)

    # --- refused connections ----------------------------------------------------------
    def packet_in(self, cookie, in_port, data) -> list:
        """A refused new connection: answer with a TCP RST or ICMP unreachable."""
        if cookies.kind_of(cookie) not in (cookies.KIND_SERVICE_PORT, cookies.KIND_VIP):
            return []
        if not self._reject_bucket.take():
            return []
        answer = reject.reply_for(bytes(data))
        if answer is None:
            return []
        dp = self.dp
        parser, ofp = dp.ofproto_parser, dp.ofproto
        return [parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER,
                                    in_port=ofp.OFPP_CONTROLLER,
                                    actions=[parser.OFPActionOutput(in_port)], data=answer)]

    # --- the end ------------------------------------------------------------------------
    def disconnected(self) -> None:
        LOG.info("switch %016x disconnected", self.dpid)
        self.alive = False
        self.kick.set()                   # let the sync loop notice and exit
        if self.pending is not None:
            self.pending.errors.append((None, "switch disconnected"))
            self.pending.done.set()
