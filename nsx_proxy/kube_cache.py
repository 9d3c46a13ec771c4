"""The raw API objects the proxy watches, as the watches last reported them.

Five resources: Services, EndpointSlices (indexed by their service), Nodes,
Pods (only those that ask for a floating IP: all pods would be a lot) and
Namespaces (their pool annotations).  Each event or relist marks what it
may have changed, so the state builder translates only that; ``take_dirty``
hands the marks over.  Pure data and dict updates: no I/O, no threads.

Services and EndpointSlices, the many, are kept packed (:class:`Packed`):
at 10,000 of each their dicts were 90 MB, the largest part of an agent's
memory, where client-go's informers keep typed structs and drop
managedFields with a transform.
"""
import datetime
import marshal
import time
from collections.abc import Mapping

from nsx_proxy import model, rawjson, translate

# Set by the EndpointSlice controller: when the change behind a slice's
# content happened (kube-proxy's network programming SLI starts there).
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"


def trigger_time(obj):
    """The annotation as epoch seconds, or None (absent or not RFC 3339)."""
    text = rawjson.annotations(obj).get(TRIGGER_TIME_ANNOTATION)
    if not isinstance(text, str) or not text:
        return None
    # RFC 3339 with up to nanoseconds and a Z; fromisoformat takes 6 digits
    head, dot, frac = text.rstrip("Z").partition(".")
    try:
        when = datetime.datetime.fromisoformat(head + (dot + frac[:6] if dot else ""))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


_key = rawjson.key


def _apply(table, key, etype, obj):
    """One watch event on a cache keyed by ``key``."""
    if etype == "DELETED":
        if key in table:
            del table[key]
    else:
        table[key] = obj


_rv = rawjson.resource_version

# What the proxy never reads, dropped before an object is packed, as
# client-go informers drop managedFields with a transform: on a real cluster
# that is most of a Service's bytes (managedFields, kubectl's last-applied
# annotation) and much of a slice's (managedFields, ownerReferences, each
# endpoint's targetRef uid).  The resourceVersion stays: status writes are
# conditional on it.
UNREAD_METADATA = frozenset(("managedFields", "uid", "creationTimestamp", "generation",
                             "ownerReferences", "selfLink"))
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
UNREAD_TARGET_REF = frozenset(("uid", "resourceVersion", "apiVersion", "fieldPath"))


def slim(obj):
    """``obj`` without what the proxy never reads; new dicts where something
    goes, so the caller's object is left as it was."""
    if not isinstance(obj, dict):
        return obj
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        notes = meta.get("annotations")
        stale_note = isinstance(notes, dict) and LAST_APPLIED in notes
        if stale_note or not UNREAD_METADATA.isdisjoint(meta):
            meta = {k: v for k, v in meta.items() if k not in UNREAD_METADATA}
            if stale_note:
                meta["annotations"] = {k: v for k, v in notes.items() if k != LAST_APPLIED}
            obj = dict(obj, metadata=meta)
    endpoints = obj.get("endpoints")
    if isinstance(endpoints, list) and any(
            isinstance(e, dict) and isinstance(e.get("targetRef"), dict)
            and not UNREAD_TARGET_REF.isdisjoint(e["targetRef"]) for e in endpoints):
        obj = dict(obj, endpoints=[_slim_endpoint(e) for e in endpoints])
    return obj


def _slim_endpoint(endpoint):
    ref = endpoint.get("targetRef") if isinstance(endpoint, dict) else None
    if not isinstance(ref, dict):
        return endpoint
    return dict(endpoint, targetRef={k: v for k, v in ref.items() if k not in UNREAD_TARGET_REF})


_LENGTHS = [bytes((n,)) for n in range(255)]


def _length(version: bytes) -> bytes:
    """The version's length: one byte (a resourceVersion is a short string),
    or 255 and four bytes for a longer one (odd input, kept exact)."""
    n = len(version)
    return _LENGTHS[n] if n < 255 else b"\xff" + n.to_bytes(4, "big")


def _offsets(blob: bytes) -> tuple:
    """(where the version's bytes start, where the object's start), as
    :func:`_length` wrote the length before them."""
    if blob[0] < 255:
        return 1, 1 + blob[0]
    return 5, 5 + int.from_bytes(blob[1:5], "big")


class Packed(Mapping):
    """{key: raw API object}, each kept as ``marshal`` bytes, without what the
    proxy never reads (:func:`slim`), and unpacked (a fresh dict) when read.
    A 5-endpoint EndpointSlice is 540 bytes instead of a 5.4 KB dict, packed
    in 1.3 us and read in 2.6 us; only the objects a change names are read.
    The resourceVersion is marshalled first, in the same bytes: a relist
    compares versions by unmarshalling the blob's first object only (the
    bytes after it are not read), and a tuple and a string less per object
    are 2.0 MB less at 10,000 Services and their slices, for about 1 us
    more per object packed (``bench.start``).  (marshal: the
    standard library's fastest exact serializer of JSON's types; the bytes
    never leave the process, so its version-specific format does not
    matter.)"""
    __slots__ = ("_blobs",)

    def __init__(self, items=()):
        self._blobs = {}
        for key, obj in items:
            self[key] = obj

    def __setitem__(self, key, obj):
        version = marshal.dumps(_rv(obj))
        self._blobs[key] = b"".join((_length(version), version, marshal.dumps(slim(obj))))

    def __getitem__(self, key):
        blob = self._blobs[key]
        return marshal.loads(memoryview(blob)[_offsets(blob)[1]:])

    def __iter__(self):
        return iter(self._blobs)

    def __len__(self):
        return len(self._blobs)

    def __contains__(self, key):
        return key in self._blobs

    def __delitem__(self, key):
        del self._blobs[key]             # not unpacked: nobody reads what goes

    def adopt(self, key, other: "Packed"):
        """``other``'s object for ``key``, as packed there (not packed again)."""
        self._blobs[key] = other._blobs[key]

    def version(self, key):
        """The resourceVersion of ``key``'s object (None: no such object)."""
        blob = self._blobs.get(key)
        return None if blob is None else marshal.loads(memoryview(blob)[_offsets(blob)[0]:])


