"""What changed between two cluster states: the change set.

kube-proxy's change trackers are the model: the Kubernetes side knows what
it re-translated, so it hands the OpenFlow side the new state *and* what
changed, and nothing downstream walks every service again to find out.

* ``services``: keys of services added, changed or removed (by object
  identity: an unchanged service keeps its object), or :data:`ALL`;
* ``nodes`` / ``floating_ips``: whether those maps changed at all (they are
  small, and a change there touches every bridge anyway);
* ``udp_gone``: UDP endpoints that stopped receiving new connections, per
  frontend - their conntrack entries must be flushed (see below);
* ``trigger_times``: wall-clock times (epoch seconds) from the changed
  EndpointSlices' ``endpoints.kubernetes.io/last-change-trigger-time``: when
  the change that produced them happened (kube-proxy's network programming
  SLI measures from there to "programmed").

"Everything changed" (a first state, a source that lost track) is said one
way, here and downstream: :data:`ALL` where a set of keys goes.  The compiler
answers in the same words: the fragment keys it touched, or ALL.

UDP has no FIN: a client that keeps sending from one source port keeps
matching its conntrack entry, DNATed to an endpoint that is gone, and
blackholes until the entry times out - the classic kube-proxy outage.  Like
kube-proxy, after the flows stop using an endpoint the entries whose
original destination is one of the service's frontends on that port and
whose reply comes from the endpoint are deleted.

Pure: no I/O.  Sources that track their changes call :func:`compute` with
the keys they touched; others call :func:`between`, which compares every
service by identity (the one place that walk is written).
"""
from dataclasses import dataclass
from typing import FrozenSet, Iterable, NamedTuple, Tuple, Union

from nsx_proxy import model


class _All:
    """Every key: "everything changed", the one way to say it.  Behaves as
    the set of all keys where a change set's keys go: it holds every key,
    and a union with it is itself."""
    __slots__ = ()

    def __contains__(self, key) -> bool:
        return True

    def __or__(self, other):
        return self

    __ror__ = __or__

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return "ALL"


ALL = _All()


class StaleUdp(NamedTuple):
    """A UDP frontend's conntrack entries towards an endpoint that went away."""
    frontend_ip: str
    frontend_port: int
    endpoint_ip: str
    endpoint_port: int


@dataclass(frozen=True)
class ChangeSet:
    services: Union[FrozenSet[model.ServiceKey], _All] = frozenset()
    nodes: bool = False
    floating_ips: bool = False
    udp_gone: Tuple[StaleUdp, ...] = ()
    trigger_times: Tuple[float, ...] = ()

    @property
    def everything(self) -> bool:
        return self.services is ALL

    def __bool__(self) -> bool:
        return bool(self.services or self.nodes or self.floating_ips)

    def merge(self, later: "ChangeSet") -> "ChangeSet":
        """This change followed by ``later``, as one."""
        return ChangeSet(services=self.services | later.services,
                         nodes=self.nodes or later.nodes,
                         floating_ips=self.floating_ips or later.floating_ips,
                         udp_gone=self.udp_gone + later.udp_gone,
                         trigger_times=self.trigger_times + later.trigger_times)


EVERYTHING = ChangeSet(services=ALL, nodes=True, floating_ips=True)


def compute(old: model.ClusterState, new: model.ClusterState,
            touched: Iterable[model.ServiceKey], trigger_times=()) -> ChangeSet:
    """The change set, given the services a source may have changed (any
    superset of the ones that really did)."""
    changed = frozenset(k for k in touched
                        if old.services.get(k) is not new.services.get(k))
    return ChangeSet(
        services=changed,
        nodes=old.nodes is not new.nodes and old.nodes != new.nodes,
        floating_ips=(old.floating_ips is not new.floating_ips
                      and old.floating_ips != new.floating_ips),
        udp_gone=tuple(stale_udp(old, new, sorted(changed))),
        trigger_times=tuple(trigger_times))


def between(old: model.ClusterState, new: model.ClusterState) -> ChangeSet:
    """The change set of a source that does not track its changes."""
    return compute(old, new, old.services.keys() | new.services.keys())


def stale_udp(old: model.ClusterState, new: model.ClusterState,
              keys: Iterable[model.ServiceKey]):
    """UDP (frontend, endpoint) pairs of the services ``keys`` whose endpoint
    no longer receives new connections."""
    for key in keys:
        before = old.services.get(key)
        if before is None:
            continue
        after = new.services.get(key)
        now = {(p.protocol, p.port): p for p in (after.ports if after else ())}
        for port in before.ports:
            if port.protocol != model.UDP:
                continue
            kept = now.get((port.protocol, port.port))
            still = {(e.ip, e.port) for e in kept.ready_endpoints()} if kept else set()
            gone = sorted({(e.ip, e.port) for e in port.ready_endpoints()} - still)
            for ip in before.frontend_ips:
                for ep_ip, ep_port in gone:
                    yield StaleUdp(ip, port.port, ep_ip, ep_port)
