"""A two-node cluster as plain data, shared by the unit and fake-switch tests,
and a fake datapath for driving a Switch without Ryu's loop."""
import dataclasses
import itertools

from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from controller import cookies
from controller.bridges import BridgeContext, ExternalPort, Pod
from controller.compiler import Compiler
from nsx_proxy import model

UPLINK = 10
VIP = "10.96.0.10"


def pod(name, ip, ofport):
    return Pod(namespace="default", name=name, ip=ip,
               mac="0a:58:" + ":".join(f"{int(b):02x}" for b in ip.split(".")),
               ofport=ofport)


NODE1 = BridgeContext(name="br-node1", dpid=0x1001, role="node", ct_zone=100,
                      node="node1", pod_cidr="10.1.1.0/24", uplink=UPLINK,
                      pods=(pod("pod1", "10.1.1.2", 1), pod("pod2", "10.1.1.3", 2)))
NODE2 = BridgeContext(name="br-node2", dpid=0x1002, role="node", ct_zone=200,
                      node="node2", pod_cidr="10.1.2.0/24", uplink=UPLINK,
                      pods=(pod("pod3", "10.1.2.2", 1), pod("pod4", "10.1.2.3", 2)))
GATEWAY = BridgeContext(name="br-gw", dpid=0x2000, role="gateway", ct_zone=300, uplink=1,
                        fabric_ip="192.168.100.254", external=ExternalPort(
                            ofport=2, ip="203.0.113.1", prefix=24,
                            next_hop_mac="0a:58:cb:00:71:0a"))
PODS = {p.name: p for ctx in (NODE1, NODE2) for p in ctx.pods}
NODES = (model.Node("node1", "192.168.100.1", "10.1.1.0/24"),
         model.Node("node2", "192.168.100.2", "10.1.2.0/24"))


def endpoint(name, port=8080, **kw):
    p = PODS[name]
    node = "node1" if p.ip.startswith("10.1.1.") else "node2"
    return model.Endpoint(ip=p.ip, port=port, node=node, pod=f"default/{name}", **kw)


def web(endpoints=("pod1", "pod3"), vip=VIP, name="web", **ep_kw):
    eps = tuple(endpoint(n, **ep_kw) for n in endpoints)
    udp_eps = tuple(endpoint(n, port=5353, **ep_kw) for n in endpoints)
    return model.Service(
        namespace="default", name=name, cluster_ip=vip,
        ports=(model.ServicePort("http", model.TCP, 80, 8080, eps),
               model.ServicePort("dns", model.UDP, 53, 5353, udp_eps)))


def state(*services):
    return model.ClusterState.build(services, NODES)


def compile_for(ctx, st, group_ids=None):
    return Compiler(ctx, group_ids or cookies.GroupIds()).compile(st)


class FakeDatapath:
    """What Switch needs of Ryu's Datapath: an id, the protocol modules, xids."""
    ofproto, ofproto_parser = ofp, parser

    def __init__(self, dpid=NODE1.dpid):
        self.id = dpid
        self._xids = itertools.count(1)

    def set_xid(self, msg):
        msg.set_xid(next(self._xids))


# Large pools: node2's pod CIDR, a /16, holds their endpoints (node1 routes it
# over the uplink).
BIG_NODES = (model.Node("node1", "192.168.100.1", "10.1.1.0/24"),
             model.Node("node2", "192.168.100.2", "10.2.0.0/16"))


def big_state(*services):
    return model.ClusterState.build(services, BIG_NODES)


def big_service(n, affinity=None, name="big", vip="10.96.5.5"):
    eps = tuple(model.Endpoint(ip=f"10.2.{i // 250}.{i % 250 + 2}", port=8080, node="node2")
                for i in range(n))
    return model.Service(namespace="default", name=name, cluster_ip=vip,
                         ports=(model.ServicePort("http", model.TCP, 80, 8080, eps),),
                         affinity_timeout=affinity)


