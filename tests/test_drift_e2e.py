"""The datapath heals itself: flows, groups and the reject meter removed with
ovs-ofctl behind the controller's back come back within the audit period
(the lab's is 2 s), and a flow modified in place at once (OVS's flow
monitor reports it), on that bridge only."""
import re
import time

import pytest

from lab_helpers import converge, metric, normal
from topologies import lab as L

pytestmark = pytest.mark.mininet
OFCTL = ["ovs-ofctl", "-O", "OpenFlow13"]


def durations(lines):
    return [float(m.group(1)) for m in (re.search(r"duration=([\d.]+)s", ln) for ln in lines)
            if m]


def test_flows_and_groups_deleted_behind_our_back_come_back_and_nothing_else_moves(lab):
    converge(lab)
    flows, groups = normal(lab.dump_flows("br-node1")), sorted(lab.dump_groups("br-node1"))
    other = lab.dump_flows("br-node2")
    repairs = metric("nsx_proxy_drift_repairs_total", '{bridge="br-node1"}')
    L.run(OFCTL + ["del-flows", "br-node1"])
    L.run(OFCTL + ["del-groups", "br-node1"])
    gone = time.monotonic()
    # (the flow monitor's repair may be in before a curl could see the gap)
    L.wait_for(lambda: lab.curl("pod1", f"http://{L.DEMO_VIP}/", timeout=1),
               3 * L.AUDIT_PERIOD + 5, what="the demo service back on br-node1")
    took = time.monotonic() - gone
    assert normal(lab.dump_flows("br-node1")) == flows
    assert sorted(lab.dump_groups("br-node1")) == groups
    # one repair, or two if the monitor's repair landed between del-flows and
    # del-groups (deleting the groups then deleted the restored flows again)
    assert repairs + 1 <= metric("nsx_proxy_drift_repairs_total",
                                 '{bridge="br-node1"}') <= repairs + 2
    # br-node2 was not touched: its flows are older than the repair
    assert min(durations(lab.dump_flows("br-node2"))) >= min(durations(other)) + took - 1
    print(f"repaired in {took:.1f} s")


def test_a_deleted_reject_meter_comes_back(lab):
    converge(lab)
    L.run(OFCTL + ["del-meter", "br-node1", "meter=1"])
    # a port the VIP does not have is refused at once again once the meter is back
    L.wait_for(lambda: "meter=1" in L.run(OFCTL + ["dump-meters", "br-node1"]),
               3 * L.AUDIT_PERIOD + 5, what="meter 1 back on br-node1")
    L.wait_for(lambda: lab.curl("pod1", f"http://{L.DEMO_VIP}/", timeout=1), 10,
               what="the demo service answering")
    started = time.monotonic()
    assert lab.curl("pod1", f"http://{L.DEMO_VIP}:81/", timeout=3) == ""
    assert time.monotonic() - started < 1.5, "refused at once, not timed out"


def test_a_flow_modified_in_place_is_restored_at_once_and_named_in_the_log(lab):
    """ovs-ofctl mod-flows keeps a flow's cookie and the flow count, so
    counting cannot see it: OVS's flow monitor reports the change, and the
    bridge is rewritten in the same round well within the audit period."""
    converge(lab)
    flows = normal(lab.dump_flows("br-node1"))
    other = lab.dump_flows("br-node2")
    repairs = metric("nsx_proxy_drift_repairs_total", '{bridge="br-node1"}')
    with open(lab.controller_log) as fh:
        log_start = len(fh.read())
    L.run(OFCTL + ["mod-flows", "br-node1",
                   f"table=30,tcp,nw_dst={L.DEMO_VIP},tp_dst=80,actions=drop"])
    changed = time.monotonic()
    L.wait_for(lambda: normal(lab.dump_flows("br-node1")) == flows, L.AUDIT_PERIOD,
               what="br-node1's flows restored within one audit period")
    took = time.monotonic() - changed
    assert lab.curl("pod1", f"http://{L.DEMO_VIP}/", timeout=2)
    assert metric("nsx_proxy_drift_repairs_total", '{bridge="br-node1"}') == repairs + 1
    with open(lab.controller_log) as fh:
        lines = [ln for ln in fh.read()[log_start:].splitlines() if "drift" in ln]
    assert len(lines) == 1 and "modified" in lines[0] and "service/default/" in lines[0]
    assert min(durations(lab.dump_flows("br-node2"))) >= min(durations(other)) + took - 1
    print(f"restored in {took:.2f} s: {lines[0]}")


def test_a_group_changed_in_place_comes_back_within_the_content_audit(lab):
    """Groups have no monitor, and a bucket pointed elsewhere keeps the
    bucket count: every second audit (audit_groups_every) reads the groups'
    contents and the repair rewrites the group."""
    converge(lab)
    groups = sorted(lab.dump_groups("br-node1"))
    demo = next(g for g in groups if "nat(dst=" in g)
    target = re.search(r"nat\(dst=([\d.]+):", demo).group(1)
    L.run(OFCTL + ["mod-group", "br-node1", demo.replace(target, "10.1.1.99", 1)])
    assert sorted(lab.dump_groups("br-node1")) != groups
    changed = time.monotonic()
    L.wait_for(lambda: sorted(lab.dump_groups("br-node1")) == groups,
               3 * 2 * L.AUDIT_PERIOD + 5, what="the group's buckets back on br-node1")
    print(f"group restored in {time.monotonic() - changed:.1f} s")
