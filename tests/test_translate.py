"""Translation of API objects into the model: every field, and every kind of bad object."""
import functools
import logging

import pytest

from kube_helpers import Rejects, ep, eps, service
from nsx_proxy import model, translate, validate
from nsx_proxy.validate import Invalid


svc = functools.partial(service, "web", vip="10.96.0.10",
                        ports=[{"name": "http", "port": 80, "targetPort": "http"}])


def test_cluster_ip_service_with_named_ports_resolved_per_slice():
    rejects = Rejects()
    out = translate.service(svc(), [
        eps(ep("10.1.1.2", pod="a"), ports=(("http", 8080),), name="web-a"),
        eps(ep("10.1.2.2", node="node2", pod="b"), ports=(("http", 9090),), name="web-b"),
    ], rejects)
    assert rejects == []
    (port,) = out.ports
    assert (port.name, port.protocol, port.port, port.target_port) == ("http", "TCP", 80, "http")
    assert [(e.ip, e.port, e.node, e.pod) for e in port.endpoints] == [
        ("10.1.1.2", 8080, "node1", "default/a"), ("10.1.2.2", 9090, "node2", "default/b")]


def test_multiport_nodeport_external_and_lb_ips():
    raw = svc(type="LoadBalancer", externalIPs=["198.51.100.7", "198.51.100.7"],
              ports=[{"name": "a", "port": 8888, "targetPort": 80, "nodePort": 30888},
                     {"name": "b", "port": 9999, "targetPort": 90, "protocol": "UDP",
                      "nodePort": 30999}])
    raw["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.50"},
                                                  {"hostname": "lb.example.com"}]}}
    # the slice says "b" is TCP: it must not feed the UDP listener
    out = translate.service(raw, [eps(ep("10.1.1.2"), ports=(("a", 80), ("b", 90)))], Rejects())
    assert out.type == model.LOAD_BALANCER
    assert out.external_ips == ("198.51.100.7",)
    assert out.load_balancer_ips == ("203.0.113.50",)
    assert [(p.protocol, p.port, p.node_port, [e.port for e in p.endpoints])
            for p in out.ports] == [("TCP", 8888, 30888, [80]), ("UDP", 9999, 30999, [])]


def test_slice_port_protocol_must_match():
    raw = svc(ports=[{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}])
    slice_ = eps(ep("10.1.1.2"), ports=(("dns", 5353),))
    slice_["ports"][0]["protocol"] = "UDP"
    out = translate.service(raw, [slice_], Rejects())
    assert [e.port for e in out.ports[0].endpoints] == [5353]


def test_conditions_follow_the_api_rules_for_unset_values():
    raw_eps = eps(ep("10.1.1.2"), ep("10.1.1.3", ready=False),
                  ep("10.1.1.4", ready=False, serving=True, terminating=True),
                  ep("10.1.1.5", ready=False, serving=False, terminating=True))
    got = {e.ip: (e.ready, e.serving, e.terminating)
           for e in translate.service(svc(), [raw_eps], Rejects()).ports[0].endpoints}
    assert got == {"10.1.1.2": (True, True, False), "10.1.1.3": (False, False, False),
                   "10.1.1.4": (False, True, True), "10.1.1.5": (False, False, True)}


def test_duplicate_address_across_slices_keeps_the_ready_one():
    out = translate.service(svc(), [eps(ep("10.1.1.2"), name="web-a"),
                                    eps(ep("10.1.1.2", ready=False), name="web-b")], Rejects())
    assert [(e.ip, e.ready) for e in out.ports[0].endpoints] == [("10.1.1.2", True)]


def test_ipv6_slices_join_the_pool_and_bad_addresses_are_reported_and_skipped():
    rejects = Rejects()
    out = translate.service(svc(), [
        eps(ep("fd00::2"), ep("10.1.1.9"), ep("fe80::1"), name="web-v6", family="IPv6"),
        eps(ep("10.1.1.2"), ep("10.1.1.300"), ep("fd00::3"), name="web-v4"),
        eps(ep("web.example.com"), name="web-fqdn", family="FQDN")], rejects)
    assert [e.ip for e in out.ports[0].endpoints] == ["10.1.1.2", "fd00::2"]
    assert sorted((n, r) for _, n, r in rejects) == [
        ("default/web-fqdn", "addressType 'FQDN' is not IPv4 or IPv6; slice ignored"),
        ("default/web-v4", "endpoint address '10.1.1.300' is not an IP address"),
        ("default/web-v4", "endpoint address fd00::3 is not of the slice's addressType IPv4"),
        ("default/web-v6", "endpoint address 10.1.1.9 is not of the slice's addressType IPv6"),
        ("default/web-v6", "endpoint address fe80::1 cannot be a unicast service address")]


