"""The lab's container runtime: it gives each pod's sandbox (a Mininet host,
i.e. a network namespace) its network by running ``nsx-proxy-cni`` exactly
as containerd runs it for the kubelet - the ``CNI_*`` environment, the
network config on stdin, ``host-local`` from the CNI path - and takes it
away with DEL.  So every lab pod, and every end-to-end test, goes through
the plugin a cluster runs.

The lab's pods have planned addresses (tests and docs/labs.md name them): the
runtime asks host-local for that address with ``CNI_ARGS`` ``IP=``, as
runtimes that pin pod IPs do.
"""
import json
import os
import subprocess
import sys

from nsx_cni import install
from topologies.plan import NodeSpec, PodSpec

PLUGIN = os.path.join(os.path.dirname(sys.executable), "nsx-proxy-cni")
CNI_PATH = "/usr/lib/cni"                 # Debian's containernetworking-plugins
IFNAME = "eth0"


class CniFailed(RuntimeError):
    pass


class Runtime:
    """``ipam_dir``: host-local's dataDir (one per lab run).  ``netns_of``:
    the network namespace the plugin runs in, per node (None: this one), and
    ``env_of`` its extra environment (a host's own OVS run directory)."""

    def __init__(self, ipam_dir, netns_of=None, env_of=None, mtu=None):
        self.ipam_dir = ipam_dir
        self.mtu = mtu                    # the pods' (an overlay's is smaller)
        self.netns_of = netns_of or (lambda node: None)
        self.env_of = env_of or (lambda node: {})

    def config(self, node: NodeSpec) -> dict:
        """The plugin's entry of the conflist the DaemonSet would install on
        ``node`` (nsx_cni/install.py), with the lab's IPAM folder."""
        conflist = install.conflist(self.mtu, node.name, self.ipam_dir)
        return dict(conflist["plugins"][0], cniVersion=conflist["cniVersion"],
                    name=conflist["name"])

    def call(self, command, node: NodeSpec, pod: PodSpec, pod_pid, prev=None):
        conf = self.config(node)
        if prev is not None:
            conf["prevResult"] = prev
        env = dict(os.environ, **self.env_of(node), CNI_COMMAND=command,
                   CNI_CONTAINERID=f"lab-{pod.namespace}-{pod.name}",
                   CNI_NETNS=f"/proc/{pod_pid}/ns/net" if pod_pid else "",
                   CNI_IFNAME=IFNAME, CNI_PATH=CNI_PATH,
                   CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.namespace};"
                            f"K8S_POD_NAME={pod.name};IP={pod.ip}")
        cmd = [PLUGIN]
        netns = self.netns_of(node)
        if netns is not None:
            cmd = ["nsenter", f"--net={netns}"] + cmd
        proc = subprocess.run(cmd, input=json.dumps(conf), env=env, capture_output=True,
                              text=True, timeout=60)
        answer = json.loads(proc.stdout) if proc.stdout.strip() else None
        if proc.returncode:
            raise CniFailed(f"CNI {command} {pod.name}: {answer or proc.stderr.strip()}")
        return answer

    def add(self, node, pod, pod_pid) -> dict:
        result = self.call("ADD", node, pod, pod_pid)
        # host-local takes one requested IP (the IPv4 one); the IPv6 one is
        # the range's next free address, which the plan predicts
        got = [ip["address"].split("/")[0] for ip in result["ips"]]
        if got != pod.ips:
            raise CniFailed(f"CNI ADD {pod.name}: got {got}, planned {pod.ips}")
        return result

    def delete(self, node, pod, pod_pid=None) -> None:
        self.call("DEL", node, pod, pod_pid)
