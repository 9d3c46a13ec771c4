"""North-south on the shared lab: NodePort, LoadBalancer, external IPs and
floating IPs, from the Internet host through the gateway and from inside.

Node IPs are 192.168.100.1-2 (reached through br-gw), the Internet host is
203.0.113.10, floating-IP pools are 198.51.100.0/25 (default) and
198.51.100.128/25 (blue).  Every test removes what it made.
"""
import functools

import pytest
from kubernetes.client.exceptions import ApiException

from kube_helpers import service as raw_service
from lab_helpers import HERE, converge, node2_only, services, who
from nsx_proxy import model
from topologies import lab as L

pytestmark = pytest.mark.mininet
NODE1, NODE2 = "192.168.100.1", "192.168.100.2"
EVERYONE = {"pod1", "pod2", "pod3", "pod4"}


service = functools.partial(raw_service, type_="ClusterIP", selector={"app": "web"},
                            ports=[{"name": "http", "port": 80, "targetPort": "http"}])


def lb_ip(lab, name, timeout=10):
    def read():
        svc = lab.cluster.core.read_namespaced_service(name, "default")
        lb = svc.status.load_balancer if svc.status else None
        ingress = (lb.ingress or []) if lb else []
        return ingress[0].ip if ingress else None
    return L.wait_for(read, timeout, what=f"{name}'s load-balancer IP")


def test_node_port_cluster_answers_on_every_node_ip_with_masquerade(lab):
    body = service("np", type_="NodePort", ports=[
        {"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns",
         "nodePort": 30053}])
    with services(lab, body):
        for node_ip in (NODE1, NODE2):
            assert L.wait_for(lambda: who(lab, "inet", f"http://{node_ip}:30080/")
                              == EVERYONE, 20, what=f"every pod behind {node_ip}:30080")
            # the pod sees the node (masquerade), so replies return through it
            assert lab.curl("inet", f"http://{node_ip}:30080/ip") in (NODE1, NODE2)
        assert lab.net.get("inet").cmd(
            f"python3 {HERE}/udpask.py {NODE2} 30053").strip() in EVERYONE
        assert lab.curl("pod1", f"http://{NODE2}:30080/") in EVERYONE     # from a pod
        assert lab.curl("pod1", "http://%s/" % lab.cluster.core.read_namespaced_service(
            "np", "default").spec.cluster_ip) in EVERYONE                 # ClusterIP too


def test_node_port_local_keeps_the_source_and_only_nodes_with_endpoints_serve(lab):
    with node2_only(lab) as selector:
        body = service("npl", type_="NodePort", selector=selector, externalTrafficPolicy="Local",
                       ports=[{"name": "http", "port": 80, "targetPort": "http",
                               "nodePort": 30081}])
        with services(lab, body):
            assert who(lab, "inet", f"http://{NODE2}:30081/") == {"pod3", "pod4"}
            assert lab.curl("inet", f"http://{NODE2}:30081/ip") == L.INET_IP
            assert lab.curl("inet", f"http://{NODE1}:30081/", timeout=1) == "", \
                "a node without a local endpoint must not serve"


