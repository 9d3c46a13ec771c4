"""nsx-proxy-cni, called the way a runtime calls it: the CNI_* environment,
the network config on stdin, the answer on stdout (CNI spec 1.0.0).

The unit tests read the protocol; the ovs tests attach network namespaces to
a real bridge with the real ``host-local`` IPAM plugin."""
import json
import os
import subprocess
import sys
import threading

import pytest

from nsx_cni import spec as S
from topologies.lab import run

PLUGIN = os.path.join(os.path.dirname(sys.executable), "nsx-proxy-cni")
CNI_PATH = "/usr/lib/cni"               # Debian's containernetworking-plugins
BRIDGE = "nsxc-br"
CONTAINERS = ["c1", "c2", "first", "second", "third"] + [f"m{i}" for i in range(10)]
POD_CIDR = "10.9.1.0/24"


def env(command, container="c1", netns="/var/run/netns/x", ifname="eth0", **extra):
    out = {"CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_NETNS": netns,
           "CNI_IFNAME": ifname, "CNI_PATH": CNI_PATH,
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1"}
    out.update(extra)
    return out


def config(tmp_path, version="1.0.0", **extra):
    # the bridge by name: a lab on this machine labels bridges of its own
    conf = {"cniVersion": version, "name": "nsx-test", "type": S.PLUGIN_TYPE,
            "bridge": BRIDGE, "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam")}}
    conf.update(extra)
    return conf


# --- the protocol ---------------------------------------------------------------------

def code_of(fn):
    with pytest.raises(S.CniError) as err:
        fn()
    return err.value.code


def test_requests_the_spec_rejects_get_its_codes(tmp_path):
    good = json.dumps(config(tmp_path)).encode()
    assert code_of(lambda: S.parse_request(env("ADD"), b"{not json")) == S.DECODING_FAILURE
    assert code_of(lambda: S.parse_request(env("ADD"), b"[1]")) == S.DECODING_FAILURE
    assert code_of(lambda: S.parse_request(env("ADD"), b"\xff\xfe")) == S.DECODING_FAILURE
    assert code_of(lambda: S.parse_request(
        env("ADD"), json.dumps(config(tmp_path, "2.0.0")).encode())) == S.INCOMPATIBLE_VERSION
    assert code_of(lambda: S.parse_request(
        env("CHECK"), json.dumps(config(tmp_path, "0.3.1")).encode())) == S.INCOMPATIBLE_VERSION
    assert code_of(lambda: S.parse_request(env("ADD", netns=""), good)) == \
        S.INVALID_ENVIRONMENT
    assert code_of(lambda: S.parse_request(env("STATUS"), good)) == S.INVALID_ENVIRONMENT
    assert code_of(lambda: S.parse_request(env("ADD", ifname="a/b"), good)) == \
        S.INVALID_ENVIRONMENT
    assert code_of(lambda: S.parse_request(env("ADD", ifname="x" * 16), good)) == \
        S.INVALID_ENVIRONMENT
    for bad in ({"ipam": None}, {"ipam": {"type": ""}}, {"mtu": True}, {"mtu": 70000},
                {"bridge": 3}, {"nodeName": ""}):
        assert code_of(lambda: S.parse_request(
            env("ADD"), json.dumps(config(tmp_path, **bad)).encode())) == S.INVALID_CONFIG


def test_del_needs_no_namespace_and_reads_the_kubelets_args(tmp_path):
    req = S.parse_request(env("DEL", netns=""), json.dumps(config(tmp_path)).encode())
    assert (req.command, req.netns, req.pod) == ("DEL", "", ("shop", "web-1"))
    other = S.parse_request(env("DEL", CNI_ARGS=""), json.dumps(config(tmp_path)).encode())
    assert other.pod == ("default", "c1")      # ctr run --cni sends no pod names


