"""The datapath heals itself: flows, groups and the reject meter removed with
ovs-ofctl behind the controller's back come back within the audit period
(the lab's is 2 s), on that bridge only."""
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
    assert lab.curl("pod1", f"http://{L.DEMO_VIP}/", timeout=1) == ""       # broken now
    L.wait_for(lambda: lab.curl("pod1", f"http://{L.DEMO_VIP}/", timeout=1),
               3 * L.AUDIT_PERIOD + 5, what="the demo service back on br-node1")
    took = time.monotonic() - gone
    assert normal(lab.dump_flows("br-node1")) == flows
    assert sorted(lab.dump_groups("br-node1")) == groups
    assert metric("nsx_proxy_drift_repairs_total", '{bridge="br-node1"}') == repairs + 1
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
