"""The answers to refused connections, byte for byte through Ryu's parser."""
from ryu.lib.packet import ethernet, icmp, icmpv6, ipv4, ipv6, packet, tcp, udp

from controller import reject

POD_MAC, ROUTER_MAC = "0a:58:0a:01:01:02", "0a:58:0a:01:01:01"


def frame(l4, proto, payload=b"", v6=False):
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=ROUTER_MAC, src=POD_MAC,
                                       ethertype=0x86dd if v6 else 0x0800))
    pkt.add_protocol(ipv6.ipv6(src="fd00:10:1:1::2", dst="fd00:96::a", nxt=proto) if v6 else
                     ipv4.ipv4(src="10.1.1.2", dst="10.96.0.10", proto=proto))
    pkt.add_protocol(l4)
    if payload:
        pkt.add_protocol(payload)
    pkt.serialize()
    return bytes(pkt.data)


def test_syn_gets_rst_ack_from_the_address_it_tried():
    syn = frame(tcp.tcp(src_port=40000, dst_port=80, seq=1000, bits=tcp.TCP_SYN), 6)
    out = packet.Packet(reject.reply_for(syn))
    eth, ip, seg = (out.get_protocol(c) for c in (ethernet.ethernet, ipv4.ipv4, tcp.tcp))
    assert (eth.src, eth.dst) == (ROUTER_MAC, POD_MAC)
    assert (ip.src, ip.dst) == ("10.96.0.10", "10.1.1.2")
    assert (seg.src_port, seg.dst_port) == (80, 40000)
    assert seg.bits == tcp.TCP_RST | tcp.TCP_ACK and seg.ack == 1001


def test_segment_with_ack_gets_a_bare_rst_with_its_ack_as_seq():
    ack = frame(tcp.tcp(src_port=40000, dst_port=80, seq=5, ack=777, bits=tcp.TCP_ACK), 6)
    seg = packet.Packet(reject.reply_for(ack)).get_protocol(tcp.tcp)
    assert seg.bits == tcp.TCP_RST and seg.seq == 777


def test_rst_is_never_answered():
    rst = frame(tcp.tcp(src_port=40000, dst_port=80, bits=tcp.TCP_RST), 6)
    assert reject.reply_for(rst) is None


def test_udp_gets_icmp_port_unreachable_quoting_the_datagram():
    dgram = frame(udp.udp(src_port=40000, dst_port=53), 17, b"question")
    out = packet.Packet(reject.reply_for(dgram))
    ip, msg = out.get_protocol(ipv4.ipv4), out.get_protocol(icmp.icmp)
    assert (ip.src, ip.dst, ip.proto) == ("10.96.0.10", "10.1.1.2", 1)
    assert (msg.type, msg.code) == (icmp.ICMP_DEST_UNREACH, 3)
    quoted, _, _ = ipv4.ipv4.parser(msg.data.data)
    assert (quoted.src, quoted.dst) == ("10.1.1.2", "10.96.0.10")
    assert len(msg.data.data) == 20 + 8


def test_ipv6_syn_gets_rst_ack_and_udp_an_icmpv6_port_unreachable():
    syn = frame(tcp.tcp(src_port=40000, dst_port=80, seq=1000, bits=tcp.TCP_SYN), 6,
                b"hello", v6=True)
    out = packet.Packet(reject.reply_for(syn))
    ip, seg = out.get_protocol(ipv6.ipv6), out.get_protocol(tcp.tcp)
    assert (ip.src, ip.dst, ip.nxt) == ("fd00:96::a", "fd00:10:1:1::2", 6)
    assert seg.bits == tcp.TCP_RST | tcp.TCP_ACK and seg.ack == 1000 + 1 + 5
    dgram = frame(udp.udp(src_port=40000, dst_port=53), 17, b"question", v6=True)
    raw = reject.reply_for(dgram)
    out = packet.Packet(raw)
    ip, msg = out.get_protocol(ipv6.ipv6), out.get_protocol(icmpv6.icmpv6)
    assert (ip.src, ip.dst, ip.nxt) == ("fd00:96::a", "fd00:10:1:1::2", 58)
    assert (msg.type_, msg.code) == (icmpv6.ICMPV6_DST_UNREACH, 4)
    assert raw[14 + 40 + 8:] == dgram[14:]           # the whole datagram, quoted
    # the checksum Ryu wrote verifies: re-serialising with csum=0 gives the same
    again = icmpv6.icmpv6(type_=msg.type_, code=msg.code, data=raw[14 + 40 + 4:])
    assert again.serialize(b"", ip)[2:4] == raw[14 + 40 + 2:14 + 40 + 4]


def test_token_bucket_caps_the_rate():
    bucket = reject.TokenBucket(rate=10, burst=5, now=0.0)
    assert sum(bucket.take(0.0) for _ in range(20)) == 5
    assert sum(bucket.take(0.2) for _ in range(20)) == 2    # 10 a second
    assert sum(bucket.take(5.0) for _ in range(20)) == 5    # refilled, capped at burst
