"""Cookies and group ids: which object a flow belongs to, and which round.

Cookie layout (64 bits)::

    63..56  generation  bumped on every controller start; a restart installs
                        the new round, then deletes every flow of older rounds
    55..48  kind        what the object is (KIND_* below)
    47..32  reserved    zero
    31..0   object id   a stable id of the object (for a service port, its
                        group id; for a VIP, the IPv4 address itself)

So ``ovs-ofctl dump-flows br cookie=0x0005000000003039/0x00ff0000ffffffff``
lists exactly the flows of the service port whose group is 12345 (0x3039).
Ids derive from the object's name, not from arrival order, so they survive
restarts and the new round rewrites flows in place.
"""
import zlib

GEN_SHIFT = 56
GEN_MASK = 0xFF << GEN_SHIFT
KIND_SHIFT = 48
KIND_MASK = 0xFF << KIND_SHIFT
ID_MASK = 0xFFFFFFFF
OBJECT_MASK = KIND_MASK | ID_MASK

KIND_PIPELINE = 1      # table skeleton, defaults, conntrack
KIND_POD = 2           # a pod on this bridge
KIND_NODE = 3          # route to another node's pod CIDR
KIND_VIP = 4           # ARP answer for a service IP
KIND_SERVICE_PORT = 5  # load-balancing flows of one service port
KIND_AFFINITY = 6      # learned session-affinity entries (generation 0: kept
                       # across controller restarts; they expire on their own)
KIND_FLOATING_IP = 7   # a pod's floating IP (id: the address)

KIND_NAMES = {KIND_PIPELINE: "pipeline", KIND_POD: "pod", KIND_NODE: "node",
              KIND_VIP: "vip", KIND_SERVICE_PORT: "service-port",
              KIND_AFFINITY: "affinity", KIND_FLOATING_IP: "floating-ip"}


def stable_id(name: str) -> int:
    """A 32-bit id from a name; the same on every run (unlike hash())."""
    return zlib.crc32(name.encode()) & ID_MASK


def make(kind: int, object_id: int) -> int:
    return (kind << KIND_SHIFT) | (object_id & ID_MASK)


def for_name(kind: int, name: str) -> int:
    return make(kind, stable_id(name))


def for_ip(kind: int, ip: str) -> int:
    """``ip`` is a validated address (translation checks every one): an
    IPv4 address is its own id; an IPv6 one, 128 bits, its stable_id."""
    if ":" in ip:
        return for_name(kind, ip)
    a, b, c, d = (int(x) for x in ip.split("."))
    return make(kind, (a << 24) | (b << 16) | (c << 8) | d)


def with_generation(cookie: int, generation: int) -> int:
    return (cookie & ~GEN_MASK) | ((generation & 0xFF) << GEN_SHIFT)


def generation_of(cookie: int) -> int:
    return (cookie & GEN_MASK) >> GEN_SHIFT


def kind_of(cookie: int) -> int:
    return (cookie & KIND_MASK) >> KIND_SHIFT


def next_generation(seen) -> int:
    """The generation for a new round, given those found on the switch (1..255)."""
    seen = set(seen) - {0}
    if not seen:
        return 1
    return max(seen) % 255 + 1


# Group ids: OpenFlow reserves 0xffffff00 and up; stay in 31 bits so the id
# fits the cookie's object field and prints the same everywhere.
_GROUP_ID_SPACE = 0x7FFFFFFF


class GroupIds:
    """Stable group ids per service port, derived from the port's name.

    The preferred id is a hash of the name; a collision probes upward.  Ids
    are kept for as long as the name is in use, so a collision can never
    move an existing group; after a restart only names that collided can
    come back with a different id, and the diff re-points their flows.
    """

    def __init__(self):
        self._by_name = {}
        self._owner = {}

    def get(self, name: str) -> int:
        gid = self._by_name.get(name)
        if gid is None:
            gid = stable_id(name) % _GROUP_ID_SPACE or 1
            while gid in self._owner:
                gid = gid % _GROUP_ID_SPACE + 1
            self._by_name[name] = gid
            self._owner[gid] = name
        return gid

    def peek(self, name: str):
        """The id of ``name`` if it has one (never allocates)."""
        return self._by_name.get(name)

    def release(self, names) -> None:
        """Forget these names so their ids can be reused."""
        for name in names:
            gid = self._by_name.pop(name, None)
            if gid is not None:
                del self._owner[gid]

    def release_unused(self, in_use) -> None:
        """Forget every name not in ``in_use`` so its id can be reused."""
        for name in set(self._by_name) - set(in_use):
            del self._owner[self._by_name.pop(name)]
