"""The classic workflow, typed into real terminals: ``ryu-manager`` started by
hand with ``source = file``, and ``mn --custom topologies/nsx_topo.py`` in a
pseudo-terminal; then a topology script that adds a node at run time.

Both use the shared lab's bridge names, so they run with the interactive
tests, before the shared lab exists; each checks that ``exit`` leaves no
bridge, interface or process behind.
"""
import json
import re
import subprocess
import sys
import time

import pytest

from terminal import ROOT, Terminal, leftovers, remove
from topologies.controller_proc import RyuProcess

pytestmark = [pytest.mark.mininet, pytest.mark.interactive]
OF_PORT = 16670


class MnTerminal(Terminal):
    """Mininet's CLI (or a topology script's) in a pseudo-terminal."""
    prompt = "mininet> "

    def __init__(self, cmd, timeout=120):
        super().__init__(cmd, start_timeout=timeout)

    def type(self, line, timeout=60):
        return super().type(line, timeout)

    def until(self, line, pattern, timeout=30):
        """Type ``line`` until its output matches ``pattern`` (the controller
        programs the bridges a moment after they connect)."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.type(line)
            if re.search(pattern, out, re.M):
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"{line!r} never printed {pattern!r}; last:\n{out}")
            time.sleep(0.5)


@pytest.fixture
def controller(tmp_path):
    """ryu-manager as a person starts it by hand: the example config, a
    state file written by ``python3 -m topologies.nsx_topo state``."""
    state = tmp_path / "state.yaml"
    out = subprocess.run([sys.executable, "-m", "topologies.nsx_topo", "state", "--nodes",
                          "2", "--pods", "2"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    state.write_text(out)
    assert json.loads(out)["services"][0]["clusterIP"] == "10.96.0.10"
    proc = RyuProcess(str(tmp_path), OF_PORT, str(tmp_path / "ryu.log"), {
        "source": "file", "state_file": str(state), "status_port": 0})
    proc.start()
    proc.state_path = str(state)
    yield proc
    proc.stop()


def _extra_bridges():
    """Bridges of ours beyond the shared lab's names (a node added at run time)."""
    out = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout
    return {b for b in out.split() if re.fullmatch(r"br-node\d+", b)}


def _clean_after(term):
    term.kill()
    pids = []
    left = leftovers(pids)
    extra = _extra_bridges()
    if any(left) or extra:
        remove(left[0] | extra, left[1], pids)
    return (left[0] | extra, left[1], left[2])


@pytest.fixture(autouse=True)
def nothing_running():
    """mn cleans up with pkill when it fails to start: never start it over
    another lab's leftovers."""
    assert leftovers() == (set(), set(), []) and not _extra_bridges(), \
        "something else runs a lab"


def test_mn_custom_against_a_hand_started_ryu_manager(controller):
    term = MnTerminal(["mn", "--custom", "topologies/nsx_topo.py",
                       "--topo", "nsx,nodes=2,pods=2",
                       "--controller", f"remote,port={OF_PORT}",
                       "--switch", "ovs,protocols=OpenFlow13"])
    try:
        assert "br-node1 br-node2" in term.banner or "br-node1" in term.banner
        out = term.until("pod1 curl -s --max-time 2 10.96.0.10", r"^pod[1-4]\s*$")
        assert re.search(r"^pod[1-4]\s*$", out, re.M)
        pings = term.type("pingall", timeout=120)
        for n in range(1, 5):
            line = re.search(rf"^pod{n} -> (.*)$", pings, re.M).group(1).split()
            others = {f"pod{k}" for k in range(1, 5)} - {f"pod{n}"}
            assert others <= set(line), (n, line)        # every pod reaches every pod
        groups = term.type("sh ovs-ofctl -O OpenFlow13 dump-groups br-node1")
        assert re.search(r"type=select,bucket=.*,bucket=", groups), groups
        labels = term.type("sh ovs-vsctl get interface br-node1-eth1 external_ids")
        assert "pod-name=pod1" in labels.replace('"', "")
        assert term.exit() == 0
    finally:
        left = _clean_after(term)
    assert left == (set(), set(), []), left


def test_a_topology_script_adds_a_node_at_run_time(controller):
    term = MnTerminal([sys.executable, "topologies/examples/add_node.py",
                       "--port", str(OF_PORT), "--state", controller.state_path])
    try:
        assert "added br-node3 with pod5" in term.banner
        seen = set()
        deadline = time.monotonic() + 30
        while "pod5" not in seen and time.monotonic() < deadline:
            seen.add(term.type("pod1 curl -s --max-time 2 10.96.0.10").strip())
        assert "pod5" in seen, seen                      # the new node's pod serves
        out = term.type("py add_pod(net, 'pod6', 'br-node3')")
        assert "Error" not in out and "Traceback" not in out, out
        labels = term.type("sh ovs-vsctl --columns=name,external_ids find interface "
                           "external_ids:pod-name=pod6")
        assert "ip-address=10.1.3.3" in labels.replace('"', ""), labels
        assert term.type("pod6 ping -c1 -W2 10.1.1.2").count("1 received") == 1
        assert term.exit() == 0
    finally:
        left = _clean_after(term)
    assert left == (set(), set(), []), left            # br-node3 included


def test_mn_custom_with_services_from_the_embedded_api_server(tmp_path):
    """The other source: the embedded API server started alone, ryu-manager
    watching it, mn, and topologies.mn_kubelet registering the topology's
    Nodes and Pods (and the demo Service) as a kubelet would."""
    kubeconfig = tmp_path / "kubeconfig"
    api = subprocess.Popen([sys.executable, "-m", "topologies.apiserver", "--kubeconfig",
                            str(kubeconfig)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    kubelet = ryu = term = None
    try:
        assert "kubeconfig written" in api.stdout.readline()
        ryu = RyuProcess(str(tmp_path), OF_PORT, str(tmp_path / "ryu.log"), {
            "source": "kubernetes", "kubeconfig": str(kubeconfig), "status_port": 0,
            "min_sync_period": 0.1})
        ryu.start()
        term = MnTerminal(["mn", "--custom", "topologies/nsx_topo.py",
                           "--topo", "nsx,nodes=2,pods=1",
                           "--controller", f"remote,port={OF_PORT}",
                           "--switch", "ovs,protocols=OpenFlow13"])
        kubelet = subprocess.Popen([sys.executable, "-m", "topologies.mn_kubelet",
                                    "--kubeconfig", str(kubeconfig), "--nodes", "2",
                                    "--pods", "1"], cwd=ROOT, stdout=subprocess.PIPE,
                                   text=True)
        assert "registered 2 nodes and 2 pods" in kubelet.stdout.readline()
        seen = set()
        deadline = time.monotonic() + 30
        while seen != {"pod1", "pod2"} and time.monotonic() < deadline:
            seen.add(term.type("pod1 curl -s --max-time 2 10.96.0.10").strip())
            seen.discard("")
        assert seen == {"pod1", "pod2"}, seen         # both nodes' pods, via the API
        assert term.exit() == 0
    finally:
        for proc in (kubelet, api):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=20)
        if ryu is not None:
            ryu.stop()
        left = _clean_after(term) if term is not None else None
    assert left == (set(), set(), []), left
