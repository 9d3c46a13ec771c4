"""The lab as a person uses it: ./scripts/lab and the seed labs, typed into a
real pseudo-terminal (pexpect), with the README's examples and their output.

These build their own labs with the shared lab's bridge names, so conftest
runs them first, before the shared lab exists; each checks that ``exit``
leaves no bridge, interface or process behind.
"""
import os
import re
import subprocess
import sys

import pexpect
import pytest

pytestmark = [pytest.mark.mininet, pytest.mark.interactive]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "nsx-lab> "
PODS = r"pod[1-4]"
LAB_BRIDGES = {"br-node1", "br-node2", "br-gw", "fabric"}


class Terminal:
    """One program in a pseudo-terminal, typed into like a person would."""

    prompt = PROMPT

    def __init__(self, cmd, start_timeout=180):
        self.transcript = []
        self.child = pexpect.spawn(cmd[0], cmd[1:], cwd=ROOT, encoding="utf-8",
                                   timeout=30, dimensions=(50, 220),
                                   env=dict(os.environ, TERM="dumb"))
        self.child.logfile_read = _Collect(self.transcript)
        self.child.expect_exact(self.prompt, timeout=start_timeout)
        self.banner = self.child.before

    def type(self, line, timeout=30):
        """Type a line; what it printed up to the next prompt."""
        self.child.sendline(line)
        self.child.expect_exact(self.prompt, timeout=timeout)
        out = self.child.before
        return out.split("\n", 1)[1] if "\n" in out else ""    # drop the echo

    def exit(self):
        self.child.sendline("exit")
        self.child.expect(pexpect.EOF, timeout=120)
        self.child.close()
        return self.child.exitstatus

    def kill(self):
        """After a failure: exit the CLI if it still listens, else end it."""
        if not self.child.isalive():
            return
        try:
            self.child.sendline("exit")
            self.child.expect(pexpect.EOF, timeout=60)
        except pexpect.ExceptionPexpect:
            self.child.terminate(force=True)


class _Collect:
    def __init__(self, out):
        self.out = out

    def write(self, text):
        self.out.append(text)

    def flush(self):
        pass


def leftovers(pids=None):
    """Bridges, interfaces and processes a lab run could leave behind
    (``pids`` collects the processes' ids)."""
    bridges = set(subprocess.run(["ovs-vsctl", "list-br"], capture_output=True,
                                 text=True).stdout.split()) & LAB_BRIDGES
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    intfs = set(re.findall(r"\d+: ((?:pod\d+|inet|br-node\d+|br-gw|fabric)-eth\d+|nsx-mgmt"
                           r"|mg-\w+)[@:]", links))
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "mininet:" in cmd or "podserver.py" in cmd or "nsx-proxy-lab" in cmd \
                or "nsx-proxy-seed" in cmd or "nsx-proxy-hosts" in cmd:
            procs.append(cmd.strip())
            if pids is not None:
                pids.append(int(pid))
    return bridges, intfs, procs


def remove(bridges, intfs, pids):
    """Take a failed run's leftovers away (by name and PID), so the next test
    starts clean."""
    for pid in pids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    for br in bridges:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", br], check=False)
    for intf in intfs:
        subprocess.run(["ip", "link", "del", intf], check=False, capture_output=True)


@pytest.fixture
def clean():
    assert leftovers() == (set(), set(), []), "something else runs a lab"
    yield
    pids = []
    left = leftovers(pids)
    if left != (set(), set(), []):
        remove(left[0], left[1], pids)
    assert left == (set(), set(), []), "exit left something behind"


