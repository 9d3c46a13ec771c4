"""Poll for a condition instead of sleeping."""
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
