"""UDP pools spread per flow: a multipath pick and one flow per endpoint.

Why not a select group, as every other pool is: under OpenFlow 1.3, OVS
picks a select group's bucket by a hash of the packet that leaves UDP ports
out (its default dp_hash method uses the symmetric L3/L4 hash, which counts
ports of TCP and SCTP only; choosing the fields needs OpenFlow 1.5 group
properties, which an OpenFlow 1.3 group mod silently drops - checked on OVS
3.1).  So one client sending DNS queries from many source ports would stick
to one endpoint, where kube-proxy gives each new conntrack entry a random
one.  Nicira's ``multipath`` action hashes the 5-tuple, UDP ports included
(``symmetric_l3l4+udp``), in OpenFlow 1.3.

ServiceLB loads the pool's id (the id its group would have) into reg4 and
the pick, 0 .. n-1, into reg5, then goes to UdpSpread, where the flow of
(pool, pick) does what the group's bucket would:
``ct(commit,nat(dst=EP),table=38)``.  Only new flows are picked (replies
and later datagrams are ``+est`` and skip ServiceLB), so a pool that
changes - which renumbers the picks - moves no existing flow.  No pool is
too large for this, so UDP pools are never split (see split_pool.py).

Pure functions; node_fragments builds the ServiceLB flows around
``pick_actions``.
"""
from controller import flows as F
from controller import pipeline as P


def pick_actions(pool_id: int, endpoints: int) -> tuple:
    """ServiceLB's actions for a new flow to the pool: which pool, which of
    its ``endpoints`` (a hash of the flow), then UdpSpread."""
    return (F.Load(P.POOL_ID.field, pool_id), F.Multipath(endpoints, P.POOL_PICK),
            F.GotoTable(P.UDP_SPREAD.id))


def endpoint_flows(pool_id: int, endpoint_actions, cookie: int, eth_type=F.ETH_IP) -> list:
    """UdpSpread's flows of the pool: pick i -> ``endpoint_actions[i]``.
    They match UDP of the pool's family as well: OVS refuses a ``ct(nat)``
    in a flow that does not match IP."""
    return [P.UDP_SPREAD.flow(P.PRIO_HIGH, actions, cookie, eth_type=eth_type,
                              ip_proto=F.IP_PROTO["UDP"], **P.POOL_ID.match(pool_id),
                              **P.POOL_PICK.match(pick))
            for pick, actions in enumerate(endpoint_actions)]