def test_the_host_end_is_named_from_the_container_and_fits_linux():
    names = {S.host_veth_name(f"c{i}", "eth0") for i in range(1000)}
    assert len(names) == 1000 and all(len(n) == 15 for n in names)
    assert S.host_veth_name("c1", "eth0") == S.host_veth_name("c1", "eth0")
    assert S.host_veth_name("c1", "eth0") != S.host_veth_name("c1", "net1")


def test_ipam_gets_the_nodes_pod_cidr_unless_the_config_names_a_range(tmp_path):
    conf = config(tmp_path)
    assert S.ipam_config(conf, "10.1.2.0/24")["ipam"]["ranges"] == \
        [[{"subnet": "10.1.2.0/24", "gateway": "10.1.2.1"}]]
    assert "ranges" not in conf["ipam"]                  # not changed in place
    own = config(tmp_path, ipam={"type": "host-local", "subnet": "10.7.0.0/16"})
    assert S.ipam_config(own, "10.1.2.0/24") == own


def test_results_follow_the_requested_version(tmp_path):
    addr = S.Address(__import__("ipaddress").IPv4Interface("10.1.2.7/24"), "10.1.2.1")
    for version, has_version in (("1.0.0", False), ("0.4.0", True), ("0.3.1", True)):
        req = S.parse_request(env("ADD"), json.dumps(config(tmp_path, version)).encode())
        out = S.add_result(req, addr, "nsxabc", "aa:bb:cc:dd:ee:ff")
        assert out["cniVersion"] == version
        assert out["ips"][0]["address"] == "10.1.2.7/24" and out["ips"][0]["interface"] == 1
        assert ("version" in out["ips"][0]) == has_version
        assert out["interfaces"][1] == {"name": "eth0", "mac": "0a:58:0a:01:02:07",
                                        "sandbox": "/var/run/netns/x"}


def invoke(command, conf, **kw):
    """Run the installed plugin as a runtime does: (exit status, JSON answer, stderr)."""
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    proc = subprocess.run([PLUGIN], input=stdin, capture_output=True, timeout=60,
                          env=dict(os.environ, **env(command, **kw)))
    out = proc.stdout.decode().strip()
    return proc.returncode, (json.loads(out) if out else None), proc.stderr.decode()


def test_version_and_errors_come_as_the_specs_json_never_a_traceback(tmp_path):
    assert invoke("VERSION", b"{}")[:2] == (0, {"cniVersion": "1.0.0", "supportedVersions": [
        "0.3.0", "0.3.1", "0.4.0", "1.0.0"]})
    status, answer, err = invoke("ADD", b"{oops")
    assert status == 1 and answer["code"] == S.DECODING_FAILURE and answer["msg"]
    assert "Traceback" not in err and err.count("\n") == 1
    status, answer, _ = invoke("ADD", config(tmp_path, "9.9.9"))
    assert status == 1 and answer["code"] == S.INCOMPATIBLE_VERSION and "9.9.9" in answer["msg"]


# --- on a real bridge -------------------------------------------------------------------

@pytest.fixture
def bridge():
    run(["ovs-vsctl", "--if-exists", "del-br", BRIDGE])
    run(["ovs-vsctl", "add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev",
         "fail_mode=secure", "external_ids:nsx-proxy-role=node",
         "external_ids:nsx-proxy-node=node9", f"external_ids:nsx-proxy-pod-cidr={POD_CIDR}"])
    yield BRIDGE
    run(["ovs-vsctl", "--if-exists", "del-br", BRIDGE])


class Namespaces:
    def __init__(self):
        self.names = []

    def new(self, name):
        run(["ip", "netns", "add", name])
        self.names.append(name)
        return f"/var/run/netns/{name}"

    def delete(self, name):
        run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def netns():
    spaces = Namespaces()
    yield spaces
    for name in spaces.names:
        spaces.delete(name)
    # A failed test's host ends: only this module's containers' (a lab's pods
    # may be attached by the plugin on this machine at the same time).
    for container in CONTAINERS:
        run(["ip", "link", "del", S.host_veth_name(container, "eth0")], check=False)


