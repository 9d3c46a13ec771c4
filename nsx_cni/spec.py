"""The CNI protocol, as pure functions: what a runtime hands a plugin (the
``CNI_*`` environment and the network config on stdin) and what the plugin
answers (a result, or the spec's error JSON).

CNI spec 1.0.0: https://www.cni.dev/docs/spec/ .  The Go ``skel`` and
``types`` packages do this for Go plugins; no Python library does, and the
protocol is small, so it is written out here.
"""
import hashlib
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from controller.bridges import dual_stack_items, dual_stack_text, gateway_ip, ip_mac

PLUGIN_TYPE = "nsx-proxy-cni"
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
CHECK_SINCE = ("0.4.0", "1.0.0")          # CHECK appeared in 0.4.0

# The spec's well-known error codes (and the Go library's ErrInternal).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
# Ours (100+ is the plugins'): CHECK found the attachment not as ADD left it.
NOT_AS_ATTACHED = 100
INTERNAL = 999

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION")
IFNAMSIZ = 15                              # Linux interface names: 15 bytes


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def to_json(self, version: str) -> dict:
        out = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class Request:
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: Dict[str, str] = field(default_factory=dict)     # CNI_ARGS
    path: List[str] = field(default_factory=list)         # CNI_PATH
    config: dict = field(default_factory=dict)            # the network config
    raw_config: bytes = b""

    @property
    def version(self) -> str:
        return self.config.get("cniVersion", "1.0.0")

    @property
    def pod(self):
        """(namespace, name) from the kubelet's CNI_ARGS.  Another runtime
        (``ctr run --cni``) sends none: the container is its own name."""
        return (self.args.get("K8S_POD_NAMESPACE") or "default",
                self.args.get("K8S_POD_NAME") or self.container_id)


def version_answer() -> dict:
    return {"cniVersion": "1.0.0", "supportedVersions": list(SUPPORTED_VERSIONS)}


def parse_request(env: Dict[str, str], stdin: bytes) -> Request:
    """A Request from the environment and stdin; CniError names what is wrong."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r} is not one of "
                       f"{', '.join(COMMANDS)}")
    if command == "VERSION":
        return Request(command)
    try:
        config = json.loads(stdin.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CniError(DECODING_FAILURE, "the network config on stdin is not JSON",
                       str(exc)) from None
    if not isinstance(config, dict):
        raise CniError(DECODING_FAILURE, "the network config on stdin is not a JSON object")
    version = config.get("cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"cniVersion {version!r} is not supported; "
                       f"supported: {', '.join(SUPPORTED_VERSIONS)}")
    if command == "CHECK" and version not in CHECK_SINCE:
        raise CniError(INCOMPATIBLE_VERSION, f"CHECK needs cniVersion 0.4.0 or later, "
                       f"not {version}")
    missing = [k for k in ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH") if not env.get(k)]
    if command != "DEL" and not env.get("CNI_NETNS"):
        missing.append("CNI_NETNS")
    if missing:
        raise CniError(INVALID_ENVIRONMENT, f"{command}: {', '.join(missing)} not set")
    ifname = env["CNI_IFNAME"]
    if len(ifname.encode()) > IFNAMSIZ or "/" in ifname or not ifname.isprintable() \
            or " " in ifname:
        raise CniError(INVALID_ENVIRONMENT, f"CNI_IFNAME {ifname!r} is not a valid "
                       "interface name")
    _check_config(config)
    return Request(command, container_id=env["CNI_CONTAINERID"],
                   netns=env.get("CNI_NETNS", ""), ifname=ifname,
                   args=parse_args(env.get("CNI_ARGS", "")),
                   path=[p for p in env["CNI_PATH"].split(":") if p],
                   config=config, raw_config=stdin)


def _check_config(config: dict) -> None:
    ipam = config.get("ipam")
    if not isinstance(ipam, dict) or not isinstance(ipam.get("type"), str) or \
            not ipam["type"]:
        raise CniError(INVALID_CONFIG, "the network config needs \"ipam\": "
                       "{\"type\": \"host-local\", ...}")
    for key in ("bridge", "nodeName"):
        if key in config and not (isinstance(config[key], str) and config[key]):
            raise CniError(INVALID_CONFIG, f"network config: {key!r} is {config[key]!r}, "
                           "not a name")
    mtu = config.get("mtu")
    if mtu is not None and (type(mtu) is not int or not 576 <= mtu <= 65535):
        raise CniError(INVALID_CONFIG, f"network config: 'mtu' is {mtu!r}, not 576-65535")


def parse_args(text: str) -> Dict[str, str]:
    """CNI_ARGS: ``K=V;K=V`` (the kubelet sends K8S_POD_NAMESPACE, K8S_POD_NAME, ...)."""
    out = {}
    for item in text.split(";"):
        key, sep, value = item.partition("=")
        if sep and key:
            out[key] = value
    return out


def host_veth_name(container_id: str, ifname: str) -> str:
    """The host end of a pod's veth: derived from what every command carries,
    so DEL and CHECK find it with no state kept between calls."""
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return "nsx" + digest[:IFNAMSIZ - 3]


def ipam_config(config: dict, pod_cidr: Optional[str]) -> dict:
    """The config the IPAM plugin is delegated: ours, with the node's
    podCIDR(s) as the ranges when the conflist names none (the agent's node
    setup knows them from the Node object; the conflist on disk need not).
    A dual-stack bridge's "IPv4,IPv6" gives one range set per family, so
    host-local hands out an address of each."""
    ipam = dict(config["ipam"])
    if pod_cidr and not ipam.get("ranges") and not ipam.get("subnet"):
        ipam["ranges"] = [[{"subnet": c, "gateway": gateway_ip(c)}]
                          for c in dual_stack_items(pod_cidr)]
    return dict(config, ipam=ipam)


@dataclass(frozen=True)
class Address:
    """The pod's addresses as the IPAM plugin gave them: IPv4, and a
    dual-stack pod's IPv6 too."""
    interface: ipaddress.IPv4Interface
    gateway: str
    interface6: Optional[ipaddress.IPv6Interface] = None
    gateway6: Optional[str] = None

    @property
    def ip(self) -> str:
        return str(self.interface.ip)

    @property
    def ovsdb_ip(self) -> str:
        """The pod's ``ip-address`` key (docs/ovsdb.md): "IPv4[,IPv6]"."""
        return dual_stack_text(self.ip, str(self.interface6.ip) if self.interface6 else None)

    @property
    def mac(self) -> str:
        """The convention of docs/ovsdb.md: 0a:58 + the IP (as the routers' MACs)."""
        return ip_mac(self.ip)


