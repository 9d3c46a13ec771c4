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
IP_PROTO = {"TCP": 6, "UDP": 17, "SCTP": 132, "ICMP": 1}
L4_DST_FIELD = {6: "tcp_dst", 17: "udp_dst", 132: "sctp_dst"}


# --- actions ---------------------------------------------------------------

@dataclass(frozen=True)
class Output:
    port: object                       # an OpenFlow port number or IN_PORT


@dataclass(frozen=True)
class GotoTable:
    table: int


@dataclass(frozen=True)
class Group:
    group_id: int


@dataclass(frozen=True)
class SetField:
    field: str
    value: object


@dataclass(frozen=True)
class Move:
    """Copy a whole field into another (NXActionRegMove)."""
    src: str
    dst: str


@dataclass(frozen=True)
class Nat:
    """ct's nat(): DNAT to dst, SNAT to src, or (neither) restore existing NAT."""
    dst_ip: Optional[str] = None
    dst_port: Optional[int] = None
    src_ip: Optional[str] = None


@dataclass(frozen=True)
class Ct:
    zone: int
    table: Optional[int] = None        # recirculate into this table
    commit: bool = False
    nat: Optional[Nat] = None
    mark: Optional[int] = None         # with commit: set the connection's ct_mark


@dataclass(frozen=True)
class Load:
    """Load a constant into bits [start, start+nbits) of a register (NXActionRegLoad)."""
    field: str
    value: int
    start: int = 0
    nbits: int = 32


@dataclass(frozen=True)
class Resubmit:
    """Run another table's matching flow, then carry on with the next action."""
    table: int


@dataclass(frozen=True)
class LearnAffinity:
    """Learn a session-affinity entry into ``table`` (see pipeline.py's registers):
    match (IPv4, ``ip_proto``, the packet's source IP, the frontend in reg2 and
    reg3[0..15]) -> load the chosen endpoint (reg0, reg1[0..15]) and mark the
    hit (reg1[16]); forgotten after ``idle_timeout`` seconds without use."""
    table: int
    idle_timeout: int
    priority: int
    cookie: int
    ip_proto: int


@dataclass(frozen=True)
class Controller:
    """Send the packet (its first ``max_len`` bytes) to the controller."""
    max_len: int = 128


@dataclass(frozen=True)
class Meter:
    """Pass the packet through a meter first (an OpenFlow 1.3 instruction)."""
    meter_id: int


# --- flows and groups ------------------------------------------------------

FlowKey = Tuple[int, int, tuple]       # (table, priority, match)


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Bucket:
    actions: tuple
    weight: int = 100


@dataclass(frozen=True)
class SelectGroup:
    group_id: int
    buckets: Tuple[Bucket, ...] = field(default=())


# --- text, in the spirit of ovs-ofctl dump-flows / dump-groups -------------

_PROTO_NAMES = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp"}
_FIELD_NAMES = {
    "eth_src": "dl_src", "eth_dst": "dl_dst", "ipv4_src": "nw_src",
    "ipv4_dst": "nw_dst", "tcp_dst": "tp_dst", "udp_dst": "tp_dst",
    "sctp_dst": "tp_dst", "tcp_src": "tp_src", "udp_src": "tp_src",
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
        if name.startswith("ipv4"):
            net = ipaddress.ip_network(f"{val}/{mask}")
            return str(net)
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
        parts.append(_PROTO_NAMES.get(proto, "ip") if proto is not None else "ip")
        if proto is not None and proto not in _PROTO_NAMES:
            parts.append(f"nw_proto={proto}")
    for name, value in fields.items():
        parts.append(f"{_FIELD_NAMES.get(name, name)}={_value_text(name, value)}")
    return ",".join(parts)


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
    if isinstance(action, LearnAffinity):
        return (f"learn(table={action.table},idle_timeout={action.idle_timeout},"
                f"priority={action.priority},cookie={action.cookie:#x},eth_type=0x800,"
                f"nw_proto={action.ip_proto},NXM_OF_IP_SRC[],NXM_NX_REG2[],"
                f"NXM_NX_REG3[0..15],load:NXM_NX_REG0[]->NXM_NX_REG0[],"
                f"load:NXM_NX_REG1[0..15]->NXM_NX_REG1[0..15],load:0x1->NXM_NX_REG1[16])")
    if isinstance(action, Meter):
        return f"meter:{action.meter_id}"
    if isinstance(action, Group):
        return f"group:{action.group_id}"
    if isinstance(action, SetField):
        return f"set_field:{action.value}->{action.field}"
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
                dst = nat.dst_ip + (f":{nat.dst_port}" if nat.dst_port else "")
                args.append(f"nat(dst={dst})")
            elif nat.src_ip is not None:
                args.append(f"nat(src={nat.src_ip})")
            else:
                args.append("nat")
        if action.mark is not None:
            args.append(f"exec(set_field:{action.mark:#x}->ct_mark)")
        return f"ct({','.join(args)})"
    raise TypeError(f"unknown action {action!r}")


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
