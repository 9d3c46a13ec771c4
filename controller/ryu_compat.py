"""Make Ryu 4.34 import under Python 3.11 with eventlet 0.33.

``ryu-manager`` imports ``ryu.app.wsgi`` before it loads any application,
and that module does ``from eventlet.wsgi import ALREADY_HANDLED``.  eventlet
removed the name in 0.30.3 (it became ``WSGI_LOCAL.already_handled``), while
the first eventlet that runs on Python 3.11 is 0.33.  Ryu is unmaintained, so
we supply the name ourselves.

The package's ``nsx_proxy_ryu_compat.pth`` calls :func:`install` at
interpreter start.  It registers a meta-path finder that waits for
``eventlet.wsgi`` to be imported and then adds the missing attribute: nothing
is imported eagerly, so other programs in the venv are not slowed down or
monkey-patched.  Ryu only uses the value as an opaque sentinel returned from
a WSGI app, which eventlet 0.33 never checks, so any unique object works.
"""
import importlib.abc
import importlib.machinery
import sys

_TARGET = "eventlet.wsgi"


def patch_eventlet_wsgi(module) -> None:
    """Add ``ALREADY_HANDLED`` to an imported ``eventlet.wsgi`` if absent."""
    if not hasattr(module, "ALREADY_HANDLED"):
        module.ALREADY_HANDLED = object()


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        patch_eventlet_wsgi(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Idempotently arrange for ``eventlet.wsgi`` to carry ALREADY_HANDLED."""
    if _TARGET in sys.modules:
        patch_eventlet_wsgi(sys.modules[_TARGET])
        return
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def _parse_lazily(reply, attr, header) -> None:
    """Give ``reply`` (a stats reply class) a stats class whose ``attr`` is
    parsed, by Ryu's own parser, on first access; ``header(cls, buf,
    offset)`` builds the object from what is read at once.  Idempotent."""
    eager = reply.cls_stats_body_cls
    if getattr(eager, "lazy_" + attr, False):
        return
    private = "_lazy_" + attr

    def parser(cls, buf, offset):
        stats = header(cls, buf, offset)
        stats._raw = (buf, offset)
        return stats

    def read(self):
        raw = getattr(self, "_raw", None)
        if raw is not None:
            self._raw = None
            setattr(self, private, getattr(eager.parser(*raw), attr))
        return getattr(self, private)

    def write(self, value):
        self._raw = None
        setattr(self, private, value)

    reply.cls_stats_body_cls = type(f"Lazy{eager.__name__}", (eager,), {
        "lazy_" + attr: True, "parser": classmethod(parser), attr: property(read, write)})


def parse_group_buckets_lazily() -> None:
    """Make Ryu parse a group description's buckets only when they are read.

    Ryu parses every message it receives before any handler sees it, and a
    group description reply of 10,000 groups costs it half a second of
    parsing NAT actions, with nothing else running (green threads): every
    contents audit (controller/drift.py) would hold a change that long.
    This proxy reads only group ids from Ryu's objects; the audit compares
    the reply's bytes (wire.group_descs).  So replies get a stats class
    whose ``buckets`` are parsed, by Ryu's own parser, on first access.
    Idempotent; only OFPGroupDescStatsReply is touched.
    """
    import struct

    from ryu.ofproto import ofproto_v1_3 as ofp
    from ryu.ofproto import ofproto_v1_3_parser as parser

    def header(cls, buf, offset):
        stats = cls()
        stats.length, stats.type, stats.group_id = struct.unpack_from(
            ofp.OFP_GROUP_DESC_STATS_PACK_STR, buf, offset)
        return stats
    _parse_lazily(parser.OFPGroupDescStatsReply, "buckets", header)


def parse_group_stats_lazily() -> None:
    """Make Ryu count a group stats reply's buckets without building them.

    The drift audit reads the stats of every group each period and uses
    only (group id, number of buckets); Ryu builds an object per bucket
    counter first: 57 ms for 10,000 groups of 5 buckets, holding the event
    loop on every audit and most of an idle agent's CPU.  Replies get a
    stats class that reads the fixed header and counts the 16-byte bucket
    counters (``bucket_count``); ``bucket_stats`` is parsed, by Ryu's own
    parser, on first access.  Idempotent; only OFPGroupStatsReply is touched.
    """
    import struct

    from ryu.ofproto import ofproto_v1_3 as ofp
    from ryu.ofproto import ofproto_v1_3_parser as parser

    def header(cls, buf, offset):
        stats = cls(*struct.unpack_from(ofp.OFP_GROUP_STATS_PACK_STR, buf, offset))
        stats.bucket_count = (stats.length - ofp.OFP_GROUP_STATS_SIZE) // \
            ofp.OFP_BUCKET_COUNTER_SIZE
        return stats
    _parse_lazily(parser.OFPGroupStatsReply, "bucket_stats", header)


def drop_packet_class_caches() -> int:
    """Empty the isinstance caches of Ryu's packet classes; returns how many
    classes were cleared.

    Importing ``ryu.lib.packet.packet`` builds its class table by asking
    ``issubclass(cls, PacketBase)`` of every class in every packet module.
    PacketBase is an ABC, so each no answers by asking every subclass too,
    and each of those remembers the no as a weak reference: about 40,000
    of them, 4.6 MB that a running agent never reads again (tracemalloc on
    a node agent).  The caches only spare a repeated check its walk; one
    that is asked again after this is answered the same way and cached
    anew.  Idempotent."""
    from ryu.lib.packet import packet, packet_base  # noqa: F401 - the import fills them

    cleared, todo = set(), [packet_base.PacketBase]
    while todo:
        cls = todo.pop()
        if cls not in cleared:
            cleared.add(cls)
            cls._abc_caches_clear()
            todo.extend(cls.__subclasses__())
    return len(cleared)
