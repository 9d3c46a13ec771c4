"""No cyclic garbage collection during the big allocation bursts.

A list of 10,000 Services, their first translation, a compile and a
bundle's encoding each allocate a few objects per API object or flow, all
of them kept.  CPython's collector runs every 700 allocations and, while
the heap grows, rescans every live object each time it has grown by a
quarter: at 10,000 services the collections cost more than the work
(a bundle: 2.1 s -> 1.0 s; a first translation: 0.86 s -> 0.67 s).  Those
bursts make no cycles worth collecting, so they run with the collector
off; it runs again, once, after the last one ends.

Counted, because pauses overlap: a streamed bundle and a list hold theirs
across yields to other green threads, which may take and end their own.
After a full sync, :func:`settled` freezes what is alive and hands free
pages back to the OS.
"""
import contextlib
import ctypes
import gc

_pauses = 0


def _libc(name):
    """glibc's function ``name``, or None (another libc: nothing to hand back)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


_TRIM, _MALLOPT = _libc("malloc_trim"), _libc("mallopt")
_M_TRIM_THRESHOLD, _TRIM_AT = -1, 1 << 20


@contextlib.contextmanager
def paused():
    global _pauses
    if _pauses == 0 and not gc.isenabled():
        yield                     # paused by someone else (a test, the runtime)
        return
    _pauses += 1
    gc.disable()
    try:
        yield
    finally:
        _pauses -= 1
        if _pauses == 0:
            gc.enable()


def settled() -> None:
    """After a full sync the millions of objects alive are long-lived: move
    them out of the collector's way (every full collection would walk them
    all: the tail of the change latency), and hand back to the OS the pages
    the start's transients left free, which glibc keeps otherwise (4-5 MB of
    a node agent's 158 at 10,000 Services).

    And from then on glibc hands back what is free at the top of its heap
    by itself.  Freeing a large block (a 10 MB list body) raises its mmap
    threshold and, twice as high, its trim threshold, after which it kept
    what a sync's transients freed: a node agent at 10,000 Services grew
    136 -> 139 MB in its first half minute of changes, 4.9 MB of it free
    at the top (mallinfo2).  A fixed trim threshold of 1 MiB keeps the top
    trimmed, and leaves a change's transients (a copy of a 10,000-entry
    dict) their space at the top, without a mapping each."""
    gc.freeze()
    if _MALLOPT is not None:
        _MALLOPT(_M_TRIM_THRESHOLD, _TRIM_AT)
    if _TRIM is not None:
        _TRIM(0)
