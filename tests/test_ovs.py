"""Real Open vSwitch, no hosts: install through the app, check what OVS holds.

The bridge uses internal ports as pods and uplink, labelled in OVSDB the way
docs/ovsdb.md say.  Packets are checked with ofproto/trace.
"""
import os
import re
import signal

import pytest

from topologies.lab import run, wait_for
from ovs_helpers import STATE, Controller, flow_lines, group_lines

pytestmark = pytest.mark.ovs

BR = "nsxp-test0"
POD_MAC = "0a:58:0a:01:01:02"
ROUTER_MAC = "0a:58:0a:01:01:01"


@pytest.fixture(scope="module")
def bridge():
    run(["ovs-vsctl", "--if-exists", "del-br", BR])
    run(["ovs-vsctl", "add-br", BR, "--", "set", "bridge", BR, "datapath_type=netdev",
         "fail_mode=secure", "protocols=OpenFlow13",
         "external_ids:nsx-proxy-role=node", "external_ids:nsx-proxy-node=node1",
         "external_ids:nsx-proxy-pod-cidr=10.1.1.0/24",
         "--", "set-controller", BR, "tcp:127.0.0.1:16653",
         "--", "add-port", BR, "nsxp-t0-pod1", "--", "set", "interface", "nsxp-t0-pod1",
         "type=internal", "ofport_request=1", "external_ids:nsx-proxy-role=pod",
         "external_ids:pod-name=pod1", "external_ids:pod-namespace=default",
         "external_ids:ip-address=10.1.1.2", f"external_ids:attached-mac={POD_MAC}",
         "--", "add-port", BR, "nsxp-t0-up", "--", "set", "interface", "nsxp-t0-up",
         "type=internal", "ofport_request=10", "external_ids:nsx-proxy-role=uplink"])
    for uuid in run(["ovs-vsctl", "--bare", "--columns=controller", "list", "bridge",
                     BR]).split():
        run(["ovs-vsctl", "set", "controller", uuid, "max_backoff=1000"])
    yield BR
    run(["ovs-vsctl", "--if-exists", "del-br", BR])


@pytest.fixture(scope="module")
def controller(bridge, tmp_path_factory):
    ctl = Controller(tmp_path_factory.mktemp("ovs"), 16653)
    ctl.write_state(STATE)
    ctl.start()
    try:
        wait_for(lambda: len(group_lines(bridge)) == 1, 20, what="the service group")
        yield ctl
    finally:
        ctl.stop()


def trace(bridge, flow):
    return run(["ovs-appctl", "ofproto/trace", bridge, flow])


def generations(bridge):
    return {line.split(",")[0] [len("cookie=0x"):].rjust(16, "0")[:2]
            for line in flow_lines(bridge)}


def test_nat_buckets_are_accepted_by_ovs(controller, bridge):
    """Needs the NXActionNAT padding: without it OVS refuses the group (BAD_LEN)."""
    (group,) = group_lines(bridge)
    assert "nat(dst=10.1.1.2:8080)" in group and "nat(dst=10.1.2.2:8080)" in group
    assert "error" not in controller.log_text().lower()


def test_new_connection_to_vip_goes_through_conntrack_to_the_group(controller, bridge):
    out = trace(bridge, f"in_port=1,tcp,dl_src={POD_MAC},dl_dst={ROUTER_MAC},"
                        "nw_src=10.1.1.2,nw_dst=10.96.0.10,tp_dst=80,tcp_flags=syn")
    gid = re.search(r"group_id=(\d+)", group_lines(bridge)[0]).group(1)
    assert "ct(table=21,zone=" in out and f"group:{gid}" in out


def test_arp_for_the_vip_is_answered_from_the_bridge(controller, bridge):
    out = trace(bridge, f"in_port=1,arp,dl_src={POD_MAC},dl_dst=ff:ff:ff:ff:ff:ff,"
                        "arp_op=1,arp_spa=10.1.1.2,arp_tpa=10.96.0.10,"
                        f"arp_sha={POD_MAC}")
    actions = out.split("Datapath actions:")[1].splitlines()[0]
    assert f"set(eth(src={ROUTER_MAC},dst={POD_MAC}))" in actions
    assert (f"set(arp(sip=10.96.0.10,tip=10.1.1.2,op=2,sha={ROUTER_MAC},"
            f"tha={POD_MAC}))") in actions
    # one datapath port at the end (the pod's): answered, not flooded
    assert re.fullmatch(r".*\)\),\d+", actions.strip())


