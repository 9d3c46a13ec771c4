"""List, then watch, one resource: the loop at the heart of every informer.

* Start with a (paginated) list; hand the whole set to ``replace``.  Which
  list, as client-go's reflector asks: the first at resourceVersion "0"
  (kube-apiserver answers from its watch cache, whole: an agent's start in
  a DaemonSet rollout costs etcd nothing), a later relist "not older than"
  the version last seen, and after a 410 a consistent (paged) read.
* Watch from the list's resourceVersion with bookmarks; hand each event to
  ``apply`` and remember the newest version (bookmarks advance it too).
* A watch that ends normally (the server's timeout) resumes from that
  version; 410 Gone (the version was compacted) relists; a connection error
  backs off exponentially with jitter and retries forever.
* Every ``relist_period`` seconds the watch is ended and a fresh list taken,
  so drift (a missed event, a bug) cannot outlive one period.

The client's generated ``list_*`` functions are called with
``_preload_content=False`` and the JSON is parsed here: deserialising into
the client's model classes would cost more than everything else we do,
and translation reads plain dicts anyway.
"""
import json
import logging
import random
import time

from nsx_proxy import gc_pause, list_items, rawjson
from nsx_proxy.kube_client import ApiException, iter_resp_lines

LOG = logging.getLogger(__name__)


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): relist."""


class Reflector:
    def __init__(self, name, list_fn, replace, apply, hub, listed=None, relist_period=600.0,
                 watch_timeout=(240, 480), backoff=(0.2, 30.0), page_size=500,
                 clock=time.monotonic):
        self.name = name
        self._list_fn = list_fn
        self._replace = replace          # callable(the objects, as an iterable read once)
        self._apply = apply              # callable(event type, object)
        self._listed = listed            # callable() after each list is delivered
        self._hub = hub
        self.relist_period = relist_period
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.page_size = page_size
        self._clock = clock
        self.synced = False              # True once the first list has been delivered
        self.resource_version = None
        self._expired = False            # a 410 said our version is gone: read consistently
        self.lists = 0                   # relists included
        self.watch_restarts = 0
        self.errors = 0
        self._stopped = False

    def start(self):
        return self._hub.spawn(self.run)

    def stop(self):
        self._stopped = True

    # --- one list ------------------------------------------------------------------
    def list_once(self):
        """List every object, a page at a time, and replace the cache's.  Each
        page's items are decoded one at a time and handed over as they come
        (the cache packs each), so the dicts of a 10,000-object list never
        live all at once, even when the server answers in one page; the cache
        swaps its contents in only after the last page, so a list that fails
        half-way leaves them as they were."""
        seen = {"count": 0, "meta": {}}
        version = None if self._expired else (self.resource_version or "0")

        def objects():
            cont = None
            while True:
                kwargs = {"limit": self.page_size, "_preload_content": False,
                          "_request_timeout": (10, 120)}
                if cont:
                    kwargs["_continue"] = cont      # a continued page names no version
                elif version is not None:
                    kwargs["resource_version"] = version
                top, skipped = {}, 0
                # one item's dicts at a time (list_items): not the whole page's
                for obj in list_items.walk(self._list_fn(**kwargs).data, top):
                    if isinstance(obj, dict):
                        seen["count"] += 1
                        yield obj
                    else:
                        skipped += 1
                if skipped:
                    LOG.warning("%s: %d listed items are not objects; skipped",
                                self.name, skipped)
                seen["meta"] = rawjson.as_map(top.get("metadata"))
                cont = seen["meta"].get("continue")
                if not cont:
                    return
        with gc_pause.paused():       # held across the pages' reads
            self._replace(objects())
        self.resource_version = seen["meta"].get("resourceVersion")
        self._expired = False
        self.synced = True
        self.lists += 1
        if self._listed is not None:
            self._listed()
        LOG.info("%s: listed %d objects at resourceVersion %s",
                 self.name, seen["count"], self.resource_version)

    # --- one watch -----------------------------------------------------------------
    def watch_once(self, until):
        """Stream events until the server ends the watch or ``until`` passes."""
        timeout = random.randint(*self.watch_timeout)
        timeout = max(1, min(timeout, int(until - self._clock()) + 1))
        resp = self._list_fn(watch=True, resource_version=self.resource_version,
                             allow_watch_bookmarks=True, timeout_seconds=timeout,
                             _preload_content=False, _request_timeout=(10, timeout + 30))
        try:
            for line in iter_resp_lines(resp):
                event = json.loads(line)
                etype, obj = rawjson.field(event, "type"), rawjson.field(event, "object")
                if etype not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"):
                    raise ValueError(f"not a watch event: {line[:80]!r}")
                if not isinstance(obj, dict):
                    LOG.warning("%s: a %s event whose object is not an object (%.80r); "
                                "skipped", self.name, etype, obj)
                    continue
                if etype == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired(obj.get("message"))
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                rv = rawjson.resource_version(obj)
                if etype != "BOOKMARK":
                    self._apply(etype, obj)
                if isinstance(rv, str) and rv:
                    self.resource_version = rv
                if self._stopped or self._clock() >= until:
                    break
        finally:
            resp.close()
            resp.release_conn()

    # --- the loop ------------------------------------------------------------------
    def run(self):
        delay, failing, relist_at = self.backoff[0], False, 0.0
        while not self._stopped:
            try:
                if self.resource_version is None or self._clock() >= relist_at:
                    self.list_once()
                    relist_at = self._clock() + self.relist_period
                self.watch_once(relist_at)
                self.watch_restarts += 1
                if failing:
                    LOG.info("%s: watching again from resourceVersion %s",
                             self.name, self.resource_version)
                delay, failing = self.backoff[0], False
                continue
            except Expired as exc:
                LOG.info("%s: watch expired (%s); relisting", self.name, exc)
                self.resource_version, self._expired = None, True
                continue
            except ApiException as exc:
                if exc.status == 410:
                    self.resource_version, self._expired = None, True
                    continue
                why = f"API error {exc.status}: {exc.reason}"
            except Exception as exc:  # connection refused, reset, timeouts, bad JSON
                why = f"{type(exc).__name__}: {exc}"
            self.errors += 1
            if not failing:
                LOG.warning("%s: watch failed (%s); retrying with backoff", self.name, why)
            failing = True
            self._hub.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.backoff[1])
