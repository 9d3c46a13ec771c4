"""Which UDP conntrack entries go when endpoints go."""
import dataclasses

from controller.udp_flush import StaleUdp, stale_udp_entries
import world


def test_removed_udp_endpoint_is_flushed_for_every_frontend():
    before = dataclasses.replace(world.web(endpoints=("pod1", "pod3")),
                                 external_ips=("198.51.100.7",))
    after = dataclasses.replace(world.web(endpoints=("pod1",)),
                                external_ips=("198.51.100.7",))
    got = stale_udp_entries(world.state(before), world.state(after))
    pod3 = world.PODS["pod3"].ip
    assert got == [StaleUdp(world.VIP, 53, pod3, 5353),
                   StaleUdp("198.51.100.7", 53, pod3, 5353)]      # TCP is left alone


def test_not_ready_counts_as_gone_and_deleted_services_flush_everything():
    svc = world.web(endpoints=("pod1",))
    unready = world.web(endpoints=("pod1",), ready=False)
    pod1 = world.PODS["pod1"].ip
    assert stale_udp_entries(world.state(svc), world.state(unready)) == [
        StaleUdp(world.VIP, 53, pod1, 5353)]
    assert stale_udp_entries(world.state(svc), world.state()) == [
        StaleUdp(world.VIP, 53, pod1, 5353)]


def test_unchanged_or_growing_services_flush_nothing():
    svc = world.web(endpoints=("pod1",))
    st = world.state(svc)
    assert stale_udp_entries(st, world.state(svc)) == []
    assert stale_udp_entries(st, world.state(world.web(endpoints=("pod1", "pod3")))) == []
