"""A rate-limited runner, in the spirit of kube-proxy's BoundedFrequencyRunner.

``request()`` asks for a run; runs happen at most once per ``min_interval``
(a burst of 1,000 events becomes a handful of syncs) and at least once per
``max_interval`` (a periodic sync even when nothing was requested).  The
first request after a quiet period runs at once.

A run that raises is logged and retried after ``retry_interval`` (not at
the next request, which may never come: kube-proxy's runner retries too),
doubling while runs keep failing, up to ``max_interval``.

The host's green-thread primitives are injected (:class:`Hub`), so the same
code runs under Ryu's eventlet hub and under plain threads in tests.
"""
import collections
import logging
import threading
import time

LOG = logging.getLogger(__name__)

Hub = collections.namedtuple("Hub", "spawn sleep event")


def thread_hub() -> Hub:
    """Plain threads, for tests and tools that run outside ryu-manager."""
    def spawn(fn, *args):
        thread = threading.Thread(target=fn, args=args, daemon=True)
        thread.start()
        return thread
    return Hub(spawn, time.sleep, threading.Event)


class BoundedFrequencyRunner:
    def __init__(self, name, fn, hub: Hub, min_interval=0.5, max_interval=60.0,
                 clock=time.monotonic, retry_interval=None):
        self.name = name
        self._fn = fn
        self._hub = hub
        self.min_interval = min_interval
        self.max_interval = max_interval
        self._clock = clock
        self._wanted = hub.event()
        self._last = None
        self._stopped = False
        self.runs = 0
        self.failures = 0                    # runs that raised (a counter for metrics)
        self.retry_interval = max(min_interval, 1.0) if retry_interval is None \
            else retry_interval
        self._failing = 0                    # runs that raised in a row

    def request(self) -> None:
        self._wanted.set()

    def start(self):
        return self._hub.spawn(self._loop)

    def stop(self):
        self._stopped = True
        self._wanted.set()

    def _loop(self):
        while True:
            self._wanted.wait(self._retry_in() if self._failing else self.max_interval)
            if self._stopped:
                return
            if self._last is not None:
                wait = self._last + self.min_interval - self._clock()
                if wait > 0:
                    self._hub.sleep(wait)        # let more events pile up
            self._wanted.clear()
            self._last = self._clock()
            self.runs += 1
            try:
                self._fn()
                self._failing = 0
            except Exception:   # the runner must outlive a bad run
                self.failures += 1
                self._failing += 1
                LOG.exception("%s: run failed; nothing it carried is lost, retrying in %.1f s",
                              self.name, self._retry_in())

    def _retry_in(self) -> float:
        return min(self.retry_interval * 2 ** max(self._failing - 1, 0), self.max_interval)
