"""The lab's API server speaks Kubernetes to the official Python client and kubectl."""
import json

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from kube_helpers import KUBECTLS, add_pod, kubectl, service, set_pod_status
from nsx_proxy.kube_source import api_client
from topologies.apiserver.kinds import RESOURCES

SVC, PODS, SLICES = RESOURCES["services"], RESOURCES["pods"], RESOURCES["endpointslices"]


@pytest.fixture
def core(server):
    return client.CoreV1Api(api_client(server.kubeconfig_path))


def test_python_client_crud_and_allocation(server, core):
    created = core.create_namespaced_service("default", {
        "metadata": {"name": "np"}, "spec": {"type": "NodePort", "selector": {"app": "web"},
                                             "ports": [{"port": 80}]}})
    assert created.spec.cluster_ip.startswith("10.")
    assert 30000 <= created.spec.ports[0].node_port <= 32767
    assert created.spec.ports[0].target_port == 80 and created.spec.ports[0].protocol == "TCP"
    # Merge patch through the client (it sends a strategic merge patch for a dict).
    core.patch_namespaced_service("np", "default", {"metadata": {"labels": {"tier": "x"}}})
    assert core.read_namespaced_service("np", "default").metadata.labels == {"tier": "x"}
    # ClusterIP again: nodePorts are released and can be claimed by someone else.
    port = created.spec.ports[0].node_port
    core.patch_namespaced_service("np", "default", {"spec": {"type": "ClusterIP"}})
    other = core.create_namespaced_service("default", {
        "metadata": {"name": "other"}, "spec": {"type": "NodePort", "ports": [
            {"port": 81, "nodePort": port}]}})
    assert other.spec.ports[0].node_port == port
    core.delete_namespaced_service("np", "default")
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_service("np", "default")
    assert exc.value.status == 404


@pytest.mark.parametrize("spec, message", [
    ({"ports": [{"port": 70000}]}, "spec.ports[0].port: Invalid value: 70000: must be "
                                   "between 1 and 65535, inclusive"),
    ({"ports": [{"port": 80, "protocol": "GRE"}]}, 'spec.ports[0].protocol: Unsupported '
                                                   'value: "GRE"'),
    ({"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}, "the provided IP (10.0.0.1) is not "
                                                         "in the valid range"),
    ({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]},
     "provided port is not in the valid range. The range of valid ports is 30000-32767"),
])
def test_invalid_services_get_the_real_api_errors(core, spec, message):
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_service("default", {"metadata": {"name": "bad"}, "spec": spec})
    assert exc.value.status == 422
    assert message in json.loads(exc.value.body)["message"]


def test_collisions(core):
    core.create_namespaced_service("default", {"metadata": {"name": "a"}, "spec": {
        "clusterIP": "10.96.0.50", "type": "NodePort",
        "ports": [{"port": 80, "nodePort": 30080}]}})
    for spec, message in [
            ({"clusterIP": "10.96.0.50", "ports": [{"port": 80}]}, "provided IP is already "
                                                                   "allocated"),
            ({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]},
             "Invalid value: 30080: provided port is already allocated")]:
        with pytest.raises(ApiException) as exc:
            core.create_namespaced_service("default", {"metadata": {"name": "b"},
                                                       "spec": spec})
        assert exc.value.status == 422 and message in json.loads(exc.value.body)["message"]
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_service("default", {"metadata": {"name": "a"}, "spec": {
            "ports": [{"port": 80}]}})
    assert exc.value.status == 409


def test_endpointslice_controller(server):
    api = server.api
    api.create(SVC, "default", service("web", {"app": "web"},
                                       ports=(("http", "TCP", 80, "http"),)))
    add_pod(api, "a", "10.1.1.2", ports=(("http", 8080),))
    add_pod(api, "b", "10.1.1.3", ports=(("http", 9090),), ready=False)
    add_pod(api, "c", "10.1.1.4", ports=(), labels={"app": "web"})     # no such port name
    add_pod(api, "d", "10.1.1.5", labels={"app": "db"}, ports=(("http", 8080),))

    def endpoints():
        items, _ = api.store.list("endpointslices", "default")
        return sorted((e["addresses"][0], s["ports"][0]["port"] if s["ports"] else None,
                       e["conditions"]["ready"], e["conditions"]["serving"],
                       e["conditions"]["terminating"])
                      for s in items for e in s["endpoints"])
    assert endpoints() == [("10.1.1.2", 8080, True, True, False),
                           ("10.1.1.3", 9090, False, False, False),
                           ("10.1.1.4", None, True, True, False)]
    set_pod_status(api, "b", "10.1.1.3", ready=True)
    api.delete(PODS, "default", "a")                    # graceful: terminating first
    assert endpoints()[0] == ("10.1.1.2", 8080, False, True, True)
    api.delete(PODS, "default", "a", grace=0)
    api.patch(PODS, "default", "c", "application/merge-patch+json",
              b'{"metadata": {"labels": {"app": "other"}}}')
    assert endpoints() == [("10.1.1.3", 9090, True, True, False)]
    api.delete(SVC, "default", "web")
    assert endpoints() == []


