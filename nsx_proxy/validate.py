"""Field checks shared by every state source.

Each check returns the normalised value or raises :class:`Invalid` with a
reason a user can act on.  Sources catch it, log the object's name with the
reason, count it, and skip only that object (or port, or endpoint).
"""
import collections
import dataclasses
import ipaddress
import logging

from nsx_proxy import model

LOG = logging.getLogger(__name__)


class Invalid(ValueError):
    """An input value the proxy cannot implement."""


def ipv4(value, what="IP") -> str:
    if not isinstance(value, str) or not value:
        raise Invalid(f"{what} missing")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise Invalid(f"{what} {value!r} is not an IP address") from None
    if addr.version != 4:
        raise Invalid(f"{what} {value} is IPv6, which is not supported yet")
    if addr.is_unspecified or addr.is_multicast or addr.is_loopback:
        raise Invalid(f"{what} {value} cannot be a unicast service address")
    return str(addr)


def cidr4(value, what="CIDR") -> str:
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        raise Invalid(f"{what} {value!r} is not a network like 10.1.0.0/24") from None
    if net.version != 4:
        raise Invalid(f"{what} {value} is IPv6, which is not supported yet")
    if net.prefixlen > 30:
        raise Invalid(f"{what} {value} leaves no room for a gateway and pods")
    return str(net)


def source_range(value, what="loadBalancerSourceRange") -> str:
    """A client CIDR such as 203.0.113.0/24 (host bits must be zero)."""
    try:
        net = ipaddress.ip_network(str(value).strip(), strict=True)
    except ValueError:
        raise Invalid(f"{what} {value!r} is not a network like 203.0.113.0/24") from None
    if net.version != 4:
        raise Invalid(f"{what} {value} is IPv6, which is not supported yet")
    return str(net)


def port(value, what="port") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{what} {value!r} is not a number")
    if not 1 <= value <= 65535:
        raise Invalid(f"{what} {value} is outside 1-65535")
    return value


def target_port(value):
    """A targetPort: a number, or a name that endpoints resolve."""
    if isinstance(value, str):
        if not value:
            raise Invalid("targetPort is empty")
        # only ASCII digits make a number ("²".isdigit() is true, int() refuses it)
        if not (value.isascii() and value.isdigit()):
            return value
        if len(value) > 5:
            raise Invalid(f"targetPort {value:.20} is outside 1-65535")
        value = int(value)
    return port(value, "targetPort")


def protocol(value) -> str:
    proto = (value or model.TCP)
    if not isinstance(proto, str) or proto.upper() not in model.PROTOCOLS:
        raise Invalid(f"protocol {value!r} is not one of TCP, UDP, SCTP")
    return proto.upper()


def service_type(value) -> str:
    stype = value or model.CLUSTER_IP
    if stype not in model.SERVICE_TYPES:
        raise Invalid(f"type {value!r} is not one of {', '.join(model.SERVICE_TYPES)}")
    return stype


def claim_frontends(services, rejects: "RejectLog"):
    """Drop what would make two services answer on one (IP, protocol, port).

    Services are considered in name order, so the outcome does not depend on
    arrival order: a later service whose clusterIP is taken is rejected; an
    external or load-balancer IP that would collide on a port is removed
    from the later service only (the rest of it keeps working).
    """
    claimed, cluster_ips, out = {}, {}, []
    for svc in sorted(services, key=lambda s: (s.namespace, s.name)):
        owner = cluster_ips.setdefault(svc.cluster_ip, svc.key)
        if owner != svc.key:
            rejects.reject("service", str(svc.key),
                           f"clusterIP {svc.cluster_ip} is already used by {owner}")
            continue
        keep = {}
        for ip in svc.outside_ips:
            taken = {claimed[(ip, p.protocol, p.port)] for p in svc.ports
                     if (ip, p.protocol, p.port) in claimed}
            if taken:
                rejects.reject("service", str(svc.key),
                               f"IP {ip} collides with {', '.join(map(str, taken))} "
                               "on a port; ignoring that IP for this service")
            keep[ip] = not taken
        if not all(keep.values()):      # keep the object itself when unchanged:
            svc = dataclasses.replace(  # the compiler recognises it by identity
                svc, external_ips=tuple(ip for ip in svc.external_ips if keep[ip]),
                load_balancer_ips=tuple(ip for ip in svc.load_balancer_ips if keep[ip]))
        svc = _claim_node_ports(svc, claimed, rejects)
        for ip in svc.frontend_ips:
            for p in svc.ports:
                claimed[(ip, p.protocol, p.port)] = svc.key
        out.append(svc)
    return out


def _claim_node_ports(svc, claimed, rejects):
    """A nodePort answers on every node IP: the first service (in name order)
    keeps it, a later one loses it (its other frontends keep working).  The
    API server allocates them uniquely; a source that does not (a file, a
    lab server) must not make two services answer on one."""
    if not svc.node_ports:
        return svc
    ports = []
    for p in svc.ports:
        key = ("nodePort", p.protocol, p.node_port)
        if p.node_port and key in claimed:     # another service's, or another port's
            rejects.reject("service", str(svc.key),
                           f"nodePort {p.protocol}/{p.node_port} is already used by "
                           f"{claimed[key]}; ignoring it for this port")
            p = dataclasses.replace(p, node_port=None)
        elif p.node_port:
            claimed[key] = svc.key
        ports.append(p)
    if all(a is b for a, b in zip(ports, svc.ports)):
        return svc
    return dataclasses.replace(svc, ports=tuple(ports))


class RejectLog:
    """Logs each rejected object once per distinct reason, and counts them.

    Sources re-read their input often (a file poll, a relist); the same bad
    object must not flood the log every time.
    """

    def __init__(self, logger=LOG):
        self._logger = logger
        self._seen = set()
        self.counts = collections.Counter()

    def reject(self, kind: str, name: str, reason: str) -> None:
        key = (kind, name, reason)
        if key in self._seen:
            return
        self._seen.add(key)
        self.counts[reason.split(" ", 1)[0]] += 1
        self._logger.warning("rejected %s %s: %s", kind, name, reason)
