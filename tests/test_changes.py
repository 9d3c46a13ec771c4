"""The change set: what changed, and which UDP conntrack entries go when endpoints go."""
import dataclasses

from nsx_proxy import changes
from nsx_proxy.changes import StaleUdp
import world


def udp_gone(old, new):
    return list(changes.between(old, new).udp_gone)


def test_removed_udp_endpoint_is_flushed_for_every_frontend():
    before = dataclasses.replace(world.web(endpoints=("pod1", "pod3")),
                                 external_ips=("198.51.100.7",))
    after = dataclasses.replace(world.web(endpoints=("pod1",)),
                                external_ips=("198.51.100.7",))
    got = udp_gone(world.state(before), world.state(after))
    pod3 = world.PODS["pod3"].ip
    assert got == [StaleUdp(world.VIP, 53, pod3, 5353),
                   StaleUdp("198.51.100.7", 53, pod3, 5353)]      # TCP is left alone


def test_not_ready_counts_as_gone_and_deleted_services_flush_everything():
    svc = world.web(endpoints=("pod1",))
    unready = world.web(endpoints=("pod1",), ready=False)
    pod1 = world.PODS["pod1"].ip
    assert udp_gone(world.state(svc), world.state(unready)) == [
        StaleUdp(world.VIP, 53, pod1, 5353)]
    assert udp_gone(world.state(svc), world.state()) == [
        StaleUdp(world.VIP, 53, pod1, 5353)]


def test_unchanged_or_growing_services_flush_nothing():
    svc = world.web(endpoints=("pod1",))
    st = world.state(svc)
    assert udp_gone(st, world.state(svc)) == []
    assert udp_gone(st, world.state(world.web(endpoints=("pod1", "pod3")))) == []


def test_change_set_names_added_changed_and_removed_services_only():
    a, b = world.web(), world.web(name="other", vip="10.96.0.11")
    old = world.state(a, b)
    b2 = world.web(name="other", vip="10.96.0.11", endpoints=("pod2",))
    c = world.web(name="third", vip="10.96.0.12")
    new = world.state(a, b2, c)
    change = changes.between(old, new)
    assert change.services == {b.key, c.key} and not change.nodes and not change.everything
    assert changes.between(new, world.state(a)).services == {b.key, c.key}
    assert not changes.between(old, old)


def test_compute_trusts_the_touched_keys_and_merge_adds_up():
    a = world.web()
    old, new = world.state(a), world.state(world.web(endpoints=("pod2",)))
    assert changes.compute(old, new, []).services == frozenset()   # nothing touched
    one = changes.compute(old, new, [a.key])
    assert one.services == {a.key}
    merged = changes.ChangeSet(nodes=True).merge(one)
    assert merged.services == {a.key} and merged.nodes and not merged.everything
    assert changes.EVERYTHING.merge(changes.ChangeSet()).everything
    later = changes.ChangeSet(services=frozenset({a.key})).merge(changes.EVERYTHING)
    assert later.services is changes.ALL and a.key in later.services
