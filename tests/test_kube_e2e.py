"""End to end against the embedded API server: kubectl and pod changes move real TCP.

The shared lab (conftest.py): two nodes with two pods each, all labelled
app=web, and the demo service web.  Every test leaves the lab as it found it.
"""
import contextlib
import signal
import time

import pytest

import yaml

from kube_helpers import kubectl as run_kubectl, service
from lab_helpers import HeldConnection, answers, converge, normal
from topologies import lab as L

pytestmark = pytest.mark.mininet


def kubectl(lab, *args, **kw):
    return run_kubectl(lab.cluster.kubeconfig, *args, **kw)


def service_yaml(name, vip, port, selector):
    return yaml.safe_dump(service(name, selector, vip=vip, ports=[
        {"name": "http", "port": port, "targetPort": "http"}]))


def who_answers(lab, vip, port, clients=("pod1", "pod3"), n=16):
    return {a for c in clients for a in answers(lab, c, n, vip, port)}


def flows_mentioning(lab, text):
    return [f for n in lab.nodes for f in lab.dump_flows(n.bridge) if text in f]


def test_service_created_with_kubectl_is_reachable_within_seconds(lab, tmp_path):
    manifest = tmp_path / "api.yaml"
    manifest.write_text(service_yaml("api", "10.96.0.20", 8081, {"app": "web"}))
    started = time.monotonic()
    kubectl(lab, "create", "-f", str(manifest))
    try:
        L.wait_for(lambda: lab.curl("pod1", "http://10.96.0.20:8081/", timeout=1), 5,
                   interval=0, what="the new VIP to answer")
        elapsed = time.monotonic() - started
        assert elapsed < 5
        everyone = {p.name for p in lab.pods}
        seen = set()
        L.wait_for(lambda: seen.update(answers(lab, "pod3", 8, "10.96.0.20", 8081))
                   or everyone <= seen, 20, interval=0, what="every pod answering")
    finally:
        kubectl(lab, "delete", "svc", "api", "--wait=false")
    converge(lab)


def test_pod_churn_moves_only_new_connections(lab, tmp_path):
    """Relabel in, add, flip readiness, relabel out, delete: who answers follows;
    an established connection stays with its pod until it closes."""
    kubelet = lab.cluster.kubelet
    vip, port = "10.96.0.21", 8082
    manifest = tmp_path / "tier.yaml"
    manifest.write_text(service_yaml("tier", vip, port, {"tier": "a"}))
    kubectl(lab, "create", "-f", str(manifest))
    held = None
    try:
        for pod in ("pod1", "pod3"):
            kubelet.relabel(pod, {"app": "web", "tier": "a"})
        converge(lab)
        L.wait_for(lambda: who_answers(lab, vip, port) == {"pod1", "pod3"}, 20,
                   what="pod1 and pod3 behind tier")
        held = HeldConnection(lab, "pod2", vip, port)
        owner = held.ping().split()[0]
        other = ({"pod1", "pod3"} - {owner}).pop()
        # A pod joins.
        kubelet.relabel("pod4", {"app": "web", "tier": "a"})
        converge(lab)
        L.wait_for(lambda: "pod4" in who_answers(lab, vip, port), 20, what="pod4 joining")
        # Readiness flips off (its server stops), then on again.
        lab.stop_pod_server("pod4")
        L.wait_for(lambda: "pod4" not in who_answers(lab, vip, port, n=8)
                   and lab.programmed(), 20, what="pod4 leaving when not ready")
        lab.start_pod_server("pod4")
        converge(lab)
        L.wait_for(lambda: "pod4" in who_answers(lab, vip, port), 20, what="pod4 back")
        # The held connection's pod is relabelled out: new connections avoid
        # it, the established one keeps going.
        kubelet.relabel(owner, {"app": "web"})
        converge(lab)
        L.wait_for(lambda: owner not in who_answers(lab, vip, port), 20,
                   what=f"{owner} out of tier")
        assert held.ping("still") == f"{owner} still"
        # A pod is deleted (gracefully) and its host freed.
        kubelet.unschedule(other)
        L.wait_for(lambda: other not in kubelet.scheduled, 20, what=f"{other} deleted")
        converge(lab)
        assert who_answers(lab, vip, port) == {"pod4"}
        assert held.ping("end") == f"{owner} end"
    finally:
        if held:
            held.close()
        kubectl(lab, "delete", "svc", "tier", "--wait=false")
        for pod in lab.pods:
            if pod.name in kubelet.scheduled:
                kubelet.relabel(pod.name, {"app": "web"})
            else:
                kubelet.schedule(pod.name, {"app": "web"})
        if not _running(lab, "pod4"):
            lab.start_pod_server("pod4")
        converge(lab)


def _running(lab, pod):
    return bool(lab.net.get(pod).cmd(f"ss -ltn | grep ':{L.TCP_TARGET} '").strip())


