"""The lab as the kubelet of its pods, for whichever API server it is given.

* registers a Node per compute node (InternalIP, podCIDR, Ready);
* creates a Pod per scheduled pod host (labels, spec.nodeName, the
  container ports the pod's server listens on);
* probes each pod's server with a real TCP connect from inside the pod's
  network namespace and reports podIP, phase Running and the Ready
  condition, updated whenever the probe's answer changes;
* finishes graceful deletions: a pod whose deletionTimestamp is set keeps
  serving (its endpoint is terminating) until its grace period ends, then
  the kubelet deletes it for good, as a real kubelet does.

Threads and the official client; no eventlet here.
"""
import ctypes
import logging
import os
import socket
import threading
import time

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

LOG = logging.getLogger("lab.kubelet")
CLONE_NEWNET = 0x40000000
HOST_LABEL = "nsx-proxy.lab/host"        # marks the Pods this lab's kubelet owns


def _setns(pid):
    """Move the calling thread (only it) into the network namespace of ``pid``."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")
    finally:
        os.close(fd)


def tcp_probe(ip, port, timeout=0.5) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def pod_manifest(pod, namespace, tcp_port, udp_port, grace, extra_ports=()):
    """The Pod of a lab pod host: the server's ports http (TCP) and dns (UDP),
    plus ``extra_ports`` [(name, port, protocol)] for servers started by hand."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": namespace,
                     "labels": dict(pod.labels, **{HOST_LABEL: pod.name})},
        "spec": {"nodeName": pod.node, "terminationGracePeriodSeconds": grace,
                 "containers": [{"name": "server", "image": "nsx-proxy-lab/podserver",
                                 "ports": [{"name": "http", "containerPort": tcp_port,
                                            "protocol": "TCP"},
                                           {"name": "dns", "containerPort": udp_port,
                                            "protocol": "UDP"}]
                                 + [{"name": n, "containerPort": p, "protocol": proto}
                                    for n, p, proto in extra_ports]}]}}


