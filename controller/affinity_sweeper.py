"""Expiry of session-affinity entries whose timeout a learn action cannot hold.

``timeoutSeconds`` may be anything from 1 to 86,400; a learned flow's
idle_timeout is 16 bits (at most 65,535).  Entries of services with a
longer timeout are learned without an idle timeout, and this sweeper
expires them the way OVS would have: every ``period`` it reads their packet
counters (flow stats by cookie); an entry whose counter has not moved for
the service's timeout is deleted.  Like an OVS idle timeout (and kube-proxy's
``recent`` match), only new connections count as use: established packets
never reach the SessionAffinity table.  Expiry happens within one period of
the exact time; an entry first seen by a (re)started controller gets a full
timeout from then.

Pure bookkeeping: the switch object builds the requests and deletes from it.
"""
from typing import Dict, Iterable, Tuple

from controller import cookies, pipeline
from controller.names import external_group_name, service_port_name


def long_timeouts(state, group_ids) -> Dict[int, int]:
    """{learned-entry cookie: timeout} of the pools whose timeout is too long
    for a learn action."""
    out = {}
    for svc in state.services.values():
        if not svc.affinity_timeout or svc.affinity_timeout <= pipeline.LEARN_TIMEOUT_MAX:
            continue
        for port in svc.ports:
            for name in (service_port_name(svc, port), external_group_name(svc, port)):
                gid = group_ids.peek(name)
                if gid is not None:
                    out[cookies.make(cookies.KIND_AFFINITY, gid)] = svc.affinity_timeout
    return out


class AffinitySweeper:
    def __init__(self):
        self.timeouts: Dict[int, int] = {}            # cookie -> seconds
        # (cookie, priority, match) -> (packet count, when it last moved)
        self._seen: Dict[tuple, Tuple[int, float]] = {}

    def track(self, timeouts: Dict[int, int]) -> Iterable[int]:
        """The cookies to read this round (services may have come and gone)."""
        self.timeouts = dict(timeouts)
        self._seen = {k: v for k, v in self._seen.items() if k[0] in self.timeouts}
        return sorted(self.timeouts)

    def observe(self, entries, now) -> list:
        """``entries``: (cookie, priority, match key, packet count) read from the
        switch; returns those to delete (idle for their whole timeout)."""
        expired = []
        for cookie, priority, match, count in entries:
            timeout = self.timeouts.get(cookie)
            if timeout is None:
                continue
            key = (cookie, priority, match)
            before = self._seen.get(key)
            if before is None or before[0] != count:
                self._seen[key] = (count, now)
            elif now - before[1] >= timeout:
                expired.append(key)
                del self._seen[key]
        return expired

    def forget_missing(self, cookie, present) -> None:
        """Entries of ``cookie`` the switch no longer has (deleted elsewhere)."""
        for key in [k for k in self._seen if k[0] == cookie and k not in present]:
            del self._seen[key]
