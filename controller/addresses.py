"""Match fields of an address of either family: every flow that names an
address matches eth_type and ipv4_* or ipv6_*, and these pick the pair
from the address itself (validated upstream), so a fragment is written
once for both families."""
import ipaddress

from controller.flows import ETH_IP, ETH_IPV6


def is_ipv6(ip: str) -> bool:
    return ":" in ip


def eth_type_of(ip: str) -> int:
    return ETH_IPV6 if ":" in ip else ETH_IP


# The field names as constants: a name built per flow (an f-string) would be
# a string object of its own in every match (about 2 MB at 10,000 services)
_FIELDS = {(side, v6): f"ipv{6 if v6 else 4}_{side}" for side in ("src", "dst")
           for v6 in (False, True)}


def ip_field(ip: str, side: str) -> str:
    """``ipv4_dst`` / ``ipv6_src`` ...: the match field of ``ip``'s family."""
    return _FIELDS[side, ":" in ip]


def addr(ip: str, side: str = "dst") -> dict:
    """Match fields for 'the packet's ``side`` address is ``ip``'."""
    return {"eth_type": ETH_IPV6 if ":" in ip else ETH_IP, ip_field(ip, side): ip}


def addrs(src: str, dst: str) -> dict:
    """Match fields for 'from ``src`` to ``dst``' (one family)."""
    return {"eth_type": eth_type_of(dst), ip_field(src, "src"): src, ip_field(dst, "dst"): dst}


def net(cidr: str, side: str = "src") -> dict:
    """Match fields for 'the packet's ``side`` address is in ``cidr``'."""
    network = ipaddress.ip_network(cidr)
    ip = str(network.network_address)
    return {"eth_type": eth_type_of(ip),
            ip_field(ip, side): (ip, str(network.netmask))}


def same_family(endpoints, ip) -> tuple:
    """The endpoints of ``ip``'s address family (a dual-stack service's
    slices hold both; each cluster IP is served by its own family's)."""
    v6 = ":" in ip
    return tuple(e for e in endpoints if (":" in e.ip) == v6)
