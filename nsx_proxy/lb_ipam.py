"""Floating-IP pools for LoadBalancer services, the way Contrail hands them out.

A LoadBalancer service without an ingress IP gets one from a pool and the
proxy writes it to ``status.loadBalancer.ingress``; the watch then brings it
back like any other status, so the LB IP is programmed exactly as one a
cloud controller would have set.  Which pool:

1. the service's annotation ``nsx-proxy.io/fip-pool``,
2. else its namespace's annotation of the same name (Contrail's
   per-namespace pool),
3. else the configured default pool.

A pool may hold ranges of both families: a service gets one address of
each family it has (``spec.ipFamilies``, primary first), as MetalLB and
cloud load balancers hand dual-stack services one of each; a family the
pool has no range of is reported and left out.  A service that gains or
loses a family (``ipFamilyPolicy`` changed) gains or loses that address.

``spec.loadBalancerIP`` is honoured when it lies in a pool and is free.  An
IP from our pools is released (status cleared) when the service is deleted
or stops being a LoadBalancer; IPs outside our pools (someone else's load
balancer) are never touched.  Pure: (services, namespaces, pools) -> the
status each service should have; the source writes the differences.
"""
import ipaddress
import logging
from typing import Dict, List, Optional, Tuple, Union

from nsx_proxy import model
from nsx_proxy import rawjson

LOG = logging.getLogger(__name__)
POOL_ANNOTATION = "nsx-proxy.io/fip-pool"
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class PoolConfigError(ValueError):
    pass


