"""Floating-IP pools for LoadBalancer services, the way Contrail hands them out.

A LoadBalancer service without an ingress IP gets one from a pool and the
proxy writes it to ``status.loadBalancer.ingress``; the watch then brings it
back like any other status, so the LB IP is programmed exactly as one a
cloud controller would have set.  Which pool:

1. the service's annotation ``nsx-proxy.io/fip-pool``,
2. else its namespace's annotation of the same name (Contrail's
   per-namespace pool),
3. else the configured default pool.

``spec.loadBalancerIP`` is honoured when it lies in a pool and is free.  An
IP from our pools is released (status cleared) when the service is deleted
or stops being a LoadBalancer; IPs outside our pools (someone else's load
balancer) are never touched.  Pure: (services, namespaces, pools) -> the
status each service should have; the source writes the differences.
"""
import ipaddress
import logging
from typing import Dict, List, Optional, Tuple

from nsx_proxy import model
from nsx_proxy import rawjson

LOG = logging.getLogger(__name__)
POOL_ANNOTATION = "nsx-proxy.io/fip-pool"


class PoolConfigError(ValueError):
    pass


def parse_pools(text: str) -> Dict[str, List[ipaddress.IPv4Network]]:
    """``name=CIDR[,CIDR...];name2=CIDR`` -> {name: [networks]}."""
    pools = {}
    for item in (text or "").replace("\n", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        name, sep, cidrs = item.partition("=")
        if not sep or not name.strip():
            raise PoolConfigError(f"pool {item!r} is not NAME=CIDR[,CIDR]")
        try:
            nets = [ipaddress.IPv4Network(c.strip()) for c in cidrs.split(",") if c.strip()]
        except ValueError as exc:
            raise PoolConfigError(f"pool {name.strip()}: {exc}") from None
        if not nets:
            raise PoolConfigError(f"pool {name.strip()} has no addresses")
        pools[name.strip()] = nets
    return pools


def _hosts(nets):
    for net in nets:
        if net.prefixlen >= 31:
            yield from (str(ip) for ip in net)
        else:
            yield from (str(ip) for ip in net.hosts())


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

    def __init__(self, pools: Dict[str, List[ipaddress.IPv4Network]], default_pool=None,
                 lb_class=None):
        self.pools = pools
        self.default_pool = default_pool
        self.lb_class = lb_class or None
        if default_pool and default_pool not in pools:
            raise PoolConfigError(f"default pool {default_pool!r} is not defined")

    def owns(self, ip: str) -> bool:
        try:
            addr = ipaddress.IPv4Address(ip)
        except (ValueError, TypeError):
            return False
        return any(addr in net for nets in self.pools.values() for net in nets)

    def _pool_for(self, svc, namespaces) -> Optional[str]:
        ns = namespaces.get(rawjson.key(svc)[0])
        return (rawjson.text(rawjson.annotations(svc).get(POOL_ANNOTATION))
                or rawjson.text(rawjson.annotations(ns).get(POOL_ANNOTATION))
                or self.default_pool)

    def plan(self, services: Dict[model.ServiceKey, dict], namespaces: Dict[str, dict],
             reject, reserved=frozenset()) -> Dict[model.ServiceKey, Optional[str]]:
        """{service: IP to write, or None to clear} for services whose status must
        change; ``reserved`` are IPs written but not seen back yet."""
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
                if want is not None:
                    used.add(want)
                changes[skey] = want
        return changes

    def _plan_one(self, skey, svc, namespaces, used, reject):
        """The IP to write for one service, None to clear it, or _KEEP."""
        spec = rawjson.spec(svc)
        if spec.get("type") != "LoadBalancer":
            if any(self.owns(ip) for ip in ingress_ips(svc)):
                return None                      # no longer a LoadBalancer: release
            return _KEEP
        if spec.get("loadBalancerClass") not in (None, self.lb_class):
            return _KEEP                         # another controller's
        if ingress_ips(svc) or not self.pools:
            return _KEEP                         # has an address (ours or not)
        ip = self._choose(skey, svc, namespaces, used, reject)
        return _KEEP if ip is None else ip

    def _choose(self, key, svc, namespaces, used, reject) -> Optional[str]:
        asked = rawjson.text(rawjson.spec(svc).get("loadBalancerIP"))
        if asked:
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
        for ip in _hosts(self.pools[pool]):
            if ip not in used:
                return ip
        reject("service", str(key), f"floating-IP pool {pool!r} is exhausted")
        return None
