"""A topology script that grows at run time: a third node joins a running lab.

Terminal 1 (from the repository)::

    python3 -m topologies.nsx_topo state --nodes 2 --pods 2 > /tmp/nsx-state.yaml
    .venv/bin/ryu-manager --config-file topologies/examples/file-source.conf controller.app

Terminal 2::

    sudo python3 topologies/examples/add_node.py

It starts ``nsx,nodes=2,pods=2``, then adds ``br-node3`` with one pod using
``nsx_topo.add_node`` (bridge, uplink, pod, OVSDB labels: the same functions
the topology uses) and writes the state file again with node3 and its pod
behind the ``web`` Service, so the controller programs it.  At the
``mininet>`` prompt, ``pod1 curl -s 10.96.0.10`` now also answers ``pod5``,
and ``py add_pod(net, 'pod6', 'br-node3')`` adds another pod by hand.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from mininet.log import setLogLevel  # noqa: E402
from mininet.net import Mininet  # noqa: E402
from topologies import nsx_topo  # noqa: E402
from topologies.remote_controller import RemoteController  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=6653, help="the controller's port")
    parser.add_argument("--state", default="/tmp/nsx-state.yaml",
                        help="the controller's state file (source = file)")
    args = parser.parse_args(argv)
    setLogLevel("info")
    net = Mininet(topo=nsx_topo.NsxTopo(nodes=2, pods=2), autoSetMacs=False,
                  controller=lambda name: RemoteController(name, port=args.port))
    net.start()
    try:
        nsx_topo.write_state(args.state, nsx_topo.nodes_of(net))
        node = nsx_topo.add_node(net, 3, pods=1)
        nsx_topo.write_state(args.state, nsx_topo.nodes_of(net))
        print(f"*** added {node.bridge} with {', '.join(p.name for p in node.pods)}; "
              f"{args.state} now has it behind web (10.96.0.10)")
        nsx_topo.CLI(net)                # its ``py`` knows add_pod and add_node
    finally:
        net.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
