"""Drift: what someone changed on a switch behind the controller's back.

Two ways of seeing it, one repair:

* OVS's flow monitor (asked for in ``Switch.connected``) reports every flow
  another connection adds, deletes or modifies, as it happens.  One of this
  round's flows changed: one line naming its object, then an audit at once.
* The audit, every ``audit_period`` and at once after the monitor spoke:
  how many flows of this round the switch holds, its groups (bucket counts,
  or every ``audit_groups_every``-th time their bytes: groups have no
  monitor) and the reject meter.  Anything missing or different - or any
  change the monitor saw - rewrites the whole state in the same round
  (``SwitchSession.redo``); a missing meter is added back.

One ``DriftWatch`` per connected switch, owned by its ``Switch``, which
hands it what it compares against (the round, what is installed, how many
bundles committed) and acts on its verdicts; like the Switch, it returns
the messages to send and never sends them itself.
"""
import logging
from typing import NamedTuple, Optional

from controller import cookies, pipeline, wire

LOG = logging.getLogger("nsx_proxy")

_EVENTS = {wire.FLOW_ADDED: "added", wire.FLOW_DELETED: "deleted",
           wire.FLOW_MODIFIED: "modified"}


class Audit(NamedTuple):
    """An audit's replies, all in: what the switch holds."""
    commits: int                      # bundles committed when it was asked for
    flows: Optional[int]              # flows of this round
    groups: list                      # (group id, bucket count or bucket bytes)
    meter_missing: bool
    forced: bool                      # the flow monitor saw a change: repair anyway
    contents: bool                    # ``groups`` holds bucket bytes


