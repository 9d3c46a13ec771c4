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


def family_group_name(name: str, ip: str) -> str:
    """The group of a pool for frontend ``ip``: the IPv4 pool keeps the
    name (and group id) it had before dual-stack; the IPv6 pool is another."""
    return name + "/IPv6" if ":" in ip else name


def external_group_name(svc: model.Service, port: model.ServicePort) -> str:
    return service_port_name(svc, port) + "/external"


def gateway_group_name(ip: str) -> str:
    return f"gateway/{ip}"


def part_name(group_name: str, part: int) -> str:
    """The group of part ``part`` (> 0) of a pool split over several groups."""
    return f"{group_name}#{part}"


def parts_for(count: int, max_buckets: int) -> int:
    """How many groups a pool of ``count`` endpoints needs: a power of two
    (the split is on source-port bits) with at most ``max_buckets`` each."""
    parts = 1
    while -(-count // parts) > max_buckets:
        parts *= 2
    return parts


def spread_per_flow(svc: model.Service, port: model.ServicePort) -> bool:
    """Whether the port's pools are flows, not select groups: UDP without
    session affinity (controller/udp_pool.py says why)."""
    return port.protocol == model.UDP and not svc.affinity_timeout


def pool_parts(svc: model.Service, port: model.ServicePort, count: int,
               max_buckets: int) -> int:
    """How many groups a pool of ``count`` of the port's endpoints needs
    (``parts_for``); a pool spread per flow is one, whatever its size."""
    return 1 if spread_per_flow(svc, port) else parts_for(count, max_buckets)


def group_names(svc: model.Service, max_buckets: int):
    """Every group name the service may use (to keep their ids allocated):
    per port its pool's group, its external pool's, and the extra parts of a
    pool too large for one group (sized for all of the port's endpoints,
    which no node's choice exceeds)."""
    for port in svc.ports:
        parts = pool_parts(svc, port, len(port.endpoints), max_buckets)
        # the plain name's id is the port's cookie, whatever its families
        names = [service_port_name(svc, port)]
        names += [family_group_name(names[0], ip) for ip in svc.cluster_ips if ":" in ip]
        if svc.outside_ips or svc.node_ports:
            external = external_group_name(svc, port)
            names += [family_group_name(external, ip) for ip in svc.cluster_ips]
        for name in names:
            yield name
            for part in range(1, parts):
                yield part_name(name, part)
    for ip in svc.outside_ips:
        yield gateway_group_name(ip)


def release_group_ids(group_ids, old: model.ClusterState, new: model.ClusterState,
                      change, max_buckets: int) -> None:
    """Free the group ids of service ports (and gateway IPs) that are gone.

    Only the services the change set names are looked at; a gateway IP may
    be shared by several services, so when one is among the candidates the
    names still in use are worked out from every service (rare: an external
    or LB IP changed).
    """
    if change.everything:
        candidates = None
    else:
        candidates = set()
        for key in change.services:
            before, after = old.services.get(key), new.services.get(key)
            if before is not None:
                candidates.update(set(group_names(before, max_buckets)) - set(
                    group_names(after, max_buckets) if after is not None else ()))
        if not candidates:
            return
    if candidates is None or any(n.startswith("gateway/") for n in candidates):
        group_ids.release_unused({n for svc in new.services.values()
                                  for n in group_names(svc, max_buckets)})
    else:
        group_ids.release(candidates)
