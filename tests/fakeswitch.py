"""A small OpenFlow table simulator for tests: where can a packet end up?

It applies the controller's plans (the same objects that become flow and
group mods), then runs packets through the tables: highest-priority match
wins, a table miss drops, a select group forks into *every* bucket, ``ct``
models conntrack per zone (new / established / reply, DNAT and SNAT, commit,
and +inv for a SYN+ACK that opens nothing or a segment marked
``out_of_window``; like OVS, other TCP segments may open a connection
midstream), and ``ct(table=N)``
recirculates.  Each possible end is an :class:`Outcome` carrying the
conntrack it would leave behind, so a test can follow one connection.

It is strict where OVS would refuse or be arbitrary, so a wrong pipeline is
a red test and not a silent drop: a packet sent to a group that does not
exist, a ``goto_table`` that does not go forward, and two flows of one
table and priority that both match one packet (OVS would pick either) raise
:class:`PipelineFault`.

Several bridges can share one conntrack (as netdev bridges share a
datapath) and be wired together with :class:`FakeNetwork`.
"""
import copy
import ipaddress
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from controller import diff as D
from controller import fragments
from controller import flows as F

CONTROLLER = "CONTROLLER"     # Outcome.port of a packet sent to the controller

_L4_FIELDS = {field: proto for table in (F.L4_DST_FIELD, F.L4_SRC_FIELD)
              for proto, field in table.items()}


def packet(**fields) -> dict:
    """A packet as a dict of field -> value; TCP defaults to a SYN."""
    pkt = dict(fields)
    if pkt.get("ip_proto") == 6:
        pkt.setdefault("tcp_flags", "syn")
    if "ipv4_dst" in pkt:
        pkt.setdefault("eth_type", F.ETH_IP)
    return pkt


def tcp(src, dst, dport, sport=40000, **kw) -> dict:
    return packet(ipv4_src=src, ipv4_dst=dst, ip_proto=6, tp_src=sport, tp_dst=dport, **kw)


def udp(src, dst, dport, sport=40000, **kw) -> dict:
    return packet(ipv4_src=src, ipv4_dst=dst, ip_proto=17, tp_src=sport, tp_dst=dport, **kw)


def _tuple(pkt):
    return (pkt["ipv4_src"], pkt["ipv4_dst"], pkt.get("ip_proto"),
            pkt.get("tp_src"), pkt.get("tp_dst"))


@dataclass
class Conn:
    orig: tuple
    reply: tuple
    mark: int = 0


@dataclass
class Conntrack:
    """Connections per zone, looked up by either direction's tuple."""
    zones: Dict[int, List[Conn]] = field(default_factory=dict)

    def lookup(self, zone, key):
        for conn in self.zones.get(zone, ()):
            if conn.orig == key:
                return conn, False
            if conn.reply == key:
                return conn, True
        return None, False

    def execute(self, pkt, ct: F.Ct):
        """Run one ct action on ``pkt`` (in place); return the new ct_state."""
        key = _tuple(pkt)
        conn, is_reply = self.lookup(ct.zone, key)
        if conn is not None and pkt.get("out_of_window"):
            return F.CT_TRK | F.CT_INV     # outside the connection's TCP window
        if conn is not None:
            state = F.CT_TRK | F.CT_EST | (F.CT_RPL if is_reply else 0)
            if ct.nat is not None:
                self._translate(pkt, conn, is_reply)
            pkt["ct_mark"] = conn.mark
            return state
        if pkt.get("ip_proto") == 6 and pkt.get("tcp_flags") == "syn-ack":
            return F.CT_TRK | F.CT_INV     # OVS: a SYN+ACK never opens a connection
        if ct.commit:
            src, dst, proto, sport, dport = key
            nat = ct.nat or F.Nat()
            new_dst = nat.dst_ip or dst
            new_dport = nat.dst_port or dport
            new_src = nat.src_ip or src
            conn = Conn(orig=key, reply=(new_dst, new_src, proto, new_dport, sport),
                        mark=ct.mark or 0)
            self.zones.setdefault(ct.zone, []).append(conn)
            pkt["ct_mark"] = conn.mark
            if ct.nat is not None:
                self._translate(pkt, conn, False)
        else:
            pkt["ct_mark"] = 0
        return F.CT_TRK | F.CT_NEW

    @staticmethod
    def _translate(pkt, conn, is_reply):
        ref = conn.orig if is_reply else conn.reply
        # the packet becomes the reverse of the other direction's tuple
        pkt["ipv4_src"], pkt["ipv4_dst"] = ref[1], ref[0]
        if ref[3] is not None:
            pkt["tp_src"], pkt["tp_dst"] = ref[4], ref[3]


