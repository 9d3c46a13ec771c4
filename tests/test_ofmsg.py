"""Messages Ryu does not know, checked against the bytes OVS's own tools send."""
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from controller import ofmsg


class Datapath:
    ofproto, ofproto_parser, id = ofp, parser, 1


def wire(msg, xid=2):
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf).hex()


def test_ct_flush_matches_ovs_ofctl_byte_for_byte():
    # ovs-ofctl -O OpenFlow13 ct-flush tcp:... zone=5
    #   'ct_nw_dst=10.96.0.10,ct_nw_proto=17,ct_tp_dst=53'
    #   'ct_nw_src=10.1.1.2,ct_nw_proto=17,ct_tp_src=5353'   (captured with OVS 3.1)
    assert wire(ofmsg.ct_flush(Datapath(), 5, 17, ("10.96.0.10", 53),
                               ("10.1.1.2", 5353))) == (
        "04040070000000020000232000000020110000000000000000000028000000000001001400"
        "000000000000000000ffff0a60000a00000000000300080035000000010028000000000000"
        "001400000000000000000000ffff0a010102000000000002000814e900000002000800050000")


def test_ct_flush_of_ipv6_tuples_matches_ovs_ofctl_byte_for_byte():
    # ... ct-flush zone=5 'ct_ipv6_dst=fd00:96::a,ct_nw_proto=17,ct_tp_dst=53'
    #   'ct_ipv6_src=fd00:10:1:1::3,ct_nw_proto=17,ct_tp_src=5353'   (captured, OVS 3.1)
    assert wire(ofmsg.ct_flush(Datapath(), 5, 17, ("fd00:96::a", 53),
                               ("fd00:10:1:1::3", 5353))) == (
        "040400700000000200002320000000201100000000000000000000280000000000010014fd"
        "00009600000000000000000000000a00000000000300080035000000010028000000000000"
        "0014fd000010000100010000000000000003000000000002000814e9000000020008000500"
        "00")


def test_ct_flush_with_only_a_reply_tuple():
    # ... ct-flush zone=7 '' 'ct_nw_src=10.1.1.2,ct_nw_proto=17,ct_tp_src=5353'
    assert wire(ofmsg.ct_flush(Datapath(), 7, 17, None, ("10.1.1.2", 5353))) == (
        "04040048000000020000232000000020110000000000000000010028000000000000001400"
        "000000000000000000ffff0a010102000000000002000814e900000002000800070000")
