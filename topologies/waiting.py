"""Poll for a condition instead of sleeping; wait for the end of a service."""
import signal
import threading
import time


def wait_for(predicate, timeout=20.0, interval=0.1, what="condition"):
    """Poll until ``predicate()`` is truthy; return its value or raise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def until_stopped():
    """Block until SIGTERM or Ctrl-C (the foreground services of the labs)."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
