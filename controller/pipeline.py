"""The OpenFlow pipeline, declared once as data, and enforced when flows are built.

Table ids leave gaps so later features can slot tables in without
renumbering what users have learnt to read.  docs/flow-tables.md shows
this list (python -m controller.pipeline prints it).

Each table declares the fields its flows may match and the tables its
flows may hand packets to (goto, resubmit, ct recirculation, learn).  The
compiler builds every flow with :meth:`Table.flow` and every group bucket
with :meth:`Table.bucket`, which check both and raise
:class:`PipelineError` at once - so a flow that matches a field its table
does not expect, or jumps somewhere the pipeline does not go, fails at
compile time in a unit test, not as a silent drop on a switch (FAUCET
checks its flows against its table configs the same way).

Registers are named once (below); so are priorities, so a flow's priority
says why it beats its neighbours.
"""
from dataclasses import dataclass

from controller import flows as F


class PipelineError(ValueError):
    """A flow that breaks its table's declaration."""


@dataclass(frozen=True)
class Table:
    id: int
    name: str
    job: str
    matches: frozenset = frozenset()   # match fields its flows may use
    next: tuple = ()                   # tables its flows may send packets to

    def __int__(self) -> int:
        return self.id

    def flow(self, priority, actions=(), cookie=0, **match) -> F.Flow:
        """A flow in this table, checked against the declaration."""
        if not self.matches.issuperset(match):      # no set built on the way
            raise PipelineError(f"table {self.name} does not match on "
                                f"{sorted(match.keys() - self.matches)}")
        self._check_next(actions)
        return F.Flow(table=self.id, priority=priority,
                      match=tuple(_shared(pair) for pair in sorted(match.items())),
                      actions=tuple(actions), cookie=cookie)

    def bucket(self, actions, weight=100) -> F.Bucket:
        """A select-group bucket for groups this table's flows point at."""
        self._check_next(actions)
        return F.Bucket(tuple(actions), weight)

    def dnat_bucket(self, zone, table, ip, port, mark=None) -> F.DnatBucket:
        """A pool member's bucket: commit in ``zone`` with DNAT to ip:port,
        recirculating into ``table`` (checked as :meth:`bucket` checks)."""
        if table not in self.next:
            raise PipelineError(f"table {self.name} may not send packets to table {table} "
                                f"(a DNAT bucket)")
        return F.DnatBucket(zone, table, ip, port, mark)

    def _check_next(self, actions) -> None:
        for action in actions:
            if type(action) not in _TABLE_ACTIONS:   # most actions name no table
                continue
            target = action.table
            if target is not None and target not in self.next:
                raise PipelineError(f"table {self.name} may not send packets to "
                                    f"table {target} ({F.action_text(action)})")


# (field, value) pairs of fields with few values, shared by every flow that
# matches them: most flows match eth_type and ip_proto, and one pair is 56
# bytes (about 4 MB at 10,000 services).  Bounded by those fields' values
# (a cluster's services listen on few distinct ports).
_FEW_VALUES = frozenset({"eth_type", "ip_proto", "arp_op", "ct_state", "ct_mark",
                         "tcp_dst", "udp_dst", "sctp_dst"})
_PAIRS = {}
# The other pairs built last: a service IP's flows (its frontends, the
# rejects beside them) are built together and share one pair (1 MB at
# 10,000 services); cleared when full, so it holds little.
_RECENT = {}
_RECENT_MAX = 64


def _shared(pair):
    if pair[0] in _FEW_VALUES:
        return _PAIRS.setdefault(pair, pair)
    hit = _RECENT.get(pair)
    if hit is None:
        if len(_RECENT) >= _RECENT_MAX:
            _RECENT.clear()
        hit = _RECENT[pair] = pair
    return hit


# the actions that hand packets to a table (or learn into one): ``.table``
_TABLE_ACTIONS = frozenset((F.GotoTable, F.Resubmit, F.Learn, F.Ct))


