"""Flow and group mods straight to OpenFlow 1.3 bytes, without Ryu's objects.

Building Ryu message objects and serialising them with its generic
encoder cost about 90 us a message, most of a cold sync at 10,000 services.
The messages this proxy sends have a small, fixed repertoire, so they are
packed here with ``struct`` instead.  The result is byte for byte what Ryu
produces (tests/test_wire.py compares every flow and group of the golden,
fuzzed and large states): OXM headers, value widths and the field order are
taken from Ryu itself at import, so the two cannot drift apart.  An action
this module does not know (the affinity ``learn``) makes ``flow_mod`` return
None, and the caller falls back to Ryu for that message.

Why by hand: no maintained library encodes OpenFlow 1.3 with the Nicira
extensions faster than Ryu does (Ryu is the library; this is its fast path
for our messages only).
"""
import socket
import struct
from typing import Optional

from ryu.ofproto import nicira_ext
from ryu.ofproto import ofproto_v1_3 as ofp

from controller import cookies
from controller import flows as F
from controller.ofmsg import (ERICSSON_FIELDS, NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP, NX_NAT_F_DST,
                             NX_NAT_F_SRC)

_NX_VENDOR = 0x00002320
_ONF_VENDOR = 0x4F4E4600
_ONF_BUNDLE_ADD = 2301


# --- OXM fields ------------------------------------------------------------------

_SAMPLES = {"in_port": 1, "eth_src": "00:00:00:00:00:01", "eth_dst": "00:00:00:00:00:01",
            "eth_type": 1, "ip_proto": 1, "ipv4_src": "0.0.0.1", "ipv4_dst": "0.0.0.1",
            "tcp_src": 1, "tcp_dst": 1, "udp_src": 1, "udp_dst": 1, "sctp_src": 1,
            "sctp_dst": 1, "arp_op": 1, "arp_spa": "0.0.0.1", "arp_tpa": "0.0.0.1",
            "arp_sha": "00:00:00:00:00:01", "arp_tha": "00:00:00:00:00:01",
            "ct_state": 1, "ct_mark": 1, "reg0": 1, "reg1": 1, "reg2": 1, "reg3": 1,
            "reg4": 1, "reg5": 1,
            "tun_ipv4_dst": "0.0.0.1", "ipv6_src": "::1", "ipv6_dst": "::1",
            "icmpv6_type": 1, "icmpv6_code": 1, "ipv6_nd_target": "::1",
            "ipv6_nd_tll": "00:00:00:00:00:01"}


def _oxm_table():
    """name -> (Ryu's sort key, header, masked header, width, kind), from Ryu."""
    table = {}
    for name, sample in _SAMPLES.items():
        n, value, _ = ofp.oxm_from_user(name, sample)
        plain = bytearray()
        ofp.oxm_serialize(n, value, None, plain, 0)
        masked = bytearray()
        ofp.oxm_serialize(n, value, value, masked, 0)
        width = len(value)
        kind = "int" if not isinstance(sample, str) else "ip6" if "::" in sample else \
            "mac" if ":" in sample else "ip"
        table[name] = (n[0] if isinstance(n, tuple) else n,
                       bytes(plain[:len(plain) - width]),
                       bytes(masked[:len(masked) - 2 * width]), width, kind)
    return table


_OXM = _oxm_table()
# Two fields Ryu does not know, written only (the neighbor advertisement's
# flags and its option's type), under OVS's own OXM class for them.
_OXM.update({name: (1 << 40, struct.pack("!I", header), None, width, "int")
             for name, (header, width) in ERICSSON_FIELDS.items()})


def _ip6(value: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, value)


def _value(kind, width, value) -> bytes:
    if kind == "int":
        return value.to_bytes(width, "big")
    if kind == "ip":
        return socket.inet_aton(value)
    if kind == "ip6":
        return _ip6(value)
    return bytes.fromhex(value.replace(":", ""))


