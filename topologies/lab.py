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
OVSDB exactly as docs/ovsdb.md  say.  The cluster side
(topologies/cluster.py) is an embedded Kubernetes API server, or a real one
with ``--kubeconfig``; the lab is the kubelet of its pods and starts
``ryu-manager controller.app`` watching that API server.  Run it as root
with ``./scripts/lab`` (topologies/run_lab.py).
"""
import functools
import logging
import os
import signal
import subprocess
import time
from typing import List

from controller.addresses import same_family
from controller.bridges import ip_mac
from controller.gateway_fragments import serving_nodes
from controller.names import pool_parts, spread_per_flow
from controller.pipeline import MAX_BUCKETS_PER_GROUP, UDP_SPREAD
from nsx_proxy.endpoint_selection import select
from topologies.cluster import Cluster, demo_service, load_manifests
from topologies.controller_proc import RyuProcess
from topologies.plan import (  # noqa: F401 - the lab's names, kept where tests look
    GATEWAY_FABRIC_IP, INET_GW, INET_GW6, INET_IP, INET_IP6, TCP_TARGET, UDP_TARGET,
    NodeSpec, PodSpec,
    gateway_labels, node_labels, plan_nodes)
from topologies.progress import QUIET
from topologies.sandbox import CniFailed, Runtime
from topologies.waiting import wait_for

LOG = logging.getLogger("lab")
HERE = os.path.dirname(os.path.abspath(__file__))

DEMO_VIP = "10.96.0.10"
DEMO_VIP6 = "fd00:96::a"                # web's IPv6 cluster IP in the dual-stack lab
# Floating-IP pools for LoadBalancer services (and room for pods' FIPs):
# "default" for every namespace, "blue" for namespaces or services that ask.
# default has an IPv6 range too: a dual-stack LoadBalancer gets one of each
FIP_POOLS = ("default=198.51.100.0/25,2001:db8:51::/120;blue=198.51.100.128/25;"
             "seed=101.101.101.0/24")
AUDIT_PERIOD = 2      # the lab checks its bridges for drift often (default 10 s)


def run(cmd, check=True) -> str:
    return subprocess.run(cmd, check=check, capture_output=True, text=True).stdout


@functools.lru_cache(maxsize=None)
def _sandbox_class():
    """A pod's sandbox: a Mininet host whose network the CNI plugin makes, so
    Mininet knows no interface of it (and must not warn that it has none)."""
    from mininet.node import Host

    class Sandbox(Host):
        def defaultIntf(self):
            return super().defaultIntf() if self.intfs else None
    return Sandbox


class Lab:
    """Build, run and tear down one lab; tests share one instance."""

    def __init__(self, nodes=2, pods_per_node=2, controller=None,
                 run_dir="/tmp/nsx-proxy-lab", of_port=6653, kubeconfig=None,
                 manifests=(), status_port=9910, progress=QUIET, audit_period=AUDIT_PERIOD,
                 dual_stack=None):
        # pods with an IPv4 and an IPv6 address (DUAL_STACK: the lab's default)
        self.dual_stack = self.DUAL_STACK if dual_stack is None else dual_stack
        self.nodes = plan_nodes(nodes, pods_per_node, self.dual_stack)
        self.external_controller = controller        # "host:port" or None
        self.run_dir = run_dir
        self.of_port = of_port
        self.kubeconfig = kubeconfig                 # None: the embedded API server
        self.manifests = list(manifests)
        self.status_port = status_port               # the controller's /state, /metrics
        self.audit_period = audit_period             # seconds between drift checks
        self.progress = progress                     # start-up steps, for people
        self.controller_log = os.path.join(run_dir, "controller.log")
        self.controller = None
        self.cluster = None
        self.net = None

    # --- lifecycle ------------------------------------------------------------
    @property
    def pods(self) -> List[PodSpec]:
        return [p for node in self.nodes for p in node.pods]

    def bridge_names(self):
        return [n.bridge for n in self.nodes] + ["br-gw", "fabric"]

    def start(self):
        from mininet.net import Mininet

        step = self.progress.step
        services, labels = load_manifests(self.manifests)
        unknown = set(labels) - {p.name for p in self.pods}
        if unknown:
            raise ValueError(f"manifests label pods the lab does not have: {sorted(unknown)}")
        self._clean_leftovers()
        os.makedirs(self.run_dir, exist_ok=True)
        with step("API server and kubelet" if not self.kubeconfig else
                  f"kubelet for the cluster in {self.kubeconfig}"):
            self.cluster = Cluster(self.run_dir, self.kubeconfig, TCP_TARGET, UDP_TARGET,
                                   api_host=self.api_host)
            # The kubelet registers its Node before any DaemonSet pod runs (an
            # agent's node setup waits for its Node).
            self.cluster.kubelet.register_nodes(self.api_nodes())
        self._start_controllers(step)
        net = Mininet(controller=None, autoSetMacs=False, autoStaticArp=False,
                      build=False, waitConnected=False)
        self._add_topology(net)
        with step(self._topology_summary()):
            net.build()
            net.start()
            self.net = net
            self._set_up_bridges(step)
            self._tune_interfaces()
            if self.dual_stack:                  # the Internet has IPv6 too
                self.net.get("inet").cmd(
                    f"ip -6 addr add {INET_IP6}/64 dev inet-eth0 nodad && "
                    f"ip -6 route add default via {INET_GW6}")
        with step(f"{len(self.pods)} pods attached by nsx-proxy-cni"):
            self._attach_pods()
        with step("pod servers"):
            for pod in self.pods:
                self.start_pod_server(pod.name)
            self.start_pod_server("inet")          # the Internet host answers /ip too
        with step("nodes, pods and services in the API server"):
            kubelet = self.cluster.kubelet
            kubelet.start(self.pods, lambda name: self.net.get(name).pid)
            for body in services or [demo_service(
                    DEMO_VIP, TCP_TARGET, UDP_TARGET,
                    vip6=DEMO_VIP6 if self.dual_stack else None)]:
                self.cluster.apply_service(body)
            for pod in self.pods:
                kubelet.schedule(pod.name, labels.get(pod.name))

    api_host = "127.0.0.1"           # where the embedded API server listens
    DUAL_STACK = True                # pods, nodes and the API server: both families

    def _controller_options(self):
        return {"source": "kubernetes", "kubeconfig": self.cluster.kubeconfig,
                "min_sync_period": 0.1, "fip_pools": FIP_POOLS,
                "default_fip_pool": "default", "audit_period": self.audit_period}

    def _start_controllers(self, step):
        """The central controller: one ryu-manager for every bridge."""
        self.controller = RyuProcess(self.run_dir, self.of_port, self.controller_log, dict(
            self._controller_options(), status_port=self.status_port))
        if not self.external_controller:
            with step(f"controller (ryu-manager on port {self.of_port}, log "
                      f"{self.controller_log})"):
                self.start_controller()

    def _topology_summary(self):
        return (f"topology: {len(self.nodes)} node bridges, br-gw, fabric, "
                f"{len(self.pods)} pods and inet")

    def _add_topology(self, net):
        """Every bridge in this host's Open vSwitch, each a remote controller's."""
        from mininet.node import OVSBridge, OVSSwitch
        from topologies.remote_controller import RemoteController
        if self.external_controller:
            host, _, port = self.external_controller.partition(":")
            ctl_ip, ctl_port = host, int(port or 6653)
        else:
            ctl_ip, ctl_port = "127.0.0.1", self.of_port
        net.addController(RemoteController("c0", ip=ctl_ip, port=ctl_port))
        sw = dict(cls=OVSSwitch, datapath="user", failMode="secure",
                  protocols="OpenFlow13")
        fabric = net.addSwitch("fabric", cls=OVSBridge, datapath="user",
                               dpid="%016x" % 0x3000)
        for node in self.nodes:
            br = net.addSwitch(node.bridge, dpid="%016x" % (0x1000 + node.index), **sw)
            self._add_pods(net, node, br)
            net.addLink(br, fabric)
        gw = net.addSwitch("br-gw", dpid="%016x" % 0x2000, **sw)
        net.addLink(gw, fabric)
        self._add_inet(net, gw)

    def _add_pods(self, net, node, attach_to):
        """Each pod a sandbox with no network: the CNI plugin gives it one
        (``_attach_pods``), on the bridge or host ``attach_to``."""
        for pod in node.pods:
            net.addHost(pod.name, cls=_sandbox_class(), ip=None)

    def cni_runtime(self) -> Runtime:
        return Runtime(os.path.join(self.run_dir, "ipam"))

    def _attach_pods(self):
        """ADD for every pod, as the node's container runtime does when the
        kubelet starts a sandbox (in order, so the plan's addresses hold)."""
        runtime = self.cni_runtime()
        for node in self.nodes:
            for pod in node.pods:
                runtime.add(node, pod, self.net.get(pod.name).pid)

    def _detach_pods(self):
        """DEL for every pod, as a runtime does when a sandbox goes away."""
        runtime = self.cni_runtime()
        for node in self.nodes:
            for pod in node.pods:
                try:
                    runtime.delete(node, pod, self.net.get(pod.name).pid)
                except CniFailed as exc:
                    LOG.warning("%s", exc)

    @staticmethod
    def _add_inet(net, attach_to):
        inet = net.addHost("inet", ip=INET_IP + "/24", mac=ip_mac(INET_IP),
                           defaultRoute=f"via {INET_GW}")
        net.addLink(inet, attach_to)

    def _set_up_bridges(self, step):
        self._label_ovsdb()

    def logs_hint(self):
        return f"Controller log: {self.controller_log}"

    def stop(self):
        if self.cluster is not None:
            self.cluster.stop()
        if self.net is not None:
            for pod in self.pods:
                self.stop_pod_server(pod.name)
            self.stop_pod_server("inet")
            self._detach_pods()
            self.net.stop()
            self.net = None
        if self.controller is not None:
            self.stop_controller()
        if self.cluster is not None:
            self.cluster = None

    def api_nodes(self):
        """The Node objects the lab's kubelet registers: the compute nodes."""
        return self.nodes

    def _clean_leftovers(self):
        """Remove bridges a crashed earlier run left behind (ours only)."""
        for br in self.bridge_names():
            run(["ovs-vsctl", "--if-exists", "del-br", br], check=False)
        run(["ip", "link", "del", "inet-eth0"], check=False)
        # Pods' host ends (nsx + 12 hex digits) die with the pods' namespaces;
        # their addresses are leases in the run directory.
        run(["rm", "-rf", os.path.join(self.run_dir, "ipam")], check=False)

    # --- OVSDB labels (what a CNI plugin would write) ---------------------------
    def _label_ovsdb(self):
        cmds = []
        for node in self.nodes:
            br = self.net.get(node.bridge)
            uplink = br.connectionsTo(self.net.get("fabric"))[0][0].name
            cmds += node_labels(node, uplink, [])     # pods: the CNI plugin's keys
        gw = self.net.get("br-gw")
        cmds += gateway_labels("br-gw", gw.connectionsTo(self.net.get("fabric"))[0][0].name,
                               gw.connectionsTo(self.net.get("inet"))[0][0].name,
                               ipv6=self.dual_stack)
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

    # --- pods -----------------------------------------------------------------------
    def start_pod_server(self, name):
        """Start the pod's server, unless it runs already (a second one could
        not bind, yet its pid would replace the running one's)."""
        pidfile = f"{self.run_dir}/{name}.pid"
        if os.path.exists(pidfile):
            with open(pidfile) as fh:
                pid = fh.read().strip()
            if pid.isdigit() and os.path.exists(f"/proc/{pid}"):
                return
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
    def ofctl(self, command, bridge, *args, check=True) -> str:
        """``ovs-ofctl -O OpenFlow13 COMMAND BRIDGE ARGS`` on the OVS that has
        the bridge (one for the whole lab here)."""
        return run(["ovs-ofctl", "-O", "OpenFlow13", command, bridge, *args], check=check)

    def dump_flows(self, bridge) -> List[str]:
        out = self.ofctl("dump-flows", bridge)
        return [line.strip() for line in out.splitlines() if "cookie=" in line]

    def dump_groups(self, bridge) -> List[str]:
        out = self.ofctl("dump-groups", bridge)
        return [line.strip() for line in out.splitlines() if "group_id=" in line]

    def curl(self, pod, url, timeout=2) -> str:
        return self.net.get(pod).cmd(
            f"curl -s --max-time {timeout} {url}").strip()

    def programmed(self) -> bool:
        """Every node bridge has the groups and buckets the API server's state
        asks of it: per service port, one group per distinct pool (cluster IP,
        external IPs) and family (a dual-stack service's cluster IPs), one
        bucket per endpoint that node may use - or, for a UDP pool, one
        UdpSpread flow per endpoint."""
        state = self.cluster.desired_state()
        for node in self.nodes:
            groups, buckets, picks = 0, 0, 0
            for svc in state.services.values():
                for port in svc.ports:
                    if port.protocol == "SCTP":
                        continue                 # skipped on the userspace datapath
                    chosen = select(svc, port, node.name, state.nodes.get(node.name))
                    pools = [same_family(chosen.internal, ip) for ip in svc.cluster_ips]
                    # an external pool per family with a frontend on this node
                    pools += [same_family(chosen.external, ip)
                              for ip in _external_families(svc, port, node)]
                    if spread_per_flow(svc, port):
                        picks += sum(len(p) for p in pools)
                        continue
                    # a pool too large for one group is split over several
                    groups += sum(pool_parts(svc, port, len(p), MAX_BUCKETS_PER_GROUP)
                                  for p in pools)
                    buckets += sum(len(p) for p in pools)
            have = self.dump_groups(node.bridge)
            if len(have) != groups or sum(g.count("bucket=") for g in have) != buckets:
                return False
            spread = self.ofctl("dump-flows", node.bridge, f"table={UDP_SPREAD.id}")
            if spread.count("nat(dst=") != picks:
                return False
        # The gateway: one group per external / load-balancer IP, a bucket per
        # node that serves it.
        ips = {ip for svc in state.services.values()
               for ip in svc.outside_ips}
        want = sum(len(serving_nodes(state, ip)) for ip in ips)
        have = self.dump_groups("br-gw")
        return len(have) == len(ips) and sum(g.count("bucket=") for g in have) == want


def _external_families(svc, port, node: NodeSpec):
    """One address per family ``svc`` has an outside frontend of on ``node``
    (its externalIPs and LB IPs, its nodePort on the node's InternalIP of a
    family the service has), as controller/node_fragments.py picks them."""
    ips = list(svc.outside_ips)
    if port.node_port and svc.node_ports:
        ips += [ip for ip in node.internal_ips
                if any((":" in ip) == (":" in c) for c in svc.cluster_ips)]
    return [ip for ip in {":" in ip: ip for ip in ips}.values()
            if ":" not in ip or node.internal_ip6]


def scripted_check(lab: Lab) -> bool:
    """Curl every TCP service VIP from one pod per node until each ready
    endpoint has answered (pods answer HTTP on their server port only)."""
    wait_for(lab.programmed, 30, what="flows and groups on every node bridge")
    ok = True
    for svc in lab.cluster.desired_state().services.values():
        for port in svc.ports:
            expected = {e.pod.split("/")[1] for e in port.ready_endpoints()
                        if e.pod and e.port == TCP_TARGET}
            if port.protocol != "TCP" or not expected:
                continue
            url = f"http://{svc.cluster_ip}:{port.port}/"
            for node in lab.nodes:
                client = node.pods[0].name
                seen = set()
                deadline = time.monotonic() + 20
                while not expected <= seen and time.monotonic() < deadline:
                    seen.add(lab.curl(client, url))
                seen.discard("")
                print(f"{client} -> {svc.key} {url} answered by {sorted(seen)}")
                ok &= seen == expected
    return ok


def console(run_dir):
    """Logging for a person at a terminal: our INFO lines go to lab.log in the
    run directory, warnings to the terminal; Mininet at its ``output`` level,
    the one its CLI prints host commands' output with (``warning`` would
    swallow ``pod1 curl ...``)."""
    from mininet.log import setLogLevel
    os.makedirs(run_dir, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    to_file = logging.FileHandler(os.path.join(run_dir, "lab.log"))
    to_file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    to_terminal = logging.StreamHandler()
    to_terminal.setLevel(logging.WARNING)
    root.addHandler(to_file)
    root.addHandler(to_terminal)
    setLogLevel("output")


def interact(lab, hint):
    """Wait for the bridges, then the lab's CLI until ``exit``."""
    from topologies.labcli import LabCLI
    with lab.progress.step("waiting for every bridge to be programmed"):
        wait_for(lab.programmed, 30, what="flows on every node bridge")
    lab.progress.done("lab ready")
    print(f"\nKubeconfig: {lab.cluster.kubeconfig}   {lab.logs_hint()}   "
          f"Lab log: {lab.run_dir}/lab.log\n{hint}\n")
    LabCLI(lab.net, lab=lab)
