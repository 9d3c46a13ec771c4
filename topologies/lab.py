"""The Mininet lab: compute nodes with pods, a fabric, a gateway, the Internet.

::

      pod1 pod2        pod3 pod4
        |   |            |   |
      [br-node1]       [br-node2]      node bridges: programmed by the controller
            \\             /
             [  fabric   ]             a plain learning switch (the underlay)
                   |
               [br-gw] -- inet         gateway router bridge and an Internet host

Every bridge is an OVS userspace (netdev) bridge in secure fail mode that
speaks OpenFlow 1.3 to the controller; the lab labels bridges and ports in
OVSDB exactly as the README's "OVSDB conventions" say, writes the cluster
state file, and starts ``ryu-manager controller.app``.  Run it as root::

    python -m topologies.lab             # interactive Mininet CLI
    python -m topologies.lab --check     # scripted check, exit status
"""
import argparse
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List

import yaml

from controller import bridges as B
from topologies.controller_proc import RyuProcess
from topologies.waiting import wait_for

LOG = logging.getLogger("lab")
HERE = os.path.dirname(os.path.abspath(__file__))

SERVICE_CIDR = "10.96.0.0/16"
DEMO_VIP = "10.96.0.10"
TCP_TARGET = 8080
UDP_TARGET = 5353
INET_IP = "203.0.113.10"
INET_GW = "203.0.113.1"


def run(cmd, check=True) -> str:
    return subprocess.run(cmd, check=check, capture_output=True, text=True).stdout


