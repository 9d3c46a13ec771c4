"""Field checks shared by every state source.

Each check returns the normalised value or raises :class:`Invalid` with a
reason a user can act on.  Sources catch it, log the object's name with the
reason, count it, and skip only that object (or port, or endpoint).
"""
import collections
import dataclasses
import ipaddress
import logging
import re
import socket

from nsx_proxy import model

LOG = logging.getLogger(__name__)


class Invalid(ValueError):
    """An input value the proxy cannot implement."""


def json_object(obj, name):
    """``obj[name]`` when it is a JSON object or absent ({}); anything else is invalid."""
    value = obj.get(name)
    if value is not None and not isinstance(value, dict):
        raise Invalid(f"{name} is not an object: {value!r:.40}")
    return value or {}


def json_list(obj, name):
    """``obj[name]`` when it is a JSON list or absent (()); anything else is invalid."""
    value = obj.get(name)
    if value is not None and not isinstance(value, list):
        raise Invalid(f"{name} is not a list: {value!r:.40}")
    return value or ()


# A dotted quad as ipaddress writes it (no leading zeros, octets <= 255).
_CANONICAL_IPV4 = re.compile(r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                             r"(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")


def ipv4(value, what="IP") -> str:
    """``value`` if it is a unicast IPv4 address, written as ipaddress writes
    it; else :class:`Invalid` saying why."""
    # Fast path, for the 50,000 endpoint addresses of 10,000 Services: a
    # canonical dotted quad outside 0.0.0.0, 127/8 and 224/4 is what the
    # checks below accept, unchanged (ipaddress took a third of a first build).
    if isinstance(value, str) and _CANONICAL_IPV4.fullmatch(value):
        first = int(value[:value.index(".")])
        if first != 127 and not 224 <= first <= 239 and value != "0.0.0.0":
            return value
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


def ip(value, what="IP") -> str:
    """A unicast IPv4 (as :func:`ipv4`) or IPv6 address, written as
    ipaddress writes it (compressed, lower case)."""
    if not isinstance(value, str) or ":" not in value:
        return ipv4(value, what)
    # inet_pton / inet_ntop, not ipaddress: the same checks and the same
    # RFC 5952 text in a tenth of the time (50,000 IPv6 endpoints of a
    # dual-stack cluster made ipaddress most of a first build's time)
    try:
        packed = socket.inet_pton(socket.AF_INET6, value)      # refuses a %zone too
    except OSError:
        raise Invalid(f"{what} {value!r} is not an IP address") from None
    if packed[0] == 0xFF or packed == _V6_UNSPECIFIED or packed == _V6_LOOPBACK or \
            (packed[0] == 0xFE and packed[1] & 0xC0 == 0x80) or packed[:12] == _V4_MAPPED:
        raise Invalid(f"{what} {value} cannot be a unicast service address")
    text = socket.inet_ntop(socket.AF_INET6, packed)
    # inet_ntop writes ::a.b.c.d forms with a dotted tail; ipaddress does not
    return text if "." not in text else str(ipaddress.IPv6Address(packed))


_V6_UNSPECIFIED, _V6_LOOPBACK = bytes(16), bytes(15) + b"\x01"
_V4_MAPPED = bytes(10) + b"\xff\xff"       # ::ffff:a.b.c.d (multicast ff..: first byte)


def pod_cidr(value, what="CIDR", version=4) -> str:
    """A node's pod CIDR of the family ``version``, with room for a gateway
    and pods: 10.1.1.0/24, fd00:10:1:1::/64."""
    example = "10.1.0.0/24" if version == 4 else "fd00:10:1:1::/64"
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        raise Invalid(f"{what} {value!r} is not a network like {example}") from None
    if net.version != version:
        raise Invalid(f"{what} {value} is not IPv{version}")
    if net.prefixlen > net.max_prefixlen - 2:
        raise Invalid(f"{what} {value} leaves no room for a gateway and pods")
    return str(net)