class Kubelet:
    def __init__(self, api_client, namespace="default", tcp_port=8080, udp_port=5353,
                 probe_period=0.3, grace=2):
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.tcp_port, self.udp_port = tcp_port, udp_port
        self.probe_period = probe_period
        self.grace = grace
        self.pods = {}                   # name -> PodSpec of pod hosts we run
        self.scheduled = set()           # pod hosts that should have a Pod object
        self.ready = {}                  # name -> last probe result
        self.extra_ports = {}            # name -> [(port name, number, protocol)]
        self.uids = {}                   # name -> uid of the Pod we created
        self._reported = {}              # name -> (ready, resourceVersion seen)
        self._changed = threading.Event()
        self._stop = threading.Event()
        # Which Pod object (uid) a pod host stands for, and whether it is
        # scheduled, change together: the deletion watch and a failed status
        # write must not unschedule a Pod created again meanwhile (the race
        # left a recreated pod NotReady for good).
        self._lock = threading.Lock()

    # --- nodes ------------------------------------------------------------------------
    def register_nodes(self, nodes):
        for node in nodes:
            labels = {"kubernetes.io/hostname": node.name}
            if node.zone:
                labels["topology.kubernetes.io/zone"] = node.zone
            labels.update(getattr(node, "labels", None) or {})
            body = {"metadata": {"name": node.name, "labels": labels},
                    "spec": {"podCIDR": node.pod_cidr,
                             "podCIDRs": node.pod_cidrs}}
            internal = getattr(node, "internal_ips", None) or [node.internal_ip]
            status = {"addresses": [{"type": "InternalIP", "address": ip} for ip in internal]
                      + [{"type": "Hostname", "address": node.name}],
                      "conditions": [{"type": "Ready", "status": "True",
                                      "reason": "KubeletReady",
                                      "message": "nsx-proxy lab kubelet"}]}
            try:
                self.core.create_node(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                self.core.patch_node(node.name, body)
            self.core.patch_node_status(node.name, {"status": status})

    # --- pods -------------------------------------------------------------------------
    def start(self, pods, pid_of):
        """Probe every pod host; report status for the scheduled ones."""
        for pod in pods:
            self.pods[pod.name] = pod
            threading.Thread(target=self._probe_loop, args=(pod, pid_of(pod.name)),
                             name=f"probe-{pod.name}", daemon=True).start()
        threading.Thread(target=self._report_loop, name="kubelet-status",
                         daemon=True).start()
        threading.Thread(target=self._watch_deletions, name="kubelet-watch",
                         daemon=True).start()

    def stop(self):
        self._stop.set()
        self._changed.set()

    def schedule(self, name, labels=None, extra_ports=None):
        """Create the Pod object of pod host ``name`` (labels default to the topology's)."""
        pod = self.pods[name]
        if labels is not None:
            pod.labels = dict(labels)
        if extra_ports is not None:
            self.extra_ports[name] = list(extra_ports)
        body = pod_manifest(pod, self.namespace, self.tcp_port, self.udp_port, self.grace,
                            self.extra_ports.get(name, ()))
        with self._lock:
            try:
                created = self.core.create_namespaced_pod(self.namespace, body)
                self.uids[name] = created.metadata.uid
            except ApiException as exc:
                if exc.status != 409:
                    raise
                self.core.patch_namespaced_pod(name, self.namespace, {"metadata": {
                    "labels": body["metadata"]["labels"]}})
            self.scheduled.add(name)
            self._reported.pop(name, None)
        self._changed.set()

    def unschedule(self, name, grace=None):
        """Delete the Pod (gracefully: terminating first, like kubectl delete)."""
        try:
            self.core.delete_namespaced_pod(name, self.namespace,
                                            grace_period_seconds=grace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def relabel(self, name, labels):
        """Replace the pod's labels (removed keys are sent as null, as kubectl does)."""
        pod = self.pods[name]
        new = dict(labels, **{HOST_LABEL: name})
        patch = {k: None for k in pod.labels if k not in new}
        patch.update(new)
        pod.labels = dict(labels)
        self.core.patch_namespaced_pod(name, self.namespace, {"metadata": {"labels": patch}})

    # --- loops ------------------------------------------------------------------------
    def _probe_loop(self, pod, pid):
        _setns(pid)                      # this thread lives in the pod from now on
        while not self._stop.is_set():
            ok = tcp_probe(pod.ip, self.tcp_port)
            if self.ready.get(pod.name) != ok:
                self.ready[pod.name] = ok
                self._changed.set()
            self._stop.wait(self.probe_period)

    def _report_loop(self):
        while not self._stop.is_set():
            self._changed.wait(1.0)
            self._changed.clear()
            for name in sorted(self.scheduled):
                ready = self.ready.get(name)
                if ready is None or self._reported.get(name) == ready:
                    continue
                uid = self.uids.get(name)
                try:
                    self._report(name, ready)
                    self._reported[name] = ready
                except ApiException as exc:
                    if exc.status == 404:
                        self._unschedule_if(name, uid)
                    else:
                        LOG.warning("pod %s: status update failed: %s", name, exc.reason)
                        self._changed.set()
                except Exception as exc:  # the API server may be down: retry
                    LOG.warning("pod %s: status update failed: %s", name, exc)
                    time.sleep(0.5)
                    self._changed.set()

    def _unschedule_if(self, name, uid):
        """The Pod ``uid`` of pod host ``name`` is gone: stop reporting for it,
        unless a newer Pod of that name was created meanwhile."""
        with self._lock:
            if self.uids.get(name) == uid:
                self.scheduled.discard(name)

    def _report(self, name, ready):
        pod = self.pods[name]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = "True" if ready else "False"
        self.core.patch_namespaced_pod_status(name, self.namespace, {"status": {
            "phase": "Running", "podIP": pod.ip,
            "podIPs": [{"ip": ip} for ip in pod.ips],
            "startTime": now,
            "conditions": [{"type": "Ready", "status": status, "lastTransitionTime": now},
                           {"type": "ContainersReady", "status": status,
                            "lastTransitionTime": now}]}})
        LOG.info("pod %s: Ready=%s", name, status)

    def _watch_deletions(self):
        """Finish graceful deletions of our pods once their grace period is over.

        Timers are per Pod object (uid): a Pod deleted for good earlier, and
        created again under its name, is not taken away when the old Pod's
        grace period ends."""
        timers = {}                          # (name, uid) -> Timer
        while not self._stop.is_set():
            try:
                stream = watch.Watch().stream(
                    self.core.list_namespaced_pod, self.namespace,
                    label_selector=HOST_LABEL, timeout_seconds=60)
                for event in stream:
                    meta = event["raw_object"]["metadata"]
                    name = meta["name"]
                    key = (name, meta.get("uid"))
                    if event["type"] == "DELETED":
                        self._unschedule_if(*key)
                        timer = timers.pop(key, None)
                        if timer is not None:
                            timer.cancel()
                        continue
                    if meta.get("deletionTimestamp") and key not in timers:
                        grace = meta.get("deletionGracePeriodSeconds") or 0
                        timers[key] = threading.Timer(grace, self._finish, (key, timers))
                        timers[key].daemon = True
                        timers[key].start()
            except Exception as exc:  # reconnect after API server restarts
                LOG.debug("pod watch ended: %s", exc)
                self._stop.wait(0.5)

    def _finish(self, key, timers):
        """A graceful deletion's grace period ended: delete that Pod for good
        (unless the lab is stopping and its API server may be gone, or a newer
        Pod has its name by now)."""
        timers.pop(key, None)
        name, uid = key
        if self._stop.is_set():
            return
        try:
            current = self.core.read_namespaced_pod(name, self.namespace)
            if current.metadata.uid != uid:
                return
            self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
        except ApiException:
            pass
        except Exception as exc:  # the API server went away meanwhile
            LOG.info("pod %s: final deletion not sent: %s", name, exc)

    def recreate(self, name, labels=None, extra_ports=None):
        """Delete the Pod at once and create it again (a Pod's ports cannot change)."""
        self.unschedule(name, grace=0)
        wait_until = time.monotonic() + 10
        while name in self.scheduled and time.monotonic() < wait_until:
            time.sleep(0.05)
        self.schedule(name, labels, extra_ports)
