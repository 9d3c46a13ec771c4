"""The lab API server in a dual-stack cluster: cluster IPs of each family as
kube-apiserver allocates them, and an EndpointSlice per family."""
import pytest

from topologies.apiserver import endpointslices
from topologies.apiserver.cluster_ips import ClusterIPs

RANGES = "10.96.0.0/16,fd00:96::/112"


def claim(ips, spec, old=None, owner="default/web"):
    spec = dict(spec)
    held, causes = ips.claim(spec, old or {}, owner)
    if not causes:
        ips.ips.update(held)
    return spec, causes


@pytest.mark.parametrize("ask, families, policy", [
    ({}, ["IPv4"], "SingleStack"),                                   # the primary family
    ({"ipFamilies": ["IPv6"]}, ["IPv6"], "SingleStack"),
    ({"ipFamilyPolicy": "PreferDualStack"}, ["IPv4", "IPv6"], "PreferDualStack"),
    ({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6"]}, ["IPv6", "IPv4"],
     "RequireDualStack"),
    ({"clusterIP": "fd00:96::10"}, ["IPv6"], "SingleStack"),
])
def test_families_follow_policy_and_request(ask, families, policy):
    spec, causes = claim(ClusterIPs(RANGES), ask)
    assert not causes
    assert (spec["ipFamilies"], spec["ipFamilyPolicy"]) == (families, policy)
    assert [":" in ip for ip in spec["clusterIPs"]] == [f == "IPv6" for f in families]
    assert spec["clusterIP"] == spec["clusterIPs"][0]


def test_addresses_are_kept_and_a_second_family_added_on_update():
    ips = ClusterIPs(RANGES)
    first, _ = claim(ips, {})
    again, causes = claim(ips, {"ipFamilyPolicy": "RequireDualStack"}, old=first)
    assert not causes and again["clusterIPs"][0] == first["clusterIP"]
    assert again["clusterIPs"][1].startswith("fd00:96::")
    other, _ = claim(ips, {"ipFamilyPolicy": "PreferDualStack"}, owner="default/other")
    assert set(other["clusterIPs"]).isdisjoint(again["clusterIPs"])


@pytest.mark.parametrize("ranges, ask, message", [
    ("10.96.0.0/16", {"ipFamilyPolicy": "RequireDualStack"},
     "not configured for dual-stack"),
    ("10.96.0.0/16", {"ipFamilies": ["IPv6"]}, "not configured on this cluster"),
    (RANGES, {"clusterIPs": ["10.96.0.10", "fd00:96::10"]}, "must be RequireDualStack"),
    (RANGES, {"clusterIPs": ["10.96.0.10", "fd00:97::10"],
              "ipFamilyPolicy": "RequireDualStack"}, "not in the valid range"),
    (RANGES, {"ipFamilyPolicy": "Sometimes"}, "Unsupported value"),
    (RANGES, {"ipFamilies": ["IPv4", "IPv4"], "ipFamilyPolicy": "PreferDualStack"},
     "at most one of each family"),
])
def test_what_the_real_api_server_refuses(ranges, ask, message):
    _, causes = claim(ClusterIPs(ranges), ask)
    assert any(message in text for _, text in causes), causes


def test_a_dual_stack_service_gets_a_slice_per_family_of_the_pods_addresses():
    svc = {"metadata": {"name": "web", "namespace": "default", "uid": "u"},
           "spec": {"selector": {"app": "web"}, "ipFamilies": ["IPv4", "IPv6"],
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080,
                               "protocol": "TCP"}]}}
    pods = [{"metadata": {"name": f"p{i}", "namespace": "default", "labels": {"app": "web"}},
             "spec": {"nodeName": "node1"},
             "status": {"phase": "Running", "podIP": f"10.1.1.{i}",
                        "podIPs": [{"ip": f"10.1.1.{i}"}] + (
                            [{"ip": f"fd00:10:1:1::{i}"}] if i != 3 else []),
                        "conditions": [{"type": "Ready", "status": "True"}]}}
            for i in (2, 3)]
    slices = endpointslices.desired_slices(svc, pods)
    by_family = {s["addressType"]: [a for e in s["endpoints"] for a in e["addresses"]]
                 for s in slices.values()}
    assert by_family == {"IPv4": ["10.1.1.2", "10.1.1.3"], "IPv6": ["fd00:10:1:1::2"]}
    single = endpointslices.desired_slices(dict(svc, spec=dict(svc["spec"], ipFamilies=None)),
                                           pods)
    assert [s["addressType"] for s in single.values()] == ["IPv4"]
