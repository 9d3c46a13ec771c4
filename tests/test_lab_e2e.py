"""End to end on one shared Mininet lab: real TCP and UDP between pods.

Two compute nodes with two pods each, the fabric, the gateway and the
Internet host; the embedded API server, the lab's kubelet, and ryu-manager
with our app watching the API server.  Tests poll for state, never sleep.
"""
import signal

import pytest

from lab_helpers import HeldConnection, answers, set_ready
from topologies import lab as L

pytestmark = pytest.mark.mininet


def test_cluster_ip_answers_from_every_endpoint_on_both_nodes(lab):
    everyone = {p.name for p in lab.pods}
    for node in lab.nodes:
        client = node.pods[0].name
        seen = set()
        L.wait_for(lambda: seen.update(answers(lab, client, 8)) or everyone <= seen,
                   30, interval=0, what=f"all pods answering {client}")
        assert seen - {""} == everyone


def test_udp_cluster_ip_is_translated_to_the_target_port_from_every_pod(lab):
    """UDP 53 on the VIP reaches a pod's 5353 from every client pod.

    (Which endpoint answers is OVS's choice: under OpenFlow 1.3 its select
    groups hash UDP on addresses only, so one client sticks to one endpoint;
    see docs/known-limits.md.)
    """
    script = ("import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
              "s.settimeout(2);s.sendto(b'hi',('%s',53));print(s.recv(100).decode())"
              % L.DEMO_VIP)
    everyone = {p.name for p in lab.pods}
    for client in everyone:
        answer = lab.net.get(client).cmd(f"python3 -c \"{script}\"").strip()
        assert answer in everyone, (client, answer)


def test_removed_endpoint_gets_no_new_connections_and_others_keep_theirs(lab):
    held = HeldConnection(lab, "pod1")
    try:
        owner = held.ping().split()[0]
        victim = next(p.name for p in lab.pods if p.name not in (owner, "pod1"))
        set_ready(lab, [p.name for p in lab.pods if p.name != victim])
        # A failed connect is retried once: a client port reused within the
        # TIME_WAIT of an older connection can lose its SYN (seen once in CI;
        # see docs/known-limits.md); the victim must never answer.
        got = [a or lab.curl("pod1", f"http://{L.DEMO_VIP}/") for a in answers(lab, "pod1", 30)]
        assert victim not in got and all(got)
        assert held.ping("still") == f"{owner} still"
    finally:
        held.close()
        set_ready(lab, [p.name for p in lab.pods])


def test_controller_kill9_keeps_traffic_and_comes_back_to_the_same_flows(lab):
    bridges = [n.bridge for n in lab.nodes]
    before = {b: (len(lab.dump_flows(b)), len(lab.dump_groups(b))) for b in bridges}
    gens = {b: {line.split(",")[0] for line in lab.dump_flows(b)} for b in bridges}
    held = HeldConnection(lab, "pod3")
    try:
        owner = held.ping().split()[0]
        lab.stop_controller(signal.SIGKILL)
        # while it is down, secure fail mode keeps every flow forwarding
        assert all(answers(lab, "pod3", 5))
        assert held.ping("down") == f"{owner} down"
        lab.start_controller()

        def new_round():
            assert all(answers(lab, "pod3", 2))   # new connections work throughout
            return all({line.split(",")[0] for line in lab.dump_flows(b)}.isdisjoint(gens[b])
                       for b in bridges)
        L.wait_for(new_round, 40, interval=0, what="the new round on every bridge")
        after = {b: (len(lab.dump_flows(b)), len(lab.dump_groups(b))) for b in bridges}
        assert after == before
        rounds = {b: {line.split(",")[0][:len("cookie=0x") + 2] for line in lab.dump_flows(b)}
                  for b in bridges}
        assert all(len(r) == 1 for r in rounds.values()), rounds   # no stale round left
        assert held.ping("after") == f"{owner} after"
    finally:
        held.close()
