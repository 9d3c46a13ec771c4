"""Node setup by the agent: this node's bridge, its overlay port and the
node's own stack port, made from the Node objects, as Antrea's agent makes
br-int, antrea-tun0 and antrea-gw0.

Off unless ``node_setup = true`` (the DaemonSet's config turns it on; the
central lab, or bridges made by hand, leave it off).  What it makes, every
part idempotent, so a restart or a repeat changes nothing that is right:

- the bridge ``node_bridge``: ``datapath_type``, ``fail_mode=secure``,
  OpenFlow 1.3, in-band control off, the controller on 127.0.0.1 with a 1 s
  reconnect back-off (OVS's default grows to 8 s, which an agent restart
  would wait for), labelled from this node's Node object (name, podCIDR) and
  with the gateway Node's InternalIP as ``nsx-proxy-fabric-gateway``;
- ``nsx-tun0``, the uplink: a ``tunnel_type`` port (Geneve by default) with
  ``remote_ip=flow``, so the bridge is an overlay (docs/datapaths.md);
- ``nsx-host0``, the node's own stack on the bridge (role ``host``): MAC
  ``0a:58:`` + the InternalIP, which it also holds as a /32; routes for
  every compute node's podCIDR and for ``service_cidr`` lead into it, via
  this node's pod gateway.  The node's address stays on its NIC.  A
  dual-stack node (an IPv6 podCIDR and an IPv6 InternalIP) gets the same
  in IPv6: its IPv6 InternalIP as a /128, routes for the IPv6 podCIDRs and
  the IPv6 ``service_cidr`` via its IPv6 pod gateway;
- NodePorts that reach the node's own address from off the node are
  steered into the bridge (as Antrea does): the nftables table
  ``ip nsx-proxy`` DNATs them, port kept, to ``NODE_PORT_STEER_IP``, routed
  into ``nsx-host0``; the bridge serves that address like the node IP and
  sends the replies back by the host port, where the kernel un-DNATs them.
  Forwarding is turned on for it.  On a dual-stack node the table ``ip6
  nsx-proxy`` does the same to ``NODE_PORT_STEER_IP6``.  Health-check node
  ports stay the kernel's (the agent answers them on every node address).

The plan is pure (``ovsdb_args``, ``kernel_batch``); ``NodeSetup`` applies
it when it changes.
"""
import logging
import subprocess
from typing import List, Optional, Tuple

from controller import bridges as B
from nsx_proxy import changes, model

LOG = logging.getLogger(__name__)

TUNNEL_PORT = "nsx-tun0"
HOST_PORT = "nsx-host0"
TUNNEL_OVERHEAD = 50           # Geneve or VXLAN over IPv4: 14 + 20 + 8 + 8 bytes
NFT_TABLE = "nsx-proxy"        # ip family: the NodePort steering


def gateway_ip(nodes) -> Optional[str]:
    """The gateway host's address: where a node bridge sends what leaves the
    cluster (its Node is labelled nsx-proxy.io/gateway=true)."""
    gateways = sorted(n.internal_ip for n in nodes if n.gateway)
    return gateways[0] if gateways else None