class KubeCache:
    def __init__(self, started=None):
        # trigger times from before this cache existed are not ours to measure
        self.started = time.time() if started is None else started
        self.trigger_times = []              # of slices changed since the last build
        self.services = Packed()             # ServiceKey -> raw Service
        self.slices = Packed()               # (ns, name) -> raw EndpointSlice
        # ServiceKey -> its slices' keys, in order: a tuple (most services have
        # one slice; a dict each was 2 MB at 10,000)
        self._slice_keys = {}
        self._slice_owner = {}               # (ns, name) -> its ServiceKey
        self.nodes = {}                      # name -> raw Node
        self.pods = {}                       # (ns, name) -> raw Pod with a floating IP
        self.namespaces = {}                 # name -> raw Namespace
        self.namespaces_version = 0          # bumped on every namespace event
        self._dirty = set()                  # ServiceKeys to translate again
        self._nodes_dirty = True
        self._pods_dirty = True

    def take_dirty(self):
        """(service keys, nodes changed, floating-IP pods changed, slices'
        trigger times) since the last call."""
        dirty, self._dirty = self._dirty, set()
        dirty.discard(None)
        out = (dirty, self._nodes_dirty, self._pods_dirty, tuple(self.trigger_times))
        self._nodes_dirty = self._pods_dirty = False
        self.trigger_times = []
        return out

    def give_back_dirty(self, dirty, nodes_dirty, pods_dirty, trigger_times):
        """Marks taken by a build that failed: they are pending again."""
        self._dirty |= dirty
        self._nodes_dirty |= nodes_dirty
        self._pods_dirty |= pods_dirty
        self.trigger_times[:0] = trigger_times

    # --- services ----------------------------------------------------------------
    def service_event(self, etype, obj):
        key = model.ServiceKey(*_key(obj))
        _apply(self.services, key, etype, obj)
        self._dirty.add(key)

    def replace_services(self, items):
        fresh = Packed((model.ServiceKey(*_key(o)), o) for o in items)
        for key in self.services.keys() | fresh.keys():
            old, new = self.services.version(key), fresh.version(key)
            if old is None or new is None or old != new:
                self._dirty.add(key)
        self.services = fresh

    def slices_of(self, service):
        """The raw EndpointSlices of ``service`` (a ServiceKey), in the order
        they arrived."""
        return [self.slices[key] for key in self._slice_keys.get(service, ())]

    # --- endpoint slices ------------------------------------------------------------
    def _index_slice(self, key, obj, packed=None):
        """``obj`` (None: gone) as ``key``'s slice; ``packed``: a Packed that
        holds it already, its bytes taken as they are."""
        if key in self.slices:
            del self.slices[key]
            owner = self._slice_owner.pop(key)
            rest = tuple(k for k in self._slice_keys.pop(owner, ()) if k != key)
            if rest:
                self._slice_keys[owner] = rest
            self._dirty.add(owner)
        if obj is not None:
            if packed is not None:
                self.slices.adopt(key, packed)
            else:
                self.slices[key] = obj
            owner = self._slice_owner[key] = translate.slice_service(obj)
            if owner is not None:
                self._slice_keys[owner] = self._slice_keys.get(owner, ()) + (key,)
                self._dirty.add(owner)
                when = trigger_time(obj)     # like kube-proxy: not for deletions
                if when is not None and when > self.started:
                    self.trigger_times.append(when)

    def slice_event(self, etype, obj):
        self._index_slice(_key(obj), None if etype == "DELETED" else obj)

    def replace_slices(self, items):
        fresh = Packed((_key(o), o) for o in items)     # all of them before any change
        for key in list(self.slices):
            if key not in fresh:
                self._index_slice(key, None)
        for key in fresh:
            if key not in self.slices or self.slices.version(key) != fresh.version(key):
                self._index_slice(key, fresh[key], packed=fresh)

    # --- nodes -------------------------------------------------------------------------
    def node_event(self, etype, obj):
        _apply(self.nodes, _key(obj)[1], etype, obj)
        self._nodes_dirty = True

    def replace_nodes(self, items):
        self.nodes = {_key(o)[1]: o for o in items}
        self._nodes_dirty = True

    # --- pods with a floating IP ----------------------------------------------------------
    def pod_event(self, etype, obj) -> bool:
        """False when the event cannot matter (a pod without a floating IP)."""
        key = _key(obj)
        wanted = rawjson.annotations(obj).get(translate.FLOATING_IP_ANNOTATION)
        if etype == "DELETED" or not wanted:
            if self.pods.pop(key, None) is None:
                return False
        else:
            self.pods[key] = obj
        self._pods_dirty = True
        return True

    def replace_pods(self, items):
        items = list(items)                  # all of them before any change
        self.pods = {}
        for obj in items:
            self.pod_event("ADDED", obj)
        self._pods_dirty = True

    # --- namespaces ----------------------------------------------------------------------
    def namespace_event(self, etype, obj):
        _apply(self.namespaces, _key(obj)[1], etype, obj)
        self.namespaces_version += 1

    def replace_namespaces(self, items):
        self.namespaces = {_key(o)[1]: o for o in items}
        self.namespaces_version += 1
