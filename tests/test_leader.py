"""Leader election over a Lease, against the lab's API server: one writer at a
time, a takeover within the lease duration, no write on a moved-on Service."""
import logging
import time

import pytest

from kube_helpers import service
from nsx_proxy import lb_ipam, model
from nsx_proxy.kube_source import KubeSource, api_client
from nsx_proxy.leader import Elector
from nsx_proxy.runner import thread_hub
from topologies.apiserver.kinds import RESOURCES
from topologies.waiting import wait_for

SVC = RESOURCES["services"]
LEASE = RESOURCES["leases"]
TIMINGS = dict(lease_duration=3, renew_deadline=2, retry_period=1)
RUNNING = []


@pytest.fixture(autouse=True)
def _stop_all(request):
    request.getfixturevalue("server")       # stop ours before the API server
    yield
    while RUNNING:
        RUNNING.pop().stop(release=False)


def elector(server, identity, on_change=lambda leading: None, **kw):
    e = Elector(api_client(server.kubeconfig_path), "default", "writer", identity,
                on_change, thread_hub(), **dict(TIMINGS, **kw))
    e.start()
    RUNNING.append(e)
    return e


def holder(server):
    return server.api.get(LEASE, "default", "writer")["spec"].get("holderIdentity")


def test_one_agent_leads_and_another_takes_over_within_the_lease_when_it_dies(server):
    a, b = elector(server, "node1_a"), elector(server, "node2_b")
    wait_for(lambda: a.leading or b.leading, 10, what="a leader")
    time.sleep(2.5)                          # several renewals: still exactly one
    assert a.leading != b.leading
    leader, follower = (a, b) if a.leading else (b, a)
    assert holder(server) == leader.identity
    died = time.monotonic()
    leader.stop(release=False)               # as if the process were killed
    wait_for(lambda: follower.leading, 10, what="the follower to take the lease")
    took = time.monotonic() - died
    assert holder(server) == follower.identity
    # not before the dead leader's lease ran out, and within its duration
    # plus the retry period and one renewal's worth of observation
    assert 1.5 <= took <= TIMINGS["lease_duration"] + 2 * TIMINGS["retry_period"] + 1


def test_a_leader_that_stops_hands_the_lease_back_at_once(server):
    a = elector(server, "node1_a")
    wait_for(lambda: a.leading, 10, what="a to lead")
    b = elector(server, "node2_b", lease_duration=30, renew_deadline=20)
    time.sleep(1.5)
    assert not b.leading
    stopped = time.monotonic()
    a.stop()                                 # graceful: the lease is released
    wait_for(lambda: b.leading, 10, what="b to take the released lease")
    assert time.monotonic() - stopped < 3    # a retry period, not a lease duration


def test_a_release_racing_a_renewal_still_hands_the_lease_back(server):
    """The leader stops while a renewal is in flight: the lease it read last
    is one version behind (409 on replace).  It reads again and releases;
    before, the follower waited out the whole lease (the multi-host lab's
    SIGTERM handover once took 4.4 s)."""
    from nsx_proxy.leader import LeaseLock
    a = elector(server, "node1_a", lease_duration=30, renew_deadline=20, retry_period=10)
    wait_for(lambda: a.leading, 10, what="a to lead")
    lock = LeaseLock(api_client(server.kubeconfig_path), "default", "writer", "node1_a")
    assert lock.get("writer", "default")[0]               # what the stopping agent read
    lease = server.api.get(LEASE, "default", "writer")    # a renewal lands meanwhile
    lease["spec"]["renewTime"] = "2030-01-01T00:00:00.000000Z"
    server.api.update(LEASE, "default", "writer", lease)
    lock.release()
    assert holder(server) is None


def test_an_unreachable_api_server_is_one_log_line_and_no_leadership(server, caplog):
    from kubernetes import client
    cfg = client.Configuration()
    cfg.host, cfg.retries = "http://127.0.0.1:9", 0          # nothing listens there
    e = Elector(client.ApiClient(cfg), "default", "writer", "lost", lambda leading: None,
                thread_hub(), **TIMINGS)
    e.start()
    RUNNING.append(e)
    time.sleep(3.5)
    assert not e.leading
    lines = [r.getMessage() for r in caplog.records if r.name == "nsx_proxy.leader"]
    assert len(lines) == 1 and "cannot read lease default/writer" in lines[0], lines


def test_bad_timings_are_refused_with_the_rule():
    with pytest.raises(ValueError, match="lease_duration > renew_deadline"):
        Elector(None, "default", "writer", "x", lambda leading: None, thread_hub(),
                lease_duration=10, renew_deadline=10, retry_period=2)


class Agent:
    """A KubeSource as an agent runs it: LB IPs from a pool, under election."""

    def __init__(self, server, name):
        ipam = lb_ipam.Ipam(lb_ipam.parse_pools("default=198.51.100.0/29"), "default")
        self.source = KubeSource(
            api_client(server.kubeconfig_path), lambda state, change: None, thread_hub(),
            min_interval=0.05, ipam=ipam,
            election=dict(namespace="default", name="writer", identity=name, **TIMINGS))
        self.patched = []
        real = self.source.lb_writer._core.patch_namespaced_service_status

        def counted(name, namespace, body):
            self.patched.append(name)
            return real(name, namespace, body)
        self.source.lb_writer._core.patch_namespaced_service_status = counted
        self.source.start()
        RUNNING.append(self)

    def stop(self, release=True):
        self.source.elector.stop(release)
        self.source.stop()


