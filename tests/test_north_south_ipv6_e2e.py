"""North-south in IPv6 on the shared (dual-stack) lab: NodePorts on the
nodes' IPv6 InternalIPs (fd00:100::1-2), load-balancer IPs from the IPv6
range of the default floating-IP pool (2001:db8:51::/120), IPv6 externalIPs
and loadBalancerSourceRanges, from the Internet host (2001:db8:113::10)
through the gateway, which answers Neighbor Discovery outside and routes
IPv6; pods reach the IPv6 Internet as their node (masquerade).

Every test removes what it made.
"""
import functools
import json
import os
import subprocess
import sys

import pytest

from kube_helpers import service as raw_service
from lab_helpers import STATUS, converge, metric, node2_only, services
from topologies import lab as L

pytestmark = pytest.mark.mininet
NODE1, NODE2 = "fd00:100::1", "fd00:100::2"
NODE1_V4 = "192.168.100.1"
EVERYONE = {"pod1", "pod2", "pod3", "pod4"}
CLI = os.path.join(os.path.dirname(sys.executable), "nsx-proxy")

service = functools.partial(raw_service, type_="ClusterIP", selector={"app": "web"},
                            ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"],
                            ports=[{"name": "http", "port": 80, "targetPort": "http"}])


def cli(*args):
    out = subprocess.run([CLI, "--controller", STATUS] + list(args) + ["--json"],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    return json.loads(out)


def url(ip, port=80, path="/"):
    return f"http://[{ip}]:{port}{path}" if ":" in ip else f"http://{ip}:{port}{path}"


def curl(lab, client, target, timeout=2):
    return lab.net.get(client).cmd(f"curl -s --max-time {timeout} {target}").strip()


def who(lab, client, target, want=EVERYONE, tries=40):
    seen = set()
    for _ in range(tries):
        seen.add(curl(lab, client, target))
        if want <= seen:
            break
    return seen - {""}


def lb_ips(lab, name, count, timeout=10):
    """The Service's load-balancer IPs, once it has ``count`` of them."""
    def read():
        svc = lab.cluster.core.read_namespaced_service(name, "default")
        lb = svc.status.load_balancer if svc.status else None
        ips = [i.ip for i in (lb.ingress or [])] if lb else []
        return ips if len(ips) == count else None
    return L.wait_for(read, timeout, what=f"{name}'s {count} load-balancer IPs")


def test_the_internet_host_resolves_the_gateway_and_pods_leave_as_their_node(lab):
    inet = lab.net.get("inet")
    assert curl(lab, "pod1", url(L.INET_IP6, 8080, "/ip")) == NODE1      # masquerade
    assert curl(lab, "pod3", url(L.INET_IP6, 8080, "/ip")) == NODE2
    neigh = inet.cmd(f"ip -6 neigh show {L.INET_GW6}")
    assert "0a:58:cb:00:71:01" in neigh, neigh          # br-gw's MAC, from its ND answer


def test_node_port_on_both_families_of_every_node_with_masquerade(lab):
    body = service("np6", type_="NodePort", ports=[
        {"name": "http", "port": 80, "targetPort": "http", "nodePort": 30180},
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns",
         "nodePort": 30153}])
    with services(lab, body):
        for node_ip in (NODE1, NODE2):
            assert who(lab, "inet", url(node_ip, 30180)) == EVERYONE
            # the pod sees the node's IPv6 address: replies return through it
            assert curl(lab, "inet", url(node_ip, 30180, "/ip")) in (NODE1, NODE2)
        assert who(lab, "inet", url(NODE1_V4, 30180)) == EVERYONE          # IPv4 still
        answer = lab.net.get("inet").cmd(f"python3 {L.HERE}/udpask.py {NODE2} 30153")
        assert answer.strip() in EVERYONE
        assert who(lab, "pod1", url(NODE2, 30180)) == EVERYONE             # from a pod
        (route,) = [f for f in lab.dump_flows("br-gw") if f"ipv6_dst={NODE2}" in f]
        assert "0a:58:0a:01:02:01->eth_dst" in route      # to node2's router MAC


def test_node_port_local_keeps_the_ipv6_source_and_only_nodes_with_endpoints_serve(lab):
    with node2_only(lab) as selector:
        body = service("npl6", type_="NodePort", selector=selector,
                       externalTrafficPolicy="Local",
                       ports=[{"name": "http", "port": 80, "targetPort": "http",
                               "nodePort": 30181}])
        with services(lab, body):
            assert who(lab, "inet", url(NODE2, 30181), {"pod3", "pod4"}) == {"pod3", "pod4"}
            assert curl(lab, "inet", url(NODE2, 30181, "/ip")) == L.INET_IP6
            assert curl(lab, "inet", url(NODE1, 30181), timeout=1) == "", \
                "a node without a local endpoint must not serve"