def test_spoofed_source_is_dropped(controller, bridge):
    out = trace(bridge, "in_port=1,tcp,dl_src=02:00:00:00:00:99,nw_src=10.1.1.2,"
                        "nw_dst=10.96.0.10,tp_dst=80,tcp_flags=syn")
    assert out.strip().endswith("Datapath actions: drop")


def test_restart_installs_a_new_round_and_removes_the_old(controller, bridge):
    before_flows, before_groups = sorted(flow_lines(bridge)), group_lines(bridge)
    (old_gen,) = generations(bridge)
    controller.stop(signal.SIGKILL)
    assert len(flow_lines(bridge)) == len(before_flows)   # secure mode: flows stay
    controller.start()
    wait_for(lambda: generations(bridge) == {f"{int(old_gen, 16) + 1:02x}"}, 30,
             what="the new round to replace the old one")
    assert len(flow_lines(bridge)) == len(before_flows)
    assert [g.split(",")[0] for g in group_lines(bridge)] == \
        [g.split(",")[0] for g in before_groups]


def test_endpoint_change_is_one_group_modify(controller, bridge):
    flows_before = {l.split(" duration")[0] for l in flow_lines(bridge)}
    state = dict(STATE, services=[dict(STATE["services"][0],
                                       endpoints=STATE["services"][0]["endpoints"][:1])])
    controller.write_state(state)
    wait_for(lambda: "10.1.2.2" not in group_lines(bridge)[0], 10, what="group modify")
    assert {l.split(" duration")[0] for l in flow_lines(bridge)} == flows_before
    controller.write_state(STATE)
    wait_for(lambda: "10.1.2.2" in group_lines(bridge)[0], 10, what="group restored")


def test_switch_that_reconnects_is_reconciled_to_the_full_state(controller, bridge):
    """A reconnect (as after an OVS restart) is reconciled to the whole state:
    flows deleted by hand while disconnected come back, one round only.
    (Removing the controller record also makes OVS drop the bridge's flows,
    which is what an OVS restart does too.)"""
    count, groups = len(flow_lines(bridge)), len(group_lines(bridge))
    run(["ovs-vsctl", "del-controller", bridge])
    run(["ovs-ofctl", "-O", "OpenFlow13", "del-flows", bridge, "table=10"])
    run(["ovs-vsctl", "set-controller", bridge, "tcp:127.0.0.1:16653"])
    for uuid in run(["ovs-vsctl", "--bare", "--columns=controller", "list", "bridge",
                     bridge]).split():
        run(["ovs-vsctl", "set", "controller", uuid, "max_backoff=1000"])
    wait_for(lambda: len(flow_lines(bridge)) == count and len(generations(bridge)) == 1
             and len(group_lines(bridge)) == groups, 30, what="reconcile after reconnect")


def test_a_bundle_large_enough_to_stream_installs_and_is_removed_in_one_piece(
        controller, bridge):
    """Over STREAM_AT steps the app encodes a bundle while sending it: OVS
    gets every group and flow of 420 services, then (streamed again) their
    removal, each as one atomic bundle."""
    from controller.bundle import STREAM_AT
    services = [{"name": f"bulk{i}", "clusterIP": f"10.97.{i // 200}.{i % 200 + 1}",
                 "ports": [{"name": "http", "protocol": "TCP", "port": 80,
                            "targetPort": 8080}],
                 "endpoints": [{"ip": "10.1.1.2", "node": "node1"},
                               {"ip": "10.1.2.2", "node": "node2"}]} for i in range(420)]
    assert 5 * len(services) >= STREAM_AT            # 3 VIP flows, a port flow, a group
    base_flows = len(flow_lines(bridge))
    controller.write_state(dict(STATE, services=STATE["services"] + services))
    wait_for(lambda: len(group_lines(bridge)) == 421, 30, what="420 more groups")
    assert len(flow_lines(bridge)) == base_flows + 4 * 420
    out = trace(bridge, f"in_port=1,tcp,dl_src={POD_MAC},dl_dst={ROUTER_MAC},"
                        "nw_src=10.1.1.2,nw_dst=10.97.2.20,tp_dst=80,tcp_flags=syn")
    assert "ct(table=21,zone=" in out and "group:" in out
    controller.write_state(STATE)
    wait_for(lambda: len(group_lines(bridge)) == 1, 30, what="the 420 groups removed")
    assert len(flow_lines(bridge)) == base_flows
    text = controller.log_text()
    assert "error" not in text.lower() and "discard" not in text.lower()