# Dual-stack: the same two nodes with IPv6 pod CIDRs and pods with both
# families; web_dual_stack() has a cluster IP of each family and endpoints
# of both (an IPv4 and an IPv6 EndpointSlice).
VIP6 = "fd00:96::a"


def _pod6(p, node_k):
    return Pod(namespace=p.namespace, name=p.name, ip=p.ip, mac=p.mac, ofport=p.ofport,
               ip6=f"fd00:10:1:{node_k}::{p.ip.rsplit('.', 1)[1]}")


NODE1_DS = BridgeContext(name="br-node1", dpid=0x1001, role="node", ct_zone=100,
                         node="node1", pod_cidr="10.1.1.0/24", pod_cidr6="fd00:10:1:1::/64",
                         uplink=UPLINK, pods=tuple(_pod6(p, 1) for p in NODE1.pods))
NODE2_DS = BridgeContext(name="br-node2", dpid=0x1002, role="node", ct_zone=200,
                         node="node2", pod_cidr="10.1.2.0/24", pod_cidr6="fd00:10:1:2::/64",
                         uplink=UPLINK, pods=tuple(_pod6(p, 2) for p in NODE2.pods))
PODS6 = {p.name: p for ctx in (NODE1_DS, NODE2_DS) for p in ctx.pods}
NODES_DS = (model.Node("node1", "192.168.100.1", "10.1.1.0/24", pod_cidr6="fd00:10:1:1::/64"),
            model.Node("node2", "192.168.100.2", "10.1.2.0/24", pod_cidr6="fd00:10:1:2::/64"))


def web_dual_stack(endpoints=("pod1", "pod3"), vips=(VIP, VIP6), affinity=None):
    """web with a cluster IP per family (the first is primary)."""
    eps = []
    for name in endpoints:
        p = PODS6[name]
        node = "node1" if p.ip.startswith("10.1.1.") else "node2"
        eps += [model.Endpoint(ip=ip, port=8080, node=node, pod=f"default/{name}")
                for ip in (p.ip, p.ip6)]
    udp = tuple(e._replace(port=5353) for e in eps)
    return model.Service(
        namespace="default", name="web", cluster_ip=vips[0],
        secondary_cluster_ip=vips[1] if len(vips) > 1 else None, affinity_timeout=affinity,
        ports=(model.ServicePort("http", model.TCP, 80, 8080, tuple(eps)),
               model.ServicePort("dns", model.UDP, 53, 5353, udp)))


def dual_stack_state(*services):
    return model.ClusterState.build(services, NODES_DS)


# North-south in IPv6: the dual-stack nodes with an IPv6 InternalIP each, a
# gateway whose external port has an IPv6 address, and edge_dual_stack(): a
# dual-stack LoadBalancer with a nodePort, LB and external IPs of both
# families and source ranges of both.
NODES_NS6 = tuple(dataclasses.replace(n, internal_ip6=f"fd00:100::{k}")
                  for k, n in enumerate(NODES_DS, 1))
GATEWAY_DS = dataclasses.replace(GATEWAY, external=dataclasses.replace(
    GATEWAY.external, ip6="2001:db8:113::1"))
LB_IPS = ("198.51.100.7", "2001:db8:51::7")
EXTERNAL_IPS = ("198.51.100.200", "2001:db8:51::200")


def edge_dual_stack(source_ranges=("203.0.113.0/28", "2001:db8:113::/64"), **kw):
    web6 = web_dual_stack()
    ports = tuple(dataclasses.replace(p, node_port=30000 + p.port) for p in web6.ports)
    return dataclasses.replace(web6, type=model.LOAD_BALANCER, ports=ports,
                               load_balancer_ips=LB_IPS, external_ips=EXTERNAL_IPS,
                               source_ranges=source_ranges, **kw)


def north_south_state(*services):
    return model.ClusterState.build(services, NODES_NS6)
