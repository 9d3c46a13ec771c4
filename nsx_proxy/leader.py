"""Which agent writes to the API: the holder of one coordination.k8s.io Lease.

Every agent runs the same code, but what must happen once per cluster (today:
writing LoadBalancer IPs from the floating-IP pools into Service status)
must be done by one agent at a time.  They elect it the way kube-controller-
manager's replicas do: the official client's ``kubernetes.leaderelection``
(acquire, renew every ``retry_period``, give up after ``renew_deadline``, a
follower takes over once the holder has not renewed for ``lease_duration``).

Why a lock class of our own: the client we pin (31, the last before its
rewrite on pydantic) ships only a ConfigMap lock; a ConfigMap would need
write access to ConfigMaps, where a Lease is the object Kubernetes made for
this.  ``LeaseLock`` implements the same three-method lock interface
(``get``/``create``/``update``) over ``CoordinationV1Api``; the election
algorithm itself stays the client's.
"""
import datetime
import json
import logging

from nsx_proxy.kube_client import ApiException, client


def _import_quietly():
    """The client's leaderelection modules call ``logging.basicConfig(level=
    INFO)`` when imported, which would give every program importing us a
    stderr handler at INFO; with a handler in place that call does nothing."""
    root, placeholder = logging.getLogger(), logging.NullHandler()
    root.addHandler(placeholder)
    try:
        from kubernetes.leaderelection import electionconfig, leaderelection
        from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord
    finally:
        root.removeHandler(placeholder)
    return electionconfig, leaderelection, LeaderElectionRecord


electionconfig, leaderelection, LeaderElectionRecord = _import_quietly()
LOG = logging.getLogger(__name__)


class _QuietElection(logging.Filter):
    """The client's algorithm logs every try at INFO on the root logger ("yet
    to finish lease_duration" every retry period, from every follower); we
    log the transitions ourselves, so only its warnings and errors pass."""

    def filter(self, record):
        return record.levelno >= logging.WARNING or \
            not record.pathname.endswith(("leaderelection/leaderelection.py",
                                          "leaderelection/electionconfig.py"))


_QUIET = _QuietElection()


def _to_utc(record_time: str) -> datetime.datetime:
    """The election record's times are ``str(datetime)`` in local time (that is
    how the client's algorithm makes them); a Lease holds real instants."""
    return datetime.datetime.fromisoformat(record_time).astimezone(datetime.timezone.utc)


def _from_utc(value: datetime.datetime) -> str:
    return str(value.astimezone().replace(tzinfo=None))


def _parse_time(text: str) -> datetime.datetime:
    """A Lease's MicroTime (RFC 3339, a Z or an offset) as an aware datetime."""
    when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"a time without its zone: {text!r}")
    return when


def _micro_time(value: datetime.datetime) -> str:
    """What the API server writes for a MicroTime: UTC, microseconds, a Z."""
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Stopped(Exception):
    """Raised inside the client's election loops to end them."""


