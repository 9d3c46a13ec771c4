"""The multi-host lab: every compute node and the gateway is a host of its own.

::

      pod1 pod2            pod3 pod4
        |   |                |   |
    +---[br-node1]---+   +---[br-node2]---+   +---[br-gw]---+
    | node1: own OVS |   | node2: own OVS |   | gw: own OVS |-- inet
    | agent (node1)  |   | agent (node2)  |   | agent (gw)  |
    +-------|--------+   +-------|--------+   +------|------+
            +------------[ fabric ]------------------+     (the underlay)
    mgmt0 of each host -- nsx-mgmt (172.31.0.1: the API server)

Each host is a network namespace (a Mininet host) running its own
``ovsdb-server`` and ``ovs-vswitchd`` (own run directory, database and
sockets; userspace datapath: two userspace instances in one namespace clash
over the ``ovs-netdev`` tap device) and its own agent, ``ryu-manager
controller.app`` with ``node_name`` set, listening for OpenFlow on the
host's own 127.0.0.1 like a DaemonSet pod with the host network.  The
agents reach the API server over a management link; they elect the one
that writes LoadBalancer IPs with a Lease.  Run it as root::

    ./scripts/lab --hosts            # python -m topologies.run_lab --hosts
"""
import os
import signal
import types
import subprocess
import time

from controller import bridges as B
from controller import node_setup
from controller.bridges import ip_mac
from topologies.controller_proc import RyuProcess
from topologies.lab import Lab, run
from topologies.plan import GATEWAY_FABRIC_IP, GATEWAY_FABRIC_IP6, gateway_labels, node_labels
from topologies.sandbox import Runtime
from topologies.waiting import wait_for

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
MGMT_BRIDGE = "nsx-mgmt"                 # the management network, in the root namespace
MGMT_PREFIX = "172.31.0."                # .1: the API server; .N: host N
GATEWAY_HOST = "gw"
HOST_PORT = "host0"                      # a node's own stack on its bridge
TUNNEL_PORT = node_setup.TUNNEL_PORT     # overlay: the bridge's uplink, Geneve to any host
UNDERLAY_BRIDGE = "br-phy"               # overlay: the NIC and the host's underlay address
GENEVE_OVERHEAD = node_setup.TUNNEL_OVERHEAD   # outer Ethernet, IPv4, UDP, Geneve
SERVICE_CIDR = "10.96.0.0/12"            # the lab's API server allocates cluster IPs here
SERVICE_CIDR6 = "fd00:96::/112"          # ...and its IPv6 ones (topologies/apiserver)
LEASE_NAMESPACE = "nsx-proxy"
# The gateway host is a Node too (as on a cluster, where the gateway agent's
# DaemonSet selects it by label), with a podCIDR from node IPAM but no node
# bridge: the agents must leave it out of every ECMP group and route.
GATEWAY_NODE = types.SimpleNamespace(
    name=GATEWAY_HOST, zone=None, pod_cidr="10.1.250.0/24", pod_cidrs=["10.1.250.0/24"],
    internal_ip=GATEWAY_FABRIC_IP,
    labels={"nsx-proxy.io/gateway": "true"})
# Short lease timings, so a test sees a takeover in seconds (defaults 15/10/2).
LEASE = {"leader_election_lease_duration": 4, "leader_election_renew_deadline": 3,
         "leader_election_retry_period": 1}


