"""Flows and groups as plain values, and their ovs-ofctl-style text.

The compiler emits these, the diff compares them, the fake switch executes
them and ofmsg.py encodes them for Ryu.  Keeping them free of Ryu objects
keeps the logic testable and the golden files readable.

Match fields use Ryu's OXM names (``ipv4_dst``, ``tcp_dst``, ``ct_state``);
a masked field is a ``(value, mask)`` pair.  Matches are stored as sorted
tuples so equal flows compare and hash equal.
"""
import ipaddress
from dataclasses import dataclass, field
from typing import Optional, Tuple

IN_PORT = "IN_PORT"        # output back where the packet came from

# conntrack state bits (OVS's NXM_NX_CT_STATE layout)
CT_NEW = 0x01
CT_EST = 0x02
CT_REL = 0x04
CT_RPL = 0x08
CT_INV = 0x10
CT_TRK = 0x20

ETH_IP = 0x0800
ETH_ARP = 0x0806
ETH_IPV6 = 0x86dd
# The protocol numbers, once: Kubernetes' names -> IP protocol numbers, and
# what follows from them (ovs-ofctl's names, the L4 port match fields).
IP_PROTO = {"TCP": 6, "UDP": 17, "SCTP": 132, "ICMP": 1}
ICMPV6 = 58
ICMPV6_NS, ICMPV6_NA = 135, 136     # Neighbor Solicitation / Advertisement
PROTO_NAMES = {num: name.lower() for name, num in IP_PROTO.items()}
L4_DST_FIELD = {num: f"{PROTO_NAMES[num]}_dst" for num in (6, 17, 132)}
L4_SRC_FIELD = {num: f"{PROTO_NAMES[num]}_src" for num in (6, 17, 132)}


# --- actions ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Output:
    port: object                       # an OpenFlow port number or IN_PORT


@dataclass(frozen=True, slots=True)
class GotoTable:
    table: int


@dataclass(frozen=True, slots=True)
class Group:
    group_id: int


@dataclass(frozen=True, slots=True)
class SetField:
    field: str
    value: object


@dataclass(frozen=True, slots=True)
class Move:
    """Copy a whole field into another (NXActionRegMove)."""
    src: str
    dst: str


@dataclass(frozen=True, slots=True)
class Nat:
    """ct's nat(): DNAT to dst, SNAT to src, or (neither) restore existing NAT."""
    dst_ip: Optional[str] = None
    dst_port: Optional[int] = None
    src_ip: Optional[str] = None


@dataclass(frozen=True, slots=True)
class Ct:
    zone: int
    table: Optional[int] = None        # recirculate into this table
    commit: bool = False
    nat: Optional[Nat] = None
    mark: Optional[int] = None         # with commit: set the connection's ct_mark


@dataclass(frozen=True, slots=True)
class Load:
    """Load a constant into bits [start, start+nbits) of a register (NXActionRegLoad)."""
    field: str
    value: int
    start: int = 0
    nbits: int = 32


@dataclass(frozen=True, slots=True)
class Resubmit:
    """Run another table's matching flow, then carry on with the next action."""
    table: int


@dataclass(frozen=True, slots=True)
class Bits:
    """Bits [start, start + nbits) of a field: a register or a match field."""
    field: str
    start: int = 0
    nbits: int = 32

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.nbits == FIELD_BITS.get(self.field, 32)

    def match(self, value: int) -> dict:
        """A match on these bits having ``value`` (masked unless the whole field)."""
        if self.whole:
            return {self.field: value}
        mask = ((1 << self.nbits) - 1) << self.start
        return {self.field: (value << self.start, mask)}


# widths of the fields a learn action copies or a move moves; registers are 32 bits
FIELD_BITS = {"eth_type": 16, "ip_proto": 8, "ipv4_src": 32, "ipv4_dst": 32,
              "eth_src": 48, "eth_dst": 48, "arp_sha": 48, "arp_tha": 48,
              "arp_spa": 32, "arp_tpa": 32, "ipv6_src": 128, "ipv6_dst": 128,
              "ipv6_nd_tll": 48}


@dataclass(frozen=True, slots=True)
class LearnMatch:
    """The learned flow matches ``dst`` on ``value``, or (None) on whatever
    the packet that ran the learn action had there."""
    dst: Bits
    value: Optional[int] = None


@dataclass(frozen=True, slots=True)
class LearnLoad:
    """The learned flow loads ``src`` (bits of the learning packet, or a
    constant) into ``dst``."""
    dst: Bits
    src: object                        # Bits or int


@dataclass(frozen=True, slots=True)
class Learn:
    """NXAST_LEARN: add a flow to ``table`` built from ``specs`` and the
    packet at hand; forgotten after ``idle_timeout`` seconds without use.
    The session-affinity layout is declared once, in pipeline.py."""
    table: int
    idle_timeout: int
    priority: int
    cookie: int
    specs: tuple                       # LearnMatch / LearnLoad, in order


