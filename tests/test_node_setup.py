"""Node setup by the agent (controller/node_setup.py): the plan from the Node
objects, and when it is applied.  The multi-host lab runs it for real: every
node bridge there is made by its agent (test_hosts_e2e.py)."""
import dataclasses
import logging
import subprocess

from controller import node_setup as NS
from nsx_proxy import changes, model

NODE1 = model.Node("node1", "192.168.100.1", "10.1.1.0/24")
NODE2 = model.Node("node2", "192.168.100.2", "10.1.2.0/24")
GW = model.Node("gw", "192.168.100.254", "10.1.250.0/24", gateway=True)
NODE_PORT_SVC = model.Service(
    "default", "np", "10.96.0.20", type=model.NODE_PORT, ports=(
        model.ServicePort("http", model.TCP, 80, 8080, (), node_port=30080),
        model.ServicePort("dns", model.UDP, 53, 5353, (), node_port=30053)))


def args_of(**kw):
    params = dict(node=NODE1, gateway="192.168.100.254", bridge="br-nsx",
                  datapath_type="system", tunnel_type="geneve", of_port=6653, mtu=1450)
    params.update(kw)
    return NS.ovsdb_args(**params)


def test_the_bridge_its_tunnel_and_host_port_as_the_readme_labels_them():
    text = " ".join(args_of())
    for part in ("--may-exist add-br br-nsx", "fail_mode=secure", "protocols=OpenFlow13",
                 "datapath_type=system", "external_ids:nsx-proxy-role=node",
                 "external_ids:nsx-proxy-node=node1",
                 "external_ids:nsx-proxy-pod-cidr=10.1.1.0/24",
                 "external_ids:nsx-proxy-fabric-gateway=192.168.100.254",
                 "set-controller br-nsx tcp:127.0.0.1:6653", "max_backoff=1000",
                 "add-port br-nsx nsx-tun0", "type=geneve", "options:remote_ip=flow",
                 "add-port br-nsx nsx-host0", "type=internal", 'mac="0a:58:c0:a8:64:01"',
                 "mtu_request=1450", "external_ids:nsx-proxy-role=host",
                 "external_ids:ip-address=192.168.100.1",
                 "external_ids:attached-mac=0a:58:c0:a8:64:01"):
        assert part in text, part
    assert text.count("external_ids:nsx-proxy-role=uplink") == 1


def test_a_dual_stack_nodes_bridge_is_labelled_with_both_pod_cidrs():
    dual = dataclasses.replace(NODE1, pod_cidr6="fd00:10:1:1::/64")
    assert "external_ids:nsx-proxy-pod-cidr=10.1.1.0/24,fd00:10:1:1::/64" in args_of(node=dual)


def test_without_gateway_tunnel_or_a_new_controller_those_parts_are_left_out():
    text = " ".join(args_of(gateway=None, tunnel_type="", set_controller=False))
    assert "remove bridge br-nsx external_ids nsx-proxy-fabric-gateway" in text
    assert "nsx-tun0" not in text and "set-controller" not in text
    assert "nsx-host0" in text


def test_the_node_routes_every_compute_nodes_pod_cidr_and_the_services_into_its_bridge():
    cidrs = NS.routed_cidrs([NODE2, GW, NODE1], "10.96.0.0/12")
    assert cidrs == ("10.1.1.0/24", "10.1.2.0/24", "10.96.0.0/12")   # not the gateway's
    batch = NS.kernel_batch(NODE1, cidrs, 1450, stale=["10.1.3.0/24"]).splitlines()
    assert batch == [
        "link set nsx-host0 mtu 1450 up",
        "addr replace 192.168.100.1/32 dev nsx-host0",
        "route replace 169.254.0.252/32 dev nsx-host0",
        "neigh replace 169.254.0.252 lladdr 0a:58:0a:01:01:01 dev nsx-host0 nud permanent",
        "route replace 10.1.1.0/24 via 10.1.1.1 dev nsx-host0 onlink src 192.168.100.1",
        "route replace 10.1.2.0/24 via 10.1.1.1 dev nsx-host0 onlink src 192.168.100.1",
        "route replace 10.96.0.0/12 via 10.1.1.1 dev nsx-host0 onlink src 192.168.100.1",
        "route del 10.1.3.0/24 dev nsx-host0"]
    assert NS.gateway_ip([NODE1, GW]) == "192.168.100.254"
    assert NS.gateway_ip([NODE1, NODE2]) is None