@dataclass
class Outcome:
    bridge: str
    port: int
    packet: dict
    conntrack: Conntrack


def _field_matches(pkt, name, want) -> bool:
    if name in _L4_FIELDS:
        have = pkt.get("tp_dst" if name.endswith("dst") else "tp_src")
        value, mask = want if isinstance(want, tuple) else (want, 0xFFFF)
        return pkt.get("ip_proto") == _L4_FIELDS[name] and have is not None and \
            (have & mask) == (value & mask)
    if name.startswith("reg") or name == "ct_mark":   # these start out as zero
        have = pkt.get(name, 0)
        value, mask = want if isinstance(want, tuple) else (want, 0xFFFFFFFF)
        return (have & mask) == (value & mask)
    have = pkt.get(name)
    if isinstance(want, tuple):
        value, mask = want
        if name == "ct_state":
            return have is not None and (have & mask) == (value & mask)
        if have is None:
            return False
        net = ipaddress.ip_network(f"{value}/{mask}")
        return ipaddress.ip_address(have) in net
    return have == want


class PipelineFault(AssertionError):
    """What OVS would refuse, or do arbitrarily: the flows are wrong."""


def matches(flow: F.Flow, pkt) -> bool:
    return all(_field_matches(pkt, name, want) for name, want in flow.match)


class FakeSwitch:
    def __init__(self, name, conntrack: Optional[Conntrack] = None):
        self.name = name
        self.flows: Dict[tuple, F.Flow] = {}
        self.groups: Dict[int, F.SelectGroup] = {}
        self.conntrack = conntrack if conntrack is not None else Conntrack()
        self.hits: Dict[tuple, int] = {}

    def apply(self, plan: fragments.Plan) -> None:
        D.apply(self.flows, self.groups, plan)

    def lookup(self, table, pkt) -> Optional[F.Flow]:
        best = []
        for f in self.flows.values():
            if f.table == table and matches(f, pkt):
                if not best or f.priority > best[0].priority:
                    best = [f]
                elif f.priority == best[0].priority:
                    best.append(f)
        if len(best) > 1:
            raise PipelineFault(f"{self.name}: table {table} priority {best[0].priority}: "
                                f"{len(best)} flows match {pkt}: "
                                + "; ".join(F.flow_text(f) for f in best))
        return best[0] if best else None

    def send(self, pkt, in_port) -> List[Outcome]:
        """Every (port, packet, conntrack) the packet can end up at."""
        pkt = dict(pkt, in_port=in_port)
        return self._run_table(0, pkt, self.conntrack, depth=0)

    def _run_table(self, table, pkt, ct, depth) -> List[Outcome]:
        if depth > 32:
            raise RuntimeError(f"{self.name}: pipeline loop at table {table}")
        f = self.lookup(table, pkt)
        if f is None:
            return []                          # table miss: drop
        self.hits[f.key] = self.hits.get(f.key, 0) + 1
        return self._run_actions(f.actions, pkt, ct, depth, table=table)

    def _learn(self, action: F.Learn, pkt) -> None:
        """Install the flow OVS's learn action would, from its specs."""
        def bits(b: F.Bits):
            return (pkt.get(b.field, 0) >> b.start) & ((1 << b.nbits) - 1)
        match, loads = {}, []
        for spec in action.specs:
            if isinstance(spec, F.LearnMatch):
                if spec.dst.field.startswith("ipv4") and spec.value is None:
                    match[spec.dst.field] = pkt[spec.dst.field]  # addresses are strings here
                else:
                    value = bits(spec.dst) if spec.value is None else spec.value
                    match.update(spec.dst.match(value))
            else:
                value = bits(spec.src) if isinstance(spec.src, F.Bits) else spec.src
                loads.append(F.Load(spec.dst.field, value, spec.dst.start, spec.dst.nbits))
        learned = F.flow(action.table, action.priority, loads, action.cookie, **match)
        self.flows[learned.key] = learned

    def _run_actions(self, actions, pkt, ct, depth, in_place=False,
                     table=None) -> List[Outcome]:
        if not in_place:
            pkt = dict(pkt)
        out: List[Outcome] = []
        for i, action in enumerate(actions):
            if isinstance(action, F.SetField):
                pkt[action.field] = action.value
            elif isinstance(action, F.Load):
                mask = ((1 << action.nbits) - 1) << action.start
                pkt[action.field] = (pkt.get(action.field, 0) & ~mask) | \
                    ((action.value << action.start) & mask)
            elif isinstance(action, F.Resubmit):
                f = self.lookup(action.table, pkt)    # like a call: loads stick
                if f is not None:
                    self.hits[f.key] = self.hits.get(f.key, 0) + 1
                    out += self._run_actions(f.actions, pkt, ct, depth + 1, in_place=True,
                                             table=action.table)
            elif isinstance(action, F.Learn):
                self._learn(action, pkt)
            elif isinstance(action, F.Move):
                pkt[action.dst] = pkt.get(action.src)
            elif isinstance(action, F.Output):
                port = pkt["in_port"] if action.port == F.IN_PORT else action.port
                if action.port != F.IN_PORT and port == pkt["in_port"]:
                    continue                   # OpenFlow: never back out of in_port
                out.append(Outcome(self.name, port, dict(pkt), ct))
            elif isinstance(action, F.GotoTable):
                if table is not None and action.table <= table:
                    raise PipelineFault(f"{self.name}: goto_table:{action.table} from "
                                        f"table {table} (OpenFlow goes forward only)")
                out += self._run_table(action.table, pkt, ct, depth + 1)
            elif isinstance(action, F.Meter):
                pass                           # rate limiting: not modelled
            elif isinstance(action, F.Multipath):
                # like a select group: every pick the hash could make, forked
                # (a pick is a load of its number into the register)
                dst = action.dst
                for pick in range(action.links):
                    load = F.Load(dst.field, pick, dst.start, dst.nbits)
                    out += self._run_actions((load,) + tuple(actions[i + 1:]), pkt,
                                             copy.deepcopy(ct), depth + 1, table=table)
                return out
            elif isinstance(action, F.Controller):
                out.append(Outcome(self.name, CONTROLLER, dict(pkt), ct))
            elif isinstance(action, F.Group):
                group = self.groups.get(action.group_id)
                if group is None:
                    raise PipelineFault(f"{self.name}: group {action.group_id} does not "
                                        "exist (OVS refuses a flow that points at it)")
                for bucket in group.buckets:
                    fork = copy.deepcopy(ct)
                    out += self._run_actions(bucket.actions, pkt, fork, depth + 1, table=table)
            elif isinstance(action, F.Ct):
                assert i == len(actions) - 1, "ct must end its action list"
                pkt["ct_state"] = ct.execute(pkt, action)
                pkt["ct_zone"] = action.zone
                if action.table is not None:
                    out += self._run_table(action.table, pkt, ct, depth + 1)
            else:
                raise TypeError(f"fake switch cannot run {action!r}")
        return out


