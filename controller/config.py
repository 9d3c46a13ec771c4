"""The controller's options: the ``[nsx_proxy]`` section of its config file.

Registered with Ryu's (oslo) config, so ``ryu-manager --config-file FILE``
reads them and ``ryu-manager --help`` lists them.  This list is the one
source: docs/configuration.md holds what ``python -m controller.config``
prints from it (tests/test_docs.py fails when they differ), and the
DaemonSet's ConfigMap may set only options registered here
(tests/test_deploy.py).  The builders below turn options into the objects
the app needs, so the options are read in one place.
"""
import os
import uuid

from ryu import cfg
from ryu.ofproto import ofproto_common

from controller import bridge_dialer as bridge_dialer_module
from controller.node_setup import NodeSetup
from nsx_proxy import lb_ipam

CONF = cfg.CONF
OPTIONS = [
    cfg.StrOpt("node_name", default="",
               help="agent mode: program only the bridges OVSDB labels for this "
                    "Kubernetes node (default: $NODE_NAME; empty: every bridge, the "
                    "central mode of the lab)"),
    cfg.BoolOpt("gateway", default=False,
                help="agent mode: also program the gateway bridge on this host (which "
                     "agent writes LoadBalancer IPs is elected: leader_elect)"),
    cfg.StrOpt("source", default="kubernetes", choices=("kubernetes", "file", "none"),
               help="where the desired state comes from (none: another app in the "
                    "same ryu-manager calls set_state, as the benchmarks do)"),
    cfg.StrOpt("kubeconfig", default="",
               help="kubeconfig path; empty: in-cluster, else KUBECONFIG or ~/.kube/config"),
    cfg.FloatOpt("min_sync_period", default=0.5,
                 help="seconds: at most one sync per period, however many API events"),
    cfg.FloatOpt("max_sync_period", default=60.0,
                 help="seconds: at least one sync per period"),
    cfg.FloatOpt("relist_period", default=600.0,
                 help="seconds between full relists of each watched resource"),
    cfg.StrOpt("state_file", default="/var/lib/nsx-proxy/state.yaml",
               help="YAML file with nodes and services (the lab's state source)"),
    cfg.StrOpt("ovsdb", default="unix:/var/run/openvswitch/db.sock",
               help="OVSDB remote to read bridge and pod labels from"),
    cfg.FloatOpt("bundle_timeout", default=30.0,
                 help="seconds to wait for a bundle's commit before giving up"),
    cfg.StrOpt("fip_pools", default="",
               help="floating-IP pools for LoadBalancer services without an ingress IP: "
                    "NAME=CIDR[,CIDR];NAME2=CIDR, CIDRs of either family (a service gets "
                    "one address per family it has; empty: no allocation)"),
    cfg.StrOpt("load_balancer_class", default="",
               help="spec.loadBalancerClass whose LoadBalancer Services get IPs from "
                    "fip_pools, besides those without a class (empty: only those)"),
    cfg.StrOpt("default_fip_pool", default="",
               help="the pool used when neither the service nor its namespace names one "
                    "(annotation nsx-proxy.io/fip-pool)"),
    cfg.BoolOpt("leader_elect", default=True,
                help="agent mode: the agents elect, with a coordination.k8s.io Lease, the "
                     "one that writes LoadBalancer IPs from fip_pools (false: this agent "
                     "writes whenever it has fip_pools; run only one such agent)"),
    cfg.StrOpt("leader_election_namespace", default="",
               help="namespace of the Lease (default: $POD_NAMESPACE, else nsx-proxy)"),
    cfg.StrOpt("leader_election_lease", default="nsx-proxy-lb-writer",
               help="name of the Lease the agents elect the API writer with"),
    cfg.IntOpt("leader_election_lease_duration", default=15,
               help="seconds a follower waits after the leader's last renewal "
                    "before it takes over (kube-controller-manager's default)"),
    cfg.IntOpt("leader_election_renew_deadline", default=10,
               help="seconds the leader keeps trying to renew before it stops writing"),
    cfg.IntOpt("leader_election_retry_period", default=2,
               help="seconds between tries to acquire or renew the Lease"),
    cfg.StrOpt("external_ip_cidrs", default="",
               help="comma-separated CIDRs that Services' spec.externalIPs may use; an "
                    "externalIP outside them is ignored with one log line (mitigates "
                    "CVE-2020-8554: a user who can create Services could otherwise "
                    "intercept traffic to any IP); empty: any, as kube-proxy"),
    cfg.StrOpt("nodeport_addresses", default="",
               help="kube-proxy's --nodeport-addresses: comma-separated CIDRs (either "
                    "family) a node address must be in to serve nodePorts, or primary "
                    "(the node's InternalIPs); empty: every node address"),
    cfg.StrOpt("healthz_bind_address", default="0.0.0.0:10256",
               help="agent mode: HOST:PORT of kube-proxy's /healthz and /livez for "
                    "this node ([::]:PORT for IPv6; empty: off); services' "
                    "healthCheckNodePorts are served on every address of the node, "
                    "both families"),
    cfg.IntOpt("status_port", default=9910,
               help="localhost port of the read-only /state and /metrics endpoint; 0: off"),
    # 30 s: kube-proxy's syncPeriod.  OVS's flow monitor reports changes to
    # our flows at once; the audit is the backstop for groups (no monitor)
    # and lost monitor events, and at 10 s it was half an idle agent's CPU.
    cfg.FloatOpt("audit_period", default=30.0,
                 help="seconds between checks that each switch still holds what was "
                      "installed (flow count, groups and their buckets, the reject "
                      "meter); drift is reinstalled at once; 0: off"),
    cfg.IntOpt("audit_groups_every", default=2, min=0,
               help="every Nth drift check reads the groups' contents (buckets "
                    "changed in place keep their number; with audit_period 30, a "
                    "group changed behind our back is rewritten within 60 s); the "
                    "others count buckets (OVS's flow monitor covers flows); 0: never"),
    cfg.FloatOpt("affinity_sweep_period", default=60.0,
                 help="seconds between reads of session-affinity entries whose "
                      "timeoutSeconds is over 65535 (the controller expires those)"),
    cfg.IntOpt("reject_rate", default=100,
               help="refused connections answered (RST / ICMP) per second and bridge; "
                    "the bridge's meter drops the rest before they reach us"),
    cfg.StrOpt("bridge_connection", default="listen", choices=("listen", "mgmt"),
               help="how the OpenFlow connection to a bridge is made: listen (OVS dials "
                    "the agent: the bridge's controller target, set by you or by "
                    "node_setup) or mgmt (the agent dials the bridge's management socket, "
                    "<ovs_rundir>/<bridge>.mgmt, as Antrea does: no controller target, "
                    "and no reconnect backoff after a restart)"),
    cfg.StrOpt("ovs_rundir", default="",
               help="bridge_connection mgmt: OVS's run directory (empty: the directory "
                    "of the ovsdb unix: socket)"),
    cfg.BoolOpt("node_setup", default=False,
                help="agent mode: make this node's bridge, its tunnel port and the "
                     "node's host port from the Node object, and route the podCIDRs "
                     "and service_cidr into it (controller/node_setup.py)"),
    cfg.StrOpt("node_bridge", default="br-nsx", help="node_setup: the bridge's name"),
    cfg.StrOpt("datapath_type", default="system", choices=("system", "netdev"),
               help="node_setup: the bridge's datapath (netdev: userspace)"),
    cfg.StrOpt("tunnel_type", default="geneve", choices=("geneve", "vxlan", ""),
               help="node_setup: the overlay's tunnel port; empty: no tunnel port (a "
                    "fabric: label the uplink yourself)"),
    cfg.StrOpt("service_cidr", default="10.96.0.0/12",
               help="node_setup: the Service CIDR, IPv4[,IPv6] (the API server's "
                    "--service-cluster-ip-range), routed from the node into its bridge"),
    cfg.IntOpt("underlay_mtu", default=1500, min=1280,
               help="node_setup: the node's NIC MTU; the host port gets 50 bytes less "
                    "(the CNI conflist's mtu must say the same for pods)"),
]
CONF.register_opts(OPTIONS, group="nsx_proxy")


