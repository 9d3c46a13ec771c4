"""Progress lines for long steps: what is happening, then how long it took."""
import contextlib
import sys
import time


class Progress:
    """``with progress.step("starting OVS"):`` prints the step, then its time.

    Off (the default for tests), it prints nothing.
    """

    def __init__(self, enabled=True, out=None):
        self.enabled = enabled
        self.out = out or sys.stdout
        self._started = time.monotonic()

    @contextlib.contextmanager
    def step(self, what):
        t0 = time.monotonic()
        if self.enabled:
            print(f"  {what} ...", end="", file=self.out, flush=True)
        try:
            yield
        except BaseException:
            if self.enabled:
                print(" failed", file=self.out, flush=True)
            raise
        if self.enabled:
            print(f" {time.monotonic() - t0:.1f} s", file=self.out, flush=True)

    def done(self, what):
        if self.enabled:
            print(f"{what} in {time.monotonic() - self._started:.1f} s", file=self.out,
                  flush=True)


QUIET = Progress(enabled=False)
