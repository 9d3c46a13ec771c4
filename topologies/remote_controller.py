"""Mininet's RemoteController, without its telnet check.

Mininet asks whether a remote controller listens by running ``echo A |
telnet -e A IP PORT`` in a shell and decoding what the shell printed as
UTF-8.  An OpenFlow controller answers a connection with its HELLO at once,
and Ryu's carries a random transaction id, so now and then telnet prints
bytes that are not UTF-8 and Mininet's decoder raises: the lab died at
start with ``UnicodeDecodeError: 'utf-8' codec can't decode byte ...``
(seed lab 004, then ``add_node.py``).  A TCP connect answers the same
question and reads nothing.

Standard library and Mininet only: ``mn --custom topologies/nsx_topo.py``
loads it with Debian's python3.
"""
import socket

from mininet.log import warn
from mininet.node import RemoteController as MininetRemoteController


class RemoteController(MininetRemoteController):
    def isListening(self, ip, port):  # noqa: N802 - Mininet's name
        with socket.socket() as sock:
            sock.settimeout(2)
            listening = sock.connect_ex((ip, port)) == 0
        if not listening:
            warn(f"Unable to contact the remote controller at {ip}:{port}\n")
        return listening