def test_headless_and_external_name_are_ignored_not_rejected():
    assert translate.ignored_reason(svc(clusterIP="None")) == "headless"
    assert translate.ignored_reason(svc(type="ExternalName")) == "ExternalName"
    assert translate.ignored_reason(svc()) is None


@pytest.mark.parametrize("spec, reason", [
    (dict(clusterIP="10.96.0.300"), "not an IP"),
    (dict(clusterIP="fd00::zz", clusterIPs=["fd00::zz"]), "not an IP"),
    (dict(clusterIP="ff02::1", clusterIPs=["ff02::1"]), "cannot be a unicast"),
    (dict(type="Magic"), "type 'Magic'"),
])
def test_unusable_services_raise(spec, reason):
    with pytest.raises(Invalid, match=reason):
        translate.service(svc(**spec), [], Rejects())


def test_single_and_dual_stack_services_keep_each_family_and_the_primary_first():
    out = translate.service(svc(clusterIP="fd00::10", clusterIPs=["fd00::10", "10.96.0.10"]),
                            [], Rejects())
    assert out.cluster_ips == ("fd00::10", "10.96.0.10")
    out = translate.service(svc(clusterIP="FD00:0::a", clusterIPs=["FD00:0::a"]), [], Rejects())
    assert out.cluster_ips == ("fd00::a",)          # written as ipaddress writes it
    assert translate.service(svc(), [], Rejects()).secondary_cluster_ip is None


@pytest.mark.parametrize("ips, reason", [
    (["10.96.0.10", "10.96.0.11"], "not one address of each family"),
    (["10.96.0.10", "fd00::10", "fd00::11"], "not one address of each family"),
    (["10.96.0.10", "fd00::zz"], "clusterIPs[1] 'fd00::zz' is not an IP address"),
])
def test_a_bad_second_cluster_ip_costs_that_family_only(ips, reason):
    rejects = Rejects()
    out = translate.service(svc(clusterIP=ips[0], clusterIPs=ips), [], rejects)
    assert out.cluster_ips == ("10.96.0.10",)
    assert [(k, n) for k, n, _ in rejects] == [("service", "default/web")]
    assert reason in rejects[0][2] and "serving 10.96.0.10 only" in rejects[0][2]


def test_bad_ports_are_skipped_one_by_one():
    rejects = Rejects()
    out = translate.service(svc(ports=[
        {"name": "ok", "port": 80}, {"name": "big", "port": 70000},
        {"name": "gre", "port": 47, "protocol": "GRE"}, {"name": "again", "port": 80}]),
        [], rejects)
    assert [p.name for p in out.ports] == ["ok"]
    assert [r[2] for r in rejects] == ["port 70000 is outside 1-65535",
                                       "protocol 'GRE' is not one of TCP, UDP, SCTP",
                                       "TCP/80 is listed twice"]


