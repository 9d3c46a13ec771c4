"""``./scripts/lab``: start a lab, then its CLI (or ``--check``), then tear it down.

::

    python -m topologies.run_lab                     # interactive Mininet CLI
    python -m topologies.run_lab --check             # scripted check, exit status
    python -m topologies.run_lab -f services.yaml    # your Services and pod labels
    python -m topologies.run_lab --hosts             # an OVS and an agent per host, Geneve
    python -m topologies.run_lab --hosts --fabric    # ... on one shared L2 fabric instead

The central lab is topologies/lab.py, the multi-host one topologies/hosts.py;
this module only chooses between them (so neither imports the other's user).
"""
import argparse
import shutil
import sys

from topologies.hosts import HostsLab
from topologies.lab import DEMO_VIP, Lab, console, interact, scripted_check
from topologies.progress import Progress


def main(argv=None):
    parser = argparse.ArgumentParser(description="nsx-proxy Mininet lab")
    parser.add_argument("--nodes", type=int, default=2, help="compute nodes (default 2)")
    parser.add_argument("--pods-per-node", type=int, default=2)
    parser.add_argument("--controller", metavar="HOST:PORT",
                        help="use a controller that is already running instead "
                             "of starting ryu-manager")
    parser.add_argument("--kubeconfig", metavar="PATH",
                        help="use this cluster's API server instead of the embedded one")
    parser.add_argument("-f", "--manifest", action="append", default=[], metavar="YAML",
                        help="Services to create and pod labels (kind: Pod, by pod "
                             "name); may be repeated; default: the demo service web")
    parser.add_argument("--check", action="store_true",
                        help="run the scripted check and exit with its status")
    parser.add_argument("--hosts", action="store_true",
                        help="every node and the gateway a host of its own: own network "
                             "namespace, own Open vSwitch, own agent (node_name), as on "
                             "a real cluster")
    parser.add_argument("--fabric", action="store_true",
                        help="with --hosts: the hosts' bridges share one L2 fabric "
                             "instead of Geneve tunnels over an underlay (the default)")
    parser.add_argument("--run-dir", default=None,
                        help="default /tmp/nsx-proxy-lab (/tmp/nsx-proxy-hosts with --hosts)")
    args = parser.parse_args(argv)
    if not 1 <= args.nodes <= 248 or not 1 <= args.pods_per_node <= 250:
        parser.error("--nodes must be 1-248 and --pods-per-node 1-250")
    if args.fabric and not args.hosts:
        parser.error("--fabric chooses how the hosts of --hosts are joined")
    if args.hosts and args.controller:
        parser.error("--hosts starts an agent per host; --controller is for the central mode")
    args.run_dir = args.run_dir or ("/tmp/nsx-proxy-hosts" if args.hosts
                                    else "/tmp/nsx-proxy-lab")
    console(args.run_dir)
    print("starting the lab")
    if args.hosts:
        lab = HostsLab(args.nodes, args.pods_per_node, run_dir=args.run_dir,
                       kubeconfig=args.kubeconfig, manifests=args.manifest,
                       progress=Progress(), overlay=not args.fabric)
    else:
        lab = Lab(args.nodes, args.pods_per_node, args.controller, args.run_dir,
                  kubeconfig=args.kubeconfig, manifests=args.manifest, progress=Progress())
    try:
        lab.start()
        if args.check:
            return 0 if scripted_check(lab) else 1
        interact(lab, f"Try: pod1 curl -s {DEMO_VIP} | services | kubectl get svc,pods | "
                      + ("node1 ovs-ofctl -O OpenFlow13 dump-groups br-node1"
                         if args.hosts else
                         "sh ovs-ofctl -O OpenFlow13 dump-groups br-node1") + " | help")
        return 0
    finally:
        lab.stop()
        shutil.rmtree(args.run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