@dataclass(frozen=True, slots=True)
class Multipath:
    """NXAST_MULTIPATH: load ``dst`` with a number in [0, links), a hash of
    the packet's addresses, protocol and L4 ports - UDP's too
    (``symmetric_l3l4+udp``) - modulo ``links``.  Each new UDP flow of a
    client (a new source port) so picks its own endpoint; OpenFlow 1.3
    select groups hash UDP on addresses only."""
    links: int
    dst: Bits


@dataclass(frozen=True, slots=True)
class Controller:
    """Send the packet (its first ``max_len`` bytes) to the controller."""
    max_len: int = 128


@dataclass(frozen=True, slots=True)
class Meter:
    """Pass the packet through a meter first (an OpenFlow 1.3 instruction)."""
    meter_id: int


def instruction_parts(actions):
    """(meter id or None, apply actions, goto table or None): how a flow's
    actions map onto OpenFlow 1.3 instructions (meter first, then the apply
    actions, then the goto); both encoders use it."""
    apply, goto, meter = [], None, None
    for action in actions:
        if isinstance(action, GotoTable):
            goto = action.table
        elif isinstance(action, Meter):
            meter = action.meter_id
        else:
            apply.append(action)
    return meter, apply, goto


# How Multipath hashes and picks, as ovs-ofctl names them (the encoders use
# the matching numbers): modulo_n spreads evenly; a pool that changes
# reshuffles new flows only, as conntrack keeps each existing one where it is.
MULTIPATH_FIELDS = "symmetric_l3l4+udp"
MULTIPATH_ALGORITHM = "modulo_n"


# --- flows and groups ------------------------------------------------------

FlowKey = Tuple[int, int, tuple]       # (table, priority, match)


@dataclass(frozen=True, slots=True)
class Flow:
    table: int
    priority: int
    match: tuple                       # sorted ((field, value), ...)
    actions: tuple                     # empty means drop
    cookie: int = 0                    # kind + object; generation added on the wire

    @property
    def key(self) -> FlowKey:
        return (self.table, self.priority, self.match)


def flow(table, priority, actions=(), cookie=0, **match) -> Flow:
    """Build a Flow with keyword match fields, e.g. ``flow(0, 10, eth_type=ETH_IP)``."""
    return Flow(table=int(table), priority=priority,
                match=tuple(sorted(match.items())), actions=tuple(actions),
                cookie=cookie)


@dataclass(frozen=True, slots=True)
class Bucket:
    actions: tuple
    weight: int = 100


@dataclass(frozen=True, slots=True)
class DnatBucket:
    """A pool member, ``Ct(zone, table, commit=True, nat=Nat(ip, port), mark)``
    built when read: one object, not four (10,000 services: 7 MB less)."""
    zone: int
    table: int
    ip: str
    port: int
    mark: Optional[int] = None
    weight: int = 100

    @property
    def actions(self) -> tuple:
        return (Ct(zone=self.zone, table=self.table, commit=True,
                   nat=Nat(self.ip, self.port), mark=self.mark),)


@dataclass(frozen=True, slots=True)
class SelectGroup:
    group_id: int
    buckets: tuple = field(default=())   # of Bucket or DnatBucket


# --- text, in the spirit of ovs-ofctl dump-flows / dump-groups -------------

_FIELD_NAMES = {
    "eth_src": "dl_src", "eth_dst": "dl_dst", "ipv4_src": "nw_src",
    "ipv4_dst": "nw_dst", "tcp_dst": "tp_dst", "udp_dst": "tp_dst",
    "sctp_dst": "tp_dst", "tcp_src": "tp_src", "udp_src": "tp_src",
    "icmpv6_type": "icmp_type", "icmpv6_code": "icmp_code", "ipv6_nd_target": "nd_target",
}


def _ct_state_text(value, mask) -> str:
    names = [(CT_NEW, "new"), (CT_EST, "est"), (CT_REL, "rel"),
             (CT_RPL, "rpl"), (CT_INV, "inv"), (CT_TRK, "trk")]
    return "".join(("+" if value & bit else "-") + name
                   for bit, name in names if mask & bit)


def _value_text(name, value) -> str:
    if name.startswith("reg") and isinstance(value, int):
        return f"{value:#x}"
    if isinstance(value, tuple):
        val, mask = value
        if name == "ct_state":
            return _ct_state_text(val, mask)
        if name.startswith(("ipv4", "ipv6")):          # masks are prefixes here
            prefix = bin(int(ipaddress.ip_address(mask))).count("1")
            return str(ipaddress.ip_network(f"{val}/{prefix}"))
        if name.startswith("reg") and mask == 0xFFFF:
            return f"{val:#x}/0xffff"
        return f"{val:#x}/{mask:#x}"
    return str(value)