def test_watch_resume_bookmarks_and_410(server, core):
    _, rv = server.api.store.list("services")
    server.api.create(SVC, "default", service("one"))
    stream = watch.Watch().stream(core.list_service_for_all_namespaces, resource_version=rv,
                                  allow_watch_bookmarks=True, timeout_seconds=2)
    kinds = [(e["type"], e["raw_object"]["metadata"].get("name")) for e in stream]
    assert kinds[0] == ("ADDED", "one") and ("BOOKMARK", None) in kinds
    server.api.store.compact()
    with pytest.raises(ApiException) as exc:
        for _ in watch.Watch().stream(core.list_service_for_all_namespaces,
                                      resource_version=rv, timeout_seconds=2):
            pass
    assert exc.value.status == 410


@pytest.mark.parametrize("which", sorted(KUBECTLS))
def test_kubectl_get_create_label_patch_delete(server, tmp_path, which):
    def k(*args, **kw):
        return kubectl(server.kubeconfig_path, *args, binary=KUBECTLS[which], **kw)

    manifest = tmp_path / "web.yaml"
    manifest.write_text("""
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
""")
    assert "service/web created" in k("create", "-f", str(manifest)).stdout
    add_pod(server.api, "a", "10.1.1.2")
    table = k("get", "svc", "web").stdout
    assert "ClusterIP" in table and "80/TCP" in table
    assert "10.1.1.2" in k("get", "endpointslices").stdout
    k("label", "pod", "a", "app=other", "--overwrite")
    assert "10.1.1.2" not in k("get", "endpointslices", "-o", "json").stdout
    k("patch", "svc", "web", "--type", "merge", "-p",
            '{"spec": {"type": "NodePort"}}')
    assert "NodePort" in k("get", "svc", "web").stdout
    bad = k("create", "service", "clusterip", "x", "--tcp=70000:80", check=False)
    assert bad.returncode != 0
    assert "web" not in k("delete", "svc", "web", "--wait=false").stderr
    assert k("get", "svc", "web", check=False).returncode != 0


def test_the_lab_kubelet_never_unschedules_a_pod_created_again(server):
    """A pod deleted and created again at once (north-south's last test does
    it): the old Pod's DELETED event, or a status write that got 404 for it,
    arrives after the new Pod exists.  It must not stop the kubelet from
    reporting the new one (it stayed NotReady for good: a flaky seed check)."""
    from topologies.kubelet import Kubelet
    from topologies.plan import PodSpec
    kubelet = Kubelet(api_client(server.kubeconfig_path), "default", 8080, 5353)
    kubelet.pods["p"] = PodSpec("p", "node1", "10.1.1.9")
    kubelet.schedule("p")
    old = kubelet.uids["p"]
    core = client.CoreV1Api(api_client(server.kubeconfig_path))
    core.delete_namespaced_pod("p", "default", grace_period_seconds=0)
    kubelet.schedule("p")
    assert kubelet.uids["p"] != old
    kubelet._unschedule_if("p", old)             # the old Pod's late DELETED
    assert "p" in kubelet.scheduled
    kubelet._unschedule_if("p", kubelet.uids["p"])
    assert "p" not in kubelet.scheduled


def test_the_lab_kubelets_grace_timer_takes_only_its_own_pod(server):
    """A graceful deletion arms a timer; if the Pod is then deleted for good
    and created again, the old timer must not take the new Pod away."""
    import time
    from topologies.kubelet import Kubelet
    from topologies.plan import PodSpec
    kubelet = Kubelet(api_client(server.kubeconfig_path), "default", 8080, 5353, grace=1)
    kubelet.pods["p"] = PodSpec("p", "node1", "10.1.1.9")
    kubelet.start([], lambda name: None)               # the deletion watch only
    try:
        kubelet.schedule("p")
        core = client.CoreV1Api(api_client(server.kubeconfig_path))
        core.delete_namespaced_pod("p", "default", grace_period_seconds=1)
        time.sleep(0.3)                                # the watch arms the timer
        core.delete_namespaced_pod("p", "default", grace_period_seconds=0)
        kubelet.schedule("p")
        new = kubelet.uids["p"]
        time.sleep(2.0)                                # past the old grace period
        assert core.read_namespaced_pod("p", "default").metadata.uid == new
    finally:
        kubelet.stop()


def test_lists_come_in_pages_as_kube_apiserver_pages_them(server, core):
    """limit and continue: every page says the first page's resourceVersion
    (a watch from it replays what changed meanwhile); resourceVersion=0 is
    served whole, as from the watch cache; a bad token is a 400."""
    names = [f"p{i}" for i in range(5)]
    for name in names:
        core.create_namespaced_service("default", {"metadata": {"name": name},
                                                   "spec": {"ports": [{"port": 80}]}})
    first = core.list_namespaced_service("default", limit=2)
    assert [s.metadata.name for s in first.items] == names[:2]
    core.create_namespaced_service("default", {"metadata": {"name": "p9"},
                                               "spec": {"ports": [{"port": 80}]}})
    pages, token = [first], first.metadata._continue
    while token:
        pages.append(core.list_namespaced_service("default", limit=2, _continue=token))
        token = pages[-1].metadata._continue
    assert [len(p.items) for p in pages] == [2, 2, 2]
    assert [s.metadata.name for p in pages for s in p.items] == names + ["p9"]
    assert {p.metadata.resource_version for p in pages} == {first.metadata.resource_version}
    whole = core.list_namespaced_service("default", limit=2, resource_version="0")
    assert len(whole.items) == 6 and whole.metadata._continue is None
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_service("default", limit=2, _continue="not-a-token")
    assert exc.value.status == 400