def ip_mac(ip: str) -> str:
    """0a:58 + the IPv4 address, the MAC convention OVN-Kubernetes uses for pods."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


@dataclass
class PodSpec:
    name: str
    node: str
    ip: str
    labels: Dict[str, str] = field(default_factory=lambda: {"app": "web"})

    @property
    def mac(self) -> str:
        return ip_mac(self.ip)


@dataclass
class NodeSpec:
    name: str
    index: int
    bridge: str
    internal_ip: str
    pod_cidr: str
    pods: List[PodSpec] = field(default_factory=list)

    @property
    def gateway_ip(self) -> str:
        return B.gateway_ip(self.pod_cidr)


def plan_nodes(node_count: int, pods_per_node: int) -> List[NodeSpec]:
    """Names and addresses: node k has 10.1.k.0/24, pods are numbered globally."""
    nodes, n = [], 0
    for k in range(1, node_count + 1):
        node = NodeSpec(name=f"node{k}", index=k, bridge=f"br-node{k}",
                        internal_ip=f"192.168.100.{k}", pod_cidr=f"10.1.{k}.0/24")
        for i in range(pods_per_node):
            n += 1
            node.pods.append(PodSpec(name=f"pod{n}", node=node.name,
                                     ip=f"10.1.{k}.{i + 2}"))
        nodes.append(node)
    return nodes


def demo_service(pods, name="web", vip=DEMO_VIP, ready=None):
    """A ClusterIP service over ``pods``: TCP 80->8080 and UDP 53->5353."""
    ready = set(p.name for p in pods) if ready is None else set(ready)
    return {
        "namespace": "default", "name": name, "clusterIP": vip,
        "ports": [
            {"name": "http", "protocol": "TCP", "port": 80, "targetPort": TCP_TARGET},
            {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": UDP_TARGET},
        ],
        "endpoints": [{"ip": p.ip, "node": p.node, "pod": f"default/{p.name}",
                       "ready": p.name in ready} for p in pods],
    }


class Lab:
    """Build, run and tear down one lab; tests share one instance."""

    def __init__(self, nodes=2, pods_per_node=2, controller=None,
                 run_dir="/tmp/nsx-proxy-lab", of_port=6653):
        self.nodes = plan_nodes(nodes, pods_per_node)
        self.external_controller = controller        # "host:port" or None
        self.run_dir = run_dir
        self.of_port = of_port
        self.state_file = os.path.join(run_dir, "state.yaml")
        self.controller_log = os.path.join(run_dir, "controller.log")
        self.controller = RyuProcess(run_dir, self.state_file, of_port,
                                     self.controller_log)
        self.net = None
        self.services = []

    # --- lifecycle ------------------------------------------------------------
    @property
    def pods(self) -> List[PodSpec]:
        return [p for node in self.nodes for p in node.pods]

    def bridge_names(self):
        return [n.bridge for n in self.nodes] + ["br-gw", "fabric"]

    def start(self):
        from mininet.net import Mininet
        from mininet.node import OVSBridge, OVSSwitch, RemoteController

        self._clean_leftovers()
        os.makedirs(self.run_dir, exist_ok=True)
        self.services = [demo_service(self.pods)]
        self.write_state()
        if self.external_controller:
            host, _, port = self.external_controller.partition(":")
            ctl_ip, ctl_port = host, int(port or 6653)
        else:
            ctl_ip, ctl_port = "127.0.0.1", self.of_port
            self.start_controller()

        net = Mininet(controller=None, autoSetMacs=False, autoStaticArp=False,
                      build=False, waitConnected=False)
        net.addController(RemoteController("c0", ip=ctl_ip, port=ctl_port))
        sw = dict(cls=OVSSwitch, datapath="user", failMode="secure",
                  protocols="OpenFlow13")
        fabric = net.addSwitch("fabric", cls=OVSBridge, datapath="user",
                               dpid="%016x" % 0x3000)
        for node in self.nodes:
            br = net.addSwitch(node.bridge, dpid="%016x" % (0x1000 + node.index), **sw)
            for pod in node.pods:
                host = net.addHost(pod.name, ip=pod.ip + "/24", mac=pod.mac,
                                   defaultRoute=f"via {node.gateway_ip}")
                net.addLink(host, br)
            net.addLink(br, fabric)
        gw = net.addSwitch("br-gw", dpid="%016x" % 0x2000, **sw)
        net.addLink(gw, fabric)
        inet = net.addHost("inet", ip=INET_IP + "/24", mac=ip_mac(INET_IP),
                           defaultRoute=f"via {INET_GW}")
        net.addLink(inet, gw)
        net.build()
        net.start()
        self.net = net
        self._label_ovsdb()
        self._tune_interfaces()
        for pod in self.pods:
            self.start_pod_server(pod.name)

    def stop(self):
        if self.net is not None:
            for pod in self.pods:
                self.stop_pod_server(pod.name)
            self.net.stop()
            self.net = None
        self.stop_controller()

    def _clean_leftovers(self):
        """Remove bridges a crashed earlier run left behind (ours only)."""
        for br in self.bridge_names():
            run(["ovs-vsctl", "--if-exists", "del-br", br], check=False)
        for pod in self.pods + [PodSpec("inet", "", INET_IP)]:
            run(["ip", "link", "del", f"{pod.name}-eth0"], check=False)

    # --- OVSDB labels (what a CNI plugin would write) ---------------------------
    def _label_ovsdb(self):
        cmds = []
        for node in self.nodes:
            cmds += ["--", "set", "bridge", node.bridge,
                     f"external_ids:{B.ROLE}={B.ROLE_NODE}",
                     f"external_ids:{B.NODE}={node.name}",
                     f"external_ids:{B.POD_CIDR}={node.pod_cidr}"]
            br = self.net.get(node.bridge)
            for pod in node.pods:
                host = self.net.get(pod.name)
                ifname = host.defaultIntf().link.intf2.name
                cmds += ["--", "set", "interface", ifname,
                         f"external_ids:{B.ROLE}={B.ROLE_POD}",
                         f"external_ids:{B.POD_NAMESPACE}=default",
                         f"external_ids:{B.POD_NAME}={pod.name}",
                         f"external_ids:{B.POD_IP}={pod.ip}",
                         f"external_ids:{B.POD_MAC}={pod.mac}"]
            uplink = br.connectionsTo(self.net.get("fabric"))[0][0].name
            cmds += ["--", "set", "interface", uplink,
                     f"external_ids:{B.ROLE}={B.ROLE_UPLINK}"]
        gw = self.net.get("br-gw")
        cmds += ["--", "set", "bridge", "br-gw", f"external_ids:{B.ROLE}={B.ROLE_GATEWAY}",
                 "--", "set", "interface",
                 gw.connectionsTo(self.net.get("fabric"))[0][0].name,
                 f"external_ids:{B.ROLE}={B.ROLE_UPLINK}"]
        run(["ovs-vsctl"] + cmds)
        # Reconnect fast after a controller restart (the default backs off to 8 s).
        for uuid in run(["ovs-vsctl", "--bare", "--columns=_uuid", "find",
                         "controller"]).split():
            run(["ovs-vsctl", "set", "controller", uuid, "max_backoff=1000",
                 "inactivity_probe=5000"])

    def _tune_interfaces(self):
        """veth TX checksum offload breaks userspace conntrack (+inv): turn it off."""
        for host in [self.net.get(p.name) for p in self.pods] + [self.net.get("inet")]:
            for intf in host.intfList():
                host.cmd(f"ethtool -K {intf.name} tx off >/dev/null 2>&1")
        for sw in self.net.switches:
            for intf in sw.intfList():
                if intf.name != "lo":
                    run(["ethtool", "-K", intf.name, "tx", "off"], check=False)

    # --- controller -------------------------------------------------------------
    def start_controller(self):
        self.controller.start()

    def stop_controller(self, sig=signal.SIGTERM):
        self.controller.stop(sig)

    def restart_controller(self, sig=signal.SIGKILL):
        self.stop_controller(sig)
        self.start_controller()

    # --- cluster state ------------------------------------------------------------
    def write_state(self):
        """Write the state file atomically: the controller never reads half a file."""
        doc = {"nodes": [{"name": n.name, "internalIP": n.internal_ip,
                          "podCIDR": n.pod_cidr} for n in self.nodes],
               "services": self.services}
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as fh:
            yaml.safe_dump(doc, fh, sort_keys=False)
        os.replace(tmp, self.state_file)

    # --- pods -----------------------------------------------------------------------
    def start_pod_server(self, name):
        host = self.net.get(name)
        host.cmd(f"python3 {HERE}/podserver.py --name {name} --tcp {TCP_TARGET} "
                 f"--udp {UDP_TARGET} > /tmp/podserver-{name}.log 2>&1 & "
                 f"echo $! > {self.run_dir}/{name}.pid")
        wait_for(lambda: f":{TCP_TARGET} " in host.cmd("ss -ltn"), 10,
                 what=f"{name}'s server")

    def stop_pod_server(self, name):
        pidfile = f"{self.run_dir}/{name}.pid"
        if os.path.exists(pidfile):
            with open(pidfile) as fh:
                pid = fh.read().strip()
            if pid.isdigit():
                try:
                    os.kill(int(pid), signal.SIGTERM)
                except ProcessLookupError:
                    pass
            os.remove(pidfile)

    # --- observing ----------------------------------------------------------------
    def dump_flows(self, bridge) -> List[str]:
        out = run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge])
        return [line.strip() for line in out.splitlines() if "cookie=" in line]

    def dump_groups(self, bridge) -> List[str]:
        out = run(["ovs-ofctl", "-O", "OpenFlow13", "dump-groups", bridge])
        return [line.strip() for line in out.splitlines() if "group_id=" in line]

    def curl(self, pod, url, timeout=2) -> str:
        return self.net.get(pod).cmd(
            f"curl -s --max-time {timeout} {url}").strip()

    def programmed(self) -> bool:
        """Every node bridge has its service groups with one bucket per ready endpoint."""
        for node in self.nodes:
            groups = self.dump_groups(node.bridge)
            want = [svc for svc in self.services for _ in svc["ports"]]
            if len(groups) != len(want):
                return False
            for svc in self.services:
                ready = sum(1 for e in svc["endpoints"] if e.get("ready", True))
                if sum(g.count("bucket=") for g in groups) < ready:
                    return False
        return True


def scripted_check(lab: Lab) -> bool:
    """Curl the demo VIP from one pod per node until every pod has answered."""
    wait_for(lab.programmed, 30, what="flows and groups on every node bridge")
    expected = {p.name for p in lab.pods}
    ok = True
    for node in lab.nodes:
        client = node.pods[0].name
        seen = set()
        deadline = time.monotonic() + 20
        while seen != expected and time.monotonic() < deadline:
            seen.add(lab.curl(client, f"http://{DEMO_VIP}:80/"))
        seen.discard("")
        print(f"{client} -> {DEMO_VIP}:80 answered by {sorted(seen)}")
        ok &= seen == expected
    return ok


def main(argv=None):
    parser = argparse.ArgumentParser(description="nsx-proxy Mininet lab")
    parser.add_argument("--nodes", type=int, default=2, help="compute nodes (default 2)")
    parser.add_argument("--pods-per-node", type=int, default=2)
    parser.add_argument("--controller", metavar="HOST:PORT",
                        help="use a controller that is already running instead "
                             "of starting ryu-manager")
    parser.add_argument("--check", action="store_true",
                        help="run the scripted check and exit with its status")
    parser.add_argument("--run-dir", default="/tmp/nsx-proxy-lab")
    args = parser.parse_args(argv)
    if not 1 <= args.nodes <= 250 or not 1 <= args.pods_per_node <= 250:
        parser.error("--nodes and --pods-per-node must be 1-250")
    logging.basicConfig(level=logging.INFO)
    from mininet.log import setLogLevel
    setLogLevel("warning")
    lab = Lab(args.nodes, args.pods_per_node, args.controller, args.run_dir)
    try:
        lab.start()
        if args.check:
            return 0 if scripted_check(lab) else 1
        from mininet.cli import CLI
        wait_for(lab.programmed, 30, what="flows on every node bridge")
        print(f"\nService default/web: {DEMO_VIP}:80/TCP -> :{TCP_TARGET}, "
              f"{DEMO_VIP}:53/UDP -> :{UDP_TARGET} over {len(lab.pods)} pods.\n"
              f"Try: pod1 curl -s {DEMO_VIP}   |   sh ovs-ofctl -O OpenFlow13 "
              f"dump-groups br-node1\nState file: {lab.state_file}  Controller log: "
              f"{lab.controller_log}\n")
        CLI(lab.net)
        return 0
    finally:
        lab.stop()
        shutil.rmtree(args.run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