def test_load_balancer_gets_a_pool_ip_reached_from_the_internet_with_ecmp(lab):
    body = service("lb", type_="LoadBalancer", ports=[
        {"name": "http", "port": 80, "targetPort": "http"},
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"}])
    with services(lab, body):
        ip = lb_ip(lab, "lb")
        assert ip.startswith("198.51.100.") and int(ip.rsplit(".", 1)[1]) < 128
        converge(lab)
        assert L.wait_for(lambda: who(lab, "inet", f"http://{ip}/", 16) == EVERYONE,
                          20, what="every pod behind the LB IP")
        (group,) = lab.dump_groups("br-gw")
        assert group.count("bucket=") == 2, "ECMP over both nodes"
        assert lab.net.get("inet").cmd(f"python3 {HERE}/udpask.py {ip} 53").strip() \
            in EVERYONE
        assert lab.curl("inet", "http://10.96.0.10/", timeout=1) == "", \
            "cluster IPs are not reachable from the Internet"
        assert lab.curl("inet", f"http://{lab.pods[0].ip}:8080/", timeout=1) == ""
        assert lab.curl("pod1", f"http://{ip}/") in EVERYONE          # from inside too


def test_another_controllers_load_balancer_class_and_ip_mode_proxy(lab):
    """loadBalancerClass not ours: no IP from our pools, yet proxied once the
    other controller writes one.  ipMode Proxy: that IP is the load balancer's
    to answer, so traffic from inside the cluster goes out to it rather than
    being short-circuited to the endpoints (as kube-proxy does)."""
    body = service("lbc", type_="LoadBalancer", loadBalancerClass="example.com/other")
    core = lab.cluster.core
    with services(lab, body):
        with pytest.raises(TimeoutError):
            lb_ip(lab, "lbc", timeout=2)                 # nobody of ours writes one
        core.patch_namespaced_service_status("lbc", "default", {"status": {"loadBalancer": {
            "ingress": [{"ip": "198.51.100.60"}]}}})     # the other controller does
        converge(lab)
        assert L.wait_for(lambda: who(lab, "inet", "http://198.51.100.60/", 12), 20,
                          what="the other controller's IP proxied")
        assert L.wait_for(lambda: lab.curl("pod1", "http://198.51.100.60/") in EVERYONE, 10,
                          what="the LB IP short-circuited from a pod")
        core.patch_namespaced_service_status("lbc", "default", {"status": {"loadBalancer": {
            "ingress": [{"ip": "198.51.100.60", "ipMode": "Proxy"}]}}})
        L.wait_for(lambda: not any("198.51.100.60" in f for f in lab.dump_flows("br-node1")),
                   20, what="no flows for a Proxy-mode IP")
        # from a pod it now leaves the cluster for the load balancer (which the
        # lab does not have): no answer, where it was short-circuited before
        assert lab.curl("pod1", "http://198.51.100.60/", timeout=1) == ""
        assert L.wait_for(lambda: lab.curl("pod1", f"http://{L.DEMO_VIP}/"), 10,
                          what="the demo service, untouched")


def test_load_balancer_local_sends_only_to_nodes_with_endpoints_and_keeps_the_source(lab):
    with node2_only(lab) as selector:
        body = service("lbl", type_="LoadBalancer", selector=selector,
                       externalTrafficPolicy="Local")
        with services(lab, body):
            ip = lb_ip(lab, "lbl")
            converge(lab)
            (group,) = lab.dump_groups("br-gw")
            assert group.count("bucket=") == 1, "no second hop: only node2"
            assert L.wait_for(lambda: who(lab, "inet", f"http://{ip}/") ==
                              {"pod3", "pod4"}, 20, what="node2's pods")
            assert lab.curl("inet", f"http://{ip}/ip") == L.INET_IP


def test_pool_choice_load_balancer_ip_and_release(lab):
    blue = service("lb-blue", type_="LoadBalancer",
                   annotations={"nsx-proxy.io/fip-pool": "blue"})
    asked = service("lb-asked", type_="LoadBalancer", loadBalancerIP="198.51.100.50")
    with services(lab, blue, asked):
        assert int(lb_ip(lab, "lb-blue").rsplit(".", 1)[1]) >= 128
        assert lb_ip(lab, "lb-asked") == "198.51.100.50"
        converge(lab)
        assert lab.curl("inet", "http://198.51.100.50/") in EVERYONE
        # LoadBalancer -> NodePort: the IP is released and its flows go
        lab.cluster.apply_service(dict(asked, spec=dict(asked["spec"], type="NodePort")))
        L.wait_for(lambda: not lab.cluster.core.read_namespaced_service(
            "lb-asked", "default").status.load_balancer.ingress, 10, what="IP released")
        converge(lab)
        assert not any("198.51.100.50" in f for f in lab.dump_flows("br-gw"))
        assert not any("198.51.100.50" in f for n in lab.nodes
                       for f in lab.dump_flows(n.bridge))
        port = lab.cluster.core.read_namespaced_service(
            "lb-asked", "default").spec.ports[0].node_port
        assert lab.curl("inet", f"http://{NODE1}:{port}/") in EVERYONE
        # NodePort -> ClusterIP: the nodePort is released and stops answering
        plain = dict(asked, spec=dict(asked["spec"], type="ClusterIP"))
        plain["spec"].pop("loadBalancerIP")
        lab.cluster.apply_service(plain)
        converge(lab)
        assert lab.curl("inet", f"http://{NODE1}:{port}/", timeout=1) == ""
        assert not any(f":{port}" in f or f"tp_dst={port}" in f for n in lab.nodes
                       for f in lab.dump_flows(n.bridge))
        # ... and back to LoadBalancer: a pool address again
        lab.cluster.apply_service(dict(plain, spec=dict(plain["spec"],
                                                        type="LoadBalancer")))
        again = lb_ip(lab, "lb-asked")
        converge(lab)
        assert lab.curl("inet", f"http://{again}/") in EVERYONE


def test_load_balancer_source_ranges_are_enforced(lab):
    body = service("lbsr", type_="LoadBalancer", loadBalancerSourceRanges=["203.0.113.0/28"])
    with services(lab, body):
        ip = lb_ip(lab, "lbsr")
        converge(lab)
        assert lab.curl("inet", f"http://{ip}/") in EVERYONE
        lab.cluster.apply_service(dict(body, spec=dict(
            body["spec"], loadBalancerSourceRanges=["10.0.0.0/8"])))
        converge(lab)
        L.wait_for(lambda: lab.curl("inet", f"http://{ip}/", timeout=1) == "", 10,
                   what="the Internet host to be dropped")


def test_external_ip_reaching_a_node_without_local_backend_is_served(lab):
    """Seed 004: the gateway may send the external IP to node1, whose pods
    are not behind the service; node1 serves it with masquerade."""
    with node2_only(lab) as selector:
        body = service("ext", selector=selector, externalIPs=["198.51.100.200"])
        with services(lab, body):
            (group,) = lab.dump_groups("br-gw")
            assert group.count("bucket=") == 2
            got = who(lab, "inet", "http://198.51.100.200/", 16)
            assert got == {"pod3", "pod4"}
            assert lab.curl("inet", "http://198.51.100.200/ip") in (NODE1, NODE2)


def test_pod_floating_ip_in_both_directions_and_node_snat_without_one(lab):
    core = lab.cluster.core
    try:
        core.patch_namespaced_pod("pod2", "default", {"metadata": {"annotations": {
            "nsx-proxy.io/floating-ip": "198.51.100.77"}}})
        L.wait_for(lambda: lab.curl("inet", "http://198.51.100.77:8080/", 1) == "pod2",
                   20, what="the floating IP to reach pod2")
        assert lab.curl("inet", "http://198.51.100.77:8080/ip") == L.INET_IP
        assert lab.curl("pod2", f"http://{L.INET_IP}:8080/ip") == "198.51.100.77"
        assert lab.curl("pod1", f"http://{L.INET_IP}:8080/ip") == NODE1
        assert lab.curl("pod3", f"http://{L.INET_IP}:8080/ip") == NODE2
        assert lab.curl("pod3", "http://198.51.100.77:8080/") == "pod2"   # from inside
    finally:
        core.patch_namespaced_pod("pod2", "default", {"metadata": {"annotations": {
            "nsx-proxy.io/floating-ip": None}}})
        converge(lab)
    L.wait_for(lambda: lab.curl("inet", "http://198.51.100.77:8080/", 1) == "", 20,
               what="the floating IP to go")


def test_endpoints_kube_proxy_ignores_are_ignored_on_every_path(lab):
    """A pod that cannot serve is no endpoint, on the cluster IP, the
    nodePort, the load-balancer IP and the external IP alike: not ready;
    terminating and not serving (no KEP-1669 fallback for it).  Terminating
    but serving again, it is the fallback on every path (kube-proxy's
    CategorizeEndpoints)."""
    kubelet, core = lab.cluster.kubelet, lab.cluster.core
    body = service("gone", type_="LoadBalancer", selector={"app": "web", "last": "one"},
                   externalIPs=["198.51.100.210"],
                   ports=[{"name": "http", "port": 80, "targetPort": "http",
                           "nodePort": 30090}])
    body["spec"]["clusterIP"] = "10.96.1.30"

    def paths(lb):
        """(client, URL) of every frontend: cluster IP, nodePort, LB IP, external IP."""
        return [("pod1", "http://10.96.1.30/"), ("inet", f"http://{NODE1}:30090/"),
                ("inet", f"http://{lb}/"), ("inet", "http://198.51.100.210/")]

    def endpoint():
        svc = lab.cluster.desired_state().services.get(model.ServiceKey("default", "gone"))
        return svc.ports[0].endpoints[0] if svc and svc.ports[0].endpoints else None
    try:
        kubelet.relabel("pod2", {"app": "web", "last": "one"})
        with services(lab, body):
            ip = lb_ip(lab, "gone")
            converge(lab)
            for client, url in paths(ip):
                assert L.wait_for(lambda: lab.curl(client, url) == "pod2", 10, what=url)
            lab.stop_pod_server("pod2")                         # not ready
            L.wait_for(lambda: endpoint() and not endpoint().ready, 10, what="not ready")
            converge(lab)
            for client, url in paths(ip):
                assert lab.curl(client, url, timeout=1) == "", url
            core.delete_namespaced_pod("pod2", "default", grace_period_seconds=60)
            L.wait_for(lambda: endpoint() and endpoint().terminating, 10,
                       what="terminating, not serving")
            assert not endpoint().serving
            converge(lab)
            for client, url in paths(ip):
                assert lab.curl(client, url, timeout=1) == "", url
            lab.start_pod_server("pod2")                        # serving again
            L.wait_for(lambda: endpoint() and endpoint().serving, 10, what="serving")
            converge(lab)
            for client, url in paths(ip):
                assert L.wait_for(lambda: lab.curl(client, url) == "pod2", 10, what=url)
    finally:
        lab.start_pod_server("pod2")
        # finish the deletion now: left to its 60 s grace, it would take pod2
        # away in the middle of a later test
        try:
            core.delete_namespaced_pod("pod2", "default", grace_period_seconds=0)
        except ApiException as exc:      # gone already: fine
            if exc.status != 404:
                raise
        kubelet.schedule("pod2", {"app": "web"})
        converge(lab)