def ovsdb_args(node: model.Node, gateway: Optional[str], bridge: str, datapath_type: str,
               tunnel_type: str, of_port: Optional[int], mtu: int,
               set_controller: bool = True) -> List[str]:
    """One ovs-vsctl transaction that makes (or corrects) the bridge and its
    ports (no tunnel port without a ``tunnel_type``: a fabric's uplink is the
    operator's).  The bridge's controller target is the agent's ``of_port``
    on 127.0.0.1, or none when ``of_port`` is None (bridge_connection mgmt);
    ``set_controller`` False keeps a target that is right already (setting
    it again would make OVS reconnect)."""
    mac = B.ip_mac(node.internal_ip)
    host_ips = B.dual_stack_text(node.internal_ip,
                                 node.internal_ip6 if node.dual_stack else None)
    # a dual-stack Node's two podCIDRs, IPv4 first (docs/ovsdb.md): the CNI
    # plugin then gives pods an address of each family
    cidrs = B.dual_stack_text(node.pod_cidr, node.pod_cidr6)
    labels = [f"external_ids:{B.ROLE}={B.ROLE_NODE}", f"external_ids:{B.NODE}={node.name}",
              f"external_ids:{B.POD_CIDR}={cidrs}"]
    args = ["--", "--may-exist", "add-br", bridge,
            "--", "set", "bridge", bridge, f"datapath_type={datapath_type}",
            "fail_mode=secure", "protocols=OpenFlow13",
            "other-config:disable-in-band=true", *labels]
    if gateway:
        args.append(f"external_ids:{B.FABRIC_GATEWAY}={gateway}")
    else:
        args += ["--", "remove", "bridge", bridge, "external_ids", B.FABRIC_GATEWAY]
    if set_controller and of_port:
        args += ["--", "set-controller", bridge, f"tcp:127.0.0.1:{of_port}",
                 "--", "set", "controller", bridge, "max_backoff=1000"]
    elif set_controller:          # the agent dials <bridge>.mgmt: a target would connect twice
        args += ["--", "del-controller", bridge]
    if tunnel_type:
        args += ["--", "--may-exist", "add-port", bridge, TUNNEL_PORT,
                 "--", "set", "interface", TUNNEL_PORT, f"type={tunnel_type}",
                 "options:remote_ip=flow", f"external_ids:{B.ROLE}={B.ROLE_UPLINK}"]
    args += ["--", "--may-exist", "add-port", bridge, HOST_PORT,
             "--", "set", "interface", HOST_PORT, "type=internal", f'mac="{mac}"',
             f"mtu_request={mtu}", f"external_ids:{B.ROLE}={B.ROLE_HOST}",
             f"external_ids:{B.POD_IP}={host_ips}",
             f"external_ids:{B.POD_MAC}={mac}"]
    return args


def routed_cidrs(nodes, service_cidr: str, ipv6: bool = False) -> Tuple[str, ...]:
    """What the node reaches through its bridge: every compute node's
    podCIDR (its own included), and the Service CIDRs (``service_cidr``:
    "IPv4[,IPv6]"); with ``ipv6``, the IPv6 ones too."""
    cidrs = sorted({n.pod_cidr for n in nodes if n.compute and n.pod_cidr})
    services = [c.strip() for c in (service_cidr or "").split(",") if c.strip()]
    out = cidrs + [c for c in services if ":" not in c]
    if ipv6:
        out += sorted({n.pod_cidr6 for n in nodes if n.compute and n.pod_cidr6})
        out += [c for c in services if ":" in c]
    return tuple(out)


def kernel_batch(node: model.Node, cidrs, mtu: int, stale=()) -> str:
    """``ip -batch`` lines for the host port: up, the InternalIPs as a /32
    (and a /128), a route per CIDR via this node's pod gateway of its family
    (``stale``: routes of CIDRs that went away), and the steering addresses
    behind it (the bridge's router MAC, so no ARP or ND is needed)."""
    mac = B.router_mac(node.pod_cidr)
    # per family: (the node's address, its pod gateway, the steering address)
    families = {False: (node.internal_ip, B.gateway_ip(node.pod_cidr), B.NODE_PORT_STEER_IP)}
    if node.dual_stack:
        families[True] = (node.internal_ip6, B.gateway_ip(node.pod_cidr6),
                          B.NODE_PORT_STEER_IP6)
    lines = [f"link set {HOST_PORT} mtu {mtu} up"]
    for v6, (ip, _, steer) in families.items():
        host = "/128" if v6 else "/32"
        # nodad: the address is the node's own (the bridge never answers DAD)
        lines += [f"addr replace {ip}{host} dev {HOST_PORT}" + (" nodad" if v6 else ""),
                  f"route replace {steer}{host} dev {HOST_PORT}",
                  f"neigh replace {steer} lladdr {mac} dev {HOST_PORT} nud permanent"]
    for c in cidrs:
        ip, gw, _ = families[":" in c]
        lines.append(f"route replace {c} via {gw} dev {HOST_PORT} onlink src {ip}")
    lines += [f"route del {c} dev {HOST_PORT}" for c in stale]
    return "\n".join(lines) + "\n"


