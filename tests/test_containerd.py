"""A real container runtime: containerd runs busybox containers whose network
is our conflist and plugin, installed as the DaemonSet's init container
installs them, on a bridge the agent programs from the embedded API server.

``ctr run --cni`` reads /etc/cni/net.d and /opt/cni/bin (fixed in ctr), so
the test installs there and removes exactly what it added.  It runs its own
containerd (own root, state and socket) and stops it by PID.
"""
import ctypes
import json
import os
import signal
import subprocess

import pytest

from kube_helpers import add_node, add_pod, service, start_server
from nsx_cni import install as I
from topologies.apiserver.kinds import RESOURCES
from topologies.controller_proc import RyuProcess
from topologies.lab import run, wait_for

pytestmark = pytest.mark.ovs
BIN_DIR, CONF_DIR = "/opt/cni/bin", "/etc/cni/net.d"
# A node name of its own: a lab on this machine labels bridges for node1...
BRIDGE, NODE, POD_CIDR, VIP = "nsxk-br", "ctr-node", "10.9.3.0/24", "10.96.3.10"
OF_PORT = 16691
PR_SET_CHILD_SUBREAPER = 36


class Containerd:
    """One containerd of the test's own, and ``ctr`` against it."""

    def __init__(self, folder):
        self.folder = folder
        self.socket = os.path.join(folder, "containerd.sock")
        self.proc = None

    def start(self):
        log = open(os.path.join(self.folder, "containerd.log"), "a")
        self.proc = subprocess.Popen(
            ["containerd", "--root", os.path.join(self.folder, "root"),
             "--state", os.path.join(self.folder, "state"), "--address", self.socket,
             "--config", "/dev/null"], stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.ctr("version", check=False).returncode == 0, 20,
                 what="containerd to answer")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)

    def ctr(self, *args, check=True, timeout=60):
        proc = subprocess.run(["ctr", "--address", self.socket] + list(args),
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode:
            raise AssertionError(f"ctr {' '.join(args)}: {proc.stderr}")
        return proc

    def run_rm(self, rootfs, name, *cmd, timeout=30):
        """A container run to its end (ctr calls CNI ADD, then DEL on exit)."""
        return self.ctr("run", "--rm", "--cni", "--rootfs", rootfs, name, *cmd,
                        check=False, timeout=timeout)


def busybox_rootfs(folder):
    for sub in ("bin", "proc", "sys", "dev", "etc", "tmp", "www"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    subprocess.run(["cp", "/bin/busybox", os.path.join(folder, "bin", "busybox")], check=True)
    for applet in ("sh", "httpd", "nc", "printf"):
        os.symlink("busybox", os.path.join(folder, "bin", applet))
    with open(os.path.join(folder, "www", "index.html"), "w") as fh:
        fh.write("srv\n")
    return folder


@pytest.fixture
def cni_dirs(tmp_path):
    """Our plugin and conflist in the runtime's folders; on teardown, only
    what this test added goes."""
    # the folders this test makes (parents first), to remove them after
    made = [d for d in ("/etc/cni", CONF_DIR, "/opt/cni", BIN_DIR) if not os.path.isdir(d)]
    others = sorted(f for f in os.listdir(CONF_DIR) if f < I.CONFLIST) \
        if os.path.isdir(CONF_DIR) else []
    assert not others, f"{CONF_DIR} holds {others}, which ctr would use before ours"
    copied = I.install(BIN_DIR, CONF_DIR, "/usr/lib/cni", node_name=NODE,
                       ipam_data_dir=str(tmp_path / "ipam"))
    yield tmp_path / "ipam" / I.NETWORK
    I.uninstall(BIN_DIR, CONF_DIR)
    for path in copied:
        os.unlink(path)
    for folder in reversed(made):            # children first
        if not os.listdir(folder):
            os.rmdir(folder)


@pytest.fixture
def node_bridge():
    run(["ovs-vsctl", "--if-exists", "del-br", BRIDGE])
    run(["ovs-vsctl", "add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev",
         "fail_mode=secure", "protocols=OpenFlow13", "external_ids:nsx-proxy-role=node",
         f"external_ids:nsx-proxy-node={NODE}", f"external_ids:nsx-proxy-pod-cidr={POD_CIDR}",
         "--", "set-controller", BRIDGE, f"tcp:127.0.0.1:{OF_PORT}"])
    for uuid in run(["ovs-vsctl", "--bare", "--columns=controller", "list", "bridge",
                     BRIDGE]).split():
        run(["ovs-vsctl", "set", "controller", uuid, "max_backoff=1000"])
    yield BRIDGE
    run(["ovs-vsctl", "--if-exists", "del-br", BRIDGE])


@pytest.fixture
def reaper():
    """containerd's shims outlive a containerd that is restarted; they are
    re-parented to us, not to PID 1 (which here reaps no one), and reaped."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    for pid in _children_named("containerd-shim"):
        try:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _children_named(prefix):
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        if stat[stat.rindex(")") + 2:].split()[1] == me and comm.startswith(prefix[:15]):
            yield int(entry)


def pod_port(container_id):
    """(port name, external_ids) of the container's port in OVSDB, or None."""
    out = json.loads(run(["ovs-vsctl", "--format=json", "--data=json",
                          "--columns=name,external_ids", "find", "Interface",
                          f"external_ids:container-id={container_id}"]))["data"]
    return (out[0][0], dict(out[0][1][1])) if out else None


def leases(ipam_dir):
    return sorted(p.name for p in ipam_dir.iterdir() if p.name[0].isdigit()) \
        if ipam_dir.exists() else []


def test_containerd_pods_on_our_plugin_reach_each_other_and_a_cluster_ip(
        tmp_path, cni_dirs, node_bridge, reaper):
    ipam_dir = cni_dirs
    rootfs = busybox_rootfs(str(tmp_path / "rootfs"))
    api = start_server(tmp_path)
    add_node(api.api, NODE, "192.168.203.1", POD_CIDR)
    agent = RyuProcess(str(tmp_path), OF_PORT, str(tmp_path / "agent.log"), {
        "source": "kubernetes", "kubeconfig": api.kubeconfig_path, "node_name": NODE,
        "min_sync_period": 0.1, "status_port": 0, "leader_elect": "false",
        "healthz_bind_address": "127.0.0.1:19931"})
    runtime = Containerd(str(tmp_path))
    try:
        agent.start()
        runtime.start()
        # The server runs detached: ctr calls ADD and leaves it (a foreground
        # ctr calls DEL when it exits, even when only containerd went away).
        runtime.ctr("run", "-d", "--cni", "--rootfs", rootfs, "srv",
                    "/bin/httpd", "-f", "-p", "8080", "-h", "/www")
        port = wait_for(lambda: pod_port("default-srv"), 20, what="srv's port in OVSDB")
        srv_ip = port[1]["ip-address"]
        assert port[1]["pod-name"] == "default-srv" and port[1]["nsx-proxy-role"] == "pod"
        add_pod(api.api, "srv", srv_ip, node=NODE, labels={"app": "srv"})
        api.api.create(RESOURCES["services"], "default",
                   service("srv", {"app": "srv"}, (("http", "TCP", 80, 8080),), vip=VIP))

        def answers(name, ip, port):
            """The body a one-shot HTTP/1.0 GET to ip:port gets (busybox's
            static wget crashes without an /etc; nc needs nothing)."""
            out = runtime.run_rm(rootfs, name, "/bin/sh", "-c",
                                 f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port}")
            return out.stdout.strip().rsplit("\n", 1)[-1]

        wait_for(lambda: answers("probe", VIP, 80) == "srv", 30,
                 what="the ClusterIP to answer from a container")
        assert answers("cli", srv_ip, 8080) == "srv"
        assert answers("cli", VIP, 80) == "srv"
        # a container that ended: ctr's DEL took its port and its address back
        assert pod_port("default-cli") is None
        assert leases(ipam_dir) == [srv_ip]

        runtime.stop()                    # a containerd restart; the task lives on
        runtime.start()
        assert "srv" in runtime.ctr("task", "ls").stdout
        assert pod_port("default-srv") is not None, "srv lost its port"
        assert answers("cli2", VIP, 80) == "srv"
        assert answers("cli2", srv_ip, 8080) == "srv"

        # Deleting the server: ctr kills and deletes it, and DEL is called as
        # the kubelet's CRI calls it when a sandbox stops (ctr does not for a
        # detached container).
        runtime.ctr("task", "kill", "-s", "KILL", "srv")
        wait_for(lambda: "STOPPED" in runtime.ctr("task", "ls").stdout, 10,
                 what="srv to stop")
        runtime.ctr("task", "delete", "srv")
        runtime.ctr("container", "delete", "srv")
        with open(os.path.join(CONF_DIR, I.CONFLIST)) as fh:
            conf = json.load(fh)
        plugin_conf = dict(conf["plugins"][0], cniVersion=conf["cniVersion"],
                           name=conf["name"])
        out = subprocess.run([os.path.join(BIN_DIR, "nsx-proxy-cni")],
                             input=json.dumps(plugin_conf), text=True, capture_output=True,
                             env=dict(os.environ, CNI_COMMAND="DEL",
                                      CNI_CONTAINERID="default-srv", CNI_IFNAME="eth0",
                                      CNI_NETNS="", CNI_PATH=BIN_DIR))
        assert out.returncode == 0, out.stdout
        assert pod_port("default-srv") is None and leases(ipam_dir) == []
        assert run(["ovs-vsctl", "list-ports", BRIDGE]).split() == []
    finally:
        if runtime.proc is not None and runtime.proc.poll() is None:
            for name in ("srv", "cli", "cli2", "probe"):
                runtime.ctr("task", "delete", "-f", name, check=False)
                runtime.ctr("container", "delete", name, check=False)
            runtime.stop()
        agent.stop()
        api.stop()
