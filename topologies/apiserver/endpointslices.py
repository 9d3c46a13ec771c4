"""The EndpointSlice controller: Service selector -> pods -> slices.

``desired_slices`` is pure and follows the real controller's rules:

* pods in the service's namespace whose labels match its selector and that
  have a podIP and have not finished (Succeeded/Failed);
* ``ready`` = the pod's Ready condition and not being deleted (or always
  true with publishNotReadyAddresses), ``serving`` = the Ready condition
  even while deleting, ``terminating`` = a deletionTimestamp is set;
* a named targetPort resolves against each pod's container ports, so pods
  that name the port differently land in different slices; a pod that
  lacks the name is left out of that port;
* at most 100 endpoints per slice.

The hook re-syncs the slices of every service a pod or service write can
affect, writing only slices whose content changed.
"""
import datetime
import zlib

from topologies.apiserver.selectors import selector_matches

SERVICE_NAME = "kubernetes.io/service-name"
ZONE_LABEL = "topology.kubernetes.io/zone"
TOPOLOGY_ANNOTATIONS = ("service.kubernetes.io/topology-mode",
                        "service.kubernetes.io/topology-aware-hints")
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER = "endpointslice-controller.k8s.io"
HEADLESS = "service.kubernetes.io/headless"
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
MAX_ENDPOINTS = 100


def _condition(pod, kind):
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if cond.get("type") == kind:
            return cond.get("status") == "True"
    return False


def _resolve(port, pod):
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or ():
        for cport in container.get("ports") or ():
            if cport.get("name") == target and \
                    cport.get("protocol", "TCP") == port.get("protocol", "TCP"):
                return cport.get("containerPort")
    return None


def pod_ip(pod, family="IPv4"):
    """The pod's address of ``family`` (status.podIPs; podIP alone is IPv4
    or a single-stack pod's only one), or None."""
    status = pod.get("status") or {}
    ips = [i.get("ip") for i in status.get("podIPs") or () if isinstance(i, dict)] or \
        [status.get("podIP")]
    return next((ip for ip in ips if ip and (":" in ip) == (family == "IPv6")), None)


def _endpoint(pod, publish_not_ready, ip):
    meta = pod["metadata"]
    deleting = bool(meta.get("deletionTimestamp"))
    serving = _condition(pod, "Ready")
    ep = {"addresses": [ip],
          "conditions": {"ready": publish_not_ready or (serving and not deleting),
                         "serving": publish_not_ready or serving,
                         "terminating": deleting},
          "targetRef": {"kind": "Pod", "namespace": meta["namespace"],
                        "name": meta["name"], "uid": meta.get("uid")}}
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        ep["nodeName"] = node
    return ep