def _oxm(name, value) -> tuple:
    key, plain, masked, width, kind = _OXM[name]
    if isinstance(value, tuple):
        val, mask = value
        if kind in ("ip", "ip6"):             # Ryu normalises the value under the mask
            val, mask = _value(kind, width, val), _value(kind, width, mask)
            return key, masked + bytes(v & m for v, m in zip(val, mask)) + mask
        elif kind == "int":
            val &= mask
        return key, masked + _value(kind, width, val) + _value(kind, width, mask)
    return key, plain + _value(kind, width, value)


def more(msg) -> bool:
    """A multipart reply (as Ryu parsed it) that more parts follow."""
    return bool(msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE)


def _pad8(data: bytes) -> bytes:
    return data + bytes(-len(data) % 8)


# Bytes that repeat from flow to flow, in small caches emptied when full:
# most flows share their eth_type, ip_proto and port pairs (the same pair
# objects, from the compiler), and 20,000 of 40,000 flows at 10,000 services
# one action list (a VIP's reject).  A cold sync's encoding: 0.49 -> 0.43 s
# (bench.start).  Small: 4,096 entries held 1.35 MB after a sync, no faster.
_CACHE_MAX = 256
_OXM_BYTES = {}          # (field, value) -> _oxm's result
_INSTRUCTION_BYTES = {}  # id(actions) -> (actions, their instructions' bytes)


def _oxm_pair(pair) -> tuple:
    hit = _OXM_BYTES.get(pair)
    if hit is None:
        if len(_OXM_BYTES) >= _CACHE_MAX:
            _OXM_BYTES.clear()
        hit = _OXM_BYTES[pair] = _oxm(*pair)
    return hit


def match(fields) -> bytes:
    """An ofp_match with OXM fields, in Ryu's order, padded to 8 bytes."""
    # (Ryu's sort key, bytes) pairs: the keys are unique, so plain sorting
    # orders by key
    body = b"".join(tlv for _, tlv in sorted(map(_oxm_pair, fields)))
    return _pad8(struct.pack("!HH", ofp.OFPMT_OXM, 4 + len(body)) + body)


# --- actions -----------------------------------------------------------------------
# Each action type has its own encoder, looked up by type (one dict lookup
# instead of a chain of isinstance checks: 160,000 actions at 10,000
# services), with the common shapes packed by one precompiled Struct.

def _nx(subtype, body: bytes) -> bytes:
    length = 10 + len(body)
    return _pad8(struct.pack("!HHIH", ofp.OFPAT_EXPERIMENTER, length + (-length % 8),
                             _NX_VENDOR, subtype) + body)


def _set_field(name, value) -> bytes:
    tlv = _oxm(name, value)[1]
    pad = -(4 + len(tlv)) % 8
    return struct.pack("!HH", ofp.OFPAT_SET_FIELD, 4 + len(tlv) + pad) + tlv + bytes(pad)


_IPV4_RANGE = (nicira_ext.NX_NAT_RANGE_IPV4_MIN, nicira_ext.NX_NAT_RANGE_IPV4_MAX)
_IPV6_RANGE = (nicira_ext.NX_NAT_RANGE_IPV6_MIN, nicira_ext.NX_NAT_RANGE_IPV6_MAX)
_PORT_RANGE = (nicira_ext.NX_NAT_RANGE_PROTO_MIN, nicira_ext.NX_NAT_RANGE_PROTO_MAX)
# ct(nat(dst=IP:PORT)), every endpoint bucket's action: NX header, flags,
# present ranges, the address twice (min, max), the port twice, padding to 32
_NAT_DST_PORT = struct.Struct("!HHIH2xHH4s4sHH4x")
_NAT_DST_PORT_PRESENT = sum(_IPV4_RANGE) + sum(_PORT_RANGE)
# ... and an IPv6 endpoint's: 16-byte addresses, padded to 56
_NAT_DST_PORT6 = struct.Struct("!HHIH2xHH16s16sHH4x")
_NAT_DST_PORT6_PRESENT = sum(_IPV6_RANGE) + sum(_PORT_RANGE)


