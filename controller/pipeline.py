"""The OpenFlow pipeline, declared once as data.

Table ids leave gaps so later features can slot tables in without
renumbering what users have learnt to read.  The README's "Flow tables"
section is written from this list; tests check that every compiled flow
lands in a declared table and only jumps forward.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    id: int
    name: str
    job: str

    def __int__(self) -> int:
        return self.id


CLASSIFIER = Table(0, "Classifier",
                   "admit traffic by ingress port: a pod's port only with its own "
                   "MAC and IP (anti-spoofing), the uplink only to this bridge's "
                   "router MAC; ARP to ArpResponder, IP to ConntrackZone")
ARP_RESPONDER = Table(10, "ArpResponder",
                      "answer ARP requests for the pod gateway, service VIPs and "
                      "local pods from the controller's knowledge; never flood")
HAIRPIN_UNSNAT = Table(15, "UnSNAT",
                        "replies to an address this bridge source-NATs to (the pod "
                        "gateway IP for hairpin, the node IP, pods' floating IPs): "
                        "undo that NAT (zone ct-zone+1) before the service zone")
CONNTRACK_ZONE = Table(20, "ConntrackZone",
                       "send IP through conntrack in the bridge's zone, undoing "
                       "the NAT of known connections (replies get their VIP back)")
CONNTRACK_STATE = Table(21, "ConntrackState",
                        "drop +inv; established, related and reply packets skip "
                        "load balancing; new connections go to ServiceLB")
SERVICE_LB = Table(30, "ServiceLB",
                   "a new connection to a service frontend (VIP, protocol, port) "
                   "goes to that service port's select group, whose buckets DNAT "
                   "and commit; with no usable endpoint, or to a port the VIP "
                   "does not have, it is rejected (RST / ICMP port unreachable, "
                   "rate-limited by a meter); anything else is committed as is")
SESSION_AFFINITY = Table(31, "SessionAffinity",
                         "learned entries (client IP, frontend) -> the endpoint chosen "
                         "for that client; looked up with resubmit, so a miss just "
                         "leaves reg0 empty")
ENDPOINT_DNAT = Table(35, "EndpointDNAT",
                      "affinity services: the endpoint in reg0/reg1 (from an "
                      "affinity entry or a group bucket) is DNATed and committed; "
                      "no such endpoint (none chosen yet, or it went away) -> the "
                      "service port's group picks one")
AFFINITY_LEARN = Table(36, "AffinityLearn",
                       "after the DNAT: a freshly picked endpoint (reg1[17]) is "
                       "learned into SessionAffinity for the service's timeout")
SERVICE_MASQUERADE = Table(38, "ServiceMasquerade",
                           "connections marked for masquerade (ct_mark 1: NodePort, "
                           "external and load-balancer IPs with externalTrafficPolicy "
                           "Cluster) are source-NATed to the node IP in zone ct-zone+1, "
                           "so replies come back through this node")
L3_FORWARDING = Table(40, "L3Forwarding",
                      "route on the (translated) destination: local pod -> its "
                      "port, another node's pod CIDR -> the uplink; a pod "
                      "reaching itself through a service is source-NATed to the "
                      "gateway IP (hairpin) so its reply comes back to the bridge")
EGRESS_OUTPUT = Table(41, "EgressOutput",
                      "leave the cluster: to the gateway router over the uplink (pods "
                      "were source-NATed to their floating IP or the node IP first)")
HAIRPIN = Table(42, "HairpinOutput",
                "send a source-NATed hairpin packet back out of the port it came in")

# New connections that must be refused (no endpoint, or a port the service
# IP does not have) go to the controller through this meter, which answers
# with a TCP RST or an ICMP port unreachable; the meter caps the rate so a
# flood cannot overload the controller.
REJECT_METER = 1

GATEWAY_ROUTING = Table(60, "GatewayRouting",
                        "gateway bridge: node IPs to their node; load-balancer and "
                        "external IPs to a select group over the nodes that serve them "
                        "(ECMP); floating IPs to the pod's node; traffic from the "
                        "cluster to anywhere else out of the external port; nothing "
                        "else (cluster and pod IPs) from outside")

TABLES = (CLASSIFIER, ARP_RESPONDER, HAIRPIN_UNSNAT, CONNTRACK_ZONE,
          CONNTRACK_STATE, SERVICE_LB, SESSION_AFFINITY, ENDPOINT_DNAT, AFFINITY_LEARN,
          SERVICE_MASQUERADE, L3_FORWARDING, EGRESS_OUTPUT, HAIRPIN, GATEWAY_ROUTING)
MASQUERADE_MARK = 1

# Registers (sessionAffinity ClientIP):
#   reg0        the chosen endpoint's IPv4 address
#   reg1[0..15] the chosen endpoint's port
#   reg1[16]    the endpoint came from a SessionAffinity entry
#   reg1[17]    the endpoint was just picked by the group: learn it
#   reg2        the frontend IPv4 address the client asked for
#   reg3[0..15] the frontend port
AFFINITY_HIT_BIT = 1 << 16
AFFINITY_LEARN_BIT = 1 << 17
BY_ID = {t.id: t for t in TABLES}


def table_name(table_id: int) -> str:
    table = BY_ID.get(table_id)
    return table.name if table else f"table{table_id}"