def test_the_readme_lab_session_prints_what_the_readme_says(clean, tmp_path):
    term = Terminal([os.path.join(ROOT, "scripts", "lab")])
    try:
        # start-up said what it did, and how long each step took
        for step in ("API server and kubelet", "controller", "topology", "pod servers",
                     "waiting for every bridge to be programmed"):
            assert re.search(re.escape(step) + r".* \d+\.\d s", term.banner), step
        assert re.fullmatch(PODS, term.type("pod1 curl -s 10.96.0.10").strip())
        assert term.type("pod1 echo hi").strip() == "hi"
        services = term.type("services")
        assert "default/web  10.96.0.10:80" in services and "10.1.2.2:8080" in services
        # the nsx-proxy CLI finds the lab's controller from the lab's own config
        view = term.type(f"sh {sys.executable.rsplit('/', 1)[0]}/nsx-proxy services default/web")
        assert "loadbalancer default/web (ClusterIP)  VIPs 10.96.0.10" in view
        assert re.search(r"member 10\.1\.1\.2:8080 +node1 +ready", view), view
        table = term.type("kubectl get svc,pods,endpointslices -o wide")
        assert "service/web" in table and "pod/pod4" in table and "10.96.0.10" in table
        assert term.type("sh ovs-ofctl -O OpenFlow13 dump-groups br-node1").count(
            "group_id=") == 2
        # the README's LoadBalancer walk-through
        assert "service/lb exposed" in term.type(
            "kubectl expose pod pod1 --type=LoadBalancer --port=80 --target-port=8080 "
            "--name=lb")
        lb = ""
        for _ in range(20):
            lb = term.type("kubectl get svc lb")
            if "198.51.100.1" in lb:
                break
            term.type("sh sleep 0.5")
        assert re.search(r"lb\s+LoadBalancer\s+\S+\s+198\.51\.100\.1\s", lb), lb
        answered = ""
        for _ in range(20):
            answered = term.type("inet curl -s --max-time 1 198.51.100.1/").strip()
            if answered:
                break
        assert answered == "pod1"
        assert "group_id=" in term.type("sh ovs-ofctl -O OpenFlow13 dump-groups br-gw")
        assert term.type(f"pod1 curl -s {'203.0.113.10'}:8080/ip").strip() == "192.168.100.1"
        manifest = tmp_path / "my-service.yaml"
        manifest.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: mine}\n"
                            "spec: {selector: {app: web}, ports: [{port: 8000, "
                            "targetPort: http}]}\n")
        assert "service/mine created" in term.type(f"kubectl create -f {manifest}")
        assert term.type("scale web 2").strip() == "app=web: 2 pods"
        assert term.type("stop_server pod3").strip() == ""
        assert term.type("label pod4 app=web tier=front").strip() == ""
        assert "usage: scale APP N" in term.type("scale web")
        assert term.exit() == 0
    finally:
        term.kill()


def test_the_multi_host_lab_session_prints_what_the_readme_says(clean):
    """./scripts/lab --hosts: each host's own OVS and agent, from the CLI."""
    term = Terminal([os.path.join(ROOT, "scripts", "lab"), "--hosts"])
    try:
        assert re.search(r"hosts: node1, node2, gw, each with its own OVS and agent.* "
                         r"\d+\.\d s", term.banner), term.banner
        assert re.fullmatch(PODS, term.type("pod3 curl -s 10.96.0.10").strip())
        assert term.type("node1 ovs-ofctl -O OpenFlow13 dump-groups br-node1").count(
            "group_id=") == 2
        show = term.type("node1 ovs-vsctl show")
        assert "Bridge br-node1" in show and "br-node2" not in show \
            and 'Controller "tcp:127.0.0.1:6653"' in show and "is_connected: true" in show
        assert term.type("node2 curl -s 127.0.0.1:9910/readyz").strip() == "ok"
        # the CLI from the root namespace says how to reach an agent; in a host it does
        hint = term.type("sh .venv/bin/nsx-proxy services")
        assert "listen inside their hosts (gw, node1, node2)" in hint and \
            "HOST .venv/bin/nsx-proxy" in hint, hint
        services = term.type("node1 .venv/bin/nsx-proxy services default/web")
        assert "default/web" in services and "10.96.0.10" in services, services
        # the pods' ports are the CNI plugin's, in that host's OVSDB
        ports = term.type("node1 ovs-vsctl --columns=external_ids find interface "
                          "external_ids:nsx-proxy-role=pod")
        assert ports.count("container-id=lab-default-pod") == 2, ports
        lease = term.type("kubectl -n nsx-proxy get lease nsx-proxy-lb-writer -o yaml")
        assert re.search(r"holderIdentity: (node1|node2|gw)_[0-9a-f]{8}", lease), lease
        assert term.exit() == 0
    finally:
        term.kill()


SEEDS = {
    "001": [("sh ovs-ofctl -O OpenFlow13 dump-flows br-gw table=60",
             r"nw_dst=101\.101\.101\.252 actions=group:\d+"),
            ("inet curl -s 101.101.101.252:8888", r"^pod[13]$"),
            ("pod2 curl -s 10.105.139.153:8888", r"^pod[13]$")],
    "002": [("inet curl -s 192.168.100.1:31155", r"^pod[1-4]$"),
            ("sh ovs-ofctl -O OpenFlow13 dump-flows br-node1 table=30",
             r"nw_dst=192\.168\.100\.1,tp_dst=31155 actions=group:\d+")],
    "004": [("inet curl -s 169.10.10.1", r"^pod[34]$"),
            ("sh ovs-ofctl -O OpenFlow13 dump-groups br-gw",
             r"type=select,bucket=.*,bucket=")],
}


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_each_seed_lab_prints_what_the_readme_says(clean, seed):
    term = Terminal([sys.executable, "-m", "topologies.seedlab", seed])
    try:
        assert "\nOK" in term.banner
        for line, pattern in SEEDS[seed]:
            out = term.type(line)
            assert re.search(pattern, out.strip(), re.M), (line, out)
        assert term.exit() == 0
    finally:
        term.kill()