class OvsInstance:
    """One host's Open vSwitch: its daemons run in the host's network
    namespace; the clients (ovs-vsctl, ovs-ofctl) reach them through the
    sockets in the host's run directory from anywhere."""

    def __init__(self, host, run_dir):
        self.host = host                     # the Mininet host (its namespace)
        self.dir = run_dir
        self.db = f"unix:{run_dir}/db.sock"
        self.env = dict(os.environ, OVS_RUNDIR=run_dir, OVS_DBDIR=run_dir,
                        OVS_LOGDIR=run_dir)

    def _daemon(self, *cmd):
        subprocess.run(["nsenter", f"--net=/proc/{self.host.pid}/ns/net", *cmd],
                       check=True, env=self.env, capture_output=True, text=True)

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        conf = os.path.join(self.dir, "conf.db")
        if not os.path.exists(conf):
            subprocess.run(["ovsdb-tool", "create", conf, SCHEMA], check=True)
        self._daemon("ovsdb-server", conf, f"--remote=punix:{self.dir}/db.sock",
                     *self._files("ovsdb-server"), "--detach")
        self.vsctl("--no-wait", "init")
        self.start_vswitchd()

    def start_vswitchd(self):
        self._daemon("ovs-vswitchd", self.db, *self._files("ovs-vswitchd"), "--detach")

    def _files(self, daemon):
        return [f"--pidfile={self.dir}/{daemon}.pid", f"--unixctl={self.dir}/{daemon}.ctl",
                f"--log-file={self.dir}/{daemon}.log"]

    def pid(self, daemon):
        try:
            with open(f"{self.dir}/{daemon}.pid") as fh:
                return int(fh.read().strip())
        except (OSError, ValueError):
            return None

    def stop_daemon(self, daemon, sig=signal.SIGTERM):
        pid = self.pid(daemon)
        if pid is None:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10, what=f"{daemon} to exit")

    def stop(self):
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            self.stop_daemon(daemon)

    def vsctl(self, *args) -> str:
        return subprocess.run(["ovs-vsctl", f"--db={self.db}", "--timeout=10", *args],
                              check=True, env=self.env, capture_output=True,
                              text=True).stdout

    def ofctl(self, *args, check=True) -> str:
        return subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", *args], check=check,
                              env=self.env, capture_output=True, text=True).stdout