def _nat(nat: F.Nat) -> bytes:
    if nat.src_ip is None and nat.dst_ip is not None and nat.dst_port:
        if ":" in nat.dst_ip:
            ip = _ip6(nat.dst_ip)
            return _NAT_DST_PORT6.pack(ofp.OFPAT_EXPERIMENTER, 56, _NX_VENDOR,
                                       nicira_ext.NXAST_NAT, NX_NAT_F_DST,
                                       _NAT_DST_PORT6_PRESENT, ip, ip, nat.dst_port,
                                       nat.dst_port)
        ip = socket.inet_aton(nat.dst_ip)
        return _NAT_DST_PORT.pack(ofp.OFPAT_EXPERIMENTER, 32, _NX_VENDOR,
                                  nicira_ext.NXAST_NAT, NX_NAT_F_DST, _NAT_DST_PORT_PRESENT,
                                  ip, ip, nat.dst_port, nat.dst_port)
    # the rest has no port: an SNAT, a DNAT to an address alone, or (no
    # address) undoing a connection's NAT; the address range present is
    # min and max of the address's family
    ip = nat.src_ip if nat.src_ip is not None else nat.dst_ip
    flags = 0 if ip is None else NX_NAT_F_SRC if nat.src_ip is not None else NX_NAT_F_DST
    if ip is None:
        ranges = []
    elif ":" in ip:
        ranges = [(bit, _ip6(ip)) for bit in _IPV6_RANGE]
    else:
        # inet_aton: the addresses were validated by the translator already,
        # and ipaddress's parser was a third of the encoder's time
        ranges = [(bit, socket.inet_aton(ip)) for bit in _IPV4_RANGE]
    body = struct.pack("!2xHH", flags, sum(bit for bit, _ in ranges))
    return _nx(nicira_ext.NXAST_NAT, body + b"".join(value for _, value in ranges))


_CT = struct.Struct("!HHIHHIHB3xH")


def _ct(ct: F.Ct) -> bytes:
    return _ct_bytes(ct.zone, ct.table, ct.commit,
                     b"" if ct.nat is None else _nat(ct.nat), ct.mark)


def _ct_bytes(zone, table, commit, nat: bytes, mark) -> bytes:
    nested = nat if mark is None else nat + _set_field("ct_mark", mark)
    table = table if table is not None else nicira_ext.NX_CT_RECIRC_NONE
    # the ct header is 24 bytes and the nested actions are padded already
    return _CT.pack(ofp.OFPAT_EXPERIMENTER, 24 + len(nested), _NX_VENDOR, nicira_ext.NXAST_CT,
                    nicira_ext.NX_CT_F_COMMIT if commit else 0, 0, zone, table,
                    0) + nested


def _dnat_bucket_action(b: F.DnatBucket) -> bytes:
    """A DnatBucket's one action, without building its Ct and Nat."""
    return _ct_bytes(b.zone, b.table, True, _nat(F.Nat(b.ip, b.port)), b.mark)


def _output(a: F.Output) -> bytes:
    port = ofp.OFPP_IN_PORT if a.port == F.IN_PORT else a.port
    return struct.pack("!HHIH6x", ofp.OFPAT_OUTPUT, 16, port, 0)


def _load(a: F.Load) -> bytes:
    return _nx(nicira_ext.NXAST_REG_LOAD, struct.pack(
        "!H4sQ", nicira_ext.ofs_nbits(a.start, a.start + a.nbits - 1), _OXM[a.field][1],
        a.value))


def _move(a: F.Move) -> bytes:
    return _nx(nicira_ext.NXAST_REG_MOVE, struct.pack("!HHH", F.FIELD_BITS[a.src], 0, 0)
               + _OXM[a.src][1] + _OXM[a.dst][1])


def _multipath(a: F.Multipath) -> bytes:
    end = a.dst.start + a.dst.nbits - 1
    return _nx(nicira_ext.NXAST_MULTIPATH, struct.pack(
        "!HH2xHHI2xH4s", NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP, 0, nicira_ext.NX_MP_ALG_MODULO_N,
        a.links - 1, 0,
        nicira_ext.ofs_nbits(a.dst.start, end), _OXM[a.dst.field][1]))


