"""Start and stop ``ryu-manager controller.app`` as a child process.

Shared by the lab and the tests: writes the config file, launches the
controller from this venv, and waits until it listens for switches.
"""
import os
import signal
import socket
import subprocess
import sys

from topologies.waiting import wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The environment every ryu-manager of this project runs with (the agent
# image sets the same, see the Dockerfile).  Both are read before any of our
# code runs, so they cannot be set from the app:
# - EVENTLET_NO_GREENDNS: eventlet otherwise imports dnspython to make name
#   lookups green; the agent reaches its API server by IP (in a pod, the
#   kubernetes Service's), so a lookup, if any, may block briefly.
# - SETUPTOOLS_USE_DISTUTILS=stdlib: eventlet imports distutils, which
#   setuptools' shim otherwise replaces with all of setuptools and
#   pkg_resources.
# Together 17 MB less RSS per agent (109 -> 92 MB after imports).
AGENT_ENV = {"EVENTLET_NO_GREENDNS": "yes", "SETUPTOOLS_USE_DISTUTILS": "stdlib"}


class RyuProcess:
    """``netns_pid``: run inside the network namespace of that process (a
    lab host), listening for OpenFlow on that namespace's 127.0.0.1 only,
    as a node agent does."""

    def __init__(self, workdir, of_port, log_path, options, netns_pid=None):
        self.workdir = workdir
        self.env = {}                       # more environment (bench.memory: tracing)
        self.options = dict(options)        # the [nsx_proxy] section of the config
        self.of_port = of_port
        self.log_path = log_path
        self.netns_pid = netns_pid
        self.proc = None

    def start(self):
        conf = os.path.join(self.workdir, "nsx-proxy.conf")
        with open(conf, "w") as fh:
            fh.write("[nsx_proxy]\n")
            for key, value in sorted(self.options.items()):
                fh.write(f"{key} = {value}\n")
        ryu = os.path.join(os.path.dirname(sys.executable), "ryu-manager")
        cmd = [ryu, "--config-file", conf, "--ofp-tcp-listen-port", str(self.of_port)]
        if self.netns_pid is not None:
            cmd = self._in_netns(cmd + ["--ofp-listen-host", "127.0.0.1"])
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                cmd + ["controller.app"], env=dict(os.environ, **AGENT_ENV, **self.env),
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._listening, 20, what="ryu-manager to listen")

    def _in_netns(self, cmd):
        return ["nsenter", f"--net=/proc/{self.netns_pid}/ns/net"] + cmd

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"ryu-manager exited; see {self.log_path}")
        if self.netns_pid is not None:
            out = subprocess.run(self._in_netns(["ss", "-Hltn", f"sport = :{self.of_port}"]),
                                 capture_output=True, text=True).stdout
            return bool(out.strip())
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.of_port)) == 0

    def stop(self, sig=signal.SIGTERM):
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
