"""``nsx-proxy-cni``: ADD, DEL, CHECK and VERSION, as a runtime calls them.

ADD: the node bridge from OVSDB -> an address from the IPAM plugin over the
node's podCIDR (an address of each family on a dual-stack node) -> a veth
pair, the container end named CNI_IFNAME with the address(es), the MAC
``0a:58:`` + IPv4 and the default route(s) via each podCIDR's first
address -> the host end a port of the bridge with every key of the
docs/ovsdb.md , in one transaction.  Anything failing half-way undoes what
was done, address included.

DEL removes the port, the pair and the address; each step tolerates what is
already gone, so DEL may run any number of times, before or after the
namespace is gone.  CHECK verifies each of those against the prevResult.

Errors are the spec's JSON on stdout with exit status 1; one line also goes
to stderr, which runtimes log.
"""
import json
import os
import sys

from controller.bridges import dual_stack_text
from nsx_cni import ipam, links, ovsdb
from nsx_cni import spec as S
from nsx_cni.spec import CniError


def cmd_add(req: S.Request, env) -> dict:
    links.require_netns(req.netns)
    bridge = ovsdb.find_bridge(req.config)
    config = S.ipam_config(req.config, bridge.pod_cidr)
    addr = S.ipam_address(ipam.delegate(req, "ADD", config, env), bridge.pod_cidr)
    host_if = S.host_veth_name(req.container_id, req.ifname)
    try:
        host_mac = links.add_veth(host_if, req.ifname, req.netns, addr,
                                  req.config.get("mtu"), bridge.userspace)
        namespace, name = req.pod
        ovsdb.add_port(bridge.name, host_if, ovsdb.port_ids(
            namespace, name, req.container_id, req.ifname, addr.ovsdb_ip, addr.mac))
    except BaseException:
        _undo(req, env, config, host_if)
        raise
    return S.add_result(req, addr, host_if, host_mac)


def _undo(req, env, config, host_if):
    for step in (lambda: ovsdb.del_port(host_if),
                 lambda: links.del_veth(host_if, req.ifname, req.netns),
                 lambda: ipam.delegate(req, "DEL", config, env)):
        try:
            step()
        except CniError as exc:
            _log(f"ADD {req.container_id}: undoing: {exc.msg}")


def cmd_del(req: S.Request, env) -> None:
    host_if = S.host_veth_name(req.container_id, req.ifname)
    ovsdb.del_port(host_if)
    links.del_veth(host_if, req.ifname, req.netns)
    ipam.delegate(req, "DEL", _del_ipam_config(req), env)


def _del_ipam_config(req: S.Request) -> dict:
    """host-local releases by container ID and interface whatever the range,
    but it refuses a config without one: the prevResult's network when the
    runtime passed it, else the bridge's podCIDR; with neither (the node torn
    down, a runtime that keeps no result) a placeholder range, which only
    has to parse."""
    prev = S.prev_address(req)
    if prev is not None:
        return S.ipam_config(req.config, dual_stack_text(
            str(prev.interface.network),
            str(prev.interface6.network) if prev.interface6 is not None else None))
    try:
        pod_cidr = ovsdb.find_bridge(req.config).pod_cidr
    except CniError:
        pod_cidr = None
    return S.ipam_config(req.config, pod_cidr or "169.254.0.0/30")


def cmd_check(req: S.Request, env) -> None:
    addr = S.prev_address(req)
    if addr is None:
        raise CniError(S.INVALID_CONFIG, "CHECK needs the prevResult of ADD with an "
                       "IPv4 address")
    bridge = ovsdb.find_bridge(req.config)
    ipam.delegate(req, "CHECK", S.ipam_config(req.config, bridge.pod_cidr), env)
    host_if = S.host_veth_name(req.container_id, req.ifname)
    links.check_veth(host_if, req.ifname, req.netns, addr)
    namespace, name = req.pod
    ovsdb.check_port(bridge.name, host_if, ovsdb.port_ids(
        namespace, name, req.container_id, req.ifname, addr.ovsdb_ip, addr.mac))


def run(env, stdin: bytes):
    """(exit status, answer dict or None) for one invocation."""
    version = "1.0.0"
    try:
        req = S.parse_request(env, stdin)
        version = req.version if req.command != "VERSION" else version
        if req.command == "VERSION":
            return 0, S.version_answer()
        if req.command == "ADD":
            return 0, cmd_add(req, env)
        if req.command == "DEL":
            cmd_del(req, env)
        else:
            cmd_check(req, env)
        return 0, None
    except CniError as exc:
        _log(f"{env.get('CNI_COMMAND', '?')} {env.get('CNI_CONTAINERID', '')}: "
             f"error {exc.code}: {exc.msg}" + (f" ({exc.details})" if exc.details else ""))
        return 1, exc.to_json(version)
    except Exception as exc:          # a bug: still the spec's answer, never a traceback
        _log(f"{env.get('CNI_COMMAND', '?')}: internal error: {exc!r}")
        return 1, CniError(S.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
                           ).to_json(version)


def _log(line: str) -> None:
    print(f"nsx-proxy-cni: {line}", file=sys.stderr)


def main() -> int:
    stdin = sys.stdin.buffer.read()
    status, answer = run(dict(os.environ), stdin)
    if answer is not None:
        sys.stdout.write(json.dumps(answer) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
