"""Pools too large for one select group: parts of at most 512 buckets, the
part picked by bits of the client's source port.

Pure functions, used by node_fragments for ClusterIP and external pools,
plain and with session affinity.  Why parts, why these bits and how a
changed pool keeps its layout: ``split_pool``.
"""
from controller import flows as F
from controller import pipeline as P
from controller.names import part_name, parts_for


def split_pool(buckets, previous=None, max_buckets=P.MAX_BUCKETS_PER_GROUP):
    """The pool's buckets in parts of at most ``max_buckets``, one group each.

    A power of two of parts, chosen by low bits of the client's source port
    (see PART_SHIFT; uniform for ephemeral ports), so parts must not differ
    in size by more than one for every endpoint to be (within 1/size) as
    likely as any other.  Pools that fit one group are one part.

    ``previous`` is the pool's parts as installed (their buckets), if it had
    as many.  Each bucket still wanted stays in its part, new ones go to the
    smallest parts, and one bucket moves from the largest to the smallest
    part while they differ by more than one.  So an endpoint that comes or
    goes rewrites one or two groups of the pool, not all of them (OpenFlow
    1.3 has no per-bucket group commands; 1.5's insert/remove-bucket would
    need a protocol switch for this one case).  Without ``previous``: part
    i takes every P-th bucket from the i-th.
    """
    parts = parts_for(len(buckets), max_buckets)
    if parts == 1:
        return [tuple(buckets)]
    wanted = set(buckets)
    if previous is None or len(previous) != parts or len(wanted) != len(buckets):
        return [tuple(buckets[i::parts]) for i in range(parts)]
    layout, placed = [], set()
    for part in previous:
        kept = [b for b in part if b in wanted and b not in placed]
        placed.update(kept)
        layout.append(kept)
    for b in buckets:
        if b not in placed:
            min(layout, key=len).append(b)
    while True:
        small, big = min(layout, key=len), max(layout, key=len)
        if len(big) - len(small) <= 1:
            return [tuple(part) for part in layout]
        small.append(big.pop())


def pool_groups(gids, buckets, previous):
    """The pool's select groups, one per part (``split_pool``); the parts
    as the previous fragment holds them, when it holds all of ``gids``."""
    installed = None
    if previous is not None:
        by_id = {g.group_id: g.buckets for g in previous.groups}
        if all(gid in by_id for gid in gids):
            installed = [by_id[gid] for gid in gids]
    return [F.SelectGroup(gid, part)
            for gid, part in zip(gids, split_pool(buckets, installed))]


# The part is read from source-port bits 1..k, not 0..k-1: Linux's connect()
# picks even ephemeral ports (bit 0 is always 0), while bits above it are
# uniform for Linux, for sequential allocators and for random ones alike.
PART_SHIFT = 1


def part_match(proto, part, parts) -> dict:
    if parts == 1:
        return {}
    return {F.L4_SRC_FIELD[proto]: (part << PART_SHIFT, (parts - 1) << PART_SHIFT)}


def pool_group_ids(group_ids, name, parts):
    return [group_ids.get(name)] + [group_ids.get(part_name(name, i))
                                    for i in range(1, parts)]
