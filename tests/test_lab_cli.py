"""The lab as a person uses it: ./scripts/lab and the seed labs, typed into a
real pseudo-terminal (pexpect), with the examples of the README and
docs/labs.md, and their output.

These build their own labs with the shared lab's bridge names, so conftest
runs them first, before the shared lab exists; each checks that ``exit``
leaves no bridge, interface or process behind.
"""
import os
import re
import sys

import pytest

from terminal import ROOT, Terminal, leftovers, remove

pytestmark = [pytest.mark.mininet, pytest.mark.interactive]
PODS = r"pod[1-4]"


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
        # web is dual-stack in the lab: its IPv6 cluster IP answers too
        assert re.fullmatch(PODS, term.type("pod1 curl -s -6 http://[fd00:96::a]/").strip())
        assert term.type("pod1 echo hi").strip() == "hi"
        # pods leave the cluster over IPv6 as their node (docs/labs.md)
        assert term.type("pod1 curl -s http://[2001:db8:113::10]:8080/ip").strip() == \
            "fd00:100::1"
        services = term.type("services")
        assert "default/web  10.96.0.10:80" in services and "10.1.2.2:8080" in services
        assert "default/web  [fd00:96::a]:80/TCP" in services and \
            "[fd00:10:1:2::2]:8080" in services
        # the nsx-proxy CLI finds the lab's controller from the lab's own config
        view = term.type(f"sh {sys.executable.rsplit('/', 1)[0]}/nsx-proxy services default/web")
        assert "loadbalancer default/web (ClusterIP)  VIPs 10.96.0.10, fd00:96::a" in view
        assert re.search(r"member 10\.1\.1\.2:8080 +node1 +ready", view), view
        # UDP/53 is spread per flow: no group, a flow per member in table 33
        assert re.search(r"pool cluster IP  flows reg4=0x[0-9a-f]+ \(table 33\)", view), view
        assert re.search(r"member 10\.1\.1\.2:5353 +node1 +ready", view), view
        # the IPv6 cluster IP's own pool, of the pods' IPv6 addresses
        assert re.search(r"pool cluster IP \(IPv6\)  group \d+\r?\n +member fd00:10:1:1::2:8080 "
                         r"+node1 +ready", view), view
        table = term.type("kubectl get svc,pods,endpointslices -o wide")
        assert "service/web" in table and "pod/pod4" in table and "10.96.0.10" in table
        assert term.type("sh ovs-ofctl -O OpenFlow13 dump-groups br-node1").count(
            "group_id=") == 2                  # TCP/80's, a group per family; UDP/53 is flows
        assert term.type("sh ovs-ofctl -O OpenFlow13 dump-flows br-node1 table=33").count(
            "nat(dst=") == 8
        # the README's LoadBalancer walk-through (its tour of the lab)
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
        assert re.fullmatch(PODS, term.type("pod3 curl -s -6 http://[fd00:96::a]/").strip())
        # TCP/80's, a group per family; UDP/53 is flows (table 33)
        assert term.type("node1 ovs-ofctl -O OpenFlow13 dump-groups br-node1").count(
            "group_id=") == 2
        show = term.type("node1 ovs-vsctl show")
        # no controller target: the agent dials br-node1.mgmt itself
        assert "Bridge br-node1" in show and "br-node2" not in show \
            and "Controller" not in show
        assert "br-node1.mgmt" in term.type("node1 grep -o 'connected from .*' "
                                            "/tmp/nsx-proxy-hosts/node1/agent.log")
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
