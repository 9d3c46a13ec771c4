"""Names the OpenFlow side gives Kubernetes objects: fragment keys and the
names group ids are derived from (cookies.GroupIds hashes these).

One place, so the compiler, the per-switch bookkeeping and the status view
agree on them without importing each other.
"""
from nsx_proxy import model


# Fragment keys are strings: their hash is cached, so diffing and copying a
# 20,000-fragment state costs dictionary walks, not re-hashing tuples.
def service_key(key: model.ServiceKey) -> str:
    return f"service/{key.namespace}/{key.name}"


def vip_key(ip: str) -> str:
    return f"vip/{ip}"


def service_port_name(svc: model.Service, port: model.ServicePort) -> str:
    return f"{svc.namespace}/{svc.name}:{port.protocol}/{port.port}"


def external_group_name(svc: model.Service, port: model.ServicePort) -> str:
    return service_port_name(svc, port) + "/external"


def gateway_group_name(ip: str) -> str:
    return f"gateway/{ip}"


def group_names(svc: model.Service):
    """Every group name the service may use (to keep their ids allocated)."""
    for port in svc.ports:
        yield service_port_name(svc, port)
        if svc.outside_ips or svc.node_ports:
            yield external_group_name(svc, port)
    for ip in svc.outside_ips:
        yield gateway_group_name(ip)


def release_group_ids(group_ids, old: model.ClusterState, new: model.ClusterState,
                      change) -> None:
    """Free the group ids of service ports (and gateway IPs) that are gone.

    Only the services the change set names are looked at; a gateway IP may
    be shared by several services, so when one is among the candidates the
    names still in use are worked out from every service (rare: an external
    or LB IP changed).
    """
    if change.full:
        candidates = None
    else:
        candidates = set()
        for key in change.services:
            before, after = old.services.get(key), new.services.get(key)
            if before is not None:
                candidates.update(set(group_names(before)) - set(
                    group_names(after) if after is not None else ()))
        if not candidates:
            return
    if candidates is None or any(n.startswith("gateway/") for n in candidates):
        group_ids.release_unused({n for svc in new.services.values()
                                  for n in group_names(svc)})
    else:
        group_ids.release(candidates)
