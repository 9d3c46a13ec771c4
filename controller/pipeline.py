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
CONNTRACK_ZONE = Table(20, "ConntrackZone",
                       "send IP through conntrack in the bridge's zone, undoing "
                       "the NAT of known connections (replies get their VIP back)")
CONNTRACK_STATE = Table(21, "ConntrackState",
                        "drop +inv; established, related and reply packets skip "
                        "load balancing; new connections go to ServiceLB")
SERVICE_LB = Table(30, "ServiceLB",
                   "a new connection to a service frontend (VIP, protocol, port) "
                   "goes to that service port's select group, whose buckets DNAT "
                   "and commit; anything else is committed as is")
L3_FORWARDING = Table(40, "L3Forwarding",
                      "route on the (translated) destination: local pod -> its "
                      "port, another node's pod CIDR -> the uplink")

TABLES = (CLASSIFIER, ARP_RESPONDER, CONNTRACK_ZONE, CONNTRACK_STATE,
          SERVICE_LB, L3_FORWARDING)
BY_ID = {t.id: t for t in TABLES}


def table_name(table_id: int) -> str:
    table = BY_ID.get(table_id)
    return table.name if table else f"table{table_id}"