# --- registers (session affinity) --------------------------------------------
ENDPOINT_IP = F.Bits("reg0")              # the chosen endpoint's IPv4 address
ENDPOINT_PORT = F.Bits("reg1", 0, 16)     # the chosen endpoint's port
AFFINITY_HIT = F.Bits("reg1", 16, 1)      # the endpoint came from a SessionAffinity entry
AFFINITY_FRESH = F.Bits("reg1", 17, 1)    # the group just picked it: learn it
FRONTEND_IP = F.Bits("reg2")              # the frontend IPv4 address the client asked for
FRONTEND_PORT = F.Bits("reg3", 0, 16)     # the frontend port (ServiceLB loads all of reg3)
AFFINITY_HIT_BIT = 1 << AFFINITY_HIT.start
AFFINITY_LEARN_BIT = 1 << AFFINITY_FRESH.start
# --- registers (UDP pools spread per flow) --------------------------------------
POOL_ID = F.Bits("reg4")                  # the pool's id (its group id, were it a group)
POOL_PICK = F.Bits("reg5")                # multipath's pick: 0 .. endpoints - 1

# --- priorities ----------------------------------------------------------------
PRIO_MISS = 0              # every table's last flow: drop, never flood
PRIO_FALLBACK = 10         # defaults: commit as is, go on to the next table
PRIO_EGRESS_NODE_SNAT = PRIO_FALLBACK + 1   # pods leaving the cluster as the node IP
PRIO_EGRESS_FIP_SNAT = PRIO_FALLBACK + 2    # ...unless the pod has a floating IP
PRIO_LOW = 180             # after the specific flows: e.g. new connections -> ServiceLB
PRIO_MID = 190             # a VIP's other ports (reject), remote pod CIDRs, pod ARP
PRIO_HIGH = 200            # the specific flows: one frontend, one pod, one node
PRIO_FROM_UPLINK = 1       # added for the IN_PORT twin of a flow whose packets came
                           # in on the port they leave by
PRIO_SOURCE_RANGE = PRIO_HIGH + 5    # loadBalancerSourceRanges: allowed sources
                                     # above the frontend's drop
PRIO_NEIGHBOR = PRIO_HIGH + 1       # a pod's neighbor solicitations, above its IPv6
PRIO_POD_REPLY = PRIO_HIGH + 10      # a pod's own packets back to it leave by in_port
PRIO_HAIRPIN = PRIO_HIGH + 20        # a pod reaching itself through a service

# --- tables ----------------------------------------------------------------------
_IP = frozenset({"eth_type", "ip_proto", "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst"})
# L4 source ports too: a pool too large for one group is split on their low bits
_L4 = frozenset(F.L4_DST_FIELD.values()) | frozenset(F.L4_SRC_FIELD.values())

CLASSIFIER = Table(0, "Classifier",
                   "admit by ingress port: a pod's port only with its own MAC and IP "
                   "(anti-spoofing), the uplink (fabric port or tunnel) only to this "
                   "bridge's router MAC (a learning fabric floods unknown unicast; "
                   "routing those would duplicate them), the host port also to the "
                   "NodePort steering address 169.254.0.252 from any source; ARP and "
                   "IPv6 neighbor solicitations -> 10, IP -> 15",
                   _IP | {"in_port", "eth_src", "eth_dst", "arp_spa", "icmpv6_type"},
                   (10, 15, 60))
ARP_RESPONDER = Table(10, "ArpResponder",
                      "answer ARP requests and IPv6 neighbor solicitations for the "
                      "gateway IPs and service VIPs with the router MAC, and for local "
                      "pods with their MAC (a solicitation becomes the advertisement, "
                      "-> 11); never flood; duplicate address detection (from ::) is "
                      "never answered",
                      frozenset({"eth_type", "arp_op", "arp_tpa", "ip_proto", "icmpv6_type",
                                 "ipv6_nd_target", "ipv6_src"}), (11,))
ND_ADVERTISE = Table(11, "NdAdvertise",
                     "finish a neighbor advertisement: the target link-layer address "
                     "option := the answering MAC (OVS checks set_field's prerequisites "
                     "against the match, so an nd_tll write needs a flow that matches "
                     "an advertisement), back out of `IN_PORT`",
                     frozenset({"eth_type", "ip_proto", "icmpv6_type", "icmpv6_code"}))
HAIRPIN_UNSNAT = Table(15, "UnSNAT",
                       "packets to an address this bridge source-NATs to (the pods' "
                       "gateway IP for hairpin, the node IP, pods' floating IPs): "
                       "`ct(zone=Z+1,nat)` undoes that SNAT; the rest -> 20",
                       frozenset({"eth_type", "ipv4_dst", "ipv6_dst"}), (20,))
CONNTRACK_ZONE = Table(20, "ConntrackZone",
                       "`ct(zone=Z,nat,table=21)`: known connections get their NAT "
                       "undone/applied",
                       frozenset({"eth_type"}), (21,))
