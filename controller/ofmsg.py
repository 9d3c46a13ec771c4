"""Plans into ordered bundle steps, and the Ryu OpenFlow 1.3 messages the
fast encoder (wire.py) leaves to Ryu: the learn action, a stale round's
delete, bundle control, the meter, conntrack flushes.

It never sends: the Ryu app does that, so everything here can be
unit-tested against bytes.
"""
import socket
import struct

from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser
from ryu.ofproto import nicira_ext
from ryu.lib.pack_utils import msg_pack_into

from controller import cookies, pipeline
from controller import flows as F
from controller.fragments import Plan

BUNDLE_FLAGS = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
_NX_HEADER = 10          # experimenter action header + NX subtype
NX_NAT_F_SRC = 1 << 0    # OVS's nx_nat_flags; Ryu does not define them
NX_NAT_F_DST = 1 << 1
# OVS's nx_hash_fields value for symmetric_l3l4+udp (flows.MULTIPATH_FIELDS),
# which Ryu does not name; the algorithm, modulo_n, Ryu does.
NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP = 3
# OVS 2.11+'s fields for answering IPv6 neighbor solicitations in flows,
# which Ryu 4.34 does not know: name -> (OXM header, width).  Class 0x1000
# (ERICOXM_OF), fields 1 (nd_reserved: the R/S/O flags) and 2
# (nd_options_type: 1 source, 2 target link-layer address); ovs-fields(7).
ERICSSON_FIELDS = {"nd_reserved": (0x1000 << 16 | 1 << 9 | 4, 4),
                   "nd_options_type": (0x1000 << 16 | 2 << 9 | 1, 1)}


class SetRawField(parser.OFPAction):
    """set_field of a field Ryu lacks (ERICSSON_FIELDS), packed by hand."""
    cls_action_type = ofp.OFPAT_SET_FIELD
    cls_action_len = 8

    def __init__(self, name, value):
        super().__init__()
        header, width = ERICSSON_FIELDS[name]
        tlv = struct.pack("!I", header) + value.to_bytes(width, "big")
        pad = -(4 + len(tlv)) % 8
        self.type, self.len = ofp.OFPAT_SET_FIELD, 4 + len(tlv) + pad
        self._body = tlv + bytes(pad)

    def serialize(self, buf, offset):
        msg_pack_into(f"!HH{len(self._body)}s", buf, offset, self.type, self.len, self._body)


class NXActionNATPadded(parser.NXActionNAT):
    """Ryu's NXActionNAT with the missing padding.

    With both an IPv4 range and a port range Ryu writes 28 bytes but declares
    a length of 32 (rounded to 8), so OVS rejects the message with
    OFPBRC_BAD_LEN.  Pad the body to the declared length.
    """

    def serialize_body(self):
        data = super().serialize_body()
        pad = -(_NX_HEADER + len(data)) % 8
        return data + bytes(pad)


def _ct(action: F.Ct):
    nat_actions = []
    if action.nat is not None:
        nat = action.nat
        if nat.src_ip is not None:
            family = "ipv6" if ":" in nat.src_ip else "ipv4"
            nat_actions.append(NXActionNATPadded(flags=NX_NAT_F_SRC, **{
                f"range_{family}_min": nat.src_ip, f"range_{family}_max": nat.src_ip}))
        elif nat.dst_ip is None:
            nat_actions.append(NXActionNATPadded(flags=0))
        else:
            family = "ipv6" if ":" in nat.dst_ip else "ipv4"
            kwargs = {f"range_{family}_min": nat.dst_ip, f"range_{family}_max": nat.dst_ip}
            if nat.dst_port:
                kwargs.update(range_proto_min=nat.dst_port, range_proto_max=nat.dst_port)
            nat_actions.append(NXActionNATPadded(flags=NX_NAT_F_DST, **kwargs))
    if action.mark is not None:
        nat_actions.append(parser.OFPActionSetField(ct_mark=action.mark))
    return parser.NXActionCT(
        flags=nicira_ext.NX_CT_F_COMMIT if action.commit else 0,
        zone_src="", zone_ofs_nbits=action.zone,
        recirc_table=action.table if action.table is not None else nicira_ext.NX_CT_RECIRC_NONE,
        alg=0, actions=nat_actions)


# Ryu's names for the NXM fields a learn action copies or sets.
_RYU_NXM = {"eth_type": "eth_type_nxm", "ip_proto": "ip_proto_nxm",
            "ipv4_src": "ipv4_src_nxm", "ipv4_dst": "ipv4_dst_nxm",
            "ipv6_src": "ipv6_src_nxm", "ipv6_dst": "ipv6_dst_nxm"}


def _nxm(bits: F.Bits):
    return (_RYU_NXM.get(bits.field, bits.field), bits.start)


def _learn(action: F.Learn):
    specs = []
    for spec in action.specs:
        dst = spec.dst
        if isinstance(spec, F.LearnMatch):
            src = _nxm(dst) if spec.value is None else spec.value
            specs.append(parser.NXFlowSpecMatch(src=src, dst=_nxm(dst), n_bits=dst.nbits))
        else:
            src = _nxm(spec.src) if isinstance(spec.src, F.Bits) else spec.src
            specs.append(parser.NXFlowSpecLoad(src=src, dst=_nxm(dst), n_bits=dst.nbits))
    return parser.NXActionLearn(table_id=action.table, specs=specs,
                                idle_timeout=action.idle_timeout,
                                priority=action.priority, cookie=action.cookie)


