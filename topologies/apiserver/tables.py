"""meta.k8s.io Table responses, so ``kubectl get`` prints its usual columns."""
import datetime


def _age(obj):
    stamp = obj["metadata"].get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    then = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)
    secs = int((datetime.datetime.now(datetime.timezone.utc) - then).total_seconds())
    return f"{secs}s" if secs < 120 else f"{secs // 60}m" if secs < 7200 else f"{secs // 3600}h"


def _ports(svc):
    out = []
    for p in (svc.get("spec") or {}).get("ports") or ():
        node = f":{p['nodePort']}" if p.get("nodePort") else ""
        out.append(f"{p.get('port')}{node}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _external(svc):
    spec = svc.get("spec") or {}
    ips = list(spec.get("externalIPs") or ())
    ips += [i.get("ip") or i.get("hostname") for i in
            ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()]
    if ips:
        return ",".join(ips)
    return "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"


def _pod_ready(pod):
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return "1/1" if cond.get("status") == "True" else "0/1"
    return "0/1"


def _pod_status(pod):
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    return (pod.get("status") or {}).get("phase", "Pending")


def _slice_endpoints(sl):
    ips = [a for ep in sl.get("endpoints") or () for a in ep.get("addresses") or ()]
    return ",".join(ips[:3]) + (f" + {len(ips) - 3} more..." if len(ips) > 3 else "") \
        if ips else "<unset>"


def _node_ip(node):
    for a in (node.get("status") or {}).get("addresses") or ():
        if a.get("type") == "InternalIP":
            return a.get("address")
    return "<none>"


COLUMNS = {
    "services": [("Type", lambda o: o["spec"].get("type", "ClusterIP")),
                 ("Cluster-IP", lambda o: o["spec"].get("clusterIP", "<none>")),
                 ("External-IP", _external), ("Port(s)", _ports)],
    "pods": [("Ready", _pod_ready), ("Status", _pod_status),
             ("IP", lambda o: (o.get("status") or {}).get("podIP", "<none>")),
             ("Node", lambda o: (o.get("spec") or {}).get("nodeName", "<none>"))],
    "endpointslices": [("AddressType", lambda o: o.get("addressType", "")),
                       ("Ports", lambda o: ",".join(str(p.get("port")) for p in
                                                    o.get("ports") or ()) or "<unset>"),
                       ("Endpoints", _slice_endpoints)],
    "nodes": [("Status", lambda o: "Ready"), ("Internal-IP", _node_ip),
              ("Pod-CIDR", lambda o: (o.get("spec") or {}).get("podCIDR", "<none>"))],
    "namespaces": [("Status", lambda o: (o.get("status") or {}).get("phase", "Active"))],
}


def wants_table(accept) -> bool:
    """The client asked for a Table (kubectl get)."""
    return "as=Table" in accept


def maybe_table(accept, res, items, meta, as_list=False):
    """A Table if the client asked for one (kubectl get), else the object or list."""
    if not wants_table(accept):
        if not as_list:
            return items[0]
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                "metadata": meta, "items": items}
    cols = COLUMNS.get(res.name, [])
    return {
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
        "columnDefinitions": [{"name": "Name", "type": "string", "format": "name",
                               "description": "", "priority": 0}]
        + [{"name": c, "type": "string", "format": "", "description": "", "priority": 0}
           for c, _ in cols]
        + [{"name": "Age", "type": "string", "format": "", "description": "", "priority": 0}],
        "rows": [{"cells": [o["metadata"]["name"]] + [f(o) for _, f in cols] + [_age(o)],
                  "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": o["metadata"]}} for o in items]}