CONNTRACK_STATE = Table(21, "ConntrackState",
                        "`+inv` dropped; established/related/reply -> 38 (never load-"
                        "balanced again); new -> 30",
                        frozenset({"eth_type", "ct_state"}), (30, 38))
SERVICE_LB = Table(30, "ServiceLB",
                   "(VIP, protocol, port) -> `group:G`; UDP (without affinity) loads "
                   "the pool into reg4 and a hash of the 5-tuple into reg5 "
                   "(`multipath(symmetric_l3l4+udp,...)`), -> 33; no usable endpoint -> "
                   "`meter:1,CONTROLLER:128` (reject); other TCP/UDP ports of a VIP ->"
                   " reject too; affinity ports load the frontend into reg2/reg3, "
                   "`resubmit(,31)`, -> 35; anything else `ct(commit,zone=Z,table=40)`"
                   " so its replies are `+est` here too",
                   _IP | _L4, (31, 33, 35, 38, 40))
SESSION_AFFINITY = Table(31, "SessionAffinity",
                         "learned entries (client IP, protocol, frontend) -> load the "
                         "remembered endpoint into reg0/reg1; looked up by `resubmit`,"
                         " so a miss leaves reg0 = 0",
                         _IP | {FRONTEND_IP.field, FRONTEND_PORT.field})
UDP_SPREAD = Table(33, "UdpSpread",
                   "UDP pools: (pool in reg4, pick in reg5) -> that endpoint's "
                   "`ct(commit,zone=Z,nat(dst=EP),table=38)`, one flow per endpoint: "
                   "a select group hashes UDP on addresses only under OpenFlow 1.3, "
                   "so this spreads each new flow (source port) instead",
                   frozenset({"eth_type", "ip_proto", POOL_ID.field, POOL_PICK.field}),
                   (38,))
ENDPOINT_DNAT = Table(35, "EndpointDNAT",
                      "affinity ports: (frontend, endpoint in reg0/reg1) -> "
                      "`ct(commit,zone=Z,nat(dst=EP),table=36)`; no such endpoint (no "
                      "entry, or it went away) -> `group:G`, whose bucket loads a "
                      "fresh pick and resubmits here",
                      frozenset({"eth_type", "ip_proto", ENDPOINT_IP.field,
                                 ENDPOINT_PORT.field, FRONTEND_IP.field,
                                 FRONTEND_PORT.field}) | frozenset(F.L4_SRC_FIELD.values()),
                      (35, 36))
AFFINITY_LEARN = Table(36, "AffinityLearn",
                       "a fresh pick (reg1[17]) -> "
                       "`learn(table=31,idle_timeout=timeoutSeconds,...)`, -> 38",
                       frozenset({"eth_type", "ip_proto", AFFINITY_FRESH.field,
                                  FRONTEND_IP.field, FRONTEND_PORT.field}), (31, 38))
SERVICE_MASQUERADE = Table(38, "ServiceMasquerade",
                           "connections marked `ct_mark=1` (nodePort, external and LB "
                           "IPs with externalTrafficPolicy Cluster), original "
                           "direction: "
                           "`ct(commit,zone=Z+1,nat(src=NODE_IP),table=40)`, so "
                           "replies come back through this node; else -> 40",
                           frozenset({"eth_type", "ct_mark", "ct_state"}), (40,))
L3_FORWARDING = Table(40, "L3Forwarding",
                      "local pod IP -> its port (rewriting MACs); another node's pod "
                      "CIDR -> the uplink, to that node's router MAC (overlay: "
                      "`set_field:NODE_IP->tun_dst` too); replies from the NodePort "
                      "steering address -> the host port; a pod reaching itself -> "
                      "`ct(commit,zone=Z+1,nat(src=gateway),table=42)`",
                      _IP - {"ip_proto"} | {"in_port", "ct_state"}, (41, 42))
EGRESS_OUTPUT = Table(41, "EgressOutput",
                      "leaving the cluster: to the gateway's fabric MAC out of the "
                      "uplink. Table 40's last flows send traffic for unknown "
                      "destinations here, pods first source-NATed (zone Z+1) to their "
                      "floating IP or else the node IP",
                      frozenset({"in_port", "eth_type"}))
HAIRPIN = Table(42, "HairpinOutput",
                "hairpin packets back out of the port they came in (`IN_PORT`)",
                frozenset({"eth_type", "ipv4_dst", "ipv6_dst"}))
