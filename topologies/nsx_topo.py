"""The classic Ryu + Mininet workflow: a topology for ``mn --custom``.

Terminal 1, the controller (from the repository, as root)::

    python3 -m topologies.nsx_topo state --nodes 3 --pods 2 > /tmp/nsx-state.yaml
    .venv/bin/ryu-manager --config-file topologies/examples/file-source.conf controller.app

Terminal 2, the network::

    sudo mn --custom topologies/nsx_topo.py --topo nsx,nodes=3,pods=2 \\
        --controller remote,port=6653 --switch ovs,protocols=OpenFlow13

then ``pingall``, ``pod1 curl -s 10.96.0.10`` and ``sh ovs-ofctl -O OpenFlow13
dump-groups br-node1`` at the ``mininet>`` prompt.  With an API server
instead of the state file: topologies/examples/api-source.conf and
``python -m topologies.mn_kubelet`` (the Nodes and Pods of this topology).  The topology is the
lab's: compute nodes ``br-nodeK`` (podCIDR 10.1.K.0/24) with pods
``pod1..``, a learning ``fabric``, the gateway router ``br-gw`` and the
Internet host ``inet`` (203.0.113.10).  Every bridge and port is labelled in
OVSDB as docs/ovsdb.md  say, when its switch starts, so
the controller knows what it is looking at.  Each pod runs the lab's pod
server (HTTP on 8080: its own name; UDP 5353).

The bridge classes are set per switch by the topology (``--switch`` only
picks the class of switches a topology does not name): node and gateway
bridges use fail mode secure, OpenFlow 1.3 and the userspace datapath when
this host has no openvswitch kernel module.

Your own topology: subclass :class:`NsxTopo` (or build one from
``NodeBridge``, ``GatewayBridge``, ``FabricSwitch`` and ``PodHost``), and at
run time add pods or nodes with :func:`add_pod` / :func:`add_node` - see
``topologies/examples/add_node.py``.

``mn`` runs Debian's python3 without this project's venv: this file needs
only Mininet, the standard library and topologies/plan.py.
"""
import inspect
import json
import os
import subprocess
import sys

# ``mn --custom`` exec()s this file: no __file__, and the repository is not
# on the path.  The code object knows where it came from.
HERE = os.path.dirname(os.path.abspath(inspect.getsourcefile(lambda: 0)
                                       or inspect.currentframe().f_code.co_filename))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mininet.cli import CLI as MininetCLI  # noqa: E402
from mininet.node import Host, OVSBridge, OVSSwitch  # noqa: E402
from mininet.topo import Topo  # noqa: E402

from topologies import plan  # noqa: E402
from topologies.remote_controller import RemoteController  # noqa: E402
from topologies.plan import INET_GW, INET_IP, ip_mac  # noqa: E402

FABRIC, GATEWAY, INTERNET = "fabric", "br-gw", "inet"


def datapath() -> str:
    """OVS's kernel datapath where its module is loaded, else the userspace one."""
    return "kernel" if os.path.isdir("/sys/module/openvswitch") else "user"


def vsctl(args):
    subprocess.run(["ovs-vsctl"] + list(args), check=True, capture_output=True, text=True)


def tx_off(intf_name, node=None):
    """veth TX checksum offload breaks the userspace datapath's conntrack
    (every NATed TCP packet is +inv): off on both ends of every link."""
    cmd = f"ethtool -K {intf_name} tx off >/dev/null 2>&1"
    if node is not None:
        node.cmd(cmd)
    else:
        subprocess.run(cmd, shell=True, check=False)


def _tx_off_ports(switch):
    for intf in switch.intfList():
        if intf.name != "lo":
            tx_off(intf.name)


def peer(intf):
    """The node at the other end of an interface's link (None if unlinked)."""
    link = intf.link
    if link is None:
        return None
    return (link.intf2 if link.intf1 is intf else link.intf1).node


class _ProgrammedBridge(OVSSwitch):
    """A bridge the controller programs, labelled in OVSDB once it exists."""

    def __init__(self, name, **params):
        params.setdefault("failMode", "secure")
        params.setdefault("protocols", "OpenFlow13")
        params.setdefault("datapath", datapath())
        params["batch"] = False              # start() must run: it labels
        super().__init__(name, **params)

    def start(self, controllers):
        super().start(controllers)
        _tx_off_ports(self)
        self.label()

    def port_to(self, name):
        """This bridge's interface towards the node called ``name``."""
        for intf in self.intfList():
            other = peer(intf)
            if other is not None and other.name == name:
                return intf.name
        raise LookupError(f"{self.name} has no link to {name}")

    def label(self):
        raise NotImplementedError


class NodeBridge(_ProgrammedBridge):
    """A compute node's pod bridge; ``nsx_node``: its topologies.plan.NodeSpec."""

    def __init__(self, name, nsx_node=None, **params):
        super().__init__(name, **params)
        self.nsx_node = nsx_node

    def label(self):
        node = self.nsx_node
        pods = {p.name: p for p in node.pods}
        ports = [(intf.name, pods[peer(intf).name]) for intf in self.intfList()
                 if peer(intf) is not None and peer(intf).name in pods]
        vsctl(plan.node_labels(node, self.port_to(FABRIC), ports))


class GatewayBridge(_ProgrammedBridge):
    """The gateway router between the fabric and the Internet host."""

    def label(self):
        vsctl(plan.gateway_labels(self.name, self.port_to(FABRIC), self.port_to(INTERNET)))


class FabricSwitch(OVSBridge):
    """The underlay: a plain learning switch, no controller."""

    def __init__(self, name, **params):
        params.setdefault("datapath", datapath())
        params["batch"] = False              # start() must run: it tunes the ports
        super().__init__(name, **params)

    def start(self, controllers):
        super().start(controllers)
        _tx_off_ports(self)


