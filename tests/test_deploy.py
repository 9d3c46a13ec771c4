"""deploy/: least privilege, checked against what the agents really do, and
manifests that hang together."""
import configparser
import os

import yaml

from kube_helpers import add_node, add_pod, service
from nsx_proxy import lb_ipam, model
from test_kube_source import Recorder
from nsx_proxy.kube_source import KubeSource, api_client
from nsx_proxy.runner import thread_hub
from topologies.apiserver.kinds import RESOURCES
from topologies.waiting import wait_for

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy")


def documents(name):
    with open(os.path.join(DEPLOY, name)) as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


def granted():
    (role,) = [d for d in documents("rbac.yaml") if d["kind"] == "ClusterRole"]
    return {(group, resource, verb) for rule in role["rules"]
            for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"]}


def used(server):
    return {(group, resource + (f"/{sub}" if sub else ""), verb)
            for verb, group, resource, sub, _ in server.audit}


def run_agent(server, **kw):
    rec = Recorder()
    src = KubeSource(api_client(server.kubeconfig_path), rec, thread_hub(),
                     min_interval=0.05, **kw)
    src.start()
    return src, rec


def test_the_cluster_role_grants_exactly_what_the_agents_use(server):
    add_node(server.api, "node1", "192.168.100.1", "10.1.1.0/24")
    add_pod(server.api, "a", "10.1.1.2")
    server.api.create(RESOURCES["services"], "default",
                      service("lb", {"app": "web"}, type_="LoadBalancer"))
    server.audit.clear()                 # from here on: only the agents' requests
    ipam = lb_ipam.Ipam(lb_ipam.parse_pools("default=198.51.100.0/30"), "default")
    gateway, rec = run_agent(server, ipam=ipam)        # the gateway agent writes
    node, rec2 = run_agent(server, node_name="node1")   # a node agent only reads
    try:
        key = model.ServiceKey("default", "lb")
        wait_for(lambda: rec.last and key in rec.last.services
                 and rec.last.services[key].load_balancer_ips, 10, what="an LB IP")
        wait_for(lambda: rec2.last is not None, 10, what="the node agent synced")
    finally:
        gateway.stop()
        node.stop()
    assert used(server) == granted(), (
        f"used, not granted: {sorted(used(server) - granted())}; "
        f"granted, not used: {sorted(granted() - used(server))}")


def test_the_manifests_hang_together():
    kustomization = documents("kustomization.yaml")[0]
    files = sorted(f for f in os.listdir(DEPLOY) if f.endswith(".yaml")
                   and f != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    (configmap,) = documents("configmap.yaml")
    for name in ("nsx-proxy.conf", "gateway.conf"):
        conf = configparser.ConfigParser()
        conf.read_string(configmap["data"][name])
        assert conf.has_section("nsx_proxy")
    for name in ("daemonset.yaml", "daemonset-gateway.yaml"):
        (ds,) = documents(name)
        pod = ds["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "nsx-proxy" and pod["hostNetwork"]
        (agent,) = pod["containers"]
        assert agent["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
        assert agent["readinessProbe"]["exec"]["command"][-1] == "/readyz"
        assert agent["livenessProbe"]["exec"]["command"][-1] == "/healthz"
        assert "127.0.0.1" in agent["command"]
        assert agent["resources"]["requests"]["memory"]
