"""Run ryu-manager against real OVS bridges from tests (no hosts needed)."""
import os
import signal
import socket
import subprocess
import sys

import yaml

from topologies.lab import run, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Controller:
    """One ryu-manager process with our app, a state file and a log."""

    def __init__(self, workdir, of_port):
        self.workdir = str(workdir)
        self.of_port = of_port
        self.state_file = os.path.join(self.workdir, "state.yaml")
        self.log = os.path.join(self.workdir, "controller.log")
        self.proc = None

    def write_state(self, doc):
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as fh:
            yaml.safe_dump(doc, fh)
        os.replace(tmp, self.state_file)

    def start(self):
        conf = os.path.join(self.workdir, "test.conf")
        with open(conf, "w") as fh:
            fh.write(f"[nsx_proxy]\nstate_file = {self.state_file}\n")
        ryu = os.path.join(os.path.dirname(sys.executable), "ryu-manager")
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [ryu, "--config-file", conf, "--ofp-tcp-listen-port", str(self.of_port),
                 "controller.app"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

        def listening():
            assert self.proc.poll() is None, open(self.log).read()[-3000:]
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.of_port)) == 0
        wait_for(listening, 20, what="ryu-manager")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    def log_text(self):
        with open(self.log) as fh:
            return fh.read()


def ofctl(*args):
    return run(["ovs-ofctl", "-O", "OpenFlow13"] + list(args))


def flow_lines(bridge):
    return [line.strip() for line in ofctl("dump-flows", bridge).splitlines()
            if "cookie=" in line]


def group_lines(bridge):
    return [line.strip() for line in ofctl("dump-groups", bridge).splitlines()
            if "group_id=" in line]