def test_a_dual_stack_load_balancer_gets_an_address_of_each_family_with_ecmp(lab):
    with services(lab, service("lb6", type_="LoadBalancer")):
        v4, v6 = lb_ips(lab, "lb6", 2)
        assert v4.startswith("198.51.100.") and v6.startswith("2001:db8:51::")
        converge(lab)
        assert who(lab, "inet", url(v6)) == EVERYONE
        assert who(lab, "inet", url(v4)) == EVERYONE
        assert curl(lab, "inet", url(v6, path="/ip")) in (NODE1, NODE2)     # Cluster
        # the gateway's group for the IPv6 address: a bucket per node
        flow = next(f for f in lab.dump_flows("br-gw") if f"ipv6_dst={v6}" in f)
        gid = flow.split("group:")[1].split(",")[0].split()[0]
        (group,) = [g for g in lab.dump_groups("br-gw") if f"group_id={gid}," in g]
        assert group.count("bucket=") == 2
        assert who(lab, "pod1", url(v6)) == EVERYONE                      # from inside
        # nsx-proxy services: the IPv6 external pool, its members and their packets
        (listener,) = cli("services", "default/lb6")[0]["listeners"]
        pools = {p["pool"]: p for p in listener["pools"]}
        assert set(pools) == {"cluster IP", "cluster IP (IPv6)", "external",
                              "external (IPv6)"}
        members = pools["external (IPv6)"]["members"]
        assert {m["ip"] for m in members} == {p.ip6 for p in lab.pods}
        assert sum(m["packets"] for m in members) > 0
        assert metric("nsx_proxy_outside_ips", '{family="IPv6",kind="load_balancer"}') >= 1
    L.wait_for(lambda: not any(f"ipv6_dst={v6}" in f for f in lab.dump_flows("br-gw")),
               10, what="the IPv6 LB route to go")


def test_another_controllers_ipv6_load_balancer_ip_is_proxied(lab):
    """loadBalancerClass not ours: no address from our pools; the IPv6 one
    the other controller writes is served like ours, from outside and from
    a pod (short-circuited to the endpoints, as kube-proxy does)."""
    body = service("lbc6", type_="LoadBalancer", loadBalancerClass="example.com/other")
    with services(lab, body):
        lab.cluster.core.patch_namespaced_service_status("lbc6", "default", {"status": {
            "loadBalancer": {"ingress": [{"ip": "2001:db8:77::60"}]}}})
        converge(lab)
        L.wait_for(lambda: who(lab, "inet", url("2001:db8:77::60")) == EVERYONE, 20,
                   what="the other controller's IPv6 address proxied")
        assert curl(lab, "pod1", url("2001:db8:77::60")) in EVERYONE
        assert lb_ips(lab, "lbc6", 1) == ["2001:db8:77::60"]      # none of ours added


def test_ipv6_source_ranges_let_their_sources_through_and_drop_the_rest(lab):
    body = service("lbsr6", type_="LoadBalancer",
                   loadBalancerSourceRanges=["2001:db8:113::/64", "10.0.0.0/8"])
    with services(lab, body):
        v4, v6 = lb_ips(lab, "lbsr6", 2)
        converge(lab)
        assert curl(lab, "inet", url(v6)) in EVERYONE          # its IPv6 range
        assert curl(lab, "inet", url(v4), timeout=1) == ""     # not in 10.0.0.0/8
        lab.cluster.apply_service(dict(body, spec=dict(
            body["spec"], loadBalancerSourceRanges=["2001:db8:999::/48"])))
        converge(lab)
        L.wait_for(lambda: curl(lab, "inet", url(v6), timeout=1) == "", 10,
                   what="the Internet host to be dropped over IPv6")
        # no IPv4 range left: the IPv4 address accepts everyone (kube-proxy)
        assert curl(lab, "inet", url(v4)) in EVERYONE
        with open(lab.controller_log) as fh:
            assert any("lbsr6: loadBalancerSourceRanges has no IPv4 range" in line
                       for line in fh)


def test_an_ipv6_external_ip_reaching_a_node_without_local_backend_is_served(lab):
    with node2_only(lab) as selector:
        body = service("ext6", selector=selector,
                       externalIPs=["2001:db8:51::200", "198.51.100.201"])
        with services(lab, body):
            assert who(lab, "inet", url("2001:db8:51::200"), {"pod3", "pod4"}) == \
                {"pod3", "pod4"}
            assert curl(lab, "inet", url("2001:db8:51::200", path="/ip")) in (NODE1, NODE2)
            assert who(lab, "inet", url("198.51.100.201"), {"pod3", "pod4"}) == \
                {"pod3", "pod4"}


def test_an_ipv6_external_ip_of_an_ipv4_only_service_is_ignored_with_one_line(lab):
    body = raw_service("ext4only", type_="ClusterIP", selector={"app": "web"},
                       externalIPs=["2001:db8:51::201"],
                       ports=[{"name": "http", "port": 80, "targetPort": "http"}])
    with services(lab, body):
        assert curl(lab, "inet", url("2001:db8:51::201"), timeout=1) == ""
        assert not any("2001:db8:51::201" in f for f in lab.dump_flows("br-gw"))
        with open(lab.controller_log) as fh:
            assert any("externalIP 2001:db8:51::201 is IPv6 and the service has no IPv6 "
                       "cluster IP" in line for line in fh)