class FakeNetwork:
    """Bridges joined by links; ports without a link are where packets land."""

    def __init__(self):
        self.conntrack = Conntrack()
        self.switches: Dict[str, FakeSwitch] = {}
        self.links: Dict[tuple, tuple] = {}
        self.fabric: Dict[tuple, str] = {}      # (bridge, port) -> its MAC there

    def add_switch(self, name) -> FakeSwitch:
        sw = self.switches[name] = FakeSwitch(name, self.conntrack)
        return sw

    def link(self, a, b) -> None:
        """Join (bridge, port) a and b; a learning fabric collapsed to a wire."""
        self.links[a] = b
        self.links[b] = a

    def attach_fabric(self, port, mac) -> None:
        """Put (bridge, port) on a MAC-switched fabric as ``mac``."""
        self.fabric[port] = mac

    def _peer(self, outcome):
        where = (outcome.bridge, outcome.port)
        if where in self.fabric:
            return next((p for p, mac in self.fabric.items()
                         if mac == outcome.packet.get("eth_dst") and p != where), None)
        return self.links.get(where)

    def send(self, bridge, in_port, pkt, hops=8) -> List[Outcome]:
        results = []
        for outcome in self.switches[bridge].send(pkt, in_port):
            peer = self._peer(outcome)
            if peer is None or hops == 0:
                results.append(outcome)
                continue
            saved = self.conntrack
            self.switches[peer[0]].conntrack = outcome.conntrack
            results += self.send(peer[0], peer[1], outcome.packet, hops - 1)
            self.switches[peer[0]].conntrack = saved
        return results

    def adopt(self, outcome: Outcome) -> None:
        """Make ``outcome``'s conntrack the network's: follow that connection."""
        self.conntrack = outcome.conntrack
        for sw in self.switches.values():
            sw.conntrack = outcome.conntrack
