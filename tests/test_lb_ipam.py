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
    assert got == {"default/a": "198.51.100.2"}          # c: the /30 has two hosts
    assert rejects == ["floating-IP pool 'public' is exhausted"]
    got, rejects = plan(svc("a"), svc("c"), reserved=["198.51.100.1"])
    assert got == {"default/a": "198.51.100.2"}
    assert rejects == ["floating-IP pool 'public' is exhausted"]


def test_service_then_namespace_annotation_choose_the_pool():
    blue = {lb_ipam.POOL_ANNOTATION: "blue"}
    got, _ = plan(svc("a", annotations=blue),
                  svc("b", ns="team"), namespaces={"team": {"metadata": {"annotations": blue}}})
    assert got == {"default/a": "198.51.101.8", "team/b": "198.51.101.9"}


def test_load_balancer_ip_is_honoured_only_inside_a_free_pool_address():
    got, rejects = plan(svc("a", loadBalancerIP="198.51.101.9"),
                        svc("b", loadBalancerIP="10.0.0.1"))
    assert got == {"default/a": "198.51.101.9", "default/b": "198.51.100.1"}
    assert "loadBalancerIP 10.0.0.1 is not a free address" in rejects[0]


def test_release_only_our_addresses_when_no_longer_a_load_balancer():
    got, _ = plan(svc("a", type_="ClusterIP", ingress=["198.51.100.1"]),
                  svc("b", type_="NodePort", ingress=["203.0.113.77"]))      # not from our pools
    assert got == {"default/a": None}


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