def _ingress(server, name):
    status = server.api.get(SVC, "default", name).get("status") or {}
    return [i["ip"] for i in (status.get("loadBalancer") or {}).get("ingress") or ()]


def test_only_the_elected_agent_writes_and_its_successor_hands_out_no_ip_twice(server):
    agents = [Agent(server, "node1"), Agent(server, "node2"), Agent(server, "gw")]
    wait_for(lambda: sum(a.source.writes for a in agents) == 1, 10, what="one writer")
    for name in ("lb1", "lb2"):
        server.api.create(SVC, "default", service(name, {"app": "web"},
                                                  type_="LoadBalancer"))
    wait_for(lambda: all(_ingress(server, n) for n in ("lb1", "lb2")), 10,
             what="IPs for lb1 and lb2")
    leader = next(a for a in agents if a.source.writes)
    assert sorted(leader.patched) == ["lb1", "lb2"]        # once each, by the leader
    assert all(not a.patched for a in agents if a is not leader)
    leader.stop(release=False)                            # killed, lease not handed back
    wait_for(lambda: any(a.source.writes for a in agents if a is not leader), 15,
             what="another agent to take over")
    server.api.create(SVC, "default", service("lb3", {"app": "web"}, type_="LoadBalancer"))
    wait_for(lambda: _ingress(server, "lb3"), 10, what="an IP for lb3")
    time.sleep(0.5)
    successor = next(a for a in agents if a is not leader and a.source.writes)
    assert successor.patched == ["lb3"]                    # lb1 and lb2 left as they were
    ips = [ip for n in ("lb1", "lb2", "lb3") for ip in _ingress(server, n)]
    assert len(ips) == 3 and len(set(ips)) == 3           # one each, never shared


def test_a_write_planned_on_an_old_version_of_the_service_does_not_land(server, caplog):
    caplog.set_level(logging.INFO, logger="nsx_proxy.kube_source")
    server.api.create(SVC, "default", service("lb", {"app": "web"}, type_="LoadBalancer"))
    agent = Agent(server, "node1")
    wait_for(lambda: _ingress(server, "lb"), 10, what="the first IP")
    old = server.api.get(SVC, "default", "lb")["metadata"]["resourceVersion"]
    server.api.patch(SVC, "default", "lb", "application/merge-patch+json",
                     b'{"metadata": {"labels": {"moved": "on"}}}')
    key = model.ServiceKey("default", "lb")
    before = _ingress(server, "lb")
    agent.source.lb_writer._write(key, "198.51.100.6", old)      # a late, stale write
    assert _ingress(server, "lb") == before
    assert any("changed before its load-balancer IP was written" in r.getMessage()
               for r in caplog.records)


def test_a_leader_renews_without_reading_the_lease_first(server):
    """client-go's fast path: while its writes hold, the leader's renewal is
    one write (every agent reads the Lease every retry period otherwise)."""
    a = elector(server, "node1_a")
    wait_for(lambda: a.leading, 10, what="a to lead")
    reads, read = [], a.lock.leases.read_namespaced_lease
    a.lock.leases.read_namespaced_lease = lambda *args, **kw: (reads.append(1),
                                                               read(*args, **kw))[1]
    renewed = server.api.get(LEASE, "default", "writer")["spec"]["renewTime"]
    time.sleep(3.5 * TIMINGS["retry_period"])
    assert a.leading and reads == []
    assert server.api.get(LEASE, "default", "writer")["spec"]["renewTime"] > renewed


def test_a_leader_whose_lease_is_taken_stops_writing_with_one_line(server, caplog):
    """Someone else holds the lease now (an operator, a partitioned agent's
    successor): this agent's renewals are refused, and within the renew
    deadline it says once that it writes no more."""
    changes = []
    a = elector(server, "node1_a", on_change=changes.append)
    wait_for(lambda: a.leading, 10, what="a to lead")
    lease = server.api.get(LEASE, "default", "writer")
    lease["spec"]["holderIdentity"] = "intruder"
    lease["spec"]["leaseDurationSeconds"] = 60
    server.api.update(LEASE, "default", "writer", lease)
    wait_for(lambda: not a.leading, TIMINGS["renew_deadline"] + 3,
             what="a to give up within its renew deadline")
    assert changes == [True, False] and holder(server) == "intruder"
    lines = [r.getMessage() for r in caplog.records if "lost lease" in r.getMessage()]
    assert len(lines) == 1 and "node1_a" in lines[0] and "default/writer" in lines[0]


def test_a_failing_election_round_is_logged_and_the_agent_stands_again(server, caplog,
                                                                        monkeypatch):
    from kubernetes.leaderelection import leaderelection
    real, calls = leaderelection.LeaderElection.run, []

    def flaky(self):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in one round")
        return real(self)
    monkeypatch.setattr(leaderelection.LeaderElection, "run", flaky)
    a = elector(server, "node1_a")
    wait_for(lambda: a.leading, 10, what="a to lead after the failed round")
    lines = [r.getMessage() for r in caplog.records if "round failed" in r.getMessage()]
    assert len(lines) == 1
