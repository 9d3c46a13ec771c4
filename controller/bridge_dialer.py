"""The agent dials its bridges: OVS's management socket, no controller target.

With ``bridge_connection = mgmt`` the agent connects to each bridge it
programs at ``<ovs_rundir>/<bridge>.mgmt``: the unix socket every OVS
bridge listens on, which ``ovs-ofctl`` uses and through which Antrea's
agent programs br-int.  Why: OVS dials a controller target again after a
backoff of at least one second, counted in whole seconds, so a restarted
agent waited up to a second for its bridges (measured at 1,000 Services:
the switch connected 0.9 s after the agent's state was ready, half of its
start); a dialing agent connects as soon as it listens to OVSDB.  Nor can
a local process that took the OpenFlow port first become the bridge's
controller: the bridge has no target to dial.

A connection to that socket is an OVS *service* connection: OVS sends it
no asynchronous message (packet-ins: the reject path) until it sets a
miss_send_len, which ``Switch.connected`` does for every connection.

One green thread per wanted bridge: connect, hand the socket to Ryu (which
serves it until it closes, as it does a connection it accepted), and dial
again at once, then backing off to 1 s while the socket is not there (OVS
restarting, the bridge not made yet).  A bridge no longer ours is not
dialed again; its open connection ends with its Switch, as in listen mode.
"""
import logging
import os
import socket

LOG = logging.getLogger("nsx_proxy")

BACKOFF = (0.05, 1.0)          # seconds: the first retry, the most between two


def rundir(ovsdb: str) -> str:
    """Where OVS keeps its sockets: the directory of a ``unix:`` OVSDB socket."""
    if not ovsdb.startswith("unix:"):
        raise ValueError(f"bridge_connection = mgmt needs ovs_rundir, or an ovsdb "
                         f"option of the form unix:PATH (got {ovsdb!r})")
    return os.path.dirname(ovsdb[len("unix:"):]) or "."


class _UnixChannel:
    """A unix socket as Ryu's Datapath uses a TCP one: it sets TCP_NODELAY,
    which a unix socket refuses; everything else goes to the socket."""

    def __init__(self, sock):
        self._sock = sock

    def setsockopt(self, level, *args):
        if level != socket.IPPROTO_TCP:
            self._sock.setsockopt(level, *args)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class BridgeDialer:
    """``want(names)`` with the bridges this agent programs, whenever OVSDB
    says; ``serve(sock, address)`` is Ryu's datapath_connection_factory."""

    def __init__(self, directory, serve, spawn, sleep):
        self.directory = directory
        self._serve, self._spawn, self._sleep = serve, spawn, sleep
        self._wanted = set()
        self._dialing = set()
        self._refused = set()            # dpids that connected over TCP, said once

    def dialed(self, address, dpid) -> bool:
        """Whether a connection is one this dialer made.  Another (OVS dialing
        a controller target that still points at this agent) would make two
        writers of one bridge: refused, with one line per bridge."""
        if isinstance(address, str):
            return True
        if dpid not in self._refused:
            self._refused.add(dpid)
            LOG.error("switch %016x connected from %s, but bridge_connection is mgmt "
                      "(the agent dials its bridges): connection closed; remove the "
                      "bridge's controller target (ovs-vsctl del-controller BRIDGE)",
                      dpid, address)
        return False

    def path(self, bridge) -> str:
        return os.path.join(self.directory, f"{bridge}.mgmt")

    def want(self, bridges) -> None:
        self._wanted = set(bridges)
        for bridge in self._wanted - self._dialing:
            self._dialing.add(bridge)
            self._spawn(self._dial, bridge)

    def _dial(self, bridge) -> None:
        path, delay, failing = self.path(bridge), BACKOFF[0], None
        try:
            while bridge in self._wanted:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(path)
                except OSError as exc:
                    sock.close()
                    if str(exc) != failing:        # one line per reason, not per try
                        failing = str(exc)
                        LOG.warning("bridge %s: cannot connect to %s (%s); retrying",
                                    bridge, path, exc.strerror or exc)
                    self._sleep(delay)
                    delay = min(delay * 2, BACKOFF[1])
                    continue
                delay, failing = BACKOFF[0], None
                try:
                    self._serve(_UnixChannel(sock), path)   # until the connection ends
                except Exception:      # noqa: BLE001 - Ryu logged it; dial again
                    pass
                self._sleep(BACKOFF[0])
        finally:
            self._dialing.discard(bridge)