def ipam(conf):
    """The floating-IP pools LoadBalancer IPs come from; None: no pools."""
    pools = lb_ipam.parse_pools(conf.fip_pools)
    if not pools:
        return None
    return lb_ipam.Ipam(pools, conf.default_fip_pool or None, conf.load_balancer_class or None)


def election(conf, node_name):
    """Agents elect the one that writes to the API; the central controller
    (no node name) is the only process, and writes without a lease."""
    if not node_name or not conf.leader_elect:
        return None
    return dict(namespace=(conf.leader_election_namespace
                           or os.environ.get("POD_NAMESPACE") or "nsx-proxy"),
                name=conf.leader_election_lease,
                identity=f"{node_name}_{uuid.uuid4().hex[:8]}",
                lease_duration=conf.leader_election_lease_duration,
                renew_deadline=conf.leader_election_renew_deadline,
                retry_period=conf.leader_election_retry_period)


def node_setup(conf, node_name):
    """The agent's node setup, or None (off, or not an agent of a node).
    With bridge_connection mgmt the bridge gets no controller target."""
    if not (conf.node_setup and node_name and not conf.gateway):
        return None
    return NodeSetup(node_name, conf.node_bridge, conf.datapath_type, conf.tunnel_type,
                     None if conf.bridge_connection == "mgmt" else
                     CONF.ofp_tcp_listen_port or ofproto_common.OFP_TCP_PORT,
                     conf.service_cidr, conf.ovsdb,
                     conf.underlay_mtu)


def bridge_dialer(conf, serve, spawn, sleep):
    """The dialer of bridge_connection mgmt, or None (listen)."""
    if conf.bridge_connection != "mgmt":
        return None
    try:
        directory = conf.ovs_rundir or bridge_dialer_module.rundir(conf.ovsdb)
    except ValueError as exc:
        raise SystemExit(f"nsx-proxy: {exc}") from None
    return bridge_dialer_module.BridgeDialer(directory, serve, spawn, sleep)


def reference() -> str:
    """Every option as a Markdown table: what docs/configuration.md shows."""
    rows = ["| option | type | default | what it does |", "|---|---|---|---|"]
    for opt in sorted(OPTIONS, key=lambda o: o.name):
        kind = type(opt).__name__[:-len("Opt")].lower()
        choices = getattr(opt.type, "choices", None)
        if choices:
            kind += ": " + ", ".join(f"`{c}`" if c else "empty" for c in choices)
        default = "" if opt.default in ("", None) else str(opt.default).lower() \
            if isinstance(opt.default, bool) else str(opt.default)
        rows.append(f"| `{opt.name}` | {kind} | {f'`{default}`' if default else 'empty'} "
                    f"| {opt.help} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
