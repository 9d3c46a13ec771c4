"""deploy/: least privilege, checked against what the agents really do, and
manifests that hang together."""
import configparser
import os
import time

import yaml

from kube_helpers import add_node, add_pod, service
from nsx_proxy import lb_ipam, model
from kube_helpers import Recorder
from nsx_proxy.kube_source import KubeSource, api_client
from nsx_proxy.runner import thread_hub
from topologies.apiserver.kinds import RESOURCES
from topologies.waiting import wait_for

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy")


def documents(name):
    with open(os.path.join(DEPLOY, name)) as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


def _rules(kind):
    return [(d["metadata"].get("namespace"), rule) for d in documents("rbac.yaml")
            if d["kind"] == kind for rule in d["rules"]]


def granted():
    """(group, resource, verb, namespace): None for the ClusterRole's
    cluster-wide rules, the Role's namespace for its rules."""
    return {(group, resource, verb, ns if kind == "Role" else None)
            for kind in ("ClusterRole", "Role") for ns, rule in _rules(kind)
            for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"]}


def used(server):
    """What the agents asked for; a namespaced request is covered by the
    ClusterRole if it grants the verb cluster-wide, else it must be the Role's."""
    cluster = {g[:3] for g in granted() if g[3] is None}
    out = set()
    for verb, group, resource, sub, ns in server.audit:
        what = (group, resource + (f"/{sub}" if sub else ""), verb)
        out.add(what + (None if what in cluster else ns,))
    return out


def run_agent(server, **kw):
    rec = Recorder()
    src = KubeSource(api_client(server.kubeconfig_path), rec, thread_hub(),
                     min_interval=0.05, **kw)
    src.start()
    return src, rec


def test_the_roles_grant_exactly_what_the_agents_use(server):
    """A node agent, and two agents that elect the one writing LB IPs (the
    Lease lives in the deployment's namespace, nsx-proxy)."""
    add_node(server.api, "node1", "192.168.100.1", "10.1.1.0/24")
    add_pod(server.api, "a", "10.1.1.2")
    server.api.create(RESOURCES["namespaces"], None, {"metadata": {"name": "nsx-proxy"}})
    server.api.create(RESOURCES["services"], "default",
                      service("lb", {"app": "web"}, type_="LoadBalancer"))
    server.audit.clear()                 # from here on: only the agents' requests
    election = dict(namespace="nsx-proxy", name="nsx-proxy-lb-writer",
                    lease_duration=3, renew_deadline=2, retry_period=1)
    agents = []
    for name in ("gw", "node1"):
        ipam = lb_ipam.Ipam(lb_ipam.parse_pools("default=198.51.100.0/30"), "default")
        agents.append(run_agent(server, ipam=ipam, election=dict(election, identity=name)))
    node, rec2 = run_agent(server, node_name="node1")   # pods of its node only
    try:
        key = model.ServiceKey("default", "lb")
        wait_for(lambda: any(rec.last and key in rec.last.services
                             and rec.last.services[key].load_balancer_ips
                             for _, rec in agents), 10, what="an LB IP")
        wait_for(lambda: rec2.last is not None, 10, what="the node agent synced")
        time.sleep(1.5)                  # the follower reads, the leader renews
    finally:
        for src, _ in agents:
            src.stop()
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
    from controller.config import CONF
    known = set(CONF.nsx_proxy.keys())
    for name in ("nsx-proxy.conf", "gateway.conf"):
        conf = configparser.ConfigParser()
        conf.read_string(configmap["data"][name])
        assert conf.has_section("nsx_proxy")
        assert set(conf["nsx_proxy"]) <= known, set(conf["nsx_proxy"]) - known
        # only the gateway agents have the pools, so only they campaign for
        # the writer Lease (node agents would add its traffic per node)
        assert ("fip_pools" in conf["nsx_proxy"]) == (name == "gateway.conf"), name
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
    # The node agents' init container installs the CNI plugin with options
    # the installer takes, into the host folders the volumes mount.
    from nsx_cni import install
    (ds,) = documents("daemonset.yaml")
    pod = ds["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"][:3] == ["python3", "-m", "nsx_cni.install"]
    args = install.parser().parse_args(init["command"][3:])
    mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert paths[mounts[args.bin_dir]] == "/opt/cni/bin"
    assert paths[mounts[args.conf_dir]] == "/etc/cni/net.d"
    assert init["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_the_agent_environment_keeps_dns_and_setuptools_out_and_the_image_sets_it():
    """AGENT_ENV (which the lab, the benchmarks and the image all use) keeps
    dnspython and setuptools/pkg_resources out of an agent: 17 MB each."""
    import subprocess
    import sys
    from topologies.controller_proc import AGENT_ENV, REPO
    probe = ("import sys, controller.app; "
             "print(sorted(m for m in ('dns', 'pkg_resources') if m in sys.modules))")

    def loaded(env):
        return subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, check=True,
                              capture_output=True, text=True).stdout.strip()
    plain = {k: v for k, v in os.environ.items() if k not in AGENT_ENV}
    assert loaded(plain) == "['dns', 'pkg_resources']"       # what it saves
    assert loaded(dict(plain, **AGENT_ENV)) == "[]"
    with open(os.path.join(REPO, "Dockerfile")) as fh:
        env_lines = [line for line in fh if line.startswith("ENV ")]
    for key, value in AGENT_ENV.items():
        assert any(f"{key}={value}" in line for line in env_lines), key


def test_an_agent_with_a_kubeconfig_loads_neither_pyopenssl_nor_cryptography():
    """The venv (scripts/install-venv.sh, as the image's) sees none of
    Debian's Python packages but Mininet's, and google-auth is pinned below
    the releases that require cryptography: an agent that loads a kubeconfig
    (the lab's, a central controller) imports neither (5-8 MB each)."""
    import subprocess
    import sys
    from topologies.controller_proc import AGENT_ENV, REPO
    probe = ("import sys, controller.app, kubernetes.config.kube_config; "
             "print(sorted(m for m in ('OpenSSL', 'cryptography', 'google.auth') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, check=True,
                         env=dict(os.environ, **AGENT_ENV), capture_output=True, text=True)
    assert out.stdout.strip() == "['google.auth']"     # the loader's, without its extras
    import mininet.net                                 # the lab's one Debian package
    assert os.path.realpath(mininet.net.__file__).startswith("/usr/lib/python3/dist-packages/")
