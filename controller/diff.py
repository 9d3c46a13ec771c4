"""Diff two bridge states into an ordered plan, and apply plans to tables.

The plan's order is what keeps traffic flowing inside one atomic bundle and
also on switches that apply messages one by one:

1. add new groups (flows may point at them next),
2. add or modify flows,
3. delete flows that are gone,
4. modify groups whose buckets changed, delete groups nobody uses,
5. delete learned entries (session affinity) whose learn flow went or
   changed, by the learn action's cookie.

Learned entries are not ours to list - the switch makes them from packets -
but each learn action stamps its cookie on them.  When a pool's learn flows
go (the Service or port is deleted, affinity switched off) or change (the
timeout, a frontend), the entries they made would outlive them: a new
Service on a reused cluster IP would meet the old one's entries and stick
to the old choice for up to its idle timeout.  So they go in the same
bundle.

Groups are never deleted and re-added to change buckets: OVS deletes every
flow that points at a deleted group.
"""

from controller import cookies
from controller import flows as F
from controller.fragments import EMPTY, BridgeState, Fragment, Plan
from nsx_proxy.changes import ALL


def _diff_fragment(plan: Plan, key, old: Fragment, new: Fragment) -> None:
    if not old.flows and not old.groups:
        # all new (every fragment of a cold sync): no keys to build and match
        plan.flow_adds += new.flows
        plan.group_adds += new.groups
        plan.owners += [(item, key) for item in (*new.flows, *new.groups)]
        return
    old_flows = {f.key: f for f in old.flows}
    new_flows = {f.key: f for f in new.flows}
    for fkey, f in new_flows.items():
        before = old_flows.get(fkey)
        if before is None or before.cookie != f.cookie:
            # a new cookie needs an ADD: OpenFlow 1.3's MODIFY keeps the old one
            plan.flow_adds.append(f)
        elif before != f:
            plan.flow_modifies.append(f)
        else:
            continue
        plan.owners.append((f, key))
    for fkey, f in old_flows.items():
        if fkey not in new_flows:
            plan.flow_deletes.append(f)
    old_groups = {g.group_id: g for g in old.groups}
    new_groups = {g.group_id: g for g in new.groups}
    for gid, g in new_groups.items():
        before = old_groups.get(gid)
        if before is None:
            plan.group_adds.append(g)
        elif before != g:
            plan.group_modifies.append(g)
        else:
            continue
        plan.owners.append((g, key))
    for gid, g in old_groups.items():
        if gid not in new_groups:
            plan.group_deletes.append(g)
    gone = _learners(old.flows).items() - _learners(new.flows).items()
    plan.learned_deletes += sorted({cookie for cookie, _ in gone})


def _learners(flows) -> dict:
    """{learned-entry cookie: the learn flows that make such entries}."""
    out = {}
    for f in flows:
        for action in f.actions:
            if isinstance(action, F.Learn):
                out.setdefault(action.cookie, set()).add((f.key, action))
    return {cookie: frozenset(v) for cookie, v in out.items()}


def diff(old: BridgeState, new: BridgeState, keys=ALL) -> Plan:
    """The plan that turns the installed ``old`` into the desired ``new``.

    ``keys`` are the only fragment keys that may differ (the compiler says
    which it touched): a one-endpoint change then costs that object's flows
    and nothing else.  With ALL every fragment is compared, unchanged ones
    by identity first.
    """
    plan = Plan()
    if keys is ALL:
        keys = list(new) + [key for key in old if key not in new]
    for key in keys:
        before, frag = old.get(key, EMPTY), new.get(key, EMPTY)
        if before is not frag and before != frag:
            _diff_fragment(plan, key, before, frag)
    _settle_moves(plan)
    return plan


def resync(new: BridgeState, groups_on_switch) -> Plan:
    """The plan for a switch whose contents we do not track (a new round,
    or a repair after drift).

    Every flow is (re)added - an ADD over an identical flow replaces it in
    place, so traffic never sees a gap - every group is written with OVS's
    ADD_OR_MOD (whether the switch has it or not: after drift, or while
    someone deletes groups behind our back, nobody can say), and groups we
    no longer want are deleted last.  Flows of older rounds are removed by
    cookie (ofmsg).
    """
    plan = diff({}, new)
    plan.groups_may_exist = True
    wanted = {g.group_id for g in plan.group_adds}
    plan.group_deletes = [F.SelectGroup(gid) for gid in sorted(set(groups_on_switch) - wanted)]
    return plan


def _settle_moves(plan: Plan) -> None:
    """A flow or group that moved between objects is a modify, not add+delete.

    (An external IP handed from one service to another keeps its flow key;
    deleting it after the add would lose the new flow.)
    """
    if not plan.flow_deletes and not plan.group_deletes:
        return
    written = {f.key for f in plan.flow_adds + plan.flow_modifies}
    plan.flow_deletes = [f for f in plan.flow_deletes if f.key not in written]
    deleted = {g.group_id for g in plan.group_deletes}
    moved = [g for g in plan.group_adds if g.group_id in deleted]
    if moved:
        moved_ids = {g.group_id for g in moved}
        plan.group_adds = [g for g in plan.group_adds if g.group_id not in moved_ids]
        plan.group_deletes = [g for g in plan.group_deletes
                              if g.group_id not in moved_ids]
        plan.group_modifies += moved


def apply(flows: dict, groups: dict, plan: Plan) -> None:
    """Apply a plan to flat tables ({flow key: Flow}, {group id: group}).

    Follows OpenFlow's semantics, including that deleting a group deletes
    the flows that output to it.
    """
    for g in plan.group_adds:
        if g.group_id in groups and not plan.groups_may_exist:
            raise ValueError(f"group {g.group_id} already exists")
        groups[g.group_id] = g
    for f in plan.flow_adds + plan.flow_modifies:
        flows[f.key] = f
    for f in plan.flow_deletes:
        flows.pop(f.key, None)
    for g in plan.group_modifies:
        if g.group_id not in groups:
            raise ValueError(f"group {g.group_id} does not exist")
        groups[g.group_id] = g
    for g in plan.group_deletes:
        groups.pop(g.group_id, None)
        for fkey in [k for k, f in flows.items() if F.Group(g.group_id) in f.actions]:
            del flows[fkey]
    for cookie in plan.learned_deletes:
        for fkey in [k for k, f in flows.items()
                     if f.cookie & cookies.OBJECT_MASK == cookie & cookies.OBJECT_MASK]:
            del flows[fkey]
