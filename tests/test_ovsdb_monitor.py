"""The OVSDB monitor against a real ovsdb-server of its own (no vswitchd):
it reports what each bridge is, and when OVSDB goes away it says so once and
comes back to report again, without anyone restarting it."""
import logging
import os
import subprocess
import threading
import time

import pytest

from controller.ovsdb_monitor import OvsdbMonitor
from topologies.waiting import wait_for

pytestmark = pytest.mark.ovs
SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


class Server:
    """An ovsdb-server with its own database and socket, started and stopped by PID."""

    def __init__(self, workdir):
        self.db = os.path.join(workdir, "conf.db")
        self.sock = os.path.join(workdir, "db.sock")
        self.proc = None
        subprocess.run(["ovsdb-tool", "create", self.db, SCHEMA], check=True)

    def start(self):
        self.proc = subprocess.Popen(["ovsdb-server", f"--remote=punix:{self.sock}",
                                      "--unixctl=" + self.sock + ".ctl", self.db],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(self.sock), 5, what="ovsdb-server's socket")

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        for path in (self.sock, self.sock + ".ctl"):
            if os.path.exists(path):
                os.remove(path)

    def vsctl(self, *args):
        subprocess.run(["ovs-vsctl", f"--db=unix:{self.sock}", "--no-wait", *args],
                       check=True, capture_output=True)


def test_ovsdb_going_away_and_coming_back(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="controller.ovsdb_monitor")
    server = Server(str(tmp_path))
    server.start()
    server.vsctl("init")
    server.vsctl("add-br", "brx", "--", "set", "bridge", "brx",
                 "external_ids:nsx-proxy-role=node", "external_ids:nsx-proxy-node=node1",
                 "external_ids:nsx-proxy-pod-cidr=10.1.1.0/24",
                 "datapath_id=0000000000000abc")
    seen = []
    monitor = OvsdbMonitor(f"unix:{server.sock}", seen.append,
                           lambda fn: threading.Thread(target=fn, daemon=True).start(),
                           time.sleep)
    monitor.start()
    try:
        wait_for(lambda: seen and 0xabc in seen[-1], 10, what="brx reported")
        assert seen[-1][0xabc].node == "node1"
        server.stop()                                  # OVSDB goes away
        wait_for(lambda: any("connection lost" in r.getMessage() for r in caplog.records),
                 10, what="the monitor to say OVSDB is gone")
        lost = [r.getMessage() for r in caplog.records if "connection lost" in r.getMessage()]
        assert len(lost) == 1 and f"unix:{server.sock}" in lost[0]
        before = len(seen)
        server.start()                                 # and comes back, changed;
        server.vsctl("set", "bridge", "brx", "external_ids:nsx-proxy-node=node9",
                     "datapath_id=0000000000000abc")   # (vswitchd's job: not persisted)
        wait_for(lambda: len(seen) > before and 0xabc in seen[-1] and
                 seen[-1][0xabc].node == "node9", 40,
                 what="brx reported again after OVSDB came back")
        assert any("connected again" in r.getMessage() for r in caplog.records)
    finally:
        if server.proc and server.proc.poll() is None:
            server.stop()