GATEWAY_ROUTING = Table(60, "GatewayRouting",
                        "gateway bridge only: node IPs -> that node (rewrite MACs, out"
                        " of the uplink); LB and external IPs -> a select group, one "
                        "bucket per node that serves the IP (every node for Cluster, "
                        "nodes with a usable local endpoint for Local); floating IPs "
                        "-> the pod's node; from the uplink, anything else -> out of "
                        "the external port to the next hop; from outside, nothing else"
                        " (cluster and pod IPs are unreachable); IPv6 alike, to nodes "
                        "with an IPv6 InternalIP, where the external port has IPv6",
                        frozenset({"in_port", "eth_type", "ipv4_dst", "ipv6_dst"}))

TABLES = (CLASSIFIER, ARP_RESPONDER, ND_ADVERTISE, HAIRPIN_UNSNAT, CONNTRACK_ZONE,
          CONNTRACK_STATE, SERVICE_LB, SESSION_AFFINITY, UDP_SPREAD, ENDPOINT_DNAT,
          AFFINITY_LEARN,
          SERVICE_MASQUERADE, L3_FORWARDING, EGRESS_OUTPUT, HAIRPIN, GATEWAY_ROUTING)
BY_ID = {t.id: t for t in TABLES}

# New connections that must be refused (no endpoint, or a port the service
# IP does not have) go to the controller through this meter, which answers
# with a TCP RST or an ICMP port unreachable; the meter caps the rate so a
# flood cannot overload the controller.
REJECT_METER = 1
MASQUERADE_MARK = 1        # ct_mark of connections ServiceMasquerade SNATs

# One OpenFlow message is at most 64 KiB, so one group mod holds at most
# ~740 of our largest buckets (88 bytes: ct with nat(dst=IP:PORT) and a
# ct_mark; the affinity form is 80).  A pool with more endpoints than this is
# split into 2**k groups of at most this many, chosen by k bits of the
# client's source port (see node_fragments.split_pool).
MAX_BUCKETS_PER_GROUP = 512


# A learn action's idle_timeout is 16 bits.  Session affinity accepts up to
# 86,400 s: longer timeouts learn entries without one (0: never idle out) and
# the controller expires them itself (controller/affinity_sweeper.py).
LEARN_TIMEOUT_MAX = 0xFFFF


def learn_idle_timeout(timeout: int) -> int:
    """The learned entry's idle_timeout for a session-affinity timeout."""
    return timeout if timeout <= LEARN_TIMEOUT_MAX else 0


def affinity_learn(ip_proto: int, idle_timeout: int, cookie: int,
                   eth_type: int = F.ETH_IP) -> F.Learn:
    """The learn action of AffinityLearn, the one place its layout is written:
    the learned SessionAffinity entry matches (``eth_type``, ``ip_proto``,
    the client's address, the frontend in reg2 / reg3[0..15]) and loads the
    endpoint (reg0, reg1[0..15]) with the hit bit set."""
    client = F.Bits("ipv6_src", 0, 128) if eth_type == F.ETH_IPV6 else F.Bits("ipv4_src")
    return F.Learn(table=SESSION_AFFINITY.id, idle_timeout=idle_timeout,
                   priority=PRIO_HIGH, cookie=cookie, specs=(
                       F.LearnMatch(F.Bits("eth_type", 0, 16), eth_type),
                       F.LearnMatch(F.Bits("ip_proto", 0, 8), ip_proto),
                       F.LearnMatch(client),
                       F.LearnMatch(FRONTEND_IP),
                       F.LearnMatch(FRONTEND_PORT),
                       F.LearnLoad(ENDPOINT_IP, ENDPOINT_IP),
                       F.LearnLoad(ENDPOINT_PORT, ENDPOINT_PORT),
                       F.LearnLoad(AFFINITY_HIT, 1)))


def table_name(table_id: int) -> str:
    table = BY_ID.get(table_id)
    return table.name if table else f"table{table_id}"


def reference() -> str:
    """The tables as a Markdown table: what docs/flow-tables.md shows
    (tests/test_docs.py fails when they differ)."""
    rows = ["| id | name | what it does | may match | may go to |", "|---|---|---|---|---|"]
    for t in TABLES:
        goes = ", ".join(str(n) for n in t.next) or "-"
        rows.append(f"| {t.id} | {t.name} | {t.job} | "
                    f"{', '.join(f'`{m}`' for m in sorted(t.matches))} | {goes} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
