"""Which UDP conntrack entries to flush after endpoints go away.

UDP has no FIN: a client that keeps sending from one source port keeps
matching its conntrack entry, DNATed to an endpoint that is gone, and
blackholes until the entry times out - the classic kube-proxy outage.  Like
kube-proxy, after the flows stop using an endpoint we delete the entries
whose original destination is one of the service's frontends on that port
and whose reply comes from the endpoint; the client's next datagram is a
new connection and load-balances onto a live endpoint.

Pure: (old state, new state) -> entries; the app sends them as NXT_CT_FLUSH
after the bundle that removed the endpoint is committed.
"""
from typing import List, NamedTuple

from nsx_proxy import model


class StaleUdp(NamedTuple):
    frontend_ip: str
    frontend_port: int
    endpoint_ip: str
    endpoint_port: int


def stale_udp_entries(old: model.ClusterState, new: model.ClusterState) -> List[StaleUdp]:
    out = []
    for key, before in old.services.items():
        after = new.services.get(key)
        if after is before:
            continue                         # unchanged object: nothing went away
        now = {(p.protocol, p.port): p for p in (after.ports if after else ())}
        for port in before.ports:
            if port.protocol != model.UDP:
                continue
            kept = now.get((port.protocol, port.port))
            still = {(e.ip, e.port) for e in kept.ready_endpoints()} if kept else set()
            gone = sorted({(e.ip, e.port) for e in port.ready_endpoints()} - still)
            for ip in before.frontend_ips:
                out += [StaleUdp(ip, port.port, ep_ip, ep_port) for ep_ip, ep_port in gone]
    return out