def match_text(match) -> str:
    fields = dict(match)
    parts = []
    eth_type = fields.pop("eth_type", None)
    proto = fields.pop("ip_proto", None)
    if eth_type == ETH_ARP:
        parts.append("arp")
    elif eth_type == ETH_IP:
        parts.append(PROTO_NAMES.get(proto, "ip") if proto is not None else "ip")
        if proto is not None and proto not in PROTO_NAMES:
            parts.append(f"nw_proto={proto}")
    elif eth_type == ETH_IPV6:             # as ovs-ofctl: tcp6, udp6, icmp6, ipv6
        parts.append("icmp6" if proto == ICMPV6 else
                     PROTO_NAMES[proto] + "6" if proto in PROTO_NAMES and proto != 1
                     else "ipv6")
        if proto is not None and proto not in PROTO_NAMES and proto != ICMPV6:
            parts.append(f"nw_proto={proto}")
    for name, value in fields.items():
        parts.append(f"{_FIELD_NAMES.get(name, name)}={_value_text(name, value)}")
    return ",".join(parts)


# Ryu's OXM names where ovs-ofctl prints another one.
_SET_FIELD_NAMES = {"tun_ipv4_dst": "tun_dst", "ipv6_nd_tll": "nd_tll"}


def action_text(action) -> str:
    if isinstance(action, Output):
        return "IN_PORT" if action.port == IN_PORT else f"output:{action.port}"
    if isinstance(action, GotoTable):
        return f"goto_table:{action.table}"
    if isinstance(action, Controller):
        return f"CONTROLLER:{action.max_len}"
    if isinstance(action, Load):
        bits = "[]" if (action.start, action.nbits) == (0, 32) else \
            f"[{action.start}..{action.start + action.nbits - 1}]"
        return f"load:{action.value:#x}->NXM_NX_{action.field.upper()}{bits}"
    if isinstance(action, Resubmit):
        return f"resubmit(,{action.table})"
    if isinstance(action, Learn):
        head = (f"table={action.table},idle_timeout={action.idle_timeout},"
                f"priority={action.priority},cookie={action.cookie:#x}")
        return f"learn({','.join([head] + [_learn_spec_text(s) for s in action.specs])})"
    if isinstance(action, Meter):
        return f"meter:{action.meter_id}"
    if isinstance(action, Multipath):
        return (f"multipath({MULTIPATH_FIELDS},0,{MULTIPATH_ALGORITHM},{action.links},0,"
                f"{_bits_text(action.dst)})")
    if isinstance(action, Group):
        return f"group:{action.group_id}"
    if isinstance(action, SetField):
        return f"set_field:{action.value}->{_SET_FIELD_NAMES.get(action.field, action.field)}"
    if isinstance(action, Move):
        return f"move:{action.src}->{action.dst}"
    if isinstance(action, Ct):
        args = ["commit"] if action.commit else []
        if action.table is not None:
            args.append(f"table={action.table}")
        args.append(f"zone={action.zone}")
        if action.nat is not None:
            nat = action.nat
            if nat.dst_ip is not None:
                ip = f"[{nat.dst_ip}]" if ":" in nat.dst_ip and nat.dst_port else nat.dst_ip
                dst = ip + (f":{nat.dst_port}" if nat.dst_port else "")
                args.append(f"nat(dst={dst})")
            elif nat.src_ip is not None:
                args.append(f"nat(src={nat.src_ip})")
            else:
                args.append("nat")
        if action.mark is not None:
            args.append(f"exec(set_field:{action.mark:#x}->ct_mark)")
        return f"ct({','.join(args)})"
    raise TypeError(f"unknown action {action!r}")


_NXM_NAMES = {"ipv4_src": "NXM_OF_IP_SRC", "ipv4_dst": "NXM_OF_IP_DST",
              "ipv6_src": "NXM_NX_IPV6_SRC", "ipv6_dst": "NXM_NX_IPV6_DST",
              **{f"reg{i}": f"NXM_NX_REG{i}" for i in range(8)}}
_LEARN_VALUE_TEXT = {"eth_type": "eth_type={:#x}", "ip_proto": "nw_proto={}"}


def _bits_text(bits: Bits) -> str:
    name = _NXM_NAMES[bits.field]
    if bits.whole:
        return f"{name}[]"
    if bits.nbits == 1:
        return f"{name}[{bits.start}]"
    return f"{name}[{bits.start}..{bits.start + bits.nbits - 1}]"


def _learn_spec_text(spec) -> str:
    """As ovs-ofctl prints a learn action's specs."""
    if isinstance(spec, LearnMatch):
        if spec.value is None:
            return _bits_text(spec.dst)
        return _LEARN_VALUE_TEXT[spec.dst.field].format(spec.value)
    src = spec.src if isinstance(spec.src, Bits) else None
    return (f"load:{_bits_text(src) if src else f'{spec.src:#x}'}"
            f"->{_bits_text(spec.dst)}")


def actions_text(actions) -> str:
    return ",".join(action_text(a) for a in actions) or "drop"


def flow_text(f: Flow) -> str:
    match = match_text(f.match)
    head = f"cookie={f.cookie:#x}, table={f.table}, priority={f.priority}"
    return f"{head}{',' + match if match else ''} actions={actions_text(f.actions)}"


def group_text(g: SelectGroup) -> str:
    buckets = ",".join(f"bucket=weight:{b.weight},actions={actions_text(b.actions)}"
                       for b in g.buckets)
    return f"group_id={g.group_id},type=select{',' + buckets if buckets else ''}"
