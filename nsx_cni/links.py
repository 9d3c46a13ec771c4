"""The pod's veth pair: made, checked and removed with iproute2.

The container end is configured from inside its network namespace with
``nsenter --net=PATH`` (Python 3.11 has no ``os.setns``); the namespace is a
path, as runtimes give it (``/var/run/netns/...`` or ``/proc/PID/ns/net``).
"""
import json
import os
import subprocess
from typing import List, Optional

from nsx_cni.spec import IO_FAILURE, NOT_AS_ATTACHED, UNKNOWN_CONTAINER, Address, CniError

TIMEOUT = 20


def _run(cmd: List[str], stdin: Optional[str] = None, check=True) -> str:
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                              timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CniError(IO_FAILURE, f"{cmd[0]}: {exc}") from None
    if check and proc.returncode != 0:
        what = " ".join(cmd) + (f" ({'; '.join(stdin.strip().splitlines())})" if stdin else "")
        raise CniError(IO_FAILURE, f"{what}: {proc.stderr.strip()}")
    return proc.stdout


def _in_netns(netns: str, cmd: List[str]) -> List[str]:
    return ["nsenter", f"--net={netns}"] + cmd


def netns_exists(netns: str) -> bool:
    return bool(netns) and os.path.exists(netns)


def require_netns(netns: str) -> None:
    if not netns_exists(netns):
        raise CniError(UNKNOWN_CONTAINER, f"network namespace {netns} does not exist")


# Links are asked of iproute2, not /sys/class/net: a plugin run with
# ``nsenter --net`` (a node that is a namespace, as in the multi-host lab)
# sees the sysfs of whoever mounted it, not its own namespace's links.
def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True,
                          timeout=TIMEOUT).returncode == 0


def mac_of(name: str) -> str:
    return json.loads(_run(["ip", "-j", "link", "show", "dev", name]))[0]["address"]


def add_veth(host_if: str, req_ifname: str, netns: str, addr: Address,
             mtu: Optional[int], tx_offload_off: bool) -> str:
    """Make the pair, configure the container end; the host end's MAC."""
    mtu_args = f" mtu {mtu}" if mtu else ""
    batch = (f"link add {host_if}{mtu_args} type veth peer name {req_ifname}{mtu_args} "
             f"netns {netns}\nlink set {host_if} up\n")
    try:
        _run(["ip", "-batch", "-"], stdin=batch)
    except CniError:
        if not link_exists(host_if):
            raise
        _run(["ip", "link", "del", host_if])       # left by an ADD that failed half-way
        _run(["ip", "-batch", "-"], stdin=batch)
    try:
        v6 = [] if addr.interface6 is None else [
            # nodad: the bridge answers for the pods' addresses itself, and
            # the address is usable at once (a runtime waits for none)
            f"addr add {addr.interface6} dev {req_ifname} nodad",
            f"route add default via {addr.gateway6} dev {req_ifname}"]
        if v6:
            _run(_in_netns(netns, ["sysctl", "-q", "-w",
                                   f"net.ipv6.conf.{req_ifname}.disable_ipv6=0"]), check=False)
        _run(_in_netns(netns, ["ip", "-batch", "-"]), stdin="\n".join([
            f"link set {req_ifname} address {addr.mac}",
            f"addr add {addr.interface} dev {req_ifname}",
            f"link set {req_ifname} up",
            f"route add default via {addr.gateway} dev {req_ifname}"] + v6 + [""]))
        if tx_offload_off:
            # The userspace datapath's conntrack drops packets whose checksum
            # a veth left to offload (+inv): both ends compute it.
            _run(_in_netns(netns, ["ethtool", "-K", req_ifname, "tx", "off"]))
            _run(["ethtool", "-K", host_if, "tx", "off"])
        return mac_of(host_if)
    except BaseException:
        _run(["ip", "link", "del", host_if], check=False)
        raise


def del_veth(host_if: str, req_ifname: str, netns: str) -> None:
    """Remove the pair; what is already gone is not an error."""
    out = subprocess.run(["ip", "link", "del", host_if], capture_output=True, text=True,
                         timeout=TIMEOUT)
    if out.returncode != 0 and link_exists(host_if):
        raise CniError(IO_FAILURE, f"ip link del {host_if}: {out.stderr.strip()}")
    if netns_exists(netns):            # a pair whose host end was moved or renamed
        _run(_in_netns(netns, ["ip", "link", "del", req_ifname]), check=False)


def check_veth(host_if: str, req_ifname: str, netns: str, addr: Address) -> None:
    """Returns when the pair is as ADD left it; else raises NOT_AS_ATTACHED."""
    require_netns(netns)
    if not link_exists(host_if):
        raise CniError(NOT_AS_ATTACHED, f"host interface {host_if} is gone")
    links = json.loads(_run(_in_netns(netns, ["ip", "-j", "addr", "show"])) or "[]")
    link = next((lk for lk in links if lk.get("ifname") == req_ifname), None)
    if link is None:
        raise CniError(NOT_AS_ATTACHED, f"{req_ifname} is not in {netns}")
    if link.get("address") != addr.mac:
        raise CniError(NOT_AS_ATTACHED, f"{req_ifname} has MAC {link.get('address')}, "
                       f"not {addr.mac}")
    have = {f"{a.get('local')}/{a.get('prefixlen')}" for a in link.get("addr_info", [])}
    for iface in (addr.interface, addr.interface6):
        if iface is not None and str(iface) not in have:
            raise CniError(NOT_AS_ATTACHED, f"{req_ifname} does not hold {iface}")
    for family, gateway in (("-4", addr.gateway), ("-6", addr.gateway6)):
        if gateway is None:
            continue
        routes = json.loads(_run(_in_netns(netns, ["ip", "-j", family, "route", "show",
                                                   "default"])) or "[]")
        if not any(r.get("gateway") == gateway and r.get("dev") == req_ifname
                   for r in routes):
            raise CniError(NOT_AS_ATTACHED, f"no default route via {gateway} "
                           f"on {req_ifname}")