class FakeRun:
    """subprocess.run for NodeSetup: records commands; fails on demand."""

    def __init__(self, controller=""):
        self.calls = []
        self.controller = controller
        self.fail = False

    def __call__(self, cmd, input=None, **_):
        self.calls.append((cmd, input))
        if cmd[-2:] == ["get-controller", "br-nsx"]:
            return subprocess.CompletedProcess(cmd, 0, self.controller, "")
        if self.fail:
            return subprocess.CompletedProcess(cmd, 1, "", "database connection failed")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    def writes(self):
        return [(c, i) for c, i in self.calls if "get-controller" not in c]


def setup(run, datapath="system", of_port=6653):
    run.sysctls = []
    return NS.NodeSetup("node1", "br-nsx", datapath, "geneve", of_port, "10.96.0.0/12",
                        "unix:/x/db.sock", run=run,
                        sysctl=lambda name, value: run.sysctls.append((name, value)))


def test_applied_once_per_change_and_routes_follow_the_nodes(caplog):
    run = FakeRun()
    ns = setup(run)
    with caplog.at_level(logging.WARNING):
        assert ns.update([NODE2], {}) is False and ns.update([NODE2], {}) is False
    assert [r.message for r in caplog.records].count(
        "node setup: waiting for Node node1 with a podCIDR and an InternalIP") == 1
    assert run.calls == []
    assert ns.update([NODE1, NODE2, GW], {}) is True
    (vsctl, _), (ip, batch), (nft, ruleset) = run.writes()
    assert vsctl[:3] == ["ovs-vsctl", "--db=unix:/x/db.sock", "--timeout=10"]
    assert "set-controller" in vsctl                   # none was set
    assert ip == ["ip", "-batch", "-"] and "route replace 10.1.2.0/24" in batch
    assert nft == ["nft", "-f", "-"] and "elements" not in ruleset   # no nodePorts yet
    assert run.sysctls == [("net/ipv4/ip_forward", "1")]
    run.calls.clear()
    assert ns.update([NODE1, NODE2, GW], {}) is False and run.calls == []   # nothing changed
    assert ns.update([NODE1, GW], {}) is True                               # node2 went away
    assert "route del 10.1.2.0/24 dev nsx-host0" in run.writes()[1][1]
    run.calls.clear()
    assert ns.update([NODE1, GW], {NODE_PORT_SVC.key: NODE_PORT_SVC}) is True   # a nodePort
    ((nft, ruleset),) = run.writes()
    assert "elements = { tcp . 30080, udp . 30053 }" in ruleset


def test_a_right_controller_is_kept_and_a_failure_is_retried_by_the_next_update():
    run = FakeRun(controller="tcp:127.0.0.1:6653\n")
    ns = setup(run, datapath="netdev")
    run.fail = True
    assert ns.update([NODE1], {}) is False and ns.applied is None
    run.fail = False
    assert ns.update([NODE1], {}) is True
    vsctl, ip, ethtool, nft = [c for c, _ in run.writes()[-4:]]
    assert vsctl[0] == "ovs-vsctl" and "set-controller" not in vsctl   # ours: no reconnect
    assert ethtool == ["ethtool", "-K", "nsx-host0", "tx", "off"]       # userspace
    assert nft == ["nft", "-f", "-"]


def test_an_agent_that_dials_its_bridge_removes_a_controller_target_and_sets_none():
    """bridge_connection mgmt (no OpenFlow port): a target left from listen
    mode would connect the bridge to the agent a second time."""
    run = FakeRun(controller="tcp:127.0.0.1:6653\n")
    assert setup(run, of_port=None).update([NODE1], {}) is True
    vsctl = run.writes()[0][0]
    assert "del-controller" in vsctl and "set-controller" not in vsctl
    run = FakeRun(controller="")                  # none: nothing to change
    assert setup(run, of_port=None).update([NODE1], {}) is True
    vsctl = run.writes()[0][0]
    assert "del-controller" not in vsctl and "set-controller" not in vsctl


def test_a_bug_in_node_setup_is_logged_and_never_reaches_the_caller(caplog):
    def broken(*_a, **_kw):
        raise KeyError("boom")
    ns = setup(FakeRun())
    ns.run = broken
    with caplog.at_level(logging.ERROR):
        assert ns.update([NODE1], {}) is False
    assert "node setup of br-nsx failed" in caplog.text and ns.applied is None