def test_ovs_discards_a_bundle_the_app_closes_with_discard():
    """What the streamed path relies on when a later message cannot be
    encoded: a bundle already holding adds, closed with DISCARD, leaves the
    bridge untouched, and OVS answers without an error."""
    import socket
    import struct as st
    from ryu.ofproto import ofproto_v1_3 as ofp
    from controller import flows as F, wire
    br = "nsxp-test-raw"
    run(["ovs-vsctl", "--if-exists", "del-br", br])
    run(["ovs-vsctl", "add-br", br, "--", "set", "bridge", br, "datapath_type=netdev",
         "fail_mode=secure", "protocols=OpenFlow13"])
    rundir = os.environ.get("OVS_RUNDIR", "/var/run/openvswitch")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.path.join(rundir, f"{br}.mgmt"))
        sock.settimeout(5)

        def read_msg():
            head = b""
            while len(head) < 8:
                head += sock.recv(8 - len(head))
            length = st.unpack("!H", head[2:4])[0]
            body = b""
            while len(body) < length - 8:
                body += sock.recv(length - 8 - len(body))
            return head[1], st.unpack("!I", head[4:8])[0], body

        def ctrl(kind, bundle, xid):
            body = st.pack("!IIIHH", 0x4F4E4600, 2300, bundle, kind, 0)
            return st.pack("!BBHI", ofp.OFP_VERSION, ofp.OFPT_EXPERIMENTER,
                           8 + len(body), xid) + body

        def exchange(close_kind, bundle):
            flow = F.Flow(table=0, priority=99, match=(("eth_type", F.ETH_IP),),
                          actions=(), cookie=0x77)
            add = wire.bundle_add(bundle, 0, wire.flow_mod(flow, ofp.OFPFC_ADD, 0, 0), 11)
            barrier = st.pack("!BBHI", ofp.OFP_VERSION, ofp.OFPT_BARRIER_REQUEST, 8, 13)
            sock.sendall(ctrl(ofp.ONF_BCT_OPEN_REQUEST, bundle, 10) + add
                         + ctrl(close_kind, bundle, 12) + barrier)
            replies = []
            while True:
                mtype, xid, body = read_msg()
                replies.append((mtype, xid, body))
                if mtype == ofp.OFPT_BARRIER_REPLY:
                    return replies

        sock.sendall(st.pack("!BBHI", ofp.OFP_VERSION, ofp.OFPT_HELLO, 8, 1))
        assert read_msg()[0] == ofp.OFPT_HELLO
        replies = exchange(ofp.ONF_BCT_DISCARD_REQUEST, 1)
        assert not [r for r in replies if r[0] == ofp.OFPT_ERROR]
        kinds = [st.unpack_from("!H", body, 12)[0] for mtype, _, body in replies
                 if mtype == ofp.OFPT_EXPERIMENTER]
        assert ofp.ONF_BCT_DISCARD_REPLY in kinds
        assert "priority=99" not in run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", br])
        # the same bundle committed instead: the flow is there (the check has teeth)
        replies = exchange(ofp.ONF_BCT_COMMIT_REQUEST, 2)
        assert not [r for r in replies if r[0] == ofp.OFPT_ERROR]
        assert "priority=99" in run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", br])
    finally:
        sock.close()
        run(["ovs-vsctl", "--if-exists", "del-br", br])
