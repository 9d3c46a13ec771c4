"""Follow OVSDB with python-ovs and report what every bridge is.

Runs in a green thread: python-ovs's poller falls back to select.select when
eventlet has patched ``select``, so ``block()`` yields to Ryu's event loop.
Every committed change (a pod plugged or unplugged, a bridge labelled)
produces a new ``{dpid: BridgeContext}`` snapshot for the callback.
"""
import logging

import ovs.db.idl
import ovs.jsonrpc
import ovs.poller
import ovs.stream

from controller.bridges import BadBridge, ROLE, parse_bridge

LOG = logging.getLogger(__name__)

_COLUMNS = {
    "Bridge": ["name", "external_ids", "datapath_id", "datapath_type", "ports"],
    "Port": ["name", "interfaces"],
    "Interface": ["name", "ofport", "external_ids", "type"],
}


def _scalar(value):
    """python-ovs returns optional columns as lists; take the one value."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def fetch_schema(remote: str):
    err, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote))
    if err:
        raise OSError(err, f"cannot connect to OVSDB at {remote}")
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        err, reply = rpc.transact_block(
            ovs.jsonrpc.Message.create_request("get_schema", ["Open_vSwitch"]))
        if err or reply.error:
            raise OSError(err or 0, f"get_schema failed: {reply and reply.error}")
        return reply.result
    finally:
        rpc.close()


def snapshot(idl, rejected):
    """Build {dpid: BridgeContext} from the IDL's tables; log bad bridges once."""
    out = {}
    for row in idl.tables["Bridge"].rows.values():
        ids = dict(row.external_ids)
        if ROLE not in ids:
            continue                      # not ours to program
        dpid_hex = _scalar(row.datapath_id)
        if not dpid_hex:
            continue                      # vswitchd has not created it yet
        interfaces = [(iface.name, _scalar(iface.ofport), dict(iface.external_ids),
                       iface.type)
                      for port in row.ports for iface in port.interfaces]
        try:
            ctx = parse_bridge(row.name, int(dpid_hex, 16), ids, interfaces,
                               _scalar(row.datapath_type) or "")
        except BadBridge as exc:
            if (row.name, str(exc)) not in rejected:
                rejected.add((row.name, str(exc)))
                LOG.warning("bridge %s ignored: %s", row.name, exc)
            continue
        out[ctx.dpid] = ctx
    return out


class OvsdbMonitor:
    def __init__(self, remote, on_change, spawn, sleep):
        self.remote = remote
        self._on_change = on_change
        self._spawn = spawn
        self._sleep = sleep
        self._rejected = set()

    def start(self):
        return self._spawn(self._run_forever)

    def _run_forever(self):
        backoff = 1
        while True:
            try:
                self._run()
            except Exception as exc:     # OVSDB down or restarting: retry
                LOG.warning("OVSDB %s: %s; retrying in %ss", self.remote, exc, backoff)
                self._sleep(backoff)
                backoff = min(backoff * 2, 30)

    def _say_connection(self, idl, was_up):
        """The IDL reconnects by itself, silently; say when OVSDB goes away and
        comes back (python-ovs has no public "connected" call).  ``was_up``
        is None until the first connection."""
        up = idl._session.is_connected()
        if was_up and not up:
            LOG.warning("OVSDB %s: connection lost; reconnecting (the bridges keep "
                        "their flows meanwhile)", self.remote)
        elif was_up is False and up:
            LOG.info("OVSDB %s: connected again", self.remote)
        return up if (was_up is not None or up) else None

    def _run(self):
        helper = ovs.db.idl.SchemaHelper(schema_json=fetch_schema(self.remote))
        for table, columns in _COLUMNS.items():
            helper.register_columns(table, columns)
        idl = ovs.db.idl.Idl(self.remote, helper)
        seqno, last, up = None, None, None     # up: None until the first connect
        LOG.info("following OVSDB at %s", self.remote)
        try:
            while True:
                idl.run()
                up = self._say_connection(idl, up)
                # Between a reconnect and the monitor's first reply the IDL's
                # tables are empty: a snapshot then would say "no bridges".
                if idl.change_seqno != seqno and up and \
                        getattr(idl, "state", idl.IDL_S_MONITORING) == idl.IDL_S_MONITORING:
                    seqno = idl.change_seqno
                    contexts = snapshot(idl, self._rejected)
                    if contexts != last:
                        last = contexts
                        self._on_change(contexts)
                poller = ovs.poller.Poller()
                idl.wait(poller)
                poller.timer_wait(1000)
                poller.block()
        finally:
            idl.close()
