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


class RyuProcess:
    def __init__(self, workdir, of_port, log_path, options):
        self.workdir = workdir
        self.options = dict(options)        # the [nsx_proxy] section of the config
        self.of_port = of_port
        self.log_path = log_path
        self.proc = None

    def start(self):
        conf = os.path.join(self.workdir, "nsx-proxy.conf")
        with open(conf, "w") as fh:
            fh.write("[nsx_proxy]\n")
            for key, value in sorted(self.options.items()):
                fh.write(f"{key} = {value}\n")
        ryu = os.path.join(os.path.dirname(sys.executable), "ryu-manager")
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [ryu, "--config-file", conf, "--ofp-tcp-listen-port", str(self.of_port),
                 "controller.app"],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._listening, 20, what="ryu-manager to listen")

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"ryu-manager exited; see {self.log_path}")
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