def selected_pods(svc, pods):
    selector = (svc.get("spec") or {}).get("selector")
    return sorted((p for p in pods
                   if selector_matches(selector, p["metadata"].get("labels"))
                   and (p.get("status") or {}).get("podIP")
                   and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")),
                  key=lambda p: p["metadata"]["name"])


def wants_hints(svc) -> bool:
    """Topology-aware routing asked for (annotation Auto, or a trafficDistribution)."""
    meta, spec = svc["metadata"], svc.get("spec") or {}
    annotations = meta.get("annotations") or {}
    return spec.get("trafficDistribution") in ("PreferClose", "PreferSameZone",
                                               "PreferSameNode") or any(
        annotations.get(a, "").lower() == "auto" for a in TOPOLOGY_ANNOTATIONS)


def desired_slices(svc, pods, node_zones=None):
    """The slices a selector service should have, keyed by slice name: as the
    real controller, one set per family in ``spec.ipFamilies`` (a
    dual-stack Service gets IPv4 and IPv6 slices), of the pods' addresses
    of that family.

    Endpoints carry their node's zone; with topology-aware routing asked for
    and every endpoint's node in a zone, each is hinted for its own zone (the
    real controller balances hints by zone capacity; with the lab's equal
    nodes that is the same)."""
    slices = {}
    for family in (svc.get("spec") or {}).get("ipFamilies") or ["IPv4"]:
        slices.update(_family_slices(svc, pods, node_zones or {}, family))
    return slices


def _family_slices(svc, pods, node_zones, family):
    meta, spec = svc["metadata"], svc.get("spec") or {}
    groups = {}                                    # resolved ports -> endpoints
    chosen = [p for p in selected_pods(svc, pods) if pod_ip(p, family)]
    hint = wants_hints(svc) and chosen and all(
        node_zones.get((p.get("spec") or {}).get("nodeName")) for p in chosen)
    for pod in chosen:
        resolved = tuple((p.get("name", ""), p.get("protocol", "TCP"), _resolve(p, pod))
                         for p in spec.get("ports") or ())
        resolved = tuple(r for r in resolved if r[2] is not None)
        ep = _endpoint(pod, bool(spec.get("publishNotReadyAddresses")), pod_ip(pod, family))
        zone = node_zones.get(ep.get("nodeName"))
        if zone:
            ep["zone"] = zone
            if hint:
                ep["hints"] = {"forZones": [{"name": zone}]}
                if spec.get("trafficDistribution") == "PreferSameNode":
                    ep["hints"]["forNodes"] = [{"name": ep["nodeName"]}]
        groups.setdefault(resolved, []).append(ep)
    # The controller's labels: the Service's own (so a service proxy's label
    # selector filters slices as it filters Services), the service name, its
    # own name, and the headless mark for a Service without a cluster IP.
    labels = {k: v for k, v in (meta.get("labels") or {}).items()
              if k not in (SERVICE_NAME, MANAGED_BY)}
    labels.update({SERVICE_NAME: meta["name"], MANAGED_BY: CONTROLLER})
    if spec.get("clusterIP") == "None":
        labels[HEADLESS] = ""
    slices = {}
    for ports, endpoints in sorted(groups.items()):
        # IPv4 slices keep the names they had before dual-stack
        tag = zlib.crc32(repr(ports if family == "IPv4" else (family, ports)).encode())
        for n, start in enumerate(range(0, len(endpoints), MAX_ENDPOINTS)):
            name = f"{meta['name'][:45]}-{tag:08x}-{n}"
            slices[name] = {
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": name, "namespace": meta["namespace"],
                    "labels": dict(labels),
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Service",
                                         "name": meta["name"], "uid": meta.get("uid"),
                                         "controller": True}]},
                "addressType": family,
                "endpoints": endpoints[start:start + MAX_ENDPOINTS],
                "ports": [{"name": pname, "protocol": proto, "port": number}
                          for pname, proto, number in ports]}
    return slices


def _content(slice_obj):
    return (slice_obj.get("endpoints"), slice_obj.get("ports"),
            slice_obj["metadata"].get("labels"))


def sync_service(store, ns, name):
    """Make the store's managed slices of ns/name match the desired ones."""
    svc = store.objects["services"].get((ns, name))
    existing = {s["metadata"]["name"]: s for s in store.peek("endpointslices", ns)
                if (s["metadata"].get("labels") or {}).get(SERVICE_NAME) == name
                and (s["metadata"].get("labels") or {}).get(MANAGED_BY) == CONTROLLER}
    if svc is None or not (svc.get("spec") or {}).get("selector"):
        want = {}
    else:
        zones = {n["metadata"]["name"]: (n["metadata"].get("labels") or {}).get(ZONE_LABEL)
                 for n in store.peek("nodes")}
        want = desired_slices(svc, store.peek("pods", ns), zones)
    # The controller stamps when the change behind a slice's content happened:
    # here, the write that triggered this sync, which is now.
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for sname, obj in want.items():
        old = existing.get(sname)
        obj["metadata"]["annotations"] = {TRIGGER_TIME: stamp}
        if old is None:
            store.commit("endpointslices", "ADDED", obj)
        elif _content(old) != _content(obj):
            obj["metadata"]["uid"] = old["metadata"].get("uid")
            obj["metadata"]["creationTimestamp"] = old["metadata"].get("creationTimestamp")
            store.commit("endpointslices", "MODIFIED", obj)
    for sname, old in existing.items():
        if sname not in want:
            store.commit("endpointslices", "DELETED", dict(old))


def after_write(store, resource, etype, old, new):
    """Store hook: re-sync the slices a pod or service write can change."""
    if resource == "services":
        meta = new["metadata"]
        selectors = [(o.get("spec") or {}).get("selector") for o in (old, new) if o]
        if any(selectors) or etype == "DELETED":
            sync_service(store, meta["namespace"], meta["name"])
    elif resource == "pods":
        ns = new["metadata"]["namespace"]
        labels = [o["metadata"].get("labels") for o in (old, new) if o is not None]
        for svc in list(store.peek("services", ns)):
            selector = (svc.get("spec") or {}).get("selector")
            if any(selector_matches(selector, lb) for lb in labels):
                sync_service(store, ns, svc["metadata"]["name"])