def in_ns(ns_path, *cmd):
    return run(["nsenter", f"--net={ns_path}"] + list(cmd))


def port_ids(name):
    out = run(["ovs-vsctl", "--format=json", "--data=json", "--columns=external_ids,ofport",
               "find", "Interface", f"name={name}"])
    rows = json.loads(out)["data"]
    return (dict(rows[0][0][1]), rows[0][1]) if rows else (None, None)


def leases(tmp_path):
    folder = tmp_path / "ipam" / "nsx-test"
    return sorted(p.name for p in folder.iterdir() if p.name[0].isdigit()) \
        if folder.exists() else []


@pytest.mark.ovs
def test_add_attaches_the_pod_as_the_readme_says_check_and_del_undo_it(bridge, netns,
                                                                        tmp_path):
    ns = netns.new("nsxc-p1")
    conf = config(tmp_path, mtu=1400)
    status, result, err = invoke("ADD", conf, netns=ns)
    assert status == 0, err
    host_if = S.host_veth_name("c1", "eth0")
    assert result["cniVersion"] == "1.0.0" and result["ips"] == [
        {"address": "10.9.1.2/24", "gateway": "10.9.1.1", "interface": 1}]
    assert result["interfaces"][0]["name"] == host_if
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.9.1.1"}]
    link = json.loads(in_ns(ns, "ip", "-j", "addr", "show", "eth0"))[0]
    assert link["address"] == "0a:58:0a:09:01:02" and link["mtu"] == 1400
    assert "UP" in link["flags"]
    assert any(a["local"] == "10.9.1.2" and a["prefixlen"] == 24 for a in link["addr_info"])
    assert "default via 10.9.1.1 dev eth0" in in_ns(ns, "ip", "route")
    ids, ofport = port_ids(host_if)
    assert ids == {"nsx-proxy-role": "pod", "pod-namespace": "shop", "pod-name": "web-1",
                   "ip-address": "10.9.1.2", "attached-mac": "0a:58:0a:09:01:02",
                   "container-id": "c1", "cni-ifname": "eth0"}
    assert ofport > 0
    # userspace datapath: both ends compute checksums (conntrack drops offloaded ones)
    assert "tx-checksumming: off" in in_ns(ns, "ethtool", "-k", "eth0")
    assert "tx-checksumming: off" in run(["ethtool", "-k", host_if])
    assert leases(tmp_path) == ["10.9.1.2"]

    check = dict(conf, prevResult=result)
    assert invoke("CHECK", check, netns=ns)[0] == 0
    in_ns(ns, "ip", "addr", "del", "10.9.1.2/24", "dev", "eth0")
    status, answer, _ = invoke("CHECK", check, netns=ns)
    assert status == 1 and answer["code"] == S.NOT_AS_ATTACHED and "10.9.1.2/24" in answer["msg"]

    assert invoke("DEL", conf, netns=ns)[0] == 0
    assert port_ids(host_if) == (None, None)
    assert not os.path.exists(f"/sys/class/net/{host_if}")
    assert "eth0" not in in_ns(ns, "ip", "-o", "link")
    assert leases(tmp_path) == []
    assert invoke("DEL", conf, netns=ns)[0] == 0            # again: nothing left, no error
    netns.delete("nsxc-p1")
    assert invoke("DEL", conf, netns=ns)[0] == 0            # the namespace gone too


@pytest.mark.ovs
def test_del_after_the_namespace_is_gone_releases_port_and_address(bridge, netns, tmp_path):
    ns = netns.new("nsxc-p2")
    conf = config(tmp_path)
    status, result, err = invoke("ADD", conf, netns=ns, container="c2")
    assert status == 0, err
    netns.delete("nsxc-p2")                   # the pair dies with the namespace
    assert invoke("DEL", conf, netns=ns, container="c2")[0] == 0
    assert port_ids(S.host_veth_name("c2", "eth0")) == (None, None)
    assert leases(tmp_path) == []