def test_nodes():
    raw = {"metadata": {"name": "node1"}, "spec": {"podCIDRs": ["fd00:1::/64", "10.1.1.0/24"]},
           "status": {"addresses": [{"type": "Hostname", "address": "node1"},
                                    {"type": "InternalIP", "address": "192.168.100.1"}]}}
    assert translate.node(raw) == model.Node("node1", "192.168.100.1", "10.1.1.0/24",
                                            pod_cidr6="fd00:1::/64")
    raw["spec"]["podCIDRs"] = ["10.1.1.0/24", "fd00:1::1/64"]       # host bits set
    rejects = Rejects()
    assert translate.node(raw, rejects).pod_cidr6 is None
    assert [(k, n) for k, n, _ in rejects] == [("node", "node1")]
    with pytest.raises(Invalid, match="podCIDR"):
        translate.node({"metadata": {"name": "n"}, "spec": {},
                        "status": {"addresses": [{"type": "InternalIP", "address": "1.2.3.4"}]}})
    with pytest.raises(Invalid, match="InternalIP"):
        translate.node({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.1.1.0/24"}})


def test_reject_log_logs_once_and_counts(caplog):
    caplog.set_level(logging.WARNING)
    log = validate.RejectLog()
    for _ in range(3):
        log.reject("service", "default/bad", "clusterIP '10.96.0.300' is not an IP address")
    assert len(caplog.records) == 1
    assert "default/bad" in caplog.text and log.counts == {"clusterIP": 1}


def test_node_and_zone_hints_are_read_and_junk_hints_ignored():
    raw_eps = eps(ep("10.1.1.2"), ep("10.1.1.3"))
    raw_eps["endpoints"][0]["hints"] = {"forZones": [{"name": "z1"}],
                                        "forNodes": [{"name": "node1"}]}
    raw_eps["endpoints"][1]["hints"] = {"forZones": "z1", "forNodes": [None, {"name": 3}]}
    out = translate.service(svc(trafficDistribution="PreferSameNode"), [raw_eps], Rejects())
    assert out.topology_aware
    first, second = out.ports[0].endpoints
    assert (first.zones, first.node_hints) == (("z1",), ("node1",))
    assert (second.zones, second.node_hints) == ((), ())
    for value in ("PreferClose", "PreferSameZone"):
        assert translate.service(svc(trafficDistribution=value), [], Rejects()).topology_aware
    assert not translate.service(svc(trafficDistribution="Anywhere"), [], Rejects()).topology_aware


def test_load_balancer_ips_in_proxy_mode_are_not_ours_to_answer():
    raw = svc(type="LoadBalancer")
    raw["status"] = {"loadBalancer": {"ingress": [
        {"ip": "198.51.100.8"}, {"ip": "198.51.100.9", "ipMode": "VIP"},
        {"ip": "198.51.100.10", "ipMode": "Proxy"}, {"hostname": "lb.example.com"}, "junk"]}}
    out = translate.service(raw, [], Rejects())
    assert out.load_balancer_ips == ("198.51.100.8", "198.51.100.9")


def test_services_of_another_service_proxy_are_left_alone():
    raw = svc()
    raw["metadata"]["labels"] = {"service.kubernetes.io/service-proxy-name": "other-proxy"}
    assert translate.ignored_reason(raw) == "another service proxy's"


def test_the_fast_ipv4_check_agrees_with_ipaddress():
    """validate.ipv4's fast path (a canonical dotted quad) answers as the
    ipaddress-based checks do, for addresses and near-misses alike."""
    import ipaddress
    import random
    from nsx_proxy import validate
    rng = random.Random(7)

    def slow(value):
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            return None
        if addr.version != 4 or addr.is_unspecified or addr.is_multicast or \
                addr.is_loopback:
            return None
        return str(addr)

    samples = ["0.0.0.0", "127.0.0.1", "126.255.255.255", "128.0.0.1", "223.255.255.255",
               "224.0.0.1", "239.9.9.9", "240.0.0.1", "255.255.255.255", "1.2.3.4",
               "01.2.3.4", "1.2.3.04", "256.1.1.1", "1.2.3", "1.2.3.4.5", " 1.2.3.4",
               "1.2.3.4\n", "::1", "fd00::1", "10.1.1.2", "1..2.3", "", "a.b.c.d"]
    samples += [".".join(str(rng.choice([0, 1, 9, 10, 99, 100, 127, 199, 200, 224, 249,
                                          250, 255, 256, 300])) for _ in range(4))
                for _ in range(2000)]
    for value in samples:
        try:
            got = validate.ipv4(value)
        except validate.Invalid:
            got = None
        assert got == slow(value), value


@pytest.mark.parametrize("value, want", [
    ("FD00:0::A", "fd00::a"), ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
    ("64:ff9b::1.2.3.4", "64:ff9b::102:304"), ("fd00::1%eth0", None), ("fd00::zz", None),
    ("fe80::1", None), ("ff02::1", None), ("::", None), ("::1", None),
    ("::ffff:10.1.1.2", None)])
def test_ipv6_addresses_are_checked_and_written_as_ipaddress_writes_them(value, want):
    if want is None:
        with pytest.raises(Invalid):
            validate.ip(value)
    else:
        assert validate.ip(value) == want
