"""A bundle's messages, encoded: the one path both an eagerly checked and a
streamed bundle take (controller/switch.py decides which).

Flow and group mods come from the fast encoder (controller/wire.py),
anything it does not know (the learn action, a stale round's delete) from
Ryu.  Each step is encoded on its own, so a message that cannot be encoded
is pinned on its object.
"""
import contextlib
import gc

from controller import ofmsg, wire


def control(dp, bundle_id, kind):
    """The bundle's open, commit or discard message, with its xid, serialised."""
    msg = ofmsg.bundle_control(dp, bundle_id, kind)
    dp.set_xid(msg)
    encoded(msg)
    return msg


def steps(dp, plan, stale, generation, bundle_id):
    """(plan item, xid, bundle-add bytes, why it could not be encoded or
    None) for each step of the plan, encoded when asked for."""
    for step in ofmsg.plan_steps(plan, stale):
        xid = next_xid(dp)
        item = ofmsg.step_item(step)
        try:
            raw = step_bytes(dp, step, generation, bundle_id, xid)
            why = None if len(raw) <= ofmsg.OFP_MAX_LEN else \
                f"{len(raw)} bytes, over OpenFlow's {ofmsg.OFP_MAX_LEN}"
        except Exception as exc:   # noqa: BLE001 - it costs one object, not all
            raw, why = b"", f"{type(exc).__name__}: {exc}"
        yield item, xid, raw, why


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


def step_bytes(dp, step, generation, bundle_id, xid) -> bytes:
    """One plan step as a bundle-add message: the fast encoder's bytes, or
    Ryu's for what it does not encode (the learn action, a stale round)."""
    kind, obj, command = step
    inner = wire.flow_mod(obj, command, generation, 0) if kind == "flow" else \
        wire.group_mod(obj, command, 0) if kind == "group" else None
    if inner is None:
        msg = ofmsg.step_message(dp, step, generation)
        msg.set_xid(0)
        msg.serialize()
        inner = bytes(msg.buf)
    return wire.bundle_add(bundle_id, ofmsg.BUNDLE_FLAGS, inner, xid)


# Plans of this many steps or more are streamed (Switch._stream): below it
# the whole bundle is encoded in a few milliseconds, and checking every
# message before anything is sent keeps a failure the cheapest to handle.
STREAM_AT = 2000

_gc_pauses = 0


@contextlib.contextmanager
def gc_paused():
    """No cyclic garbage collection while a bundle is built: the compiler and
    the encoder allocate a few objects per flow, and at 10,000 services the
    collections they trigger cost more than the work (measured: 2.1 s ->
    1.0 s).  Counted, because a streamed bundle holds its pause across
    yields while another switch's sync may take and end its own."""
    global _gc_pauses
    if _gc_pauses == 0 and not gc.isenabled():
        yield                     # paused by someone else (a test, the runtime)
        return
    _gc_pauses += 1
    gc.disable()
    try:
        yield
    finally:
        _gc_pauses -= 1
        if _gc_pauses == 0:
            gc.enable()