class DriftWatch:
    def __init__(self, dp, groups_every=3):
        self._dp = dp
        self._audit = None                # the audit in flight (see requests)
        self._audits = 0                  # audits asked for on this connection
        self._groups_every = groups_every   # every Nth reads group contents
        self.seen = False                 # the flow monitor saw our flows change
        self._logged = False              # ... and said so (until the repair is in)
        # group id -> (group, hash of its buckets' bytes): what the contents
        # audit compares the switch's groups with.  The bundles fill it as
        # they encode group mods (bundle.step_bytes), so no audit encodes a
        # group again (the first after a start did: 60-80 ms for 10,000);
        # a hash, not the bytes: 4 MB fewer at 10,000 groups of 5 buckets.
        self.digests = {}
        self._want = None                 # (commits, installed, flows, groups)

    def repaired(self) -> None:
        """A full resync committed: every flow was written again, so what the
        monitor reported before that bundle's barrier reply is overwritten."""
        self.seen = self._logged = False

    # --- the audit -----------------------------------------------------------------
    def requests(self, generation, commits) -> list:
        """Ask the switch what it holds: how many flows of round
        ``generation`` (one aggregate reply), which groups, and the reject
        meter.  None while an audit is in flight (the Switch also asks for
        none while a bundle is)."""
        if self._audit is not None:
            return []
        dp = self._dp
        parser, ofp = dp.ofproto_parser, dp.ofproto
        ours = cookies.with_generation(0, generation)
        self._audits += 1
        # Group stats (a bucket count each) on most audits; every Nth reads
        # the groups' contents, which catches buckets changed in place (no
        # monitor reports groups) at about 60 ms for 10,000 groups (encoding
        # what was installed; Ryu skips the buckets, see ryu_compat).  A
        # forced audit repairs anyway: counts suffice.
        contents = not self.seen and self._groups_every > 0 and \
            self._audits % self._groups_every == 0
        msgs = [parser.OFPAggregateStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY,
                                                ofp.OFPG_ANY, ours, cookies.GEN_MASK,
                                                parser.OFPMatch()),
                parser.OFPGroupDescStatsRequest(dp, 0) if contents else
                parser.OFPGroupStatsRequest(dp, 0, ofp.OFPG_ALL),
                parser.OFPMeterConfigStatsRequest(dp, 0, ofp.OFPM_ALL)]
        for msg in msgs:
            dp.set_xid(msg)
        self._audit = {"xids": {m.xid for m in msgs}, "commits": commits,
                       "flows": None, "groups": [], "meters": None, "open": 3,
                       "forced": self.seen, "contents": contents}
        self.seen = False
        return msgs

    def is_reply(self, xid) -> bool:
        return self._audit is not None and xid in self._audit["xids"]

    def request_failed(self, xid=None) -> None:
        """A request of the audit was refused: that audit ends (the next asks again)."""
        self._audit = None

    def reply(self, xid, flows=None, groups=(), meters=None, more=False) -> Optional[Audit]:
        """One reply of the audit (``groups``: (id, bucket count) from group
        stats, or (id, bucket bytes) from group descriptions, as asked);
        the :class:`Audit` once all are in, else None."""
        audit = self._audit
        if flows is not None:
            audit["flows"] = flows
        audit["groups"] += list(groups)
        if meters is not None:
            audit["meters"] = (audit["meters"] or []) + list(meters)
        if more:
            return None
        audit["open"] -= 1
        if audit["open"]:
            return None
        self._audit = None
        missing = pipeline.REJECT_METER not in (audit["meters"] or ())
        if missing:
            LOG.warning("switch %016x: drift: the reject meter is gone; adding it again",
                        self._dp.id)
        return Audit(audit["commits"], audit["flows"], audit["groups"], missing,
                     audit["forced"], audit["contents"])

    def judge(self, audit: Audit, installed, generation):
        """The group ids on the switch if it differs from ``installed`` (or
        the monitor saw a change): everything is to be written again; else
        None."""
        # What was installed changes only when a bundle commits: counted once
        # per commit (fragments never share a flow key or a group id, so
        # counting them is flattening them, at a third of the cost).
        # (The dict itself is kept, not its id: a freed dict's id is reused.)
        if self._want is None or self._want[0] != audit.commits \
                or self._want[1] is not installed:
            self._want = (audit.commits, installed,
                          sum(len(frag.flows) for frag in installed.values()),
                          {g.group_id: g for frag in installed.values() for g in frag.groups})
        _, _, flows, want_groups = self._want
        have = dict(audit.groups)   # group id -> its bucket bytes or number of buckets
        if audit.contents:
            wrong = [gid for gid, g in want_groups.items()
                     if gid not in have or hash(have[gid]) != self._digest(gid, g)]
            if len(self.digests) > len(want_groups):      # groups that went
                for gid in [gid for gid in self.digests if gid not in want_groups]:
                    del self.digests[gid]     # in place: a bundle may be filling it
        else:
            wrong = [gid for gid, g in want_groups.items()
                     if have.get(gid) != len(g.buckets)]
        if audit.flows == flows and not wrong and not audit.forced:
            return None
        if not audit.forced:             # (the monitor's line said it already)
            LOG.warning("switch %016x: drift: %d flows of round %d on the switch, %d "
                        "installed; %d of %d groups missing or with other buckets%s; "
                        "reinstalling everything", self._dp.id, audit.flows, generation,
                        flows, len(wrong), len(want_groups),
                        f" (first: group {min(wrong)})" if wrong else "")
        return set(have)

    def _digest(self, gid, group) -> int:
        """The hash of the group's bucket bytes: from the bundle that wrote
        it, else encoded once per group object (installed groups are
        immutable)."""
        cached = self.digests.get(gid)
        if cached is None or cached[0] is not group:
            cached = self.digests[gid] = (group, hash(wire.group_buckets(group)))
        return cached[1]

    # --- the flow monitor ------------------------------------------------------------
    def flow_updates(self, data: bytes, installed, generation) -> bool:
        """Flows that someone else added, deleted or modified; True when one
        of round ``generation`` changed: one line naming it, and the Switch
        audits now, whose reply reinstalls everything in the same round (an
        ADD over a changed flow restores it; every group is written with
        ADD_OR_MOD).  Flows that are not ours are logged and left alone: the
        bridge may carry an operator's own flows."""
        dpid = self._dp.id
        ours, foreign = [], []
        for event, table, priority, cookie in wire.flow_updates(data):
            if cookie is None:
                continue
            if cookies.generation_of(cookie) == generation and \
                    cookies.kind_of(cookie) in cookies.KIND_NAMES:
                ours.append((event, table, priority, cookie))
            elif event == wire.FLOW_ADDED:
                foreign.append((table, priority, cookie))
        if foreign:
            table, priority, cookie = foreign[0]
            LOG.warning("switch %016x: %d flow(s) not ours added behind our back (first: "
                        "table %d priority %d cookie %#x); left alone", dpid,
                        len(foreign), table, priority, cookie)
        if not ours:
            return False
        if not self._logged:              # one line per repair, not per update
            event, table, priority, cookie = ours[0]
            LOG.warning("switch %016x: drift: %d of our flows %s behind our back "
                        "(first: table %d priority %d, %s); reinstalling", dpid,
                        len(ours),
                        "/".join(sorted({_EVENTS.get(e, str(e)) for e, _, _, _ in ours})),
                        table, priority, owner_of(installed, cookie))
            self._logged = True
        self.seen = True
        return True

    def monitor_paused(self, resumed: bool) -> bool:
        """OVS stops sending updates while we lag behind and says so; what
        changed in between is unknown, so an audit follows the resume (True)."""
        if not resumed:
            LOG.warning("switch %016x: flow monitor paused by the switch (we lag "
                        "behind); auditing once it resumes", self._dp.id)
            return False
        self.seen = True
        return True


def owner_of(installed, cookie) -> str:
    """The object a cookie of ours belongs to (a fragment key), for a log line."""
    base = cookie & cookies.OBJECT_MASK
    for key, frag in installed.items():
        if any(f.cookie & cookies.OBJECT_MASK == base for f in frag.flows):
            return f"{key}"
    return f"cookie {cookie:#x}"
