"""Writes load-balancer IPs from the floating-IP pools into Service status.

The proxy's only writes to the API.  ``lb_ipam`` decides (pure); this
module writes what it decided, one write in flight per service, conditional
on the Service's resourceVersion, and only while this agent holds the writer
lease (nsx_proxy.leader): a write that has not come back through the watch
yet keeps its IP reserved, so two services can never be handed one IP, and a
failed write is retried on the next sync.
"""
import logging

from nsx_proxy import lb_ipam, rawjson
from nsx_proxy.kube_client import ApiException

LOG = logging.getLogger("nsx_proxy.kube_source")


def _matters(svc) -> bool:
    """Whether a Service counts in the pool plan: a LoadBalancer, or one
    holding an ingress IP (an address no one else may get)."""
    return svc is not None and (
        rawjson.spec(svc).get("type") == "LoadBalancer" or bool(lb_ipam.ingress_ips(svc)))


class LbStatusWriter:
    def __init__(self, ipam: lb_ipam.Ipam, core, spawn, reject, on_written):
        self.ipam = ipam
        self._core = core                    # kubernetes CoreV1Api
        self._spawn = spawn
        self._reject = reject
        self._on_written = on_written        # called after every write (ask for a sync)
        self.pending = {}                    # ServiceKey -> IPs being written (): release
        # Services the plan depends on (LoadBalancers, holders of an ingress
        # IP), and whether one still waits for an IP: with neither touched,
        # planning again would give the same (empty) answer - and walk every
        # Service, which at 10,000 is most of an endpoint change's cost.
        self._relevant = None                # None: plan at the next sync
        self._waiting = False

    def replan(self):
        self._relevant = None

    def sync(self, services, namespaces, changed=None):
        """Write LB IPs from the pools to services that need one (or release).
        ``changed``: the keys of Services whose objects changed since the last
        call (None: anything may have, e.g. a namespace's pool annotation)."""
        if changed is not None and self._relevant is not None and not self.pending \
                and not self._waiting and not any(
                    k in self._relevant or _matters(services.get(k)) for k in changed):
            return
        for key, ips in list(self.pending.items()):   # written and seen back?
            svc = services.get(key)
            if svc is None or lb_ipam.ingress_ips(svc) == ips:
                del self.pending[key]
        plan = self.ipam.plan(services, namespaces, self._reject,
                              reserved={ip for ips in self.pending.values() for ip in ips})
        self._relevant = {k for k, svc in services.items() if _matters(svc)}
        self._waiting = any(
            rawjson.spec(services[k]).get("type") == "LoadBalancer"
            and not lb_ipam.ingress_ips(services[k]) and k not in plan
            for k in self._relevant)
        for key, ips in plan.items():
            if key in self.pending:
                continue                     # being written; wait to see it back
            self.pending[key] = ips
            version = rawjson.resource_version(services[key])
            self._spawn(self._write, key, ips, version)

    def _write(self, key, ips, version):
        ingress = [{"ip": ip} for ip in ips] or None
        body = {"status": {"loadBalancer": {"ingress": ingress}}}
        if version:
            # A precondition: the write lands only on the Service as this agent
            # last saw it.  Whatever moved it on since (another writer, a
            # former leader's late write, the user) wins; we re-plan next sync.
            body["metadata"] = {"resourceVersion": version}
        try:
            self._core.patch_namespaced_service_status(key.name, key.namespace, body)
            LOG.info("service %s: load-balancer IPs %s", key,
                     f"{', '.join(ips)} written" if ips else "released")
        except ApiException as exc:
            if exc.status == 409:
                LOG.info("service %s: changed before its load-balancer IP was written; "
                         "planning again", key)
            else:
                LOG.warning("service %s: cannot write load-balancer status: %s %s", key,
                            exc.status, exc.reason)
            self.pending.pop(key, None)
            self._relevant = None
        except Exception as exc:  # retried on the next sync
            LOG.warning("service %s: cannot write load-balancer status: %s", key, exc)
            self.pending.pop(key, None)
            self._relevant = None
        self._on_written()