def encode_action(action):
    if isinstance(action, F.Output):
        port = ofp.OFPP_IN_PORT if action.port == F.IN_PORT else action.port
        return parser.OFPActionOutput(port, 0)
    if isinstance(action, F.Group):
        return parser.OFPActionGroup(action.group_id)
    if isinstance(action, F.SetField):
        if action.field in ERICSSON_FIELDS:
            return SetRawField(action.field, action.value)
        return parser.OFPActionSetField(**{action.field: action.value})
    if isinstance(action, F.Move):
        return parser.NXActionRegMove(src_field=action.src, dst_field=action.dst,
                                      n_bits=F.FIELD_BITS[action.src])
    if isinstance(action, F.Ct):
        return _ct(action)
    if isinstance(action, F.Controller):
        return parser.OFPActionOutput(ofp.OFPP_CONTROLLER, action.max_len)
    if isinstance(action, F.Load):
        return parser.NXActionRegLoad(
            ofs_nbits=nicira_ext.ofs_nbits(action.start, action.start + action.nbits - 1),
            dst=action.field, value=action.value)
    if isinstance(action, F.Resubmit):
        # NX actions carry OpenFlow 1.0 port numbers: 0xfff8 is IN_PORT there.
        return parser.NXActionResubmitTable(in_port=0xfff8, table_id=action.table)
    if isinstance(action, F.Learn):
        return _learn(action)
    if isinstance(action, F.Multipath):
        return parser.NXActionMultipath(
            fields=NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP, basis=0,
            algorithm=nicira_ext.NX_MP_ALG_MODULO_N,
            max_link=action.links - 1, arg=0,
            ofs_nbits=nicira_ext.ofs_nbits(action.dst.start,
                                           action.dst.start + action.dst.nbits - 1),
            dst=action.dst.field)
    raise TypeError(f"cannot encode {action!r}")


def instructions(actions):
    meter, apply, goto = F.instruction_parts(actions)
    apply = [encode_action(a) for a in apply]
    out = [] if meter is None else [parser.OFPInstructionMeter(meter, ofp.OFPIT_METER)]
    if apply:
        out.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, apply))
    if goto is not None:
        out.append(parser.OFPInstructionGotoTable(goto))
    return out


def flow_mod(dp, f: F.Flow, command, generation: int):
    if command in (ofp.OFPFC_DELETE_STRICT, ofp.OFPFC_DELETE):
        insts = []
    else:
        insts = instructions(f.actions)
    return parser.OFPFlowMod(
        dp, cookie=cookies.with_generation(f.cookie, generation), cookie_mask=0,
        table_id=f.table, command=command, priority=f.priority,
        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(**dict(f.match)), instructions=insts)


def group_mod(dp, g: F.SelectGroup, command):
    buckets = [parser.OFPBucket(weight=b.weight, watch_port=ofp.OFPP_ANY,
                                watch_group=ofp.OFPG_ANY,
                                actions=[encode_action(a) for a in b.actions])
               for b in g.buckets] if command != ofp.OFPGC_DELETE else []
    return parser.OFPGroupMod(dp, command, ofp.OFPGT_SELECT, g.group_id, buckets)


def delete_generations(dp, generations):
    """Delete every flow whose cookie carries one of ``generations``."""
    return [parser.OFPFlowMod(
        dp, cookie=(gen & 0xFF) << cookies.GEN_SHIFT, cookie_mask=cookies.GEN_MASK,
        table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE,
        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=parser.OFPMatch())
        for gen in sorted(generations)]


def delete_learned(dp, cookie):
    """Delete the SessionAffinity entries a learn action stamped ``cookie``
    on, whatever round installed the learn flow (its generation bits)."""
    return parser.OFPFlowMod(
        dp, cookie=cookie & cookies.OBJECT_MASK, cookie_mask=cookies.OBJECT_MASK,
        table_id=pipeline.SESSION_AFFINITY.id, command=ofp.OFPFC_DELETE,
        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=parser.OFPMatch())


# Open vSwitch's group-mod command that adds a group or, if it exists,
# modifies it (``ovs-ofctl mod-group --may-create``), in OpenFlow 1.1+.
OFPGC_ADD_OR_MOD = 0x8000


