"""A bundle: its messages, encoded by one generator, and what is known of it
while it is in flight.  An eagerly checked bundle is that generator run to
its end before anything is sent; a streamed one is sent as it runs
(controller/switch.py decides which).

Flow and group mods come from the fast encoder (controller/wire.py),
anything it does not know (the learn action, a stale round's delete) from
Ryu.  Each step is encoded on its own, so a message that cannot be encoded
is pinned on its object.
"""
from dataclasses import dataclass, field
from typing import Optional

from controller import ofmsg, wire
from controller.fragments import Plan
from nsx_proxy import gc_pause


@dataclass
class InFlight:
    """A bundle sent (or being sent) and not answered yet."""
    deadline: float                   # its barrier must be answered by then
    want: dict                        # the desired fragments it was planned from
    plan: Plan
    keys: object                      # the fragment keys the plan covers (session)
    started: float
    # planned as a resync (everything written again)?  Decided when planned:
    # drift found while the bundle is out does not make it one.
    full: bool
    items_by_xid: dict = field(default_factory=dict)   # bundle-add xid -> plan item
    count: int = 0                    # bundle-add messages
    bad: dict = field(default_factory=dict)   # plan item -> why it cannot be encoded
    barrier_xid: Optional[int] = None
    errors: list = field(default_factory=list)   # (xid, why) the switch refused

    @property
    def discarded(self) -> bool:
        """Closed with a discard: a step could not be encoded."""
        return bool(self.bad)

    def messages(self, dp, stale, generation, bundle_id, digests=None):
        """Open, every step of the plan as a bundle-add, commit, barrier;
        each encoded when asked for.  A step that cannot be encoded is
        noted in ``bad`` with why, and the bundle is closed with a discard
        instead (the caller quarantines the objects and plans again).
        ``digests``: see step_bytes."""
        yield control(dp, bundle_id, dp.ofproto.ONF_BCT_OPEN_REQUEST)
        with gc_pause.paused():   # held across the yields: the app's send yields
            for step in ofmsg.plan_steps(self.plan, stale):
                item, xid = ofmsg.step_item(step), next_xid(dp)
                try:                # each step on its own: a failure costs its object
                    raw = step_bytes(dp, step, generation, bundle_id, xid, digests)
                    if len(raw) > ofmsg.OFP_MAX_LEN:
                        self.bad[item] = f"{len(raw)} bytes, over OpenFlow's " \
                                         f"{ofmsg.OFP_MAX_LEN}"
                except Exception as exc:   # noqa: BLE001 - it costs one object, not all
                    self.bad[item] = f"{type(exc).__name__}: {exc}"
                if not self.bad:     # after a failure: only look for more of them
                    self.items_by_xid[xid] = item
                    self.count += 1
                    yield raw
        yield control(dp, bundle_id, dp.ofproto.ONF_BCT_DISCARD_REQUEST if self.bad
                      else dp.ofproto.ONF_BCT_COMMIT_REQUEST)
        barrier = dp.ofproto_parser.OFPBarrierRequest(dp)
        dp.set_xid(barrier)
        self.barrier_xid = barrier.xid
        yield barrier


def control(dp, bundle_id, kind):
    """The bundle's open, commit or discard message, with its xid, serialised."""
    msg = ofmsg.bundle_control(dp, bundle_id, kind)
    dp.set_xid(msg)
    encoded(msg)
    return msg


def encoded(msg) -> None:
    """Serialise a control message now; a failure here is ours, not an object's."""
    why = ofmsg.encode(msg)
    if why is not None:
        raise ValueError(f"bundle control message: {why}")


class _Xid:
    """Takes the xid Ryu's Datapath.set_xid hands out (for raw messages)."""
    xid = None

    def set_xid(self, xid):
        self.xid = xid


def next_xid(dp) -> int:
    box = _Xid()
    dp.set_xid(box)
    return box.xid


def step_bytes(dp, step, generation, bundle_id, xid, digests=None) -> bytes:
    """One plan step as a bundle-add message: the fast encoder's bytes, or
    Ryu's for what it does not encode (the learn action, a stale round).
    ``digests`` (group id -> (group, hash of its bucket bytes)), if given,
    gets each group written: the drift audit compares the switch's groups
    with them (controller/drift.py), and need not encode them again."""
    kind, obj, command = step
    inner = None
    if kind == "flow":
        inner = wire.flow_mod(obj, command, generation, 0)
    elif kind == "group":
        buckets = None
        if digests is not None and command != dp.ofproto.OFPGC_DELETE:
            buckets = wire.group_buckets(obj)
            if buckets is not None:
                digests[obj.group_id] = (obj, hash(buckets))
        inner = wire.group_mod(obj, command, 0, buckets)
    if inner is None:
        msg = ofmsg.step_message(dp, step, generation)
        msg.set_xid(0)
        msg.serialize()
        inner = bytes(msg.buf)
    return wire.bundle_add(bundle_id, ofmsg.BUNDLE_FLAGS, inner, xid)


# Plans of this many steps or more are streamed (Switch._next): below it
# the whole bundle is encoded in a few milliseconds, and checking every
# message before anything is sent keeps a failure the cheapest to handle.
STREAM_AT = 2000