def source_range(value, what="loadBalancerSourceRange") -> str:
    """A client CIDR of either family, such as 203.0.113.0/24 or
    2001:db8::/48 (host bits must be zero)."""
    try:
        net = ipaddress.ip_network(str(value).strip(), strict=True)
    except ValueError:
        raise Invalid(f"{what} {value!r} is not a network like 203.0.113.0/24 "
                      "or 2001:db8::/48") from None
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
    return _CONSTANT[proto.upper()]     # the model's string: not one per port


def service_type(value) -> str:
    stype = value or model.CLUSTER_IP
    if stype not in model.SERVICE_TYPES:
        raise Invalid(f"type {value!r} is not one of {', '.join(model.SERVICE_TYPES)}")
    return _CONSTANT[stype]


# the model's own strings, returned for equal ones read from the API
_CONSTANT = {name: name for name in (*model.PROTOCOLS, *model.SERVICE_TYPES)}


def external_ip_cidrs(text) -> tuple:
    """The ``external_ip_cidrs`` option: comma-separated CIDRs (empty: any)."""
    out = []
    for item in str(text or "").split(","):
        if item.strip():
            try:
                out.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise Invalid(f"external_ip_cidrs: {item.strip()!r} is not a CIDR") from None
    return tuple(out)


def claim_frontends(services, rejects: "RejectLog", external_cidrs=()):
    """Drop what would make two services answer on one (IP, protocol, port).

    The outcome depends on neither names nor the order of events:

    1. cluster IPs first: the API server allocates them, so they always win.
       Two services with one clusterIP (a file or a lab server may say so):
       the first in name order keeps it, the later one is rejected.
    2. then external and load-balancer IPs, services in name order: an IP
       that is any service's cluster IP is removed from the service that
       names it (CVE-2020-8554: a Service must not hijack another's VIP), as
       is an externalIP outside ``external_cidrs`` (when given); one that
       collides with an earlier service's outside IP on a port is removed
       from the later service only.  The rest of that service keeps working.
    3. nodePorts, in name order (see _claim_node_ports).
    """
    ordered = sorted(services, key=lambda s: (s.namespace, s.name))
    cluster_ips, kept = {}, []
    for svc in ordered:
        owners = {ip: cluster_ips.get(ip, svc.key) for ip in svc.cluster_ips}
        taken = [(ip, owner) for ip, owner in owners.items() if owner != svc.key]
        if taken:
            rejects.reject("service", str(svc.key), "; ".join(
                f"clusterIP {ip} is already used by {owner}" for ip, owner in taken))
            continue
        cluster_ips.update(owners)
        kept.append(svc)
    claimed, out = {}, []
    for svc in kept:
        keep = {}
        for ip in svc.outside_ips:
            keep[ip] = _outside_ip_allowed(svc, ip, cluster_ips, external_cidrs, rejects)
            if not keep[ip]:
                continue
            taken = {claimed[(ip, p.protocol, p.port)] for p in svc.ports
                     if (ip, p.protocol, p.port) in claimed}
            if taken:
                rejects.reject("service", str(svc.key),
                               f"IP {ip} collides with {', '.join(map(str, taken))} "
                               "on a port; ignoring that IP for this service")
                keep[ip] = False
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


def _outside_ip_allowed(svc, ip, cluster_ips, external_cidrs, rejects) -> bool:
    """Whether an external or load-balancer IP of ``svc`` may be served."""
    if ip in cluster_ips:
        owner = cluster_ips[ip]
        whose = "its own clusterIP" if owner == svc.key else f"the clusterIP of {owner}"
        rejects.reject("service", str(svc.key), f"IP {ip} is {whose}; cluster IPs always "
                       "win, ignoring that IP for this service")
        return False
    if external_cidrs and ip in svc.external_ips and ip not in svc.load_balancer_ips and \
            not any(ipaddress.ip_address(ip) in net for net in external_cidrs):
        rejects.reject("service", str(svc.key), f"externalIP {ip} is outside "
                       "external_ip_cidrs; ignoring it")
        return False
    return True


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
