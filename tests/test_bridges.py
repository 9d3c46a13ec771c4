"""What a bridge's OVSDB rows say (controller/bridges.py): the node's own
stack port, and the nodeport_addresses option."""
import dataclasses

import pytest

from controller import bridges as B


def node_bridge(*interfaces):
    return B.parse_bridge("br-node1", 0x1001, {
        B.ROLE: B.ROLE_NODE, B.NODE: "node1", B.POD_CIDR: "10.1.1.0/24"}, interfaces)


def test_a_host_port_is_wired_like_a_pod_holding_the_node_ip():
    ctx = node_bridge(
        ("pod1-eth0", 1, {B.ROLE: B.ROLE_POD, B.POD_NAMESPACE: "default",
                          B.POD_NAME: "pod1", B.POD_IP: "10.1.1.2",
                          B.POD_MAC: "0a:58:0a:01:01:02"}),
        ("host0", 3, {B.ROLE: B.ROLE_HOST, B.POD_IP: "192.168.100.1",
                      B.POD_MAC: "0A:58:C0:A8:64:01"}),
        ("eth1", 2, {B.ROLE: B.ROLE_UPLINK}))
    host = next(p for p in ctx.pods if p.namespace == B.HOST_NAMESPACE)
    assert (host.full_name, host.ip, host.mac, host.ofport) == \
        ("host/host0", "192.168.100.1", "0a:58:c0:a8:64:01", 3)
    assert ctx.uplink == 2 and len(ctx.pods) == 2


def test_nodeport_addresses_as_kube_proxy_reads_them():
    assert B.parse_nodeport_addresses("") == ()
    assert B.parse_nodeport_addresses("primary") == ()        # the InternalIP: ours
    assert B.parse_nodeport_addresses("192.168.0.0/16, 10.0.0.0/8") == \
        ("192.168.0.0/16", "10.0.0.0/8")
    assert B.parse_nodeport_addresses("10.0.0.0/8,primary") == ()
    assert B.parse_nodeport_addresses("fd00:100::/64,10.0.0.0/8") == \
        ("fd00:100::/64", "10.0.0.0/8")
    with pytest.raises(ValueError, match="'banana' is not a CIDR or 'primary'"):
        B.parse_nodeport_addresses("10.0.0.0/8,banana")
    ctx = node_bridge()
    limited = dataclasses.replace(ctx, node_port_cidrs=("10.0.0.0/8",))
    assert not limited.serves_node_ports("192.168.100.1")
    assert limited.serves_node_ports("10.9.9.9") and ctx.serves_node_ports("192.168.100.1")
    # CIDRs of one family only: the other family's InternalIP serves none (kube-proxy)
    assert not limited.serves_node_ports("fd00:100::1")
    both = dataclasses.replace(ctx, node_port_cidrs=("10.0.0.0/8", "fd00:100::/64"))
    assert both.serves_node_ports("fd00:100::1") and not both.serves_node_ports("fd00:101::1")


def test_an_incomplete_or_malformed_port_is_ignored_with_one_line_and_the_rest_kept(caplog):
    """Bad OVSDB rows (a CNI that forgot a key, a typo in a MAC) cost only
    their own port: one line each naming the interface, and the bridge's
    other ports are wired."""
    good = ("pod1-eth0", 1, {B.ROLE: B.ROLE_POD, B.POD_NAMESPACE: "default",
                             B.POD_NAME: "pod1", B.POD_IP: "10.1.1.2",
                             B.POD_MAC: "0a:58:0a:01:01:02"})
    node = node_bridge(
        good,
        ("pod2-eth0", 2, {B.ROLE: B.ROLE_POD, B.POD_IP: "10.1.1.3",
                          B.POD_MAC: "0a:58:0a:01:01:03"}),                 # no name
        ("pod3-eth0", 3, {B.ROLE: B.ROLE_POD, B.POD_NAME: "pod3", B.POD_IP: "10.1.1.300",
                          B.POD_MAC: "0a:58:0a:01:01:04"}))                # bad IP
    assert [p.name for p in node.pods] == ["pod1"]
    lines = [r.getMessage() for r in caplog.records]
    assert any("pod2-eth0" in ln and "without external_ids" in ln for ln in lines)
    assert any("pod3-eth0" in ln and "malformed" in ln for ln in lines)
    assert B.parse_external("ext-nomac", 4, {B.POD_IP: "203.0.113.1/24"}) is None
    assert B.parse_external("ext-bad", 5, {B.POD_IP: "203.0.113.1/24",
                                           B.NEXT_HOP_MAC: "zz:00:00:00:00:01"}) is None
    lines = [r.getMessage() for r in caplog.records]
    assert any("ext-nomac" in ln and "without external_ids" in ln for ln in lines)
    assert any("ext-bad" in ln and "malformed" in ln for ln in lines)


def test_an_uplink_that_is_a_geneve_or_vxlan_port_is_the_overlay():
    for kind, tunnel in (("geneve", True), ("vxlan", True), ("system", False), ("", False)):
        ctx = node_bridge(("nsx-tun0", 4, {B.ROLE: B.ROLE_UPLINK}, kind))
        assert (ctx.uplink, ctx.tunnel) == (4, tunnel), kind
    assert node_bridge(("eth1", 2, {B.ROLE: B.ROLE_UPLINK})).tunnel is False