class PodHost(Host):
    """A pod (or the Internet host): the lab's pod server runs in it."""

    def config(self, **params):
        result = super().config(**params)
        for intf in self.intfList():
            tx_off(intf.name, self)
        server = os.path.join(HERE, "podserver.py")
        pid = self.cmd(f"python3 {server} --name {self.name} --tcp {plan.TCP_TARGET} "
                       f"--udp {plan.UDP_TARGET} >/dev/null 2>&1 & echo $!").strip()
        self.server_pid = int(pid.split()[-1]) if pid.split() else None
        return result

    def terminate(self):
        if getattr(self, "server_pid", None):
            try:
                os.kill(self.server_pid, 15)
            except ProcessLookupError:
                pass
            self.server_pid = None
        super().terminate()


def _dpid(value):
    return "%016x" % value


class NsxTopo(Topo):
    """``--topo nsx,nodes=N,pods=M``: N compute nodes with M pods each, the
    fabric, the gateway and the Internet host."""

    def build(self, nodes=2, pods=2):
        self.nsx_nodes = plan.plan_nodes(int(nodes), int(pods))
        fabric = self.addSwitch(FABRIC, cls=FabricSwitch, dpid=_dpid(0x3000))
        for node in self.nsx_nodes:
            self.add_compute_node(node, fabric)
        gateway = self.addSwitch(GATEWAY, cls=GatewayBridge, dpid=_dpid(0x2000))
        self.addLink(gateway, fabric)
        inet = self.addHost(INTERNET, cls=PodHost, ip=INET_IP + "/24", mac=ip_mac(INET_IP),
                            defaultRoute=f"via {INET_GW}")
        self.addLink(inet, gateway)

    def add_compute_node(self, node, fabric):
        """One node: its bridge, its pods, its uplink (override to vary nodes)."""
        bridge = self.addSwitch(node.bridge, cls=NodeBridge, nsx_node=node,
                                dpid=_dpid(0x1000 + node.index))
        for pod in node.pods:
            host = self.addHost(pod.name, cls=PodHost, ip=pod.ip + "/24", mac=pod.mac,
                                defaultRoute=f"via {node.gateway_ip}")
            self.addLink(host, bridge)
        self.addLink(bridge, fabric)


topos = {"nsx": NsxTopo}
# ``--controller remote,...`` gets ours: Mininet's own checks the controller
# with telnet in a shell and dies now and then on its binary HELLO.
controllers = {"remote": RemoteController}


# --- at run time (the Mininet CLI's ``py``, or a topology script) ---------------

def add_pod(net, name, node_bridge):
    """Add pod ``name`` to the running bridge ``node_bridge``: the host, its
    link, its server, and its port labelled as a CNI plugin would.  The pod
    gets the node's next free address; returns its topologies.plan.PodSpec.
    (Endpoints come from the state source: add it to a Service there.)"""
    bridge = net.get(node_bridge)
    pod = plan.pod_spec(bridge.nsx_node, name)
    host = net.addHost(name, cls=PodHost, ip=pod.ip + "/24", mac=pod.mac,
                       defaultRoute=f"via {bridge.nsx_node.gateway_ip}")
    link = net.addLink(host, bridge)
    bridge.attach(link.intf2)
    tx_off(link.intf2.name)
    host.configDefault()
    vsctl(plan.pod_labels(link.intf2.name, pod))
    return pod


def add_node(net, index, pods=1, first_pod=None):
    """Add compute node ``index`` (br-nodeINDEX, 10.1.INDEX.0/24) with ``pods``
    pods to the running network; returns its topologies.plan.NodeSpec."""
    node = plan.node_spec(index)
    fabric = net.get(FABRIC)
    bridge = net.addSwitch(node.bridge, cls=NodeBridge, nsx_node=node,
                           dpid=_dpid(0x1000 + index))
    link = net.addLink(bridge, fabric)
    fabric.attach(link.intf2)
    bridge.start(net.controllers)
    taken = {h.name for h in net.hosts}
    n = first_pod or 1
    for _ in range(pods):
        while f"pod{n}" in taken:
            n += 1
        add_pod(net, f"pod{n}", node.bridge)
        taken.add(f"pod{n}")
    return node


def nodes_of(net):
    """The NodeSpecs of the running network's node bridges."""
    return sorted((s.nsx_node for s in net.switches if isinstance(s, NodeBridge)),
                  key=lambda n: n.index)


def write_state(path, nodes):
    """A ``source = file`` state for these nodes (written whole, then renamed,
    so the controller never reads half a file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(plan.state_document(nodes), fh, indent=1)
    os.replace(tmp, path)


class NsxCLI(MininetCLI):
    """Mininet's CLI, whose ``py`` also knows add_pod and add_node:
    ``py add_pod(net, 'pod9', 'br-node1')``."""

    def getLocals(self):
        names = super().getLocals()
        names.update(add_pod=add_pod, add_node=add_node)
        return names


# ``mn`` takes a custom file's CLI (see /usr/bin/mn: "--custom files can set CLI").
CLI = NsxCLI


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description="helpers for the mn --custom topology")
    sub = parser.add_subparsers(dest="what", required=True)
    state = sub.add_parser("state", help="print a source = file state for --topo nsx,...")
    state.add_argument("--nodes", type=int, default=2)
    state.add_argument("--pods", type=int, default=2)
    args = parser.parse_args(argv)
    # JSON is YAML: the file source reads it as it is.
    print(json.dumps(plan.state_document(plan.plan_nodes(args.nodes, args.pods)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