class LeaseLock:
    """The lock interface ``kubernetes.leaderelection`` drives, over a Lease.

    The Lease travels as plain JSON (``_preload_content=False`` and dict
    bodies): the client's model classes cost more than the rest of an idle
    agent's work, as every agent reads the Lease every ``retry_period``
    (the leader also writes it), for the whole life of the cluster."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str):
        self.leases = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self._lease = None                   # the last one read (a dict): its resourceVersion
        self._failing = None                 # the error logged last (log each once)
        self._renewed = None                 # our record, while our last write held
        self.stopping = False

    def _failed(self, what, exc) -> bool:
        reason = f"{what} lease {self.namespace}/{self.name}: {getattr(exc, 'status', '')} " \
                 f"{getattr(exc, 'reason', exc)}".rstrip()
        if reason != self._failing:
            LOG.warning("leader election: cannot %s", reason)
            self._failing = reason
        return False

    @staticmethod
    def _lease_of(resp) -> dict:
        """The Lease an API call answered with (``_preload_content=False``)."""
        lease = json.loads(resp.data)
        if not isinstance(lease, dict):
            raise ValueError(f"a Lease that is not an object: {lease!r:.80}")
        return lease

    def _read(self, name, namespace) -> dict:
        return self._lease_of(self.leases.read_namespaced_lease(
            name, namespace, _preload_content=False))

    def _replace(self, name, namespace, lease) -> dict:
        return self._lease_of(self.leases.replace_namespaced_lease(
            name, namespace, lease, _preload_content=False))

    def get(self, name, namespace):
        if self.stopping:
            raise _Stopped()                 # the client's loops know no other exit
        if self._renewed is not None:
            # client-go's fast path: the holder renews without reading first;
            # if another agent took the lease since, the update carries a
            # stale resourceVersion and fails (409), and the next get reads
            return True, self._renewed
        try:
            self._lease = self._read(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                self._failed("read", exc)
            return False, exc
        except Exception as exc:  # API server unreachable: the algorithm retries
            self._failed("read", exc)
            unreachable = ApiException(status=0, reason=str(exc))
            unreachable.body = '{"code": 0}'  # what the algorithm parses: not a 404
            return False, unreachable
        self._failing = None
        spec = self._lease.get("spec")
        spec = spec if isinstance(spec, dict) else {}
        holder, duration = spec.get("holderIdentity"), spec.get("leaseDurationSeconds")
        try:
            acquired, renewed = _parse_time(spec["acquireTime"]), _parse_time(spec["renewTime"])
        except (KeyError, TypeError, ValueError):
            acquired = renewed = None
        if not (holder and duration and acquired and renewed):
            return True, None                 # taken over like an empty lock
        return True, LeaderElectionRecord(holder, str(duration), _from_utc(acquired),
                                          _from_utc(renewed))

    @staticmethod
    def _spec(record) -> dict:
        return {"holderIdentity": record.holder_identity,
                "leaseDurationSeconds": int(float(record.lease_duration)),
                "acquireTime": _micro_time(_to_utc(record.acquire_time)),
                "renewTime": _micro_time(_to_utc(record.renew_time))}

    def create(self, name, namespace, election_record) -> bool:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name}, "spec": self._spec(election_record)}
        try:
            self._lease = self._lease_of(self.leases.create_namespaced_lease(
                namespace, body, _preload_content=False))
        except ApiException as exc:
            return self._failed("create", exc) if exc.status != 409 else False
        except Exception as exc:
            return self._failed("create", exc)
        return self._wrote(election_record)

    def _wrote(self, record) -> bool:
        self._renewed = record if record.holder_identity == self.identity else None
        return True

    def update(self, name, namespace, updated_record) -> bool:
        if self._lease is None:
            return False
        self._lease["spec"] = self._spec(updated_record)
        self._renewed = None                 # read again unless this write holds
        try:
            # replace carries the resourceVersion read last: if another agent
            # renewed or took the lease since, the API server answers 409 and
            # this agent stays a follower (no two leaders).
            self._lease = self._replace(name, namespace, self._lease)
        except ApiException as exc:
            return self._failed("update", exc) if exc.status != 409 else False
        except Exception as exc:
            return self._failed("update", exc)
        return self._wrote(updated_record)

    def release(self):
        """Hand the lease back (holder cleared): a follower takes it at its
        next retry instead of waiting out the lease duration.  A renewal
        still in flight when the agent stops makes the lease read last stale
        (409): read it again and retry, while it is still ours."""
        self._renewed = None
        for _ in range(3):
            lease = self._lease
            spec = lease.get("spec") if isinstance(lease, dict) else None
            if not isinstance(spec, dict) or spec.get("holderIdentity") != self.identity:
                return
            spec.pop("holderIdentity")
            try:
                self._replace(self.name, self.namespace, lease)
                return
            except ApiException as exc:
                if exc.status != 409:
                    self._failed("release", exc)
                    return
            except Exception as exc:
                self._failed("release", exc)
                return
            try:
                self._lease = self._read(self.name, self.namespace)
            except Exception as exc:
                self._failed("release", exc)
                return


class Elector:
    """Runs the election forever in a green thread; ``leading`` says whether
    this agent holds the lease now.  ``on_change(leading)`` is called on
    every transition (the caller wakes its writer up, or stops it)."""

    def __init__(self, api, namespace, name, identity, on_change, hub,
                 lease_duration=15, renew_deadline=10, retry_period=2):
        self.lock = LeaseLock(api, namespace, name, identity)
        self.identity = identity
        self.leading = False
        self._on_change = on_change
        self._hub = hub
        self._thread = None
        # The client's Config exits the process on bad timings; say why first.
        if not lease_duration > renew_deadline > 1.2 * retry_period >= 1.2:
            raise ValueError("leader election needs lease_duration > renew_deadline > "
                             "1.2 x retry_period and retry_period >= 1 s; got "
                             f"{lease_duration}, {renew_deadline}, {retry_period}")
        self._config = electionconfig.Config(
            self.lock, lease_duration=lease_duration, renew_deadline=renew_deadline,
            retry_period=retry_period, onstarted_leading=self._started,
            onstopped_leading=self._stopped)

    def start(self):
        if _QUIET not in logging.getLogger().filters:
            logging.getLogger().addFilter(_QUIET)
        self._thread = self._hub.spawn(self._run)

    def stop(self, release=True):
        """End the election; a leader hands the lease back first (unless
        ``release`` is false: then it is as if the process died, and the
        others wait out the lease duration)."""
        self.lock.stopping = True
        if self.leading:
            self.leading = False
            if release:
                self.lock.release()
            self._on_change(False)

    def _run(self):
        while not self.lock.stopping:
            try:
                # run() returns when this agent could not renew: stand again.
                leaderelection.LeaderElection(self._config).run()
            except _Stopped:
                return
            except Exception:  # a bug in one round must not end the elections
                LOG.exception("leader election: round failed; standing again")
            self._stopped()
            self._hub.sleep(self._config.retry_period)

    def _started(self):
        LOG.info("leader election: %s holds lease %s/%s: this agent writes to the API",
                 self.identity, self.lock.namespace, self.lock.name)
        self.leading = True
        self._on_change(True)

    def _stopped(self):
        if not self.leading:
            return
        LOG.warning("leader election: %s lost lease %s/%s: no more API writes from here",
                    self.identity, self.lock.namespace, self.lock.name)
        self.leading = False
        self._on_change(False)