def parse_pools(text: str) -> Dict[str, List[Network]]:
    """``name=CIDR[,CIDR...];name2=CIDR`` -> {name: [networks]}; the CIDRs of
    either family (``default=198.51.100.0/25,2001:db8:51::/120``)."""
    pools = {}
    for item in (text or "").replace("\n", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        name, sep, cidrs = item.partition("=")
        if not sep or not name.strip():
            raise PoolConfigError(f"pool {item!r} is not NAME=CIDR[,CIDR]")
        try:
            nets = [ipaddress.ip_network(c.strip()) for c in cidrs.split(",") if c.strip()]
        except ValueError as exc:
            raise PoolConfigError(f"pool {name.strip()}: {exc}") from None
        if not nets:
            raise PoolConfigError(f"pool {name.strip()} has no addresses")
        pools[name.strip()] = nets
    return pools


def _hosts(nets):
    for net in nets:
        if net.prefixlen >= net.max_prefixlen - 1:      # /31, /32, /127, /128: all
            yield from (str(ip) for ip in net)
        else:
            yield from (str(ip) for ip in net.hosts())


def families(svc) -> Tuple[str, ...]:
    """The families of a raw Service, primary first: ``spec.ipFamilies``
    (the API server fills it in), else those of its cluster IPs, else IPv4."""
    spec = rawjson.spec(svc)
    listed = [f for f in rawjson.as_list(spec.get("ipFamilies")) if f in ("IPv4", "IPv6")]
    if not listed:
        ips = rawjson.as_list(spec.get("clusterIPs")) or [spec.get("clusterIP")]
        listed = [_family(ip) for ip in ips if rawjson.text(ip) and ip != "None"]
    return tuple(dict.fromkeys(listed)) or ("IPv4",)


def _family(ip: str) -> str:
    return "IPv6" if ":" in ip else "IPv4"


def ingress_ips(svc) -> Tuple[str, ...]:
    """The IPs in a raw Service's status.loadBalancer.ingress (junk skipped:
    translate reports it)."""
    ingress = rawjson.field(svc, "status", "loadBalancer", "ingress")
    return tuple(i["ip"] for i in rawjson.as_list(ingress)
                 if isinstance(i, dict) and rawjson.text(i.get("ip")))


_KEEP = object()          # plan: leave this service's status as it is


class Ipam:
    """``lb_class``: besides Services without ``spec.loadBalancerClass`` (the
    default implementation's), those of this class are ours; Services of any
    other class belong to another controller and get no IP from our pools
    (they are still proxied once that controller writes their IP)."""

    def __init__(self, pools: Dict[str, List[Network]], default_pool=None,
                 lb_class=None):
        self.pools = pools
        self.default_pool = default_pool
        self.lb_class = lb_class or None
        if default_pool and default_pool not in pools:
            raise PoolConfigError(f"default pool {default_pool!r} is not defined")

    def owns(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except (ValueError, TypeError):
            return False
        return any(net.version == addr.version and addr in net
                   for nets in self.pools.values() for net in nets)

    def _pool_for(self, svc, namespaces) -> Optional[str]:
        ns = namespaces.get(rawjson.key(svc)[0])
        return (rawjson.text(rawjson.annotations(svc).get(POOL_ANNOTATION))
                or rawjson.text(rawjson.annotations(ns).get(POOL_ANNOTATION))
                or self.default_pool)

    def plan(self, services: Dict[model.ServiceKey, dict], namespaces: Dict[str, dict],
             reject, reserved=frozenset()) -> Dict[model.ServiceKey, Tuple[str, ...]]:
        """{service: the IPs to write, () to clear} for services whose status
        must change; ``reserved`` are IPs written but not seen back yet."""
        used = {ip for svc in services.values() for ip in ingress_ips(svc)} | set(reserved)
        changes = {}
        for skey in sorted(services):
            try:
                want = self._plan_one(skey, services[skey], namespaces, used, reject)
            except Exception as exc:   # noqa: BLE001 - a bug costs this object only
                reject("service", str(skey), f"internal error planning its load-balancer "
                       f"IP: {type(exc).__name__}: {exc}")
                continue
            if want is not _KEEP:
                used.update(want)
                changes[skey] = want
        return changes

    def _plan_one(self, skey, svc, namespaces, used, reject):
        """The IPs to write for one service, () to clear them, or _KEEP."""
        spec, current = rawjson.spec(svc), ingress_ips(svc)
        if spec.get("type") != "LoadBalancer":
            if any(self.owns(ip) for ip in current):
                return ()                        # no longer a LoadBalancer: release
            return _KEEP
        if spec.get("loadBalancerClass") not in (None, self.lb_class):
            return _KEEP                         # another controller's
        if not self.pools or not all(self.owns(ip) for ip in current):
            return _KEEP                         # none to give, or another's address
        wanted = families(svc)
        keep = {}                                # family -> our address, kept
        for ip in current:
            if _family(ip) in wanted:
                keep.setdefault(_family(ip), ip)
        for family in wanted:
            if family not in keep:
                ip = self._choose(skey, svc, namespaces, used, reject, family)
                if ip is not None:
                    keep[family] = ip
        want = tuple(keep[f] for f in wanted if f in keep)
        return _KEEP if want == current else want

    def _choose(self, key, svc, namespaces, used, reject, family) -> Optional[str]:
        asked = rawjson.text(rawjson.spec(svc).get("loadBalancerIP"))
        if asked and _family(asked) == family:
            if self.owns(asked) and asked not in used:
                return asked
            reject("service", str(key), f"loadBalancerIP {asked} is not a free address "
                   "of a floating-IP pool; allocating one instead")
        pool = self._pool_for(svc, namespaces)
        if pool is None:
            return None
        if pool not in self.pools:
            reject("service", str(key), f"floating-IP pool {pool!r} does not exist")
            return None
        version = 6 if family == "IPv6" else 4
        nets = [n for n in self.pools[pool] if n.version == version]
        if not nets:
            reject("service", str(key), f"floating-IP pool {pool!r} has no {family} "
                   f"range; no {family} load-balancer IP")
            return None
        for ip in _hosts(nets):
            if ip not in used:
                return ip
        reject("service", str(key), f"floating-IP pool {pool!r} is exhausted ({family})")
        return None
