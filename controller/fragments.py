"""What a bridge holds, as plain values: fragments, bridge states and plans.

A :class:`Fragment` is one object's flows and groups (a service, a pod, a
node route, ...); a :data:`BridgeState` maps fragment keys to fragments; a
:class:`Plan` is the ordered change between two bridge states.  The
compiler produces bridge states, the diff produces plans and the encoder
(``ofmsg``) turns plans into OpenFlow: all three sit side by side above this
module and none of them needs another to name these values.
"""
from dataclasses import dataclass, field
from typing import Hashable, List, Mapping, Tuple

from controller import flows as F


@dataclass(frozen=True, slots=True)
class Fragment:
    """One object's flows and groups, each given as any iterable and kept as
    a tuple without repeats, in the order the fragment function built them
    (which is deterministic, so equal inputs give equal fragments).  Tuples,
    not frozensets: a third of the memory (10,000 services hold 30,000 of
    these) and nothing here needs set operations."""
    flows: Tuple[F.Flow, ...] = ()
    groups: Tuple[F.SelectGroup, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "flows", _unique(self.flows))
        object.__setattr__(self, "groups", _unique(self.groups))


def _unique(items) -> tuple:
    """``items`` as a tuple without repeats; one item is not hashed (hashing
    a flow hashes its match and actions: a tenth of a compile)."""
    items = tuple(items)
    return items if len(items) < 2 else tuple(dict.fromkeys(items))


EMPTY = Fragment()

BridgeState = Mapping[Hashable, Fragment]


@dataclass
class Plan:
    """Changes in the order they must reach the switch (see controller/diff.py)."""
    group_adds: List[F.SelectGroup] = field(default_factory=list)
    flow_adds: List[F.Flow] = field(default_factory=list)
    flow_modifies: List[F.Flow] = field(default_factory=list)
    flow_deletes: List[F.Flow] = field(default_factory=list)
    group_modifies: List[F.SelectGroup] = field(default_factory=list)
    group_deletes: List[F.SelectGroup] = field(default_factory=list)
    # cookies of learned entries to delete (a learn flow went or changed)
    learned_deletes: List[int] = field(default_factory=list)
    # which fragment each change came from, to quarantine a rejected object
    owners: List[Tuple[object, Hashable]] = field(default_factory=list)
    # a resync: the group adds may exist on the switch (sent as ADD_OR_MOD)
    groups_may_exist: bool = False

    def __len__(self) -> int:
        return (len(self.group_adds) + len(self.flow_adds) + len(self.flow_modifies)
                + len(self.flow_deletes) + len(self.group_modifies)
                + len(self.group_deletes) + len(self.learned_deletes))

    def summary(self) -> str:
        return (f"groups +{len(self.group_adds)} ~{len(self.group_modifies)} "
                f"-{len(self.group_deletes)}, flows +{len(self.flow_adds)} "
                f"~{len(self.flow_modifies)} -{len(self.flow_deletes)}"
                + (f", learned entries -{len(self.learned_deletes)} cookies"
                   if self.learned_deletes else ""))


def flatten(state: BridgeState):
    """All flows (by key) and groups (by id) of a bridge state.

    Raises ValueError if two fragments claim one flow key or group id: the
    object-by-object diff relies on fragments being disjoint.
    """
    flows, groups = {}, {}
    for frag in state.values():
        for f in frag.flows:
            if flows.setdefault(f.key, f) is not f:
                raise ValueError(f"two objects claim {F.flow_text(f)}")
        for g in frag.groups:
            if groups.setdefault(g.group_id, g) is not g:
                raise ValueError(f"two objects claim group {g.group_id}")
    return flows, groups


def dump(state: BridgeState) -> str:
    """ovs-ofctl-like text of a bridge state, sorted like dump-flows --rsort."""
    flows, groups = flatten(state)
    lines = [F.flow_text(f) for f in sorted(
        flows.values(), key=lambda f: (f.table, -f.priority, F.match_text(f.match)))]
    lines += [F.group_text(g) for g in sorted(groups.values(), key=lambda g: g.group_id)]
    return "\n".join(lines) + "\n"