def test_a_sync_that_touches_neither_nodes_nor_node_ports_costs_nothing():
    """Most syncs are endpoint changes: the plan is looked at again only for
    what the change set names (and for what failed last time)."""
    run = FakeRun()
    ns = setup(run)
    svcs = {NODE_PORT_SVC.key: NODE_PORT_SVC}
    assert ns.update([NODE1, NODE2], svcs) is True            # the first, whole
    run.calls.clear()
    other = model.ServiceKey("default", "web")
    assert ns.update([NODE1], svcs, changes.ChangeSet(services=frozenset({other}))) is False
    assert run.calls == []                  # node2's removal is not looked at, no nft
    assert ns.update([NODE1], svcs, changes.ChangeSet(nodes=True)) is True
    assert "route del 10.1.2.0/24 dev nsx-host0" in run.writes()[1][1]
    run.calls.clear()
    assert ns.update([NODE1], {}, changes.ChangeSet(
        services=frozenset({NODE_PORT_SVC.key}))) is True    # the nodePort Service gone
    ((nft, ruleset),) = run.writes()
    assert nft == ["nft", "-f", "-"] and "elements" not in ruleset
    # a failed apply is tried again by the next sync, whatever it names
    run.fail = True
    assert ns.update([NODE1, NODE2], {}, changes.ChangeSet(nodes=True)) is False
    run.fail = False
    run.calls.clear()
    assert ns.update([NODE1, NODE2], {}, changes.ChangeSet()) is True
    assert "route replace 10.1.2.0/24" in run.writes()[1][1]


DUAL1 = dataclasses.replace(NODE1, pod_cidr6="fd00:10:1:1::/64", internal_ip6="fd00:100::1")
DUAL2 = dataclasses.replace(NODE2, pod_cidr6="fd00:10:1:2::/64", internal_ip6="fd00:100::2")


def test_a_dual_stack_nodes_own_stack_gets_ipv6_routes_and_its_steering_address():
    assert "external_ids:ip-address=192.168.100.1,fd00:100::1" in args_of(node=DUAL1)
    cidrs = NS.routed_cidrs([DUAL2, GW, DUAL1], "10.96.0.0/12,fd00:96::/112", ipv6=True)
    assert cidrs == ("10.1.1.0/24", "10.1.2.0/24", "10.96.0.0/12",
                     "fd00:10:1:1::/64", "fd00:10:1:2::/64", "fd00:96::/112")
    # an IPv4-only node leaves the IPv6 ones out
    assert NS.routed_cidrs([DUAL2, GW, NODE1], "10.96.0.0/12,fd00:96::/112") == cidrs[:3]
    batch = NS.kernel_batch(DUAL1, cidrs, 1450).splitlines()
    assert batch[4:7] == [
        "addr replace fd00:100::1/128 dev nsx-host0 nodad",
        "route replace fc01::aabb:ccdd:eeff/128 dev nsx-host0",
        "neigh replace fc01::aabb:ccdd:eeff lladdr 0a:58:0a:01:01:01 dev nsx-host0 nud permanent"]
    assert batch[-1] == ("route replace fd00:96::/112 via fd00:10:1:1::1 dev nsx-host0 onlink "
                         "src fd00:100::1")
    assert batch[7] == ("route replace 10.1.1.0/24 via 10.1.1.1 dev nsx-host0 onlink "
                        "src 192.168.100.1")


def test_node_ports_are_steered_per_family_the_service_has():
    dual = dataclasses.replace(NODE_PORT_SVC, secondary_cluster_ip="fd00:96::20")
    v6 = dataclasses.replace(NODE_PORT_SVC, cluster_ip="fd00:96::21", name="np6")
    assert NS.node_ports(dual) == (("ip", "tcp", 30080), ("ip", "udp", 30053),
                                   ("ip6", "tcp", 30080), ("ip6", "udp", 30053))
    ruleset = NS.nft_ruleset(NS.node_ports(dual) + (("ip6", "tcp", 30090),), ipv6=True)
    ip, ip6 = ruleset.split("table ip6 nsx-proxy {")
    assert "elements = { tcp . 30080, udp . 30053 }" in ip and "30090" not in ip
    assert "elements = { tcp . 30080, udp . 30053, tcp . 30090 }" in ip6
    assert "ip6 daddr != ::1 meta l4proto . th dport @node-ports dnat ip6 to " \
           "fc01::aabb:ccdd:eeff" in ip6
    # a node without IPv6: the ip6 table is only removed (if a former run left one)
    plain = NS.nft_ruleset(NS.node_ports(v6))
    assert "table ip6 nsx-proxy {" not in plain and "delete table ip6 nsx-proxy" in plain
    run = FakeRun()
    ns = setup(run)
    ns.service_cidr = "10.96.0.0/12,fd00:96::/112"
    assert ns.update([DUAL1, DUAL2, GW], {dual.key: dual, v6.key: v6}) is True
    (_, (ip, batch), (nft, ruleset)) = run.writes()
    assert "route replace fd00:96::/112" in batch
    assert "tcp . 30080, udp . 30053 }" in ruleset.split("table ip6 nsx-proxy {")[1]
    assert run.sysctls == [("net/ipv4/ip_forward", "1"), ("net/ipv6/conf/all/forwarding", "1")]