def test_deleting_the_service_stops_the_vip_and_removes_its_flows_and_groups(lab, tmp_path):
    vip = "10.96.0.22"
    before = {n.bridge: len(lab.dump_groups(n.bridge)) for n in lab.nodes}
    manifest = tmp_path / "gone.yaml"
    manifest.write_text(service_yaml("gone", vip, 8083, {"app": "web"}))
    kubectl(lab, "create", "-f", str(manifest))
    L.wait_for(lambda: lab.curl("pod1", f"http://{vip}:8083/", timeout=1), 10,
               what="the VIP to answer")
    assert flows_mentioning(lab, vip)
    kubectl(lab, "delete", "svc", "gone")
    L.wait_for(lambda: not flows_mentioning(lab, vip), 10, what="the VIP's flows to go")
    assert {n.bridge: len(lab.dump_groups(n.bridge)) for n in lab.nodes} == before
    assert lab.curl("pod1", f"http://{vip}:8083/", timeout=1) == ""


def test_api_server_restart_converges_and_a_forced_410_relists(lab):
    server = lab.cluster.server
    api = server.api
    from topologies.apiserver.kinds import RESOURCES
    from topologies.cluster import demo_service
    server.stop()
    # Changes the controller cannot see while the server is down.
    api.create(RESOURCES["services"], "default",
               demo_service("10.96.0.23", 8080, 5353, name="while-down"))
    server.start()
    try:
        L.wait_for(lambda: lab.curl("pod1", "http://10.96.0.23/", timeout=1), 20,
                   what="the service created while the API server was down")
        converge(lab)
        relists = _log_count(lab, "relisting")
        server.stop()
        api.delete(RESOURCES["services"], "default", "while-down")
        api.store.compact()                  # resuming now gets 410 Gone
        server.start()
        L.wait_for(lambda: _log_count(lab, "relisting") > relists, 20,
                   what="the controller to relist after 410")
        L.wait_for(lambda: not flows_mentioning(lab, "10.96.0.23"), 20,
                   what="the deleted service's flows to go after the relist")
        converge(lab)
        assert lab.curl("pod1", f"http://{L.DEMO_VIP}/")
    finally:
        if server.stopping:
            server.start()


def _log_count(lab, word):
    with open(lab.controller_log) as fh:
        return fh.read().count(word)


def test_controller_restarted_while_services_change_ends_with_exactly_the_desired_flows(
        lab, tmp_path):
    from topologies.cluster import demo_service
    lab.stop_controller(signal.SIGKILL)
    try:
        for i in range(5):
            lab.cluster.apply_service(demo_service(f"10.96.0.{30 + i}", 8080, 5353,
                                                   name=f"churn{i}"))
        lab.cluster.delete_service("churn0")
        lab.cluster.kubelet.relabel("pod2", {"app": "elsewhere"})
    finally:
        lab.start_controller()
    try:
        converge(lab, "the restarted controller to converge")
        assert not flows_mentioning(lab, "10.96.0.30")
        assert lab.curl("pod1", "http://10.96.0.34/")
        first = {n.bridge: normal(lab.dump_flows(n.bridge)) for n in lab.nodes}
        for bridge in first:
            rounds = {line.split(",")[0][:len("cookie=0x") + 2]
                      for line in lab.dump_flows(bridge)}
            assert len(rounds) == 1, rounds
        # A second restart with nothing changed installs the desired state
        # from scratch: if the first left anything stale, the dumps differ.
        lab.restart_controller()
        gens = {n.bridge: lab.dump_flows(n.bridge)[0].split(",")[0] for n in lab.nodes}
        L.wait_for(lambda: all(lab.dump_flows(b)[0].split(",")[0] != g
                               and len({x.split(",")[0][:11] for x in lab.dump_flows(b)}) == 1
                               for b, g in gens.items()), 30, what="a fresh round")
        assert {n.bridge: normal(lab.dump_flows(n.bridge)) for n in lab.nodes} == first
    finally:
        for i in range(5):
            lab.cluster.delete_service(f"churn{i}")
        lab.cluster.kubelet.relabel("pod2", {"app": "web"})
        converge(lab)


def test_lab_cli_scale_and_services(lab, capsys):
    from types import SimpleNamespace

    from topologies.labcli import LabCLI
    cli = SimpleNamespace(lab=lab)
    try:
        LabCLI.do_scale(cli, "web 2")
        assert "app=web: 2 pods" in capsys.readouterr().out
        L.wait_for(lambda: len(lab.cluster.kubelet.scheduled) == 2, 20,
                   what="two pods left after their grace period")
        converge(lab)
        assert who_answers(lab, L.DEMO_VIP, 80) == {"pod1", "pod2"}
        LabCLI.do_services(cli, "")
        table = capsys.readouterr().out
        assert "default/web  10.96.0.10:80/TCP" in table
        assert "10.1.1.2:8080" in table and "10.1.2.2" not in table
    finally:
        LabCLI.do_scale(cli, "web 4")
        converge(lab)
    assert who_answers(lab, L.DEMO_VIP, 80) == {p.name for p in lab.pods}