class HostsLab(Lab):
    """The lab with one Open vSwitch and one agent per host (see the module)."""

    api_host = MGMT_PREFIX + "1"

    def __init__(self, nodes=2, pods_per_node=2, run_dir="/tmp/nsx-proxy-hosts",
                 overlay=True, lease=None, writers=None, **kw):
        super().__init__(nodes, pods_per_node, run_dir=run_dir, **kw)
        self.overlay = overlay               # Geneve between hosts; False: the L2 fabric
        self.lease = LEASE if lease is None else lease   # the agents' Lease timings
        # the hosts whose agents have the floating-IP pools, so campaign for
        # the writer Lease (None: every one, so the tests see a takeover;
        # deploy/ gives them to the gateway agents only)
        self.writers = writers
        self.ovs = {}                        # host name -> OvsInstance
        self.agents = {}                     # host name -> RyuProcess
        self.agent_env = {}                  # more environment for agents started next

    # --- names ---------------------------------------------------------------
    @property
    def hosts(self):
        """(host name, its bridge, its index on the management network)."""
        return [(n.name, n.bridge, n.index + 1) for n in self.nodes] + \
               [(GATEWAY_HOST, "br-gw", 250)]

    def api_nodes(self):
        return list(self.nodes) + [GATEWAY_NODE]

    def _node(self, name):
        return next(n for n in self.nodes if n.name == name)

    def host_of(self, bridge):
        return next(name for name, br, _ in self.hosts if br == bridge)

    def bridge_of(self, host):
        return next(br for name, br, _ in self.hosts if name == host)

    def logs_hint(self):
        return f"Agent logs: {self.run_dir}/HOST/agent.log"

    def agent_log(self, host):
        return os.path.join(self.run_dir, host, "agent.log")

    def _topology_summary(self):
        return (f"hosts: {', '.join(h for h, _, _ in self.hosts)}, each with its own "
                f"OVS and agent; fabric, {len(self.pods)} pods and inet")

    # --- building --------------------------------------------------------------
    def _clean_leftovers(self):
        """Daemons and links a crashed earlier run left behind (ours only, by pid)."""
        for name, _, _ in self.hosts:
            for what in ("agent", "ovs-vswitchd", "ovsdb-server"):
                try:
                    with open(os.path.join(self.run_dir, name, f"{what}.pid")) as fh:
                        pid = int(fh.read().strip())
                    # only if that PID still is ours (PIDs are reused)
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        if self.run_dir.encode() in fh.read():
                            os.kill(pid, signal.SIGKILL)
                except (OSError, ValueError):
                    pass
        run(["ip", "link", "del", MGMT_BRIDGE], check=False)
        for name, _, _ in self.hosts:
            run(["ip", "link", "del", f"mg-{name}"], check=False)
        run(["rm", "-rf", *[os.path.join(self.run_dir, h) for h, _, _ in self.hosts]],
            check=False)
        super()._clean_leftovers()           # the fabric, in this host's OVS
        # The API server binds the management address: the bridge comes first.
        run(["ip", "link", "add", MGMT_BRIDGE, "type", "bridge"])
        run(["ip", "addr", "add", self.api_host + "/24", "dev", MGMT_BRIDGE])
        run(["ip", "link", "set", MGMT_BRIDGE, "up"])

    def bridge_names(self):
        return ["fabric"]                    # the only bridge in this host's OVS

    def _start_controllers(self, step):
        """The agents start once their hosts exist (_set_up_bridges)."""
        from kubernetes.client.exceptions import ApiException
        try:        # where the Lease lives, as deploy/namespace.yaml makes it
            self.cluster.core.create_namespace({"metadata": {"name": LEASE_NAMESPACE}})
        except ApiException as exc:
            if exc.status != 409:
                raise

    def _add_topology(self, net):
        from mininet.node import OVSBridge
        fabric = net.addSwitch("fabric", cls=OVSBridge, datapath="user",
                               dpid="%016x" % 0x3000)
        for node in self.nodes:
            host = net.addHost(node.name, ip=None)
            self._add_pods(net, node, host)
            net.addLink(host, fabric)
        gw = net.addHost(GATEWAY_HOST, ip=None)
        net.addLink(gw, fabric)
        self._add_inet(net, gw)

    def _set_up_bridges(self, step):
        for name, bridge, index in self.hosts:
            host = self.net.get(name)
            self._mgmt_link(host, name, index)
            ovs = self.ovs[name] = OvsInstance(host, os.path.join(self.run_dir, name))
            ovs.start()
            # In the lab's CLI, "node1 ovs-ofctl dump-flows br-node1" and
            # "node1 ovs-vsctl show" then talk to that host's own OVS.
            host.cmd(f"export OVS_RUNDIR={ovs.dir} OVS_DBDIR={ovs.dir} OVS_LOGDIR={ovs.dir}")
            ports = [i.name for i in host.intfList() if i.name not in ("lo", "mgmt0")]
            if self.overlay:          # the uplink is the underlay NIC, the bridge's a tunnel
                uplink = self._uplink(name)
                ports.remove(uplink)
                self._underlay(host, ovs, uplink, self._underlay_ip(name),
                               self._underlay_ip6(name))
                ports.append(TUNNEL_PORT)
            if self._agent_sets_up(name):
                continue              # its agent makes the bridge (node_setup)
            dpid = "%016x" % ((0x1000 + index - 1) if name != GATEWAY_HOST else 0x2000)
            # No controller target: the agent dials the bridge's management
            # socket (bridge_connection = mgmt); no in-band control.
            cmds = ["add-br", bridge, "--", "set", "bridge", bridge,
                    "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13",
                    f"other-config:datapath-id={dpid}", "other-config:disable-in-band=true"]
            for port in ports:
                cmds += ["--", "add-port", bridge, port]
            if self.overlay:
                cmds += ["--", "set", "interface", TUNNEL_PORT, "type=geneve",
                         "options:remote_ip=flow"]
            ovs.vsctl(*cmds)
            ovs.vsctl(*self._labels(name, bridge))
            if name != GATEWAY_HOST:
                self._host_stack(host, ovs, self._node(name))
        for name, _, _ in self.hosts:
            self.start_agent(name)
        for name, _, _ in self.hosts:
            self.wait_ready(name)
            if self._agent_sets_up(name):
                # The lab's hosts have no other way out than their bridge:
                # the default route, which a real node has on its NIC.
                node = self._node(name)
                self.net.get(name).cmd(f"ip route replace default via {node.gateway_ip} "
                                       f"dev {node_setup.HOST_PORT} onlink")
                if node.pod_cidr6:
                    self.net.get(name).cmd(
                        f"ip -6 route replace default via {B.gateway_ip(node.pod_cidr6)} "
                        f"dev {node_setup.HOST_PORT} onlink")

    def _agent_sets_up(self, name):
        """Overlay mode: each node's agent makes its bridge, Geneve port and
        host port (node_setup), as the DaemonSet's agents do; the lab only
        gives the host its underlay (br-phy) and the gateway its bridge."""
        return self.overlay and name != GATEWAY_HOST

    def _underlay_ip(self, name):
        return GATEWAY_FABRIC_IP if name == GATEWAY_HOST else self._node(name).internal_ip

    def _underlay_ip6(self, name):
        """A dual-stack lab's hosts have an IPv6 address on the underlay too
        (a node's: its IPv6 InternalIP), so they reach each other's over it."""
        if not self.dual_stack:
            return None
        return GATEWAY_FABRIC_IP6 if name == GATEWAY_HOST else self._node(name).internal_ip6

    @staticmethod
    def _underlay(host, ovs, nic, ip, ip6=None):
        """The host's underlay on the userspace datapath: the NIC is a port of
        a plain bridge ``br-phy`` whose internal port holds the host's
        address, so OVS's own route and neighbour tables (``ovs/route``,
        ``tnl/neigh``, learnt from the kernel) send the tunnels out by it.
        The kernel datapath would tunnel from an address on the NIC itself."""
        ovs.vsctl("add-br", UNDERLAY_BRIDGE, "--", "set", "bridge", UNDERLAY_BRIDGE,
                  "datapath_type=netdev", "--", "add-port", UNDERLAY_BRIDGE, nic)
        host.cmd(f"ip addr add {ip}/24 dev {UNDERLAY_BRIDGE} && "
                 + (f"ip addr add {ip6}/64 dev {UNDERLAY_BRIDGE} nodad && " if ip6 else "")
                 + f"ip link set {UNDERLAY_BRIDGE} up && "
                 f"ethtool -K {UNDERLAY_BRIDGE} tx off >/dev/null 2>&1")

    def cni_runtime(self) -> Runtime:
        """The plugin runs in the node's namespace, against the node's own
        OVS (ovs-vsctl finds it by OVS_RUNDIR), as on a real node."""
        return Runtime(os.path.join(self.run_dir, "ipam"),
                       netns_of=lambda node: f"/proc/{self.net.get(node.name).pid}/ns/net",
                       env_of=lambda node: {"OVS_RUNDIR": self.ovs[node.name].dir},
                       mtu=self.pod_mtu)

    @property
    def pod_mtu(self):
        """Geneve over IPv4 adds 50 bytes to each frame; the underlay's MTU is
        1500 (as Antrea's default for Geneve)."""
        return 1500 - GENEVE_OVERHEAD if self.overlay else None

    def wait_ready(self, name, timeout=30):
        """Until the agent's /readyz says ok (every list in, its bridges
        connected and programmed), as a DaemonSet rollout waits for it."""
        wait_for(lambda: self.status(name, "/readyz").strip() == "ok", timeout,
                 what=f"{name}'s agent to be ready (see {self.agent_log(name)})")

    def _host_stack(self, host, ovs, node):
        """The node's own network stack on its bridge, as a CNI plugin wires
        it (Antrea's antrea-gw0): an internal port holding the node IP (a
        /32: everything else is routed through the bridge, whose pod gateway
        address it uses as the default route)."""
        mac = ip_mac(node.internal_ip)
        ovs.vsctl("add-port", node.bridge, HOST_PORT, "--", "set", "interface", HOST_PORT,
                  "type=internal", f'mac="{mac}"',
                  f"external_ids:{B.ROLE}={B.ROLE_HOST}",
                  f"external_ids:{B.POD_IP}="
                  f"{B.dual_stack_text(node.internal_ip, node.internal_ip6)}",
                  f"external_ids:{B.POD_MAC}={mac}")
        mtu = f"ip link set {HOST_PORT} mtu {self.pod_mtu} && " if self.pod_mtu else ""
        ipv6 = (f"ip addr add {node.internal_ip6}/128 dev {HOST_PORT} nodad && "
                f"ip -6 route add default via {B.gateway_ip(node.pod_cidr6)} "
                f"dev {HOST_PORT} onlink && ") if node.internal_ip6 else ""
        host.cmd(f"{mtu}ip link set {HOST_PORT} up && "
                 f"ip addr add {node.internal_ip}/32 dev {HOST_PORT} && "
                 f"ip route add default via {node.gateway_ip} dev {HOST_PORT} onlink && "
                 f"{ipv6}ethtool -K {HOST_PORT} tx off >/dev/null 2>&1")

    def _mgmt_link(self, host, name, index):
        run(["ip", "link", "add", f"mg-{name}", "type", "veth", "peer", "name", "mgmt0",
             "netns", str(host.pid)])
        run(["ip", "link", "set", f"mg-{name}", "master", MGMT_BRIDGE, "up"])
        host.cmd(f"ip addr add {MGMT_PREFIX}{index}/24 dev mgmt0 && ip link set mgmt0 up")

    def _uplink(self, name):
        host = self.net.get(name)
        return host.connectionsTo(self.net.get("fabric"))[0][0].name

    def _labels(self, name, bridge):
        """The labels of this host's bridge and its uplinks (the pods' ports get
        theirs from the CNI plugin)."""
        host = self.net.get(name)
        uplink = TUNNEL_PORT if self.overlay else self._uplink(name)
        if name == GATEWAY_HOST:
            return gateway_labels(bridge, uplink,
                                  host.connectionsTo(self.net.get("inet"))[0][0].name,
                                  ipv6=self.dual_stack)
        return node_labels(self._node(name), uplink, [])   # pods: the CNI's

    def _tune_interfaces(self):
        """veth TX checksum offload breaks userspace conntrack: off, on every host."""
        for host in self.net.hosts:
            self._tune_host(host.name)
        for intf in self.net.get("fabric").intfList():
            if intf.name != "lo":
                run(["ethtool", "-K", intf.name, "tx", "off"], check=False)

    # --- agents ------------------------------------------------------------------
    def agent_options(self, name):
        ovs = self.ovs[name]
        setup = dict(node_setup="true", node_bridge=self._node(name).bridge,
                     datapath_type="netdev", tunnel_type="geneve",
                     service_cidr=SERVICE_CIDR + (f",{SERVICE_CIDR6}" if self.dual_stack
                                                  else "")) if self._agent_sets_up(name) else {}
        options = self._controller_options()
        if self.writers is not None and name not in self.writers:
            options.pop("fip_pools")
        return dict(options, node_name=name, bridge_connection="mgmt",
                    gateway=str(name == GATEWAY_HOST).lower(), ovsdb=ovs.db,
                    status_port=self.status_port,
                    leader_election_namespace=LEASE_NAMESPACE, **self.lease, **setup)

    def start_agent(self, name):
        agent = self.agents.get(name)
        if agent is None:
            agent = self.agents[name] = RyuProcess(
                os.path.join(self.run_dir, name), self.of_port, self.agent_log(name),
                self.agent_options(name), netns_pid=self.net.get(name).pid)
        agent.env = dict(self.agent_env)
        agent.start()
        with open(os.path.join(self.run_dir, name, "agent.pid"), "w") as fh:
            fh.write(str(agent.proc.pid))

    def stop_agent(self, name, sig=signal.SIGTERM):
        self.agents[name].stop(sig)

    def start_controller(self):
        for name, _, _ in self.hosts:
            self.start_agent(name)

    def stop_controller(self, sig=signal.SIGTERM):
        for name in list(self.agents):
            self.stop_agent(name, sig)

    def restart_ovs(self, name):
        """Stop this host's ovs-vswitchd and start it again: its datapath,
        flows and groups are gone; the database (bridges, labels) stays."""
        ovs = self.ovs[name]
        ovs.stop_daemon("ovs-vswitchd")
        ovs.start_vswitchd()
        self._tune_host(name)

    def _tune_host(self, name):
        host = self.net.get(name)
        for intf in host.intfList():
            if intf.name != "lo":
                host.cmd(f"ethtool -K {intf.name} tx off >/dev/null 2>&1")

    def stop(self):
        """Everything, in order, each step even if an earlier one failed
        (an interrupted run must not leave bridges, links or daemons)."""
        steps = [lambda name=name: self.stop_agent(name) for name in list(self.agents)]
        if self.cluster is not None:
            steps.append(self.cluster.stop)
        if self.net is not None:
            steps += [lambda pod=pod: self.stop_pod_server(pod.name) for pod in self.pods]
            steps.append(lambda: self.stop_pod_server("inet"))
            steps.append(self._detach_pods)       # while each host's OVS still runs
        # Daemons in a host's namespace keep it alive: they go before the hosts.
        steps += [ovs.stop for ovs in self.ovs.values()]
        if self.net is not None:
            steps.append(self.net.stop)
        steps.append(lambda: run(["ip", "link", "del", MGMT_BRIDGE], check=False))
        steps.append(lambda: run(["ovs-vsctl", "--if-exists", "del-br", "fabric"],
                                 check=False))
        errors = []
        for step in steps:
            try:
                step()
            except BaseException as exc:    # noqa: B036 - finish cleaning, then raise
                errors.append(exc)
        self.agents.clear()
        self.ovs.clear()
        self.net = self.cluster = None
        if errors:
            raise errors[0]

    # --- observing ----------------------------------------------------------------
    def ofctl(self, command, bridge, *args, check=True) -> str:
        return self.ovs[self.host_of(bridge)].ofctl(command, bridge, *args, check=check)

    def status(self, name, path) -> str:
        """GET an agent's status endpoint from inside its host (127.0.0.1 only)."""
        return self.net.get(name).cmd(
            f"curl -s --max-time 5 http://127.0.0.1:{self.status_port}{path}")

    def lease_holder(self):
        from kubernetes import client
        try:
            lease = client.CoordinationV1Api(self.cluster.api).read_namespaced_lease(
                "nsx-proxy-lb-writer", LEASE_NAMESPACE)
        except client.ApiException:
            return None
        return lease.spec.holder_identity

    def leading(self, name) -> bool:
        """Whether this host's agent says (in /metrics) it holds the Lease."""
        return any(line.split()[-1] in ("1", "1.0") for line in
                   self.status(name, "/metrics").splitlines()
                   if line.startswith("nsx_proxy_leader "))

    def wait_leader(self, timeout=20):
        """The host whose running agent holds the writer Lease (the Lease may
        still name a killed agent until it runs out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            holder = self.lease_holder()
            host = holder.rsplit("_", 1)[0] if holder else None
            agent = self.agents.get(host)
            if agent is not None and agent.proc is not None and self.leading(host):
                return host
            time.sleep(0.2)
        raise TimeoutError("no running agent holds the writer Lease")
