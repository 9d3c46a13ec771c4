"""Answers for refused connections: a TCP RST or an ICMP (ICMPv6) port unreachable.

Pure: packet bytes in, reply bytes out (Ryu's packet library builds them).
The reply goes back out of the port the packet came in on, from the address
the client tried to reach, so the client's stack fails the connect at once
(``connection refused``) instead of retrying until it times out - what
kube-proxy's REJECT rules give.  The bridge's meter limits how many packets
get here; :class:`TokenBucket` is the controller's own second limit.
"""
from typing import Optional

from ryu.lib.packet import ethernet, icmp, icmpv6, ipv4, ipv6, packet, tcp, udp
from ryu.lib.packet import ether_types, in_proto

ICMP_PORT_UNREACHABLE = 3
ICMPV6_PORT_UNREACHABLE = 4          # RFC 4443: type 1 (destination unreachable), code 4


def _l2_l3(eth, ip, proto):
    reply = packet.Packet()
    v6 = isinstance(ip, ipv6.ipv6)
    reply.add_protocol(ethernet.ethernet(dst=eth.src, src=eth.dst, ethertype=(
        ether_types.ETH_TYPE_IPV6 if v6 else ether_types.ETH_TYPE_IP)))
    reply.add_protocol(ipv6.ipv6(src=ip.dst, dst=ip.src, nxt=proto, hop_limit=64) if v6
                       else ipv4.ipv4(src=ip.dst, dst=ip.src, proto=proto, ttl=64))
    return reply


def _tcp_reset(eth, ip, seg, payload_len):
    """RFC 9293: answer a segment without ACK with RST+ACK, else RST with seq=ack."""
    reply = _l2_l3(eth, ip, in_proto.IPPROTO_TCP)
    if seg.bits & tcp.TCP_ACK:
        reply.add_protocol(tcp.tcp(src_port=seg.dst_port, dst_port=seg.src_port,
                                   seq=seg.ack, ack=0, bits=tcp.TCP_RST))
    else:
        consumed = payload_len + (1 if seg.bits & tcp.TCP_SYN else 0) + \
            (1 if seg.bits & tcp.TCP_FIN else 0)
        reply.add_protocol(tcp.tcp(src_port=seg.dst_port, dst_port=seg.src_port, seq=0,
                                   ack=(seg.seq + consumed) & 0xFFFFFFFF,
                                   bits=tcp.TCP_RST | tcp.TCP_ACK))
    reply.serialize()
    return bytes(reply.data)


def _port_unreachable(eth, ip, raw_ip: bytes):
    """ICMP type 3 code 3 quoting the IP header and 8 bytes of the datagram."""
    reply = _l2_l3(eth, ip, in_proto.IPPROTO_ICMP)
    quoted = raw_ip[:ip.header_length * 4 + 8]
    reply.add_protocol(icmp.icmp(type_=icmp.ICMP_DEST_UNREACH, code=ICMP_PORT_UNREACHABLE,
                                 csum=0, data=icmp.dest_unreach(data=quoted)))
    reply.serialize()
    return bytes(reply.data)


def _port_unreachable6(eth, ip, raw_ip: bytes):
    """ICMPv6 type 1 code 4 quoting as much of the datagram as reached us
    (the bridge sends the controller its first 128 bytes)."""
    reply = _l2_l3(eth, ip, in_proto.IPPROTO_ICMPV6)
    reply.add_protocol(icmpv6.icmpv6(type_=icmpv6.ICMPV6_DST_UNREACH,
                                     code=ICMPV6_PORT_UNREACHABLE,
                                     data=bytes(4) + raw_ip))       # 4 unused bytes first
    reply.serialize()
    return bytes(reply.data)


def reply_for(data: bytes) -> Optional[bytes]:
    """The reject answer for a refused packet, or None if it is not TCP/UDP
    over IPv4 or IPv6 (without extension headers, as pods send them)."""
    pkt = packet.Packet(data)
    eth = pkt.get_protocol(ethernet.ethernet)
    ip = pkt.get_protocol(ipv4.ipv4) or pkt.get_protocol(ipv6.ipv6)
    if eth is None or ip is None:
        return None
    v6 = isinstance(ip, ipv6.ipv6)
    seg = pkt.get_protocol(tcp.tcp)
    if seg is not None:
        if seg.bits & tcp.TCP_RST:
            return None                    # never answer a reset
        payload_len = (ip.payload_length if v6 else
                       ip.total_length - ip.header_length * 4) - seg.offset * 4
        return _tcp_reset(eth, ip, seg, max(payload_len, 0))
    if pkt.get_protocol(udp.udp) is not None:
        raw_ip = data[14:]
        return (_port_unreachable6 if v6 else _port_unreachable)(eth, ip, raw_ip)
    return None


class TokenBucket:
    """At most ``rate`` answers a second, bursts of ``burst``; time is handed in."""

    def __init__(self, rate=100.0, burst=100, now=0.0):
        self.rate, self.burst = rate, burst
        self._tokens, self._last = float(burst), now

    def take(self, now) -> bool:
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