def test_a_broken_object_costs_only_itself(lab):
    """The lab's API server takes JSON a real one would refuse in the fields
    it does not check (as a buggy webhook or an aggregated server might hand
    it over).  A Service with junk at several depths (null and a string in
    status.loadBalancer.ingress, externalIPs and sessionAffinityConfig that
    are strings) is created in the same sync as a good one: the good one
    answers, the junk one is named in the log, and no sync fails."""
    from topologies.apiserver.kinds import RESOURCES
    api, svc_res = lab.cluster.server.api, RESOURCES["services"]
    junk = service("junk", {"app": "web"}, vip="10.96.0.40",
                   ports=[{"name": "http", "port": 8090, "targetPort": "http"}],
                   externalIPs="198.51.100.40", sessionAffinity="ClientIP",
                   sessionAffinityConfig="sticky")
    log_before, failed_before = _log_count(lab, "default/junk"), _log_count(lab, "run failed")
    api.create(svc_res, "default", junk)
    api.update(svc_res, "default", "junk",
               {"status": {"loadBalancer": {"ingress": ["198.51.100.41", None]}}}, "status")
    api.create(svc_res, "default", service("beside-junk", {"app": "web"}, vip="10.96.0.41",
                                           ports=[{"name": "http", "port": 8091,
                                                   "targetPort": "http"}]))
    with _deleted_after(lab, "junk", "beside-junk"):
        L.wait_for(lambda: lab.curl("pod1", "http://10.96.0.41:8091/", timeout=1), 10,
                   interval=0, what="the Service created beside the junk one")
        L.wait_for(lambda: _log_count(lab, "default/junk") > log_before, 5,
                   what="one log line naming the junk Service")
        assert _log_count(lab, "run failed") == failed_before


@contextlib.contextmanager
def _deleted_after(lab, *names):
    """Services created straight in the lab's API server, deleted afterwards."""
    from topologies.apiserver.kinds import RESOURCES
    try:
        yield
    finally:
        for name in names:
            lab.cluster.server.api.delete(RESOURCES["services"], "default", name)
        converge(lab)


def test_an_external_ip_cannot_take_another_services_cluster_ip(lab):
    """A valid object on any API server: Service "a-hijack" (first by name)
    lists Service "victim"'s cluster IP as an externalIP, on the same port,
    and has no endpoints.  The victim keeps answering on its cluster IP, the
    hijacker is named once in the log, and the drift audit never meets two
    objects claiming one flow."""
    from topologies.apiserver.kinds import RESOURCES
    api, svc_res = lab.cluster.server.api, RESOURCES["services"]
    vip, port = "10.96.0.42", 8092
    claims_before = _log_count(lab, "two objects claim")
    api.create(svc_res, "default", service("victim", {"app": "web"}, vip=vip, ports=[
        {"name": "http", "port": port, "targetPort": "http"}]))
    api.create(svc_res, "default", service("a-hijack", {"app": "nobody"}, vip="10.96.0.43",
                                           ports=[{"name": "http", "port": port,
                                                   "targetPort": "http"}],
                                           externalIPs=[vip]))
    with _deleted_after(lab, "a-hijack", "victim"):
        converge(lab)
        everyone = {p.name for p in lab.pods}
        assert who_answers(lab, vip, port) <= everyone
        L.wait_for(lambda: everyone <= who_answers(lab, vip, port), 10,
                   what="every victim endpoint answering on its cluster IP")
        assert _log_count(lab, "IP 10.96.0.42 is the clusterIP of default/victim") >= 1
        time.sleep(lab.audit_period * 1.5 if lab.audit_period else 0)   # an audit runs
        assert _log_count(lab, "two objects claim") == claims_before


def test_kube_proxys_network_programming_sli_is_exported(lab):
    """kubeproxy_network_programming_duration_seconds, with kube-proxy's name
    and buckets: from the EndpointSlice's last-change-trigger-time (the lab's
    EndpointSlice controller stamps it as the real one does) to the change
    programmed.  A pod turning unready is one observation, of well under a
    second here; the sync histogram and last-sync gauge move with it."""
    from lab_helpers import metric, set_ready
    name = "kubeproxy_network_programming_duration_seconds"
    count, total = metric(name + "_count"), metric(name + "_sum")
    syncs = metric("kubeproxy_sync_proxy_rules_duration_seconds_count")
    everyone = {p.name for p in lab.pods}
    try:
        set_ready(lab, everyone - {"pod4"})
        L.wait_for(lambda: metric(name + "_count") > count, 10, what="an observation")
        added = metric(name + "_count") - count
        mean = (metric(name + "_sum") - total) / added
        assert 0 < mean < 2.0, mean
        assert metric(name + '_bucket{le="0.25"}') >= 1           # kube-proxy's buckets
        assert metric("kubeproxy_sync_proxy_rules_duration_seconds_count") > syncs
        assert time.time() - metric("kubeproxy_sync_proxy_rules_last_timestamp_seconds") < 30
    finally:
        set_ready(lab, everyone)
