"""Floating-IP pools for LoadBalancer services: choice, honouring, release."""
import functools

import pytest

from kube_helpers import service
from nsx_proxy import lb_ipam, model

POOLS = lb_ipam.parse_pools("public=198.51.100.0/30; blue=198.51.101.8/31")


svc = functools.partial(service, type_="LoadBalancer", ports=None)


def plan(*services, namespaces=None, reserved=()):
    rejects = []
    ipam = lb_ipam.Ipam(POOLS, "public")
    got = ipam.plan({model.ServiceKey(s["metadata"]["namespace"], s["metadata"]["name"]): s
                     for s in services}, namespaces or {},
                    lambda *r: rejects.append(r[2]), reserved=set(reserved))
    return {f"{k.namespace}/{k.name}": v for k, v in got.items()}, rejects


def test_allocates_lowest_free_from_the_default_pool_and_skips_used_ones():
    got, rejects = plan(svc("a"), svc("b", ingress=["198.51.100.1"]), svc("c"),
                        svc("d", type_="ClusterIP"))
    assert got == {"default/a": ("198.51.100.2",)}       # c: the /30 has two hosts
    assert rejects == ["floating-IP pool 'public' is exhausted (IPv4)"]
    got, rejects = plan(svc("a"), svc("c"), reserved=["198.51.100.1"])
    assert got == {"default/a": ("198.51.100.2",)}
    assert rejects == ["floating-IP pool 'public' is exhausted (IPv4)"]


def test_service_then_namespace_annotation_choose_the_pool():
    blue = {lb_ipam.POOL_ANNOTATION: "blue"}
    got, _ = plan(svc("a", annotations=blue),
                  svc("b", ns="team"), namespaces={"team": {"metadata": {"annotations": blue}}})
    assert got == {"default/a": ("198.51.101.8",), "team/b": ("198.51.101.9",)}


def test_load_balancer_ip_is_honoured_only_inside_a_free_pool_address():
    got, rejects = plan(svc("a", loadBalancerIP="198.51.101.9"),
                        svc("b", loadBalancerIP="10.0.0.1"))
    assert got == {"default/a": ("198.51.101.9",), "default/b": ("198.51.100.1",)}
    assert "loadBalancerIP 10.0.0.1 is not a free address" in rejects[0]


def test_release_only_our_addresses_when_no_longer_a_load_balancer():
    got, _ = plan(svc("a", type_="ClusterIP", ingress=["198.51.100.1"]),
                  svc("b", type_="NodePort", ingress=["203.0.113.77"]))      # not from our pools
    assert got == {"default/a": ()}


def test_pool_config_errors():
    with pytest.raises(lb_ipam.PoolConfigError):
        lb_ipam.parse_pools("public")
    with pytest.raises(lb_ipam.PoolConfigError):
        lb_ipam.parse_pools("public=10.0.0.300/24")
    with pytest.raises(lb_ipam.PoolConfigError):
        lb_ipam.Ipam(POOLS, "missing")


def test_a_load_balancer_class_that_is_not_ours_gets_no_ip():
    other = svc("other", loadBalancerClass="example.com/other")
    mine = svc("mine", loadBalancerClass="nsx-proxy.io/fip")
    got, _ = plan(other, mine, svc("plain"))
    assert "default/other" not in got and "default/mine" not in got
    assert "default/plain" in got
    ipam = lb_ipam.Ipam(POOLS, "public", lb_class="nsx-proxy.io/fip")
    claimed = ipam.plan({model.ServiceKey("default", s["metadata"]["name"]): s
                         for s in (other, mine)}, {}, lambda *a: None)
    assert list(claimed) == [model.ServiceKey("default", "mine")]


DUAL = lb_ipam.parse_pools("public=198.51.100.0/30,2001:db8:51::/126; v4only=198.51.101.8/31")


def dual_plan(*services, pools=DUAL, pool="public"):
    rejects = []
    got = lb_ipam.Ipam(pools, pool).plan(
        {model.ServiceKey("default", s["metadata"]["name"]): s for s in services}, {},
        lambda *r: rejects.append(r[2]))
    return {k.name: v for k, v in got.items()}, rejects


def test_a_dual_stack_service_gets_an_address_of_each_family_primary_first():
    got, rejects = dual_plan(
        svc("both", ipFamilies=["IPv6", "IPv4"]), svc("v4", ipFamilies=["IPv4"]),
        svc("v6", clusterIPs=["fd00:96::a"]), svc("old", clusterIP="10.96.0.9"))
    # in name order: "old" (a clusterIP only: IPv4) takes the /30's last host
    assert got == {"both": ("2001:db8:51::1", "198.51.100.1"), "old": ("198.51.100.2",),
                   "v6": ("2001:db8:51::2",)}
    assert rejects == ["floating-IP pool 'public' is exhausted (IPv4)"]       # v4
    # a family the pool has no range of: reported, the other family served
    got, rejects = dual_plan(svc("both", ipFamilies=["IPv4", "IPv6"]), pool="v4only")
    assert got == {"both": ("198.51.101.8",)}
    assert rejects == ["floating-IP pool 'v4only' has no IPv6 range; no IPv6 load-balancer IP"]


def test_a_service_that_gains_or_loses_a_family_gains_or_loses_that_address():
    got, _ = dual_plan(svc("grew", ipFamilies=["IPv4", "IPv6"], ingress=["198.51.100.1"]),
                       svc("shrank", ipFamilies=["IPv6"],
                           ingress=["198.51.100.2", "2001:db8:51::1"]),
                       svc("same", ipFamilies=["IPv4", "IPv6"],
                           ingress=["198.51.100.3", "2001:db8:51::3"]))
    assert got == {"grew": ("198.51.100.1", "2001:db8:51::2"), "shrank": ("2001:db8:51::1",)}
    # loadBalancerIP names the address of its own family only
    got, rejects = dual_plan(svc("asked", ipFamilies=["IPv4", "IPv6"],
                                 loadBalancerIP="2001:db8:51::3"))
    assert got == {"asked": ("198.51.100.1", "2001:db8:51::3")} and rejects == []
    # another controller's address: never touched, even when a family is missing
    got, _ = dual_plan(svc("theirs", ipFamilies=["IPv4", "IPv6"], ingress=["203.0.113.9"]))
    assert got == {}
