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


def ip_field(ip: str, side: str) -> str:
    """``ipv4_dst`` / ``ipv6_src`` ...: the match field of ``ip``'s family."""
    return f"ipv6_{side}" if ":" in ip else f"ipv4_{side}"


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
