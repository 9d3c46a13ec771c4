"""bridge_connection = mgmt: the agent dials each of its bridges' management
socket, as soon as it is wanted and again whenever the connection ends, and
says once why it cannot (the socket not there yet: OVS restarting, the
bridge not made yet).  Against real unix sockets; the OVS end is in
test_hosts_e2e (the multi-host lab's agents dial their bridges)."""
import logging
import os
import socket

import pytest

from controller import bridge_dialer, config
from nsx_proxy.runner import thread_hub
from topologies.waiting import wait_for


class Served:
    """What Ryu's datapath_connection_factory would do: read until EOF."""

    def __init__(self):
        self.connections = []

    def __call__(self, sock, address):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # as Ryu's Datapath
        self.connections.append(address)
        while sock.recv(64):
            pass


def listener(path):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    return srv


def test_the_dialer_connects_when_the_socket_appears_and_again_after_each_close(
        tmp_path, caplog):
    caplog.set_level(logging.WARNING, "nsx_proxy")
    hub, served = thread_hub(), Served()
    dialer = bridge_dialer.BridgeDialer(str(tmp_path), served, hub.spawn, hub.sleep)
    dialer.want(["br-node1"])
    wait_for(lambda: "cannot connect" in caplog.text, 5, what="the first failure")
    hub.sleep(0.5)                                 # several tries: still one line
    assert caplog.text.count("cannot connect") == 1
    assert f"{tmp_path}/br-node1.mgmt" in caplog.text
    srv = listener(os.path.join(tmp_path, "br-node1.mgmt"))
    try:
        first, _ = srv.accept()                    # within the 1 s backoff at most
        wait_for(lambda: len(served.connections) == 1, 5, what="the connection served")
        first.close()                              # OVS ends it: dialed again at once
        second, _ = srv.accept()
        wait_for(lambda: len(served.connections) == 2, 5, what="the second connection")
        assert served.connections == [dialer.path("br-node1")] * 2
        dialer.want([])                            # no longer ours: not dialed again
        second.close()
        srv.settimeout(0.5)
        with pytest.raises(socket.timeout):
            srv.accept()
    finally:
        srv.close()


def test_the_run_directory_is_the_ovsdb_sockets_and_a_tcp_ovsdb_needs_it_said():
    assert bridge_dialer.rundir("unix:/var/run/openvswitch/db.sock") == "/var/run/openvswitch"
    with pytest.raises(ValueError, match="ovs_rundir"):
        bridge_dialer.rundir("tcp:127.0.0.1:6640")


def test_listen_mode_has_no_dialer_and_mgmt_mode_dials_the_ovsdb_sockets_directory():
    conf = config.CONF.nsx_proxy
    assert conf.bridge_connection == "listen"
    assert config.bridge_dialer(conf, None, None, None) is None
    config.CONF.set_override("bridge_connection", "mgmt", group="nsx_proxy")
    config.CONF.set_override("ovsdb", "unix:/run/ovs/db.sock", group="nsx_proxy")
    try:
        assert config.bridge_dialer(conf, None, None, None).path("br-nsx") == \
            "/run/ovs/br-nsx.mgmt"
        config.CONF.set_override("ovsdb", "tcp:10.0.0.1:6640", group="nsx_proxy")
        with pytest.raises(SystemExit, match="ovs_rundir"):
            config.bridge_dialer(conf, None, None, None)
    finally:
        config.CONF.clear_override("bridge_connection", group="nsx_proxy")
        config.CONF.clear_override("ovsdb", group="nsx_proxy")


def test_a_switch_that_connects_over_tcp_is_refused_with_one_line_per_bridge(caplog):
    """A controller target left pointing at the agent would make a second
    writer of a bridge the agent dials already."""
    caplog.set_level(logging.ERROR, "nsx_proxy")
    dialer = bridge_dialer.BridgeDialer("/run/ovs", None, None, None)
    assert dialer.dialed("/run/ovs/br-nsx.mgmt", 0x1001)
    assert not dialer.dialed(("127.0.0.1", 40000), 0x1001)
    assert not dialer.dialed(("127.0.0.1", 40002), 0x1001)     # OVS tries again: no line
    assert not dialer.dialed(("127.0.0.1", 40004), 0x1002)
    lines = [r.message for r in caplog.records]
    assert len(lines) == 2 and "0000000000001001" in lines[0] and "del-controller" in lines[0]