def node_ports(svc) -> Tuple[Tuple[str, str, int], ...]:
    """(nftables family, protocol, nodePort) of a Service (none unless it has
    nodePorts): what the node steers into its bridge for it, on its address
    of each family the Service has (kube-proxy's proxier of the other family
    never sees the Service)."""
    if svc is None or not svc.node_ports:
        return ()
    families = sorted({"ip6" if ":" in ip else "ip" for ip in svc.cluster_ips})
    return tuple(sorted({(f, p.protocol.lower(), p.node_port) for p in svc.ports
                         if p.node_port for f in families}))


def nft_ruleset(ports, ipv6: bool = False) -> str:
    """The ``ip nsx-proxy`` table (and with ``ipv6`` the ``ip6`` one), each
    replaced whole in one transaction (``nft -f``: the add-then-delete makes
    the delete safe when it is missing; an ``ip6`` table left from a node
    that had IPv6 goes too)."""
    out = []
    for family, steer_ip, loopback in (("ip", B.NODE_PORT_STEER_IP, "127.0.0.0/8"),
                                       ("ip6", B.NODE_PORT_STEER_IP6, "::1")):
        out += [f"add table {family} {NFT_TABLE}", f"delete table {family} {NFT_TABLE}"]
        if family == "ip6" and not ipv6:
            continue
        elements = ", ".join(f"{proto} . {port}" for f, proto, port in ports if f == family)
        steer = f"fib daddr type local {family} daddr != {loopback} meta l4proto . th " \
                f"dport @node-ports dnat {family} to {steer_ip}"
        out += [
            f"table {family} {NFT_TABLE} {{",
            "  set node-ports {",
            "    type inet_proto . inet_service",
            f"    elements = {{ {elements} }}" if elements else "",
            "  }",
            "  chain prerouting {",
            "    type nat hook prerouting priority dstnat; policy accept;",
            f'    iifname != "{HOST_PORT}" {steer}',
            "  }",
            "  chain output {",            # the node's own connections to its nodePorts
            "    type nat hook output priority -100; policy accept;",   # dstnat's number
            f"    {steer}",
            "  }",
            "}"]
    return "\n".join(out + [""])


