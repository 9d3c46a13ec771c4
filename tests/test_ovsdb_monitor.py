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


def test_no_ovsdb_at_start_is_retried_and_a_bad_bridge_costs_only_itself(tmp_path, caplog):
    """The agent may start before OVS: it says so and retries.  A bridge
    whose labels are wrong is one line (not one per change) and skipped;
    the bridge next to it is reported."""
    caplog.set_level(logging.INFO, logger="controller.ovsdb_monitor")
    server = Server(str(tmp_path))
    seen = []
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        time.sleep(0.2)
    monitor = OvsdbMonitor(f"unix:{server.sock}", seen.append,
                           lambda fn: threading.Thread(target=fn, daemon=True).start(), sleep)
    monitor.start()
    try:
        wait_for(lambda: len(sleeps) >= 2, 10, what="two retries while OVSDB is not there")
        retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
        assert retries and f"unix:{server.sock}" in retries[0]
        assert sleeps[:2] == [1, 2]                    # backing off
        server.start()
        server.vsctl("init")
        server.vsctl("add-br", "brgood", "--", "set", "bridge", "brgood",
                     "external_ids:nsx-proxy-role=node", "external_ids:nsx-proxy-node=node1",
                     "external_ids:nsx-proxy-pod-cidr=10.1.1.0/24",
                     "datapath_id=0000000000000abc")
        server.vsctl("add-br", "brbad", "--", "set", "bridge", "brbad",
                     "external_ids:nsx-proxy-role=node", "external_ids:nsx-proxy-node=node2",
                     "external_ids:nsx-proxy-pod-cidr=not-a-cidr",
                     "datapath_id=0000000000000abd")
        wait_for(lambda: seen and 0xabc in seen[-1], 40, what="brgood reported")
        assert 0xabd not in seen[-1]
        server.vsctl("set", "bridge", "brgood", "external_ids:nsx-proxy-node=node7",
                     "datapath_id=0000000000000abc")
        wait_for(lambda: seen[-1].get(0xabc) and seen[-1][0xabc].node == "node7", 10,
                 what="brgood's change reported")
        bad = [r.getMessage() for r in caplog.records if "brbad ignored" in r.getMessage()]
        assert len(bad) == 1 and "not-a-cidr" in bad[0]
    finally:
        if server.proc and server.proc.poll() is None:
            server.stop()