_ACTIONS = {
    F.Output: _output,
    F.Group: lambda a: struct.pack("!HHI", ofp.OFPAT_GROUP, 8, a.group_id),
    F.SetField: lambda a: _set_field(a.field, a.value),
    F.Ct: _ct,
    F.Controller: lambda a: struct.pack("!HHIH6x", ofp.OFPAT_OUTPUT, 16,
                                        ofp.OFPP_CONTROLLER, a.max_len),
    F.Load: _load,
    F.Resubmit: lambda a: _nx(nicira_ext.NXAST_RESUBMIT_TABLE,
                              struct.pack("!HB3x", 0xfff8, a.table)),
    F.Move: _move,
    F.Multipath: _multipath,
}


def action(a) -> Optional[bytes]:
    """One action's bytes, or None for one this module does not encode."""
    encode = _ACTIONS.get(type(a))
    return None if encode is None else encode(a)


def _instructions(actions) -> Optional[bytes]:
    """An action list's instructions (None: an action not known here); the
    cache keeps the list itself, so its id cannot name another meanwhile."""
    hit = _INSTRUCTION_BYTES.get(id(actions))
    if hit is None or hit[0] is not actions:
        if len(_INSTRUCTION_BYTES) >= _CACHE_MAX:
            _INSTRUCTION_BYTES.clear()
        hit = _INSTRUCTION_BYTES[id(actions)] = (actions, _instructions_of(actions))
    return hit[1]


def _instructions_of(actions) -> Optional[bytes]:
    meter, actions, goto = F.instruction_parts(actions)
    apply = [action(a) for a in actions]
    if None in apply:
        return None
    out = b"" if meter is None else struct.pack("!HHI", ofp.OFPIT_METER, 8, meter)
    if apply:
        body = b"".join(apply)
        out += struct.pack("!HH4x", ofp.OFPIT_APPLY_ACTIONS, 8 + len(body)) + body
    if goto is not None:
        out += struct.pack("!HHB3x", ofp.OFPIT_GOTO_TABLE, 8, goto)
    return out


# --- messages ----------------------------------------------------------------------

def _header(msg_type, body: bytes, xid: int) -> bytes:
    return struct.pack("!BBHI", ofp.OFP_VERSION, msg_type, 8 + len(body), xid) + body


def flow_mod(f: F.Flow, command: int, generation: int, xid: int) -> Optional[bytes]:
    """OFPT_FLOW_MOD for ``f`` (as ofmsg.flow_mod builds it), or None."""
    if command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT):
        insts = b""
    else:
        insts = _instructions(f.actions)
        if insts is None:
            return None
    body = struct.pack("!QQBBHHHIIIH2x", cookies.with_generation(f.cookie, generation), 0,
                       f.table, command, 0, 0, f.priority, ofp.OFP_NO_BUFFER,
                       ofp.OFPP_ANY, ofp.OFPG_ANY, 0) + match(f.match) + insts
    return _header(ofp.OFPT_FLOW_MOD, body, xid)


def group_buckets(g: F.SelectGroup) -> Optional[bytes]:
    """The group's buckets as a group mod carries them - and as OVS reports
    them back in a group description (checked on OVS 3.1 for every bucket
    shape this proxy builds) - or None for an action this module lacks."""
    buckets = []
    for b in g.buckets:
        if type(b) is F.DnatBucket:
            body = _dnat_bucket_action(b)
        else:
            acts = [action(a) for a in b.actions]
            if None in acts:
                return None
            body = b"".join(acts)
        buckets.append(struct.pack("!HHII4x", 16 + len(body), b.weight, ofp.OFPP_ANY,
                                   ofp.OFPG_ANY) + body)
    return b"".join(buckets)


