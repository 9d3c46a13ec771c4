"""bench.start, small: every step of an agent's first sync runs on the
objects the lab's API server sends, and what it keeps is weighed."""
from bench import start


def test_the_start_breakdown_runs_every_step_and_weighs_what_is_kept(capsys):
    start.main(["--services", "40", "--rounds", "1"])
    out = capsys.readouterr().out
    for step in ("decode the lists and pack them into the cache", "translate",
                 "compile node1's bridge", "encode the bundle", "the cache", "the model",
                 "the fragments"):
        assert step in out
    times, kept = start.one_start(start.lists(40), weigh=True)
    assert all(size > 0 for size in kept.values())
    # the list step's peak above what it keeps: about one item, not the list
    assert kept["(the lists' peak on top of it)"] < kept["the cache"]


def test_udp_services_cost_a_flow_per_endpoint_instead_of_a_group(capsys):
    start.main(["--services", "40", "--rounds", "1", "--protocol", "UDP"])
    out = capsys.readouterr().out
    # 40 x (4 flows of the VIP and port + 5 UdpSpread flows) + the pipeline's 25: no group
    assert "40 UDP services" in out and "(385 messages" in out, out


def test_dual_stack_services_cost_a_second_pool_and_vip_each(capsys):
    start.main(["--services", "40", "--rounds", "1", "--dual-stack"])
    out = capsys.readouterr().out
    # IPv4: 40 x (group, frontend, ARP, 2 rejects) + the pipeline's 25 = 225;
    # the IPv6 family adds as much per service and the bridge's 10 IPv6
    # pipeline flows (conntrack, ND, the gateway's)
    assert "40 dual-stack TCP services" in out and "(435 messages" in out, out
