"""Per-switch planning: what is installed, which round, what failed.

No Ryu here: the switch object (controller/switch.py) feeds in the
handshake facts, the change sets and the bundle results; this class decides
what the next plan is.  One session lives as long as one OpenFlow
connection; a reconnect starts a new session, whose first plan is a full
resync in a new generation.

Change is not rediscovered here: the source's change sets go to the
compiler, which says which fragments it touched, and only those (plus the
ones that failed or are quarantined) are diffed against what is installed.
"""
import logging
from typing import Dict, Hashable, Optional, Set

from controller import cookies
from controller.compiler import Compiler, Keys
from controller.diff import diff, resync
from controller.fragments import Fragment, Plan
from nsx_proxy import changes
from nsx_proxy.changes import ALL

LOG = logging.getLogger(__name__)


class SwitchSession:
    """What one connection's switch holds: the fragments ``installed`` and
    ``quarantined`` (refused, skipped until their object changes), the
    round's facts, and which keys may differ from what is installed."""

    def __init__(self, dpid: int, group_ids: cookies.GroupIds):
        self.dpid = dpid
        self._group_ids = group_ids
        self.compiler: Optional[Compiler] = None
        self.installed: Dict[Hashable, Fragment] = {}
        # fragments OVS refused, by key: skipped until the object changes
        self.quarantined: Dict[Hashable, Fragment] = {}
        self.generation: Optional[int] = None      # set once the handshake is done
        self.stale_generations = set()
        self.groups_on_switch = set()
        self.needs_resync = True
        # fragment keys that may differ from what is installed, gathered from
        # the compiler's answers until a bundle carrying them commits
        self._unsettled: Keys = ALL

    # --- handshake -------------------------------------------------------
    def learn_switch(self, table0_cookies, group_ids) -> None:
        """Facts read from the switch right after it connected."""
        ours = {cookies.generation_of(c) for c in table0_cookies
                if cookies.kind_of(c) in cookies.KIND_NAMES}
        self.generation = cookies.next_generation(ours)
        self.stale_generations = ours - {self.generation}
        self.groups_on_switch = set(group_ids)
        self.needs_resync = True
        LOG.info("switch %016x: round %d (older rounds on switch: %s, groups: %d)",
                 self.dpid, self.generation, sorted(ours) or "none",
                 len(self.groups_on_switch))

    @property
    def ready(self) -> bool:
        return self.generation is not None and self.compiler is not None

    def set_context(self, ctx, make_compiler=Compiler) -> None:
        if self.compiler is None or self.compiler.ctx != ctx:
            self.compiler = make_compiler(ctx, self._group_ids)   # starts from ALL
            self._unsettled = ALL

    def note(self, change: changes.ChangeSet) -> None:
        """The cluster state changed like this (the compiler keeps it)."""
        if self.compiler is not None:
            self.compiler.note(change)

    # --- planning ----------------------------------------------------------
    def plan(self, state):
        """(desired state, plan, stale generations to delete, the keys the
        plan covers) for this pass; the keys go back in ``committed``.
        Quarantined objects keep their last good version (or stay out)
        until they change."""
        quarantined = frozenset(self.quarantined)
        want, changed = self.compiler.desired(state)
        self._unsettled = self._unsettled | changed
        if self.quarantined:
            want = dict(want)                    # the compiler's own: copy to change
        for key, bad in list(self.quarantined.items()):
            current = want.get(key)
            if current is None or (current is not bad and current != bad):
                del self.quarantined[key]        # changed or gone: try it again
            elif key in self.installed:
                want[key] = self.installed[key]  # keep the last good version
            else:
                del want[key]
        if self.needs_resync:
            return (want, resync(want, self.groups_on_switch), set(self.stale_generations),
                    ALL)
        keys = self._unsettled | quarantined
        return want, diff(self.installed, want, keys), set(), keys

    def redo(self, groups_on_switch) -> None:
        """The switch lost or changed what was installed (drift): write all of
        it again in the same round - an ADD over an identical flow changes
        nothing, a missing one comes back, every group is written with
        ADD_OR_MOD - and delete the groups on the switch we do not want."""
        self.needs_resync = True
        self.groups_on_switch = set(groups_on_switch)
        self.stale_generations = set()

    # --- results -------------------------------------------------------------
    def committed(self, want, keys: Keys, full: bool) -> None:
        """The plan for ``keys`` is on the switch.  ``installed`` is the
        session's own: a full plan (``full``: it was planned as a resync)
        copies ``want`` whole, an incremental one takes just its keys.  A
        resync asked for while an incremental plan was out (``redo``: drift)
        stays due: that plan was not it."""
        if full or keys is ALL:
            self.installed = dict(want)
        else:
            for key in keys:
                frag = want.get(key)
                if frag is None:
                    self.installed.pop(key, None)
                else:
                    self.installed[key] = frag
        self._unsettled = frozenset()
        if full:
            self.needs_resync = False
            self.stale_generations = set()
            self.groups_on_switch = set()

    def unencodable(self, want, plan: Plan, bad) -> Set[Hashable]:
        """Messages that could not be encoded ({plan item: why}): their
        objects are quarantined before anything is sent, so the bundle
        carries everything else.  An item no object owns (a delete) raises."""
        owners = dict(plan.owners)
        blamed = {}
        for item, why in bad.items():
            key = owners.get(item)
            if key is None:
                raise ValueError(f"cannot encode {item!r}: {why}")
            blamed.setdefault(key, why)
        for key, why in sorted(blamed.items(), key=lambda kv: str(kv[0])):
            LOG.error("switch %016x: %s cannot be encoded (%s); skipped until it changes",
                      self.dpid, key, why)
            self.quarantined[key] = want[key]
        return set(blamed)

    def failed(self, want, plan: Plan, failed_items, reason: str) -> Set[Hashable]:
        """The bundle was refused: nothing was applied (bundles are atomic).

        The objects whose messages OVS named are quarantined, so the next
        pass installs everything else; they are retried when they change.
        """
        owners = dict(plan.owners)
        keys = {owners[item] for item in failed_items if item in owners}
        LOG.error("switch %016x: bundle refused (%s); skipped until they change: %s",
                  self.dpid, reason, ", ".join(sorted(map(str, keys))) or "nothing to blame")
        for key in keys:
            self.quarantined[key] = want[key]
        if not keys:
            self.needs_resync = True   # start over from a clean round
        return keys
