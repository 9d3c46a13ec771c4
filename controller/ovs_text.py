"""Parsers of Open vSwitch's own output (ovs-ofctl dump-groups, dump-flows,
dump-group-stats; ovs-appctl dpctl/dump-conntrack), for the nsx-proxy CLI:
text in, plain values out, IPv4 and IPv6 alike."""
import ipaddress
import re
import zlib


# nat(dst=10.1.1.2:8080) or nat(dst=[fd00:10:1:1::2]:8080)
_NAT = re.compile(r"nat\(dst=\[?([0-9a-f.:]+?)\]?:(\d+)\)")
_REG_EP = re.compile(r"load:(0x[0-9a-f]+)->NXM_NX_REG0\[\],load:(0x[0-9a-f]+)->NXM_NX_REG1\[\]")


def group_buckets(dump_groups_text):
    """{group id: [(endpoint ip, port), ...] in bucket order} from dump-groups."""
    out = {}
    for line in dump_groups_text.splitlines():
        m = re.search(r"group_id=(\d+)", line)
        if not m:
            continue
        buckets = []
        for part in line.split("bucket=")[1:]:
            nat, reg = _NAT.search(part), _REG_EP.search(part)
            if nat:
                buckets.append((nat.group(1), int(nat.group(2))))
            elif reg:
                # reg0 holds an IPv4 endpoint itself, an IPv6 one its
                # CRC-32 (read here as an IPv4 address: see affinity_alias)
                buckets.append((str(ipaddress.IPv4Address(int(reg.group(1), 16))),
                                int(reg.group(2), 16) & 0xFFFF))
            else:
                buckets.append((None, None))
        out[int(m.group(1))] = buckets
    return out


_PICK = re.compile(r"n_packets=(\d+), n_bytes=(\d+),.*\breg4=(0x[0-9a-f]+|\d+),"
                   r"reg5=(0x[0-9a-f]+|\d+)\b")


def spread_picks(dump_flows_text):
    """A UDP pool's members and counters from UdpSpread's flows, in pick
    order, as group_buckets and group_stats give a group's."""
    picks = {}
    for line in dump_flows_text.splitlines():
        m, nat = _PICK.search(line), _NAT.search(line)
        if m and nat:
            pk, by, pool, pick = m.groups()
            picks.setdefault(int(pool, 0), {})[int(pick, 0)] = (
                (nat.group(1), int(nat.group(2))), (int(pk), int(by)))
    layout = {pool: [p[i][0] for i in sorted(p)] for pool, p in picks.items()}
    stats = {pool: [p[i][1] for i in sorted(p)] for pool, p in picks.items()}
    return layout, stats


def group_stats(dump_group_stats_text):
    """{group id: [(packets, bytes) per bucket]} from dump-group-stats."""
    out = {}
    for line in dump_group_stats_text.splitlines():
        m = re.search(r"group_id=(\d+)", line)
        if m:
            out[int(m.group(1))] = [(int(p), int(b)) for p, b in re.findall(
                r"bucket\d+:packet_count=(\d+),byte_count=(\d+)", line)]
    return out


_IP = r"([0-9a-f.:]+)"                  # an IPv4 or IPv6 address as OVS prints it
_CT = re.compile(r"^(\w+),orig=\(src=" + _IP + ",dst=" + _IP +
                 r"(?:,sport=(\d+),dport=(\d+))?[^)]*\),"
                 r"reply=\(src=" + _IP + ",dst=" + _IP + r"(?:,sport=(\d+),dport=(\d+))?[^)]*\)"
                 r"(?:,zone=(\d+))?(?:,mark=(\d+))?(?:,protoinfo=\(state=(\w+)\))?")


def conntrack_entries(text):
    out = []
    for line in text.splitlines():
        m = _CT.match(line.strip())
        if not m:
            continue
        g = m.groups()
        out.append({"proto": g[0],
                    "original": {"src": g[1], "dst": g[2], "sport": _int(g[3]),
                                 "dport": _int(g[4])},
                    "reply": {"src": g[5], "dst": g[6], "sport": _int(g[7]),
                              "dport": _int(g[8])},
                    "zone": _int(g[9]) or 0, "mark": _int(g[10]) or 0, "state": g[11]})
    return out


def _int(value):
    return int(value) if value else None


def affinity_alias(ip: str) -> str:
    """What group_buckets reads for an affinity bucket of endpoint ``ip``:
    the address itself for IPv4; for IPv6, the CRC-32 of its 16 bytes (what
    the bridge keeps in the 32-bit reg0, controller/node_fragments.py), as
    an IPv4 address."""
    if ":" not in ip:
        return ip
    return str(ipaddress.IPv4Address(zlib.crc32(ipaddress.IPv6Address(ip).packed)))