def group_mod(g: F.SelectGroup, command: int, xid: int,
              buckets: Optional[bytes] = None) -> Optional[bytes]:
    """OFPT_GROUP_MOD for ``g`` (as ofmsg.group_mod builds it), or None;
    ``buckets``: ``group_buckets(g)``, when the caller has it already."""
    if command == ofp.OFPGC_DELETE:
        buckets = b""
    elif buckets is None:
        buckets = group_buckets(g)
    if buckets is None:
        return None
    body = struct.pack("!HBxI", command, ofp.OFPGT_SELECT, g.group_id) + buckets
    return _header(ofp.OFPT_GROUP_MOD, body, xid)


def group_descs(reply: bytes):
    """(group id, bucket bytes) of each group in one raw group description
    reply.  Read from the bytes: Ryu's parse of 10,000 groups' NAT actions
    costs half a second, this walk 3 ms, and the bytes compare directly
    with ``group_buckets``."""
    out, offset = [], 16                  # OpenFlow header, multipart header
    while offset + 8 <= len(reply):
        length, group_id = struct.unpack_from("!H2xI", reply, offset)
        if length < 8:
            break
        out.append((group_id, reply[offset + 8:offset + length]))
        offset += length
    return out


def bundle_add(bundle_id: int, flags: int, inner: bytes, xid: int) -> bytes:
    """ONF bundle add message carrying ``inner`` (whose xid becomes ``xid``)."""
    inner = inner[:4] + struct.pack("!I", xid) + inner[8:]
    body = struct.pack("!IIIHH", _ONF_VENDOR, _ONF_BUNDLE_ADD, bundle_id, 0, flags) + inner
    return _header(ofp.OFPT_EXPERIMENTER, body, xid)


# --- flow monitor (OVS's ONF extension for OpenFlow 1.3) ---------------------------
# Ryu 4.34 has the request's classes but leaves the match out when it is
# empty, which OVS refuses (OFPBMC_BAD_LEN), and it does not parse the
# updates; both are small fixed layouts, packed here.

ONF_FLOW_MONITOR = 1870           # ONFMP_FLOW_MONITOR: the request and its updates
ONF_FLOW_MONITOR_PAUSED = 1871    # the switch stopped sending updates (we lag)
ONF_FLOW_MONITOR_RESUMED = 1872   # ... and started again: what happened between is lost
FLOW_ADDED, FLOW_DELETED, FLOW_MODIFIED = 0, 1, 2     # NXFME_* / ONFFME_* events
_EMPTY_MATCH = struct.pack("!HH4x", ofp.OFPMT_OXM, 4)
_MONITOR = struct.Struct("!IHHIB3x")     # id, flags, match length, out port, table
_UPDATE = struct.Struct("!HHHHHHHBxQ")   # length, event, reason, priority, idle and
                                         # hard timeouts, match length, table, cookie


def flow_monitor_request(tables, xid: int) -> bytes:
    """A multipart request that asks the switch to report every flow added,
    deleted or modified in ``tables`` by anyone but this connection (one
    monitor per table, its id the table number; no actions in the updates)."""
    flags = ofp.ONFFMF_ADD | ofp.ONFFMF_DELETE | ofp.ONFFMF_MODIFY
    body = b"".join(_MONITOR.pack(int(t), flags, len(_EMPTY_MATCH), ofp.OFPP_ANY, int(t))
                    + _EMPTY_MATCH for t in tables)
    head = struct.pack("!HH4xII", ofp.OFPMP_EXPERIMENTER, 0, _ONF_VENDOR, ONF_FLOW_MONITOR)
    return _header(ofp.OFPT_MULTIPART_REQUEST, head + body, xid)


def flow_updates(data: bytes):
    """(event, table, priority, cookie) of each update in a flow monitor
    reply's experimenter data; an update of another kind (ABBREV, PAUSED
    markers) has event > 2."""
    out, offset = [], 0
    while offset + _UPDATE.size <= len(data):
        length, event, _, priority, _, _, _, table, cookie = _UPDATE.unpack_from(data, offset)
        if length < 8:
            break                          # malformed: stop rather than loop
        if length >= _UPDATE.size:
            out.append((event, table, priority, cookie))
        else:
            out.append((event, None, None, None))
        offset += length
    return out
