"""EndpointSlices (plain JSON dicts) -> each service port's endpoints.

Pure functions, read the way kube-proxy reads slices: every slice labelled
``kubernetes.io/service-name`` belongs to that service; a service port
takes its endpoints from the slice port with the same name and protocol,
so a named targetPort resolves per slice; conditions follow the API's rules
for unset values (``ready`` unset means ready, ``serving`` unset means the
same as ``ready``, ``terminating`` unset means not terminating).  A
dual-stack service has slices of both address types (IPv4 and IPv6); their
endpoints share the port, and the compiler gives each cluster IP the
endpoints of its own family.
"""
import sys
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from nsx_proxy import model
from nsx_proxy import validate
from nsx_proxy.rawjson import as_list, as_map, key, labels, text
from nsx_proxy.validate import Invalid

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Reject = Callable[[str, str, str], None]          # (kind, name, reason)


def object_name(obj) -> str:
    ns, name = key(obj)
    return f"{ns}/{name or '?'}" if ns else (name or "?")


def _hint_names(raw, key) -> Tuple[str, ...]:
    """Names in an endpoint's hints.forZones / hints.forNodes (junk ignored)."""
    hints = raw.get("hints")
    items = hints.get(key) if isinstance(hints, dict) else None
    if not isinstance(items, list):
        return ()
    return tuple(sorted(i["name"] for i in items
                        if isinstance(i, dict) and isinstance(i.get("name"), str)))


def _condition(conditions, key, default) -> bool:
    value = conditions.get(key)
    return default if value is None else bool(value)


def _slice_endpoints(slice_name, raw_slice, reject: Reject, v6: bool):
    """(ip, node, pod, ready, serving, terminating, zone hints, node hints) of a
    slice's valid endpoints (of its addressType: IPv6 when ``v6``)."""
    out = []
    for raw in as_list(raw_slice.get("endpoints")):
        if not isinstance(raw, dict):
            reject("endpointslice", slice_name, f"endpoints holds an item that is not an object: "
                   f"{raw!r:.40}; skipped")
            continue
        conditions = as_map(raw.get("conditions"))
        ready = _condition(conditions, "ready", True)
        ref = as_map(raw.get("targetRef"))
        if raw.get("hints") is None:       # most endpoints: no hints to read
            zones = node_hints = ()
        else:
            zones = _hint_names(raw, "forZones")
            node_hints = _hint_names(raw, "forNodes")
        pod = (f"{text(ref.get('namespace'))}/{text(ref.get('name'))}"
               if ref.get("kind", "Pod") == "Pod" and text(ref.get("name")) else None)
        # a cluster has few node names and many endpoints: one string each
        node = sys.intern(text(raw.get("nodeName"))) or None
        for ip in as_list(raw.get("addresses")):
            try:
                ip = validate.ip(ip, "endpoint address")
                if (":" in ip) != v6:
                    raise Invalid(f"endpoint address {ip} is not of the slice's addressType "
                                  f"{'IPv6' if v6 else 'IPv4'}")
            except Invalid as exc:
                reject("endpointslice", slice_name, str(exc))
                continue
            out.append((ip, node, pod, ready,
                        _condition(conditions, "serving", ready),
                        _condition(conditions, "terminating", False), zones, node_hints))
    return out


def merge_slices(name, ports: List[model.ServicePort], slices: Iterable[dict],
                 reject: Reject) -> Dict[model.ServicePort, Tuple[model.Endpoint, ...]]:
    """Endpoints of each service port, merged across all of the service's slices.

    An address that appears in two slices (a pod moving between slices
    during an update) is kept once, preferring its ready entry.
    """
    merged: Dict[model.ServicePort, Dict[Tuple[str, int], model.Endpoint]] = {
        p: {} for p in ports}
    slices = list(slices)
    if len(slices) > 1:                    # most services have one slice
        slices.sort(key=object_name)
    for raw_slice in slices:
        slice_name, raw_slice = object_name(raw_slice), as_map(raw_slice)
        family = raw_slice.get("addressType", "IPv4")
        if family not in ("IPv4", "IPv6"):        # FQDN: kube-proxy ignores those too
            reject("endpointslice", slice_name,
                   f"addressType {family!r:.20} is not IPv4 or IPv6; slice ignored")
            continue
        endpoints = _slice_endpoints(slice_name, raw_slice, reject, family == "IPv6")
        for raw_port in as_list(raw_slice.get("ports")):
            if not isinstance(raw_port, dict):
                reject("endpointslice", slice_name, f"ports holds an item that is not an object: "
                       f"{raw_port!r:.40}; skipped")
                continue
            pname = raw_port.get("name") or ""
            proto = raw_port.get("protocol") or model.TCP
            proto = proto.upper() if isinstance(proto, str) else proto
            try:
                number = validate.port(raw_port.get("port"), "endpoint port")
            except Invalid as exc:
                reject("endpointslice", slice_name, f"port {pname!r}: {exc}")
                continue
            for sport in ports:
                if sport.name != pname or sport.protocol != proto:
                    continue
                pool = merged[sport]
                for ip, node, pod, ready, serving, terminating, zones, hints in endpoints:
                    old = pool.get((ip, number))
                    if old is not None and old.ready and not ready:
                        continue
                    # positional, in model.Endpoint's field order: keywords
                    # took twice as long (50,000 of these at 10,000 Services)
                    pool[(ip, number)] = model.Endpoint(
                        ip, number, node, pod, ready, serving, terminating, zones, hints)
    return {p: tuple(pool[k] for k in sorted(pool)) for p, pool in merged.items()}


def slice_service(raw_slice) -> Optional[model.ServiceKey]:
    """The service a slice belongs to, from its kubernetes.io/service-name label."""
    owner, namespace = text(labels(raw_slice).get(SERVICE_NAME_LABEL)), key(raw_slice)[0]
    if not owner or not namespace:
        return None
    return model.ServiceKey(namespace, owner)
