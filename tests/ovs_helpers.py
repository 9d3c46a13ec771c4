"""Run ryu-manager against real OVS bridges from tests (no hosts needed)."""
import os

import yaml

from topologies.controller_proc import RyuProcess
from topologies.lab import run


class Controller(RyuProcess):
    """The lab's controller process, plus the state file and log for tests."""

    def __init__(self, workdir, of_port, **options):
        workdir = str(workdir)
        self.state_file = os.path.join(workdir, "state.yaml")
        super().__init__(workdir, of_port, os.path.join(workdir, "controller.log"),
                         dict({"source": "file", "state_file": self.state_file,
                               "status_port": 0}, **options))

    def write_state(self, doc):
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as fh:
            yaml.safe_dump(doc, fh)
        os.replace(tmp, self.state_file)

    def log_text(self):
        with open(self.log_path) as fh:
            return fh.read()


def ofctl(*args):
    return run(["ovs-ofctl", "-O", "OpenFlow13"] + list(args))


def flow_lines(bridge):
    return [line.strip() for line in ofctl("dump-flows", bridge).splitlines()
            if "cookie=" in line]


def group_lines(bridge):
    return [line.strip() for line in ofctl("dump-groups", bridge).splitlines()
            if "group_id=" in line]


STATE = {
    "nodes": [{"name": "node1", "internalIP": "192.168.100.1", "podCIDR": "10.1.1.0/24"},
              {"name": "node2", "internalIP": "192.168.100.2", "podCIDR": "10.1.2.0/24"}],
    "services": [{
        "name": "web", "clusterIP": "10.96.0.10",
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
        "endpoints": [{"ip": "10.1.1.2", "node": "node1"}, {"ip": "10.1.2.2", "node": "node2"}],
    }],
}