@pytest.mark.ovs
def test_bad_input_gets_the_specs_error_and_leaves_nothing_behind(bridge, netns, tmp_path):
    status, answer, err = invoke("ADD", config(tmp_path), netns="/var/run/netns/nsxc-none")
    assert (status, answer["code"]) == (1, S.UNKNOWN_CONTAINER) and "nsxc-none" in answer["msg"]
    assert "Traceback" not in err
    ns = netns.new("nsxc-p3")
    status, answer, _ = invoke("ADD", config(tmp_path, bridge="br-missing"), netns=ns)
    assert (status, answer["code"]) == (1, S.TRY_AGAIN_LATER)
    assert "nsx-proxy-role=node" in answer["msg"] and "br-missing" in answer["msg"]
    # two bridges for one node, and the config names neither: which is it?
    run(["ovs-vsctl", "add-br", "nsxc-br2", "--", "set", "bridge", "nsxc-br2",
         "datapath_type=netdev", "external_ids:nsx-proxy-role=node",
         "external_ids:nsx-proxy-node=node9", f"external_ids:nsx-proxy-pod-cidr={POD_CIDR}"])
    try:
        ambiguous = {k: v for k, v in config(tmp_path, nodeName="node9").items()
                     if k != "bridge"}
        status, answer, _ = invoke("ADD", ambiguous, netns=ns)
        assert (status, answer["code"]) == (1, S.INVALID_CONFIG)
        assert "nsxc-br, nsxc-br2" in answer["msg"] and "\"bridge\"" in answer["msg"]
    finally:
        run(["ovs-vsctl", "--if-exists", "del-br", "nsxc-br2"])
    # an exhausted pool: one address, two pods
    tiny = config(tmp_path, ipam={"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                                  "ranges": [[{"subnet": POD_CIDR, "rangeStart": "10.9.1.9",
                                               "rangeEnd": "10.9.1.9"}]]})
    assert invoke("ADD", tiny, netns=ns, container="first")[0] == 0
    ns2 = netns.new("nsxc-p4")
    status, answer, _ = invoke("ADD", tiny, netns=ns2, container="second")
    assert status == 1 and "no IP addresses available" in answer["msg"]
    assert port_ids(S.host_veth_name("second", "eth0")) == (None, None)
    # a failure after the address was taken gives it back: eth0 already exists
    in_ns(ns2, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    status, answer, _ = invoke("ADD", config(tmp_path), netns=ns2, container="third")
    assert (status, answer["code"]) == (1, S.IO_FAILURE) and "eth0" in answer["msg"]
    assert leases(tmp_path) == ["10.9.1.9"]
    assert not os.path.exists(f"/sys/class/net/{S.host_veth_name('third', 'eth0')}")


@pytest.mark.ovs
def test_ten_adds_at_once_each_get_their_own_address_and_port(bridge, netns, tmp_path):
    conf = config(tmp_path)
    spaces = [netns.new(f"nsxc-m{i}") for i in range(10)]
    results = [None] * 10

    def add(i):
        results[i] = invoke("ADD", conf, netns=spaces[i], container=f"m{i}")

    threads = [threading.Thread(target=add, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r[0] for r in results] == [0] * 10, [r[2] for r in results]
    ips = {r[1]["ips"][0]["address"] for r in results}
    assert len(ips) == 10 and len(leases(tmp_path)) == 10
    ports = run(["ovs-vsctl", "list-ports", BRIDGE]).split()
    assert sorted(ports) == sorted(S.host_veth_name(f"m{i}", "eth0") for i in range(10))
    assert all(port_ids(p)[1] > 0 for p in ports)


def test_install_writes_one_file_plugin_the_nodes_python_runs_and_uninstall_removes_it(
        tmp_path):
    from nsx_cni import install as I
    bin_dir, conf_dir, plugins = tmp_path / "bin", tmp_path / "net.d", tmp_path / "std"
    plugins.mkdir()
    for name in I.STANDARD_PLUGINS:
        (plugins / name).write_bytes(b"#!/bin/sh\n")
    (tmp_path / "bin").mkdir()
    (bin_dir / "loopback").write_bytes(b"the node's own")
    copied = I.install(str(bin_dir), str(conf_dir), str(plugins), mtu=1450, node_name="n7")
    assert copied == [str(bin_dir / "host-local")]                  # loopback was there
    assert (bin_dir / "loopback").read_bytes() == b"the node's own"
    conf = json.loads((conf_dir / I.CONFLIST).read_text())
    assert conf == {"cniVersion": "1.0.0", "name": "nsx-proxy", "plugins": [
        {"type": "nsx-proxy-cni", "ipam": {"type": "host-local"}, "mtu": 1450,
         "nodeName": "n7"}]}
    # Run as a runtime runs it: by its shebang, the node's python3, isolated
    # from this venv and this checkout.
    assert (bin_dir / "nsx-proxy-cni").read_bytes().startswith(b"#!/usr/bin/python3 -IS\n")
    proc = subprocess.run([str(bin_dir / "nsx-proxy-cni")],
                          input=b"{}", capture_output=True, cwd="/",
                          env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"})
    assert json.loads(proc.stdout)["supportedVersions"][-1] == "1.0.0", proc.stderr
    assert os.access(bin_dir / "nsx-proxy-cni", os.X_OK)
    I.uninstall(str(bin_dir), str(conf_dir))
    assert sorted(os.listdir(bin_dir)) == ["host-local", "loopback"]
    assert os.listdir(conf_dir) == []


@pytest.mark.ovs
def test_a_dual_stack_bridge_gives_the_pod_an_address_and_a_route_of_each_family(
        bridge, netns, tmp_path):
    run(["ovs-vsctl", "set", "bridge", bridge,
         f"external_ids:nsx-proxy-pod-cidr={POD_CIDR},fd00:10:9:1::/64"])
    try:
        ns = netns.new("nsxc-p6")
        conf = config(tmp_path)
        status, result, err = invoke("ADD", conf, netns=ns)
        assert status == 0, err
        assert result["ips"] == [
            {"address": "10.9.1.2/24", "gateway": "10.9.1.1", "interface": 1},
            {"address": "fd00:10:9:1::2/64", "gateway": "fd00:10:9:1::1", "interface": 1}]
        assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.9.1.1"},
                                    {"dst": "::/0", "gw": "fd00:10:9:1::1"}]
        link = json.loads(in_ns(ns, "ip", "-j", "addr", "show", "eth0"))[0]
        assert any(a["local"] == "fd00:10:9:1::2" and a["prefixlen"] == 64
                   for a in link["addr_info"])
        assert "default via fd00:10:9:1::1 dev eth0" in in_ns(ns, "ip", "-6", "route")
        host_if = S.host_veth_name("c1", "eth0")
        assert port_ids(host_if)[0]["ip-address"] == "10.9.1.2,fd00:10:9:1::2"
        folder = tmp_path / "ipam" / "nsx-test"
        assert {"10.9.1.2", "fd00:10:9:1::2"} <= {p.name for p in folder.iterdir()}
        check = dict(conf, prevResult=result)
        assert invoke("CHECK", check, netns=ns)[0] == 0
        in_ns(ns, "ip", "-6", "route", "del", "default")
        status, answer, _ = invoke("CHECK", check, netns=ns)
        assert status == 1 and "no default route via fd00:10:9:1::1" in answer["msg"]
        assert invoke("DEL", check, netns=ns)[0] == 0
        assert not {"10.9.1.2", "fd00:10:9:1::2"} & {p.name for p in folder.iterdir()}
    finally:
        run(["ovs-vsctl", "set", "bridge", bridge, f"external_ids:nsx-proxy-pod-cidr={POD_CIDR}"])
