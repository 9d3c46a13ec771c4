"""The node bridge in OVSDB: which one is ours, and the pod's port on it.

``ovs-vsctl`` rather than python-ovs' IDL: a plugin runs once per pod and
exits, and one ``ovs-vsctl`` call is one OVSDB transaction that also waits
until ovs-vswitchd has the port (an IDL would fetch the whole database
first).
"""
import json
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional

from controller import bridges as B
from nsx_cni.spec import (INVALID_CONFIG, IO_FAILURE, NOT_AS_ATTACHED, TRY_AGAIN_LATER,
                          CniError)

TIMEOUT = 10                          # seconds ovs-vsctl may wait for OVSDB
CONTAINER_ID = "container-id"         # Interface key: the runtime's container
CNI_IFNAME = "cni-ifname"             # Interface key: CNI_IFNAME in that container


@dataclass(frozen=True)
class NodeBridge:
    name: str
    pod_cidr: Optional[str]
    datapath_type: str

    @property
    def userspace(self) -> bool:
        return self.datapath_type == "netdev"


def vsctl(*args: str, transient=False) -> str:
    cmd = ["ovs-vsctl", f"--timeout={TIMEOUT}"] + list(args)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT + 5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CniError(TRY_AGAIN_LATER if transient else IO_FAILURE,
                       f"ovs-vsctl: {exc}") from None
    if proc.returncode != 0:
        err = proc.stderr.strip()
        # Not answering (OVS starting or restarting): the runtime retries.
        code = TRY_AGAIN_LATER if transient or "database connection failed" in err \
            else IO_FAILURE
        raise CniError(code, f"ovs-vsctl {' '.join(args[:3])}: {err}")
    return proc.stdout


def _rows(text: str) -> List[Dict]:
    table = json.loads(text)
    out = []
    for row in table["data"]:
        item = {}
        for heading, value in zip(table["headings"], row):
            if isinstance(value, list) and value and value[0] == "map":
                value = dict(value[1])
            elif isinstance(value, list) and value and value[0] == "set":
                value = value[1]
            item[heading] = value
        out.append(item)
    return out


def find_bridge(config: dict) -> NodeBridge:
    """The bridge labelled ``nsx-proxy-role=node`` this pod belongs on: the
    config's ``bridge``, else the one of ``nodeName``, else the only one."""
    rows = _rows(vsctl("--format=json", "--data=json",
                       "--columns=name,external_ids,datapath_type",
                       "find", "Bridge", f"external_ids:{B.ROLE}={B.ROLE_NODE}"))
    wanted = config.get("bridge")
    node = config.get("nodeName")
    if wanted:
        rows = [r for r in rows if r["name"] == wanted]
    elif node:
        rows = [r for r in rows if r["external_ids"].get(B.NODE) == node]
    what = f"bridge {wanted}" if wanted else f"a bridge of node {node}" if node \
        else "a bridge"
    if not rows:
        raise CniError(TRY_AGAIN_LATER, f"no OVS bridge labelled "
                       f"external_ids:{B.ROLE}={B.ROLE_NODE} ({what}); the nsx-proxy "
                       "agent's node setup creates it")
    if len(rows) > 1:
        raise CniError(INVALID_CONFIG, f"{len(rows)} bridges are labelled "
                       f"{B.ROLE}={B.ROLE_NODE} ({', '.join(sorted(r['name'] for r in rows))}): "
                       "set \"bridge\" or \"nodeName\" in the network config")
    row = rows[0]
    return NodeBridge(row["name"], row["external_ids"].get(B.POD_CIDR),
                      row["datapath_type"] or "")


def port_ids(namespace: str, name: str, container_id: str, ifname: str,
             ip: str, mac: str) -> Dict[str, str]:
    """The Interface keys docs/ovsdb.md  give a pod."""
    return {B.ROLE: B.ROLE_POD, B.POD_NAMESPACE: namespace, B.POD_NAME: name,
            B.POD_IP: ip, B.POD_MAC: mac, CONTAINER_ID: container_id, CNI_IFNAME: ifname}


def add_port(bridge: str, host_if: str, ids: Dict[str, str]) -> None:
    """The port and every key, in one transaction."""
    vsctl("--", "--may-exist", "add-port", bridge, host_if,
          "--", "set", "Interface", host_if,
          *[f"external_ids:{k}={json.dumps(v)}" for k, v in sorted(ids.items())])


def del_port(host_if: str) -> None:
    vsctl("--if-exists", "del-port", host_if)


def check_port(bridge: str, host_if: str, ids: Dict[str, str]) -> None:
    rows = _rows(vsctl("--format=json", "--data=json", "--columns=name,external_ids,ofport",
                       "find", "Interface", f"name={host_if}"))
    if not rows:
        raise CniError(NOT_AS_ATTACHED, f"{host_if} is not a port in OVSDB")
    have = rows[0]["external_ids"]
    wrong = sorted(k for k, v in ids.items() if have.get(k) != v)
    if wrong:
        raise CniError(NOT_AS_ATTACHED, f"{host_if}: external_ids "
                       f"{', '.join(wrong)} differ from the attachment")
    if not isinstance(rows[0]["ofport"], int) or rows[0]["ofport"] <= 0:
        raise CniError(NOT_AS_ATTACHED, f"{host_if} has no OpenFlow port (ofport "
                       f"{rows[0]['ofport']})")
    on = vsctl("port-to-br", host_if).strip()
    if on != bridge:
        raise CniError(NOT_AS_ATTACHED, f"{host_if} is on bridge {on}, not {bridge}")