def plan_steps(plan: Plan, stale_generations=()):
    """The plan in the order it goes out: (kind, object, command) with kind
    "group", "flow" or "round" (delete a stale generation by cookie).

    Modifies are MODIFY_STRICT, which keeps the flow's counters (the diff
    already turned cookie changes into ADDs).  ``stale_generations`` are
    deleted by cookie right after the new round's flows are in.
    """
    add = OFPGC_ADD_OR_MOD if plan.groups_may_exist else ofp.OFPGC_ADD
    out = [("group", g, add) for g in plan.group_adds]
    out += [("flow", f, ofp.OFPFC_ADD) for f in plan.flow_adds]
    out += [("flow", f, ofp.OFPFC_MODIFY_STRICT) for f in plan.flow_modifies]
    out += [("flow", f, ofp.OFPFC_DELETE_STRICT) for f in plan.flow_deletes]
    out += [("round", gen, ofp.OFPFC_DELETE) for gen in sorted(stale_generations)]
    out += [("group", g, ofp.OFPGC_MODIFY) for g in plan.group_modifies]
    out += [("group", g, ofp.OFPGC_DELETE) for g in plan.group_deletes]
    out += [("learned", cookie, ofp.OFPFC_DELETE) for cookie in plan.learned_deletes]
    return out


def step_message(dp, step, generation):
    """One step as a Ryu message (the slow path; controller/wire.py is the fast one)."""
    kind, obj, command = step
    if kind == "group":
        return group_mod(dp, obj, command)
    if kind == "flow":
        return flow_mod(dp, obj, command, generation)
    if kind == "learned":
        return delete_learned(dp, obj)
    return delete_generations(dp, [obj])[0]


def plan_messages(dp, plan: Plan, generation: int, stale_generations=()):
    """The plan as an ordered list of (Ryu message, plan item) pairs."""
    return [(step_message(dp, step, generation), step_item(step))
            for step in plan_steps(plan, stale_generations)]


def step_item(step):
    """The plan item a step writes (None: a delete by cookie, which no
    object owns)."""
    return None if step[0] in ("round", "learned") else step[1]


def bundle_control(dp, bundle_id, ctrl_type):
    """The bundle's open or commit request."""
    return parser.ONFBundleCtrlMsg(dp, bundle_id, ctrl_type, BUNDLE_FLAGS, [])


def meter_add(dp, meter_id, rate_pps, burst):
    """A packets-per-second meter that drops what exceeds ``rate_pps``."""
    return parser.OFPMeterMod(
        dp, command=ofp.OFPMC_ADD, flags=ofp.OFPMF_PKTPS | ofp.OFPMF_BURST,
        meter_id=meter_id,
        bands=[parser.OFPMeterBandDrop(rate=rate_pps, burst_size=burst)])


# NXT_CT_FLUSH (OVS 3.1+): flush conntrack entries matching partial tuples,
# over the OpenFlow channel (no ovs-appctl on the controller's host needed).
# Layout, as ovs-ofctl ct-flush sends it: nw_proto + 7 pad, then OpenFlow
# 1.5-style properties: ORIG(0) / REPLY(1) tuples nesting SRC(0) / DST(1)
# addresses (IPv6-mapped) and SRC_PORT(2) / DST_PORT(3), and ZONE(2).
NX_VENDOR_ID = 0x00002320
NXT_CT_FLUSH = 32


def _prop(ptype, value: bytes, nested=False) -> bytes:
    if nested:                 # a property of properties: 4 pad bytes after the header
        body = bytes(4) + value
    else:
        body = value
    length = 4 + len(body)
    return (struct.pack("!HH", ptype, length) + body + bytes(-length % 8))


def _tuple_props(src=None, dst=None) -> bytes:
    out = b""
    for addr_type, port_type, endpoint in ((0, 2, src), (1, 3, dst)):
        if endpoint is None:
            continue
        ip, port = endpoint
        # 16 bytes: an IPv6 address, or an IPv4 one mapped into IPv6 (::ffff:a.b.c.d)
        packed = socket.inet_pton(socket.AF_INET6, ip) if ":" in ip else \
            bytes(10) + b"\xff\xff" + socket.inet_aton(ip)
        out += _prop(addr_type, packed)
        if port:
            out += _prop(port_type, struct.pack("!H", port) + bytes(2))
    return out


def ct_flush(dp, zone, proto, orig_dst=None, reply_src=None):
    """Flush entries in ``zone`` whose original destination and reply source
    are these (ip, port) pairs (either may be None = any)."""
    body = struct.pack("!B7x", proto)
    if orig_dst is not None:
        body += _prop(0, _tuple_props(dst=orig_dst), nested=True)
    if reply_src is not None:
        body += _prop(1, _tuple_props(src=reply_src), nested=True)
    body += _prop(2, struct.pack("!H", zone) + bytes(2))
    return parser.OFPExperimenter(dp, experimenter=NX_VENDOR_ID, exp_type=NXT_CT_FLUSH,
                                  data=body)


OFP_MAX_LEN = 0xFFFF       # a message's length is a 16-bit field


def encode(msg):
    """Serialize ``msg`` now (``msg.buf``); None, or why it cannot be encoded.

    Ryu raises struct.error for a value out of its field's range, e.g. a
    message longer than 64 KiB; any exception is reported, not raised, so
    the caller can pin it on the object the message belongs to.
    """
    try:
        msg.serialize()
    except Exception as exc:   # noqa: BLE001 - whatever it is, it costs one object
        return f"{type(exc).__name__}: {exc}"
    if len(msg.buf) > OFP_MAX_LEN:
        return f"{len(msg.buf)} bytes, over OpenFlow's {OFP_MAX_LEN}"
    return None

