"""Where a running agent's memory goes: a tracemalloc snapshot on SIGUSR2.

An agent started with ``PYTHONTRACEMALLOC=1`` in its environment (Python
then traces every allocation from the interpreter's start, imports
included; ``=N`` keeps N frames of each) writes
``<directory>/nsx-proxy-<pid>.tracemalloc`` when it gets SIGUSR2, and logs
one line saying so.  Without tracing, SIGUSR2 is left as it was: tracing
doubles an agent's memory and slows it, so it is never on by itself.
``python -m bench.memory --read FILE`` prints where the memory is (or
``tracemalloc.Snapshot.load``); ``python -m bench.memory`` does it all on
the multi-host lab.  This is how the 4.6 MB of isinstance caches Ryu's
packet import leaves behind were found (controller/ryu_compat.py).

Writing the snapshot holds the agent for a few seconds at 10,000 Services
(a million traces): a diagnostic, not something to scrape.
"""
import gc
import logging
import os
import signal
import tempfile
import tracemalloc

LOG = logging.getLogger(__name__)


def path_for(directory, pid) -> str:
    return os.path.join(directory, f"nsx-proxy-{pid}.tracemalloc")


def install(directory=None) -> bool:
    """Dump a snapshot into ``directory`` (the temp dir by default) on
    SIGUSR2, if this process traces its allocations; True if installed."""
    if not tracemalloc.is_tracing():
        return False
    directory = directory or tempfile.gettempdir()

    def dump(_signum, _frame):
        gc.collect()                      # what is garbage is not the agent's
        path = path_for(directory, os.getpid())
        try:
            tracemalloc.take_snapshot().dump(path)
        except Exception as exc:   # noqa: BLE001 - never into the code the signal interrupted
            LOG.error("heap snapshot: cannot write %s: %s: %s", path, type(exc).__name__, exc)
            return
        LOG.warning("heap snapshot (%d frames per allocation) written to %s",
                    tracemalloc.get_traceback_limit(), path)

    signal.signal(signal.SIGUSR2, dump)
    LOG.warning("allocations traced (PYTHONTRACEMALLOC): SIGUSR2 writes a heap snapshot "
                "to %s", path_for(directory, os.getpid()))
    return True


def summary(snapshot, limit=25) -> list:
    """Lines of text: the total, then the ``limit`` largest files and lines
    (by what they allocated and is still alive), largest first."""
    by_file = snapshot.statistics("filename")
    out = [f"{sum(s.size for s in by_file) / 1e6:.1f} MB traced, "
           f"{sum(s.count for s in by_file):,} blocks alive", "", "by file:"]
    out += [f"  {s.size / 1e6:7.2f} MB {s.count:9,d}  {_where(s.traceback[0])}"
            for s in by_file[:limit]]
    out += ["", "by line:"]
    out += [f"  {s.size / 1e6:7.2f} MB {s.count:9,d}  {_where(s.traceback[0], True)}"
            for s in snapshot.statistics("lineno")[:limit]]
    return out


def _where(frame, line=False) -> str:
    """A frame's file, shortened to what follows site-packages, if it does."""
    name = frame.filename.split("site-packages/")[-1]
    return f"{name}:{frame.lineno}" if line else name