def ipam_address(result: dict, pod_cidr: Optional[str]) -> Address:
    """The IPv4 address an IPAM result holds, and its IPv6 one if any, each
    with its gateway (the result's, else the podCIDR's first address)."""
    ips = result.get("ips") if isinstance(result, dict) else None
    found = {}                                # version -> (interface, gateway)
    cidrs = {ipaddress.ip_network(c).version: c for c in dual_stack_items(pod_cidr)}
    for item in ips if isinstance(ips, list) else []:
        try:
            iface = ipaddress.ip_interface(item["address"])
        except (TypeError, KeyError, ValueError):
            continue
        if iface.version in found:
            continue
        gw = item.get("gateway") or (gateway_ip(cidrs[iface.version])
                                     if iface.version in cidrs else None)
        if gw is None:
            raise CniError(INVALID_CONFIG, f"the IPAM result has no gateway for {iface} "
                           "and the bridge no podCIDR of its family")
        found[iface.version] = (iface, str(ipaddress.ip_address(gw)))
    if 4 not in found:
        raise CniError(INTERNAL, "the IPAM plugin returned no IPv4 address",
                       json.dumps(result)[:500])
    iface6, gw6 = found.get(6, (None, None))
    return Address(*found[4], interface6=iface6, gateway6=gw6)


def add_result(req: Request, addr: Address, host_if: str, host_mac: str) -> dict:
    """The spec's ADD result for the request's cniVersion."""
    ips = [{"address": str(addr.interface), "gateway": addr.gateway, "interface": 1}]
    routes = [{"dst": "0.0.0.0/0", "gw": addr.gateway}]
    if addr.interface6 is not None:
        ips.append({"address": str(addr.interface6), "gateway": addr.gateway6,
                    "interface": 1})
        routes.append({"dst": "::/0", "gw": addr.gateway6})
    if req.version != "1.0.0":
        for ip in ips:                     # dropped in 1.0.0
            ip["version"] = "6" if ":" in ip["address"] else "4"
    return {
        "cniVersion": req.version,
        "interfaces": [{"name": host_if, "mac": host_mac},
                       {"name": req.ifname, "mac": addr.mac, "sandbox": req.netns}],
        "ips": ips,
        "routes": routes,
        "dns": req.config.get("dns") if isinstance(req.config.get("dns"), dict) else {},
    }


def prev_address(req: Request) -> Optional[Address]:
    """The address ADD returned, from the prevResult a runtime passes to CHECK
    and (when it cached it) DEL; None when there is none."""
    prev = req.config.get("prevResult")
    if not isinstance(prev, dict):
        return None
    try:
        return ipam_address(prev, None)
    except CniError:
        return None
