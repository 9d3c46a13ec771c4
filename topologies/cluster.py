"""The lab's control plane: an API server (embedded, or a real one) plus its kubelet.

Without ``--kubeconfig`` the lab starts the embedded API server
(topologies/apiserver) and writes a kubeconfig for it into the run
directory, so ``kubectl`` and the controller use it like any cluster.  With
``--kubeconfig`` it uses that cluster, whose own controller-manager makes
the EndpointSlices.

Services and pod labels come from the built-in demo or from YAML manifests
(``kind: Service`` documents are created or replaced; ``kind: Pod``
documents only give labels to the lab's pod hosts of the same name).
"""
import logging

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from nsx_proxy import translate, validate
from nsx_proxy.kube_source import api_client
from topologies.apiserver import ApiServer
from topologies.kubelet import Kubelet

LOG = logging.getLogger("lab.cluster")
NAMESPACE = "default"


def demo_service(vip, tcp_port, udp_port, name="web", selector=None, vip6=None):
    """ClusterIP ``web``: TCP 80 -> the pods' named port http, UDP 53 -> dns;
    with ``vip6``, dual-stack (RequireDualStack, IPv4 primary)."""
    spec = {"clusterIP": vip, "selector": selector or {"app": "web"},
            "ports": [{"name": "http", "protocol": "TCP", "port": 80,
                       "targetPort": "http"},
                      {"name": "dns", "protocol": "UDP", "port": 53,
                       "targetPort": "dns"}]}
    if vip6:
        spec.update(clusterIPs=[vip, vip6], ipFamilyPolicy="RequireDualStack",
                    ipFamilies=["IPv4", "IPv6"])
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def load_manifests(paths):
    """(services, {pod name: labels}) from YAML files; other kinds are an error."""
    services, labels = [], {}
    for path in paths or ():
        with open(path) as fh:
            for doc in yaml.safe_load_all(fh):
                if not doc:
                    continue
                kind = doc.get("kind")
                if kind == "Service":
                    services.append(doc)
                elif kind == "Pod":
                    labels[doc["metadata"]["name"]] = (doc["metadata"].get("labels") or {})
                else:
                    raise ValueError(f"{path}: kind {kind!r} is not supported by the lab "
                                     "(Service and Pod are)")
    return services, labels


class Cluster:
    def __init__(self, run_dir, kubeconfig=None, tcp_port=8080, udp_port=5353,
                 api_host="127.0.0.1"):
        self.run_dir = run_dir
        self.server = None
        if kubeconfig is None:
            self.server = ApiServer(host=api_host, bookmark_interval=5.0).start()
            kubeconfig = self.server.kubeconfig(f"{run_dir}/kubeconfig")
        self.kubeconfig = kubeconfig
        self.api = api_client(kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.discovery = client.DiscoveryV1Api(self.api)
        self.kubelet = Kubelet(self.api, NAMESPACE, tcp_port, udp_port)

    def stop(self):
        self.kubelet.stop()
        if self.server is not None:
            self.server.stop()
            self.server = None

    # --- services ---------------------------------------------------------------------
    def apply_service(self, body):
        """Create, or replace the spec of, a Service (kubectl apply, roughly)."""
        ns = body["metadata"].get("namespace", NAMESPACE)
        name = body["metadata"]["name"]
        try:
            return self.core.create_namespaced_service(ns, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        current = self.core.read_namespaced_service(name, ns)
        body = dict(body, metadata=dict(body["metadata"],
                                        resourceVersion=current.metadata.resource_version))
        return self.core.replace_namespaced_service(name, ns, body)

    def delete_service(self, name, ns=NAMESPACE):
        try:
            self.core.delete_namespaced_service(name, ns)
        except ApiException as exc:
            if exc.status != 404:
                raise

    # --- what the proxy should implement ---------------------------------------------
    def raw(self):
        """Raw JSON lists of services, endpointslices and nodes, as the proxy sees them."""
        import json
        out = []
        for fn in (self.core.list_service_for_all_namespaces,
                   self.discovery.list_endpoint_slice_for_all_namespaces,
                   self.core.list_node):
            out.append(json.loads(fn(_preload_content=False).data)["items"])
        return out

    def desired_state(self):
        services, slices, nodes = self.raw()
        return translate.cluster_state(services, slices, nodes,
                                       validate.RejectLog(logging.getLogger("lab.check")))

    def endpoints_table(self):
        """[(service, VIP, port/proto, [(endpoint, node, ready/serving/terminating)])]:
        a row per cluster IP (a dual-stack service has one of each family,
        with that family's endpoints)."""
        rows = []
        for svc in sorted(self.desired_state().services.values(), key=lambda s: s.key):
            for ip, port in ((ip, p) for ip in svc.cluster_ips for p in svc.ports):
                v6 = ":" in ip
                rows.append((str(svc.key), f"[{ip}]" if v6 else ip,
                             f"{port.port}/{port.protocol}",
                             [(f"[{e.ip}]:{e.port}" if v6 else f"{e.ip}:{e.port}", e.node or "-",
                               "ready" if e.ready else
                               "terminating" if e.terminating and e.serving else
                               "terminating, not serving" if e.terminating else "not ready")
                              for e in port.endpoints if (":" in e.ip) == v6]))
        return rows
