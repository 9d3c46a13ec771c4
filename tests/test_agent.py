"""Agent mode on real OVS: a controller told its node name programs only the
bridges OVSDB labels for that node (and the gateway only where it is told to
be it), and its /readyz and /healthz say when it is ready and why not."""
import urllib.error
import urllib.request

import pytest

from ovs_helpers import STATE, Controller, flow_lines, group_lines
from topologies.lab import run, wait_for

pytestmark = pytest.mark.ovs
BRIDGES = {"nsxp-a1": "node1", "nsxp-a2": "node2"}


@pytest.fixture
def bridges():
    for br, node in BRIDGES.items():
        run(["ovs-vsctl", "--if-exists", "del-br", br])
        run(["ovs-vsctl", "add-br", br, "--", "set", "bridge", br, "datapath_type=netdev",
             "fail_mode=secure", "protocols=OpenFlow13", "external_ids:nsx-proxy-role=node",
             f"external_ids:nsx-proxy-node={node}",
             f"external_ids:nsx-proxy-pod-cidr=10.1.{node[-1]}.0/24",
             "--", "set-controller", br, "tcp:127.0.0.1:16681"])
        for uuid in run(["ovs-vsctl", "--bare", "--columns=controller", "list", "bridge",
                         br]).split():
            run(["ovs-vsctl", "set", "controller", uuid, "max_backoff=1000"])
    yield list(BRIDGES)
    for br in BRIDGES:
        run(["ovs-vsctl", "--if-exists", "del-br", br])


def probe(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_an_agent_programs_only_its_nodes_bridge_and_reports_ready(bridges, tmp_path):
    ctl = Controller(tmp_path, 16681, node_name="node1", status_port=19921)
    ctl.write_state(STATE)
    ctl.start()
    try:
        wait_for(lambda: probe(19921, "/readyz")[0] == 200, 20, what="the agent ready")
        assert group_lines("nsxp-a1") and flow_lines("nsxp-a1")
        assert flow_lines("nsxp-a2") == [] and group_lines("nsxp-a2") == []
        assert probe(19921, "/healthz") == (200, "ok\n")
        assert "bridge nsxp-a2 (node node2) is not this agent's (node node1)" in ctl.log_text()
    finally:
        ctl.stop()


def test_an_agent_without_a_labelled_bridge_is_not_ready_and_says_why(bridges, tmp_path):
    ctl = Controller(tmp_path, 16681, node_name="node3", status_port=19922)
    ctl.write_state(STATE)
    ctl.start()
    try:
        status, body = wait_for(lambda: (lambda r: r if r[0] == 503 and "labelled" in r[1]
                                         else None)(probe(19922, "/readyz")), 20,
                                what="a reason not to be ready")
        assert body == "no bridge in OVSDB is labelled for node node3\n"
        assert probe(19922, "/healthz")[0] == 200          # alive, just not ready
        assert flow_lines("nsxp-a1") == [] and flow_lines("nsxp-a2") == []
    finally:
        ctl.stop()


def test_a_status_port_in_use_is_one_line_and_the_agent_programs_anyway(bridges, tmp_path):
    import socket
    busy = socket.socket()
    busy.bind(("127.0.0.1", 19923))
    busy.listen()
    try:
        ctl = Controller(tmp_path, 16681, node_name="node1", status_port=19923)
        ctl.write_state(STATE)
        ctl.start()
        try:
            wait_for(lambda: group_lines("nsxp-a1"), 20, what="node1's bridge programmed")
            lines = [ln for ln in ctl.log_text().splitlines() if "unavailable" in ln]
            assert len(lines) == 1 and "status endpoint on port 19923" in lines[0]
        finally:
            ctl.stop()
    finally:
        busy.close()
