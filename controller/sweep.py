"""Session-affinity entries whose timeout is over a learn action's 65,535 s,
expired by the controller (controller/affinity_sweeper.py decides which):
the flow stats reads of one switch, and the deletes they lead to.

Like the drift watch, one per connected switch (``Switch.sweep``).
"""
import logging

from controller import cookies, pipeline
from controller.affinity_sweeper import AffinitySweeper, long_timeouts

LOG = logging.getLogger("nsx_proxy")


class Sweep:
    def __init__(self, dp, group_ids):
        self._dp = dp
        self._group_ids = group_ids
        self.sweeper = AffinitySweeper()
        self._reads = {}                  # xid of a flow stats request -> (cookie, entries)

    def requests(self, state) -> list:
        """Flow stats requests for the learned entries the sweeper expires."""
        dp = self._dp
        parser, ofp = dp.ofproto_parser, dp.ofproto
        out = []
        for cookie in self.sweeper.track(long_timeouts(state, self._group_ids)):
            req = parser.OFPFlowStatsRequest(
                dp, 0, pipeline.SESSION_AFFINITY.id, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie,
                cookies.GEN_MASK | cookies.OBJECT_MASK, parser.OFPMatch())
            dp.set_xid(req)
            self._reads[req.xid] = (cookie, [])
            out.append(req)
        return out

    def is_reply(self, xid) -> bool:
        return xid in self._reads

    def request_failed(self, xid) -> None:
        """That read ends; the next period asks again."""
        self._reads.pop(xid, None)

    def reply(self, xid, stats, more, now) -> list:
        """One part of a read's flow stats; the deletes of expired entries."""
        cookie, entries = self._reads[xid]
        entries += [(s.cookie, s.priority, _match_key(s.match), s.packet_count, s.match)
                    for s in stats]
        if more:
            return []
        del self._reads[xid]
        matches = {(c, p, k): m for c, p, k, _, m in entries}
        expired = self.sweeper.observe([(c, p, k, n) for c, p, k, n, _ in entries],
                                       now)
        # entries of this cookie the switch no longer has (also when it has none)
        self.sweeper.forget_missing(cookie, set(matches))
        if expired:
            LOG.info("switch %016x: %d session-affinity entries idle for their "
                     "timeout, deleted", self._dp.id, len(expired))
        dp = self._dp
        parser, ofp = dp.ofproto_parser, dp.ofproto
        return [parser.OFPFlowMod(
            dp, cookie=cookie, cookie_mask=cookies.GEN_MASK | cookies.OBJECT_MASK,
            table_id=pipeline.SESSION_AFFINITY.id, command=ofp.OFPFC_DELETE_STRICT,
            priority=priority, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
            match=matches[(cookie, priority, key)]) for cookie, priority, key in expired]


def _match_key(match) -> tuple:
    """A hashable identity of an OFPMatch (a learned entry's match)."""
    return tuple(sorted((k, v if not isinstance(v, list) else tuple(v))
                        for k, v in match.items()))
