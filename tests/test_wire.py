"""The fast encoder is byte for byte Ryu's, for every flow and group we make."""
import dataclasses
import random

import pytest
from ryu.ofproto import ofproto_v1_3 as ofp

from controller import cookies, fragments, ofmsg, wire
from controller import flows as F
from controller.compiler import Compiler
import world
from raw_objects import endpoint_slice, node, pod, service
from world import big_service, big_state
from world import FakeDatapath


def ryu_bytes(msg, xid):
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def states():
    yield "node1", world.NODE1, world.state(world.web())
    yield "affinity", world.NODE1, world.state(dataclasses.replace(
        world.web(), affinity_timeout=600, external_ips=("198.51.100.7",)))
    yield "large", world.NODE1, big_state(big_service(1000))
    # dual-stack: IPv6 matches, NAT to IPv6, neighbor answers, IPv6 affinity
    yield "dual-stack", world.NODE1_DS, world.dual_stack_state(world.web_dual_stack())
    yield "dual-stack affinity", world.NODE1_DS, world.dual_stack_state(
        world.web_dual_stack(affinity=600))
    edge = world.north_south_state(world.edge_dual_stack())
    yield "north-south IPv6 node", world.NODE1_DS, edge
    yield "north-south IPv6 gateway", world.GATEWAY_DS, edge
    from nsx_proxy.kube_cache import KubeCache
    from nsx_proxy.state_builder import StateBuilder
    from nsx_proxy import validate
    import logging
    rnd = random.Random(7)
    services = [service(rnd, i) for i in range(300)]
    cache = KubeCache()
    cache.replace_services(services)
    cache.replace_slices([endpoint_slice(rnd, i, services) for i in range(300)])
    cache.replace_nodes([node(rnd, i) for i in range(1, 20)])
    cache.replace_pods([pod(rnd, i) for i in range(50)])
    st, _ = StateBuilder(validate.RejectLog(logging.getLogger("wire-fuzz"))).build(cache)
    yield "fuzz node", world.NODE1, st
    yield "fuzz gateway", world.GATEWAY, st
    # overlay mode: every frame to another host names its tunnel destination
    yield "overlay node", dataclasses.replace(world.NODE1, tunnel=True,
                                              fabric_gateway="192.168.100.254"), st
    yield "overlay gateway", dataclasses.replace(world.GATEWAY, tunnel=True), st


@pytest.mark.parametrize("name,ctx,st", list(states()), ids=lambda v: v if isinstance(v, str)
                         else "")
def test_flow_and_group_mods_are_ryus_bytes(name, ctx, st, caplog):
    dp = FakeDatapath()
    flows, groups = fragments.flatten(Compiler(ctx, cookies.GroupIds()).compile(st))
    assert "cannot compile" not in caplog.text          # every object compiled
    checked = 0
    for f in flows.values():
        for command in (ofp.OFPFC_ADD, ofp.OFPFC_MODIFY_STRICT, ofp.OFPFC_DELETE_STRICT):
            mine = wire.flow_mod(f, command, 3, 77)
            if mine is None:
                assert any(isinstance(a, F.Learn) for a in f.actions), F.flow_text(f)
                continue
            assert mine == ryu_bytes(ofmsg.flow_mod(dp, f, command, 3), 77), F.flow_text(f)
            checked += 1
    for g in groups.values():
        for command in (ofp.OFPGC_ADD, ofp.OFPGC_MODIFY, ofp.OFPGC_DELETE):
            assert wire.group_mod(g, command, 78) == \
                ryu_bytes(ofmsg.group_mod(dp, g, command), 78), F.group_text(g)
    assert checked > 10


def test_bundle_add_wraps_like_ryu():
    dp = FakeDatapath()
    f = next(iter(fragments.flatten(world.compile_for(world.NODE1,
                                                      world.state(world.web())))[0].values()))
    inner = ofmsg.flow_mod(dp, f, ofp.OFPFC_ADD, 1)
    from ryu.ofproto import ofproto_v1_3_parser as parser
    add = parser.ONFBundleAddMsg(dp, 9, ofmsg.BUNDLE_FLAGS, inner, [])   # Ryu's own
    add.set_xid(55)
    add.serialize()
    assert wire.bundle_add(9, ofmsg.BUNDLE_FLAGS, wire.flow_mod(f, ofp.OFPFC_ADD, 1, 0), 55) \
        == bytes(add.buf)


def test_the_neighbor_advertisement_flows_read_back_as_ovs_writes_them():
    """The two fields Ryu lacks (nd_reserved, nd_options_type) are packed by
    hand: ovs-ofctl decodes our bytes into the flows OVS was verified with."""
    import subprocess
    flows, _ = fragments.flatten(world.compile_for(
        world.NODE1_DS, world.dual_stack_state(world.web_dual_stack())))
    texts = []
    for f in flows.values():
        if f.table in (10, 11) and dict(f.match).get("icmpv6_type") in (135, 136) \
                and f.actions:
            raw = wire.flow_mod(f, ofp.OFPFC_ADD, 1, 9)
            texts.append(subprocess.run(["ovs-ofctl", "ofp-print", raw.hex()], check=True,
                                        capture_output=True, text=True).stdout)
    answer = next(t for t in texts if "nd_target=fd00:10:1:1::1" in t)
    assert ("set_field:fd00:10:1:1::1->ipv6_src,set_field:136->icmpv6_type,"
            "set_field:1610612736->nd_reserved,set_field:2->nd_options_type,goto_table:11"
            ) in answer
    assert any("icmp_type=136,icmp_code=0" in t and
               "move:NXM_OF_ETH_SRC[]->NXM_NX_ND_TLL[],IN_PORT" in t for t in texts)


def test_repeated_bytes_are_cached_within_a_bound_and_by_identity_only():
    """A cold sync's pairs and action lists repeat (encoded once each); a
    value seen once (10,000 VIPs' addresses) does not grow the caches past
    their bound; an action list whose id names a cached entry of another
    list gets its own bytes, not that list's."""
    dp = FakeDatapath()
    shared = (F.Output(3),)
    for i in range(wire._CACHE_MAX + 100):
        ip = f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}"
        actions = shared if i % 2 else (F.Group(i),)
        f = F.Flow(table=30, priority=200, match=(("eth_type", 0x800), ("ip_proto", 6),
                                                  ("ipv4_dst", ip), ("tcp_dst", 80)),
                   actions=actions, cookie=i)
        mine = wire.flow_mod(f, ofp.OFPFC_ADD, 1, 5)
        if i % 997 == 0 or i > wire._CACHE_MAX:
            assert mine == ryu_bytes(ofmsg.flow_mod(dp, f, ofp.OFPFC_ADD, 1), 5)
    assert 0 < len(wire._OXM_BYTES) <= wire._CACHE_MAX
    assert 0 < len(wire._INSTRUCTION_BYTES) <= wire._CACHE_MAX
    assert wire._INSTRUCTION_BYTES[id(shared)][0] is shared
    # another list under the same id (as if the first had been freed)
    other = (F.Group(77),)
    wire._INSTRUCTION_BYTES[id(other)] = (shared, wire._instructions_of(shared))
    assert wire._instructions(other) == wire._instructions_of(other) != \
        wire._instructions_of(shared)