class NodeSetup:
    """Applies the plan for ``node_name`` whenever the Node objects change it."""

    def __init__(self, node_name, bridge, datapath_type, tunnel_type, of_port,
                 service_cidr, ovsdb, underlay_mtu=1500, run=subprocess.run,
                 sysctl=None):
        self.node_name = node_name
        self.bridge = bridge
        self.datapath_type = datapath_type
        self.tunnel_type = tunnel_type
        self.of_port = of_port
        self.service_cidr = service_cidr
        self.ovsdb = ovsdb
        self.mtu = underlay_mtu - TUNNEL_OVERHEAD
        self.run = run
        self.sysctl = sysctl or _write_sysctl
        self.applied = None              # (the plan's inputs, routed CIDRs) last applied
        self.steered = None              # (the nodePorts the nftables tables hold, IPv6?)
        self._ports = {}                 # service key -> its nodePorts (node_ports)
        self._due = {"node": True, "ports": True}   # to (re)compute at the next update
        self.waiting_logged = False

    def update(self, nodes, services, change=changes.EVERYTHING) -> bool:
        """Bring OVSDB and the kernel to the plan for these Node objects, and
        the NodePort steering to these Services (a mapping by key); True when
        something was (re)applied.  ``change`` (the sync's change set) says
        which of the two to look at again: a sync for endpoints alone costs
        nothing here.  What failed is looked at again at the next update."""
        full = change.everything
        if full or change.nodes:
            self._due["node"] = True
        if full:
            self._ports = {k: p for k, p in ((k, node_ports(s)) for k, s in services.items())
                           if p}
            self._due["ports"] = True
        elif change.services:
            for key in change.services:
                ports = node_ports(services.get(key))
                if ports:
                    self._ports[key] = ports
                else:
                    self._ports.pop(key, None)
            self._due["ports"] = True
        try:
            changed = self._due["node"] and self._update_node(nodes)
            if self.applied is not None and self._due["ports"]:
                ipv6 = self.applied[0][0].dual_stack
                changed = self._steer(tuple(sorted(
                    {p for ports in self._ports.values() for p in ports
                     if ipv6 or p[0] == "ip"})), ipv6) or changed
        except Exception:      # noqa: BLE001 - never the programming's cost
            LOG.exception("node setup of %s failed (next change retries)", self.bridge)
            return False
        return bool(changed)

    def _steer(self, ports, ipv6) -> bool:
        if (ports, ipv6) == self.steered:
            self._due["ports"] = False
            return False
        try:
            if self.steered is None:      # steered NodePorts are forwarded into the bridge
                self.sysctl("net/ipv4/ip_forward", "1")
            if ipv6 and (self.steered is None or not self.steered[1]):
                self.sysctl("net/ipv6/conf/all/forwarding", "1")
            self._call(["nft", "-f", "-"], nft_ruleset(ports, ipv6))
        except (OSError, subprocess.SubprocessError) as exc:
            LOG.error("node setup: NodePort steering not applied (next change retries): %s",
                      exc)
            return False
        self.steered = (ports, ipv6)
        self._due["ports"] = False
        LOG.info("node setup: %d nodePorts steered into %s", len(ports), self.bridge)
        return True

    def _update_node(self, nodes) -> bool:
        node = next((n for n in nodes if n.name == self.node_name), None)
        if node is None or not node.pod_cidr or not node.internal_ip:
            if not self.waiting_logged:
                LOG.warning("node setup: waiting for Node %s with a podCIDR and an "
                            "InternalIP", self.node_name)
                self.waiting_logged = True
            return False
        gateway = gateway_ip(nodes)
        cidrs = routed_cidrs(nodes, self.service_cidr, node.dual_stack)
        if self.applied == ((node, gateway), cidrs):
            self._due["node"] = False
            return False
        stale = [c for c in (self.applied[1] if self.applied else ()) if c not in cidrs]
        vsctl = ["ovs-vsctl", f"--db={self.ovsdb}", "--timeout=10"]
        try:
            # the one target wanted (none: the agent dials the bridge itself)
            keep = self.run(vsctl + ["get-controller", self.bridge], capture_output=True,
                            text=True, timeout=20).stdout.split() == \
                ([f"tcp:127.0.0.1:{self.of_port}"] if self.of_port else [])
            self._call(vsctl + ovsdb_args(node, gateway, self.bridge, self.datapath_type,
                                          self.tunnel_type, self.of_port, self.mtu,
                                          set_controller=not keep))
            self._call(["ip", "-batch", "-"], kernel_batch(node, cidrs, self.mtu, stale))
            if self.datapath_type == "netdev":
                # The userspace datapath's conntrack marks packets whose TCP
                # checksum was left to offload invalid: the port computes it.
                self._call(["ethtool", "-K", HOST_PORT, "tx", "off"])
        except (OSError, subprocess.SubprocessError) as exc:
            LOG.error("node setup of %s failed (next change retries): %s", self.bridge, exc)
            return False
        if self.applied is None:
            LOG.info("node setup: bridge %s (%s, podCIDR %s), uplink %s, %s routing %s",
                     self.bridge, self.datapath_type, node.pod_cidr,
                     f"{TUNNEL_PORT} ({self.tunnel_type})" if self.tunnel_type
                     else "not ours (fabric)", HOST_PORT, ", ".join(cidrs))
        else:
            LOG.info("node setup: %s now routes %s", HOST_PORT, ", ".join(cidrs))
        self.applied = ((node, gateway), cidrs)
        self._due["node"] = False
        self._due["ports"] = True         # the steering follows the node's families
        return True

    def _call(self, cmd, stdin=None):
        proc = self.run(cmd, input=stdin, capture_output=True, text=True, timeout=20)
        if proc.returncode:
            raise subprocess.SubprocessError(f"{' '.join(cmd[:3])}: {proc.stderr.strip()}")


def _write_sysctl(name, value) -> None:
    """A net.* sysctl of the namespace the agent runs in (the node's)."""
    with open(f"/proc/sys/{name}", "w") as fh:
        fh.write(value + "\n")
