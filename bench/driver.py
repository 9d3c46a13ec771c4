"""A Ryu app that drives ServiceProxy in-process for the core benchmark.

Loaded next to ``controller.app`` by bench/core.py.  It hands the proxy a
generated state of N services (as a watch cache would: unchanged objects are
reused), waits for the bundle to commit, then changes one endpoint at a time
(with the change set, as the Kubernetes source hands it over) and records
model-change -> bundle-committed for each.  Results go to the
JSON file named by $BENCH_OUT, then the process exits.
"""
import json
import os
import time

from ryu.base import app_manager
from ryu.lib import hub

from nsx_proxy import changes as change_sets, model


def make_services(n, endpoints=5):
    services = []
    for i in range(n):
        eps = tuple(model.Endpoint(ip=f"10.2.{(i * endpoints + e) // 250 % 250}."
                                      f"{(i * endpoints + e) % 250 + 2}",
                                   port=8080, node="node2") for e in range(endpoints))
        services.append(model.Service(
            namespace="bench", name=f"svc{i}",
            cluster_ip=f"10.{96 + i // 65000}.{i // 250 % 250}.{i % 250 + 1}",
            ports=(model.ServicePort("http", model.TCP, 80, 8080, eps),)))
    return services


NODES = (model.Node("node1", "192.168.100.1", "10.1.0.0/16"),
         model.Node("node2", "192.168.100.2", "10.2.0.0/16"))


class BenchDriver(app_manager.RyuApp):
    def start(self):
        super().start()
        return hub.spawn(self._run_or_exit)

    def _run_or_exit(self):
        """A failure must end ryu-manager, or the benchmark waits for ever."""
        try:
            self._run()
        except Exception:
            self.logger.exception("benchmark driver failed")
            os._exit(1)

    def _run(self):
        n = int(os.environ["BENCH_SERVICES"])
        changes = int(os.environ.get("BENCH_CHANGES", "100"))
        proxy = None
        while proxy is None or not any(s.ready for s in proxy.switches.values()):
            proxy = app_manager.lookup_service_brick("ServiceProxy")
            hub.sleep(0.01)
        commits = hub.Queue()
        proxy.commit_listeners.append(lambda dpid, plan, secs: commits.put(len(plan)))
        services = make_services(n, int(os.environ.get("BENCH_ENDPOINTS", "5")))
        t0 = time.monotonic()
        state = model.ClusterState.build(services, NODES)
        proxy.set_state(state)
        commits.get()
        cold = time.monotonic() - t0
        latencies = []
        for i in range(changes):
            k = (i * 7919) % n
            svc = services[k]
            port = svc.ports[0]
            ep = port.endpoints[i % len(port.endpoints)]
            flipped = tuple(e if e is not ep else model.Endpoint(
                ip=e.ip, port=e.port, node=e.node, ready=not e.ready)
                for e in port.endpoints)
            services[k] = model.Service(svc.namespace, svc.name, svc.cluster_ip,
                                        (model.ServicePort(port.name, port.protocol,
                                                           port.port, port.target_port,
                                                           flipped),))
            new_state = model.ClusterState.build(services, NODES)
            t1 = time.monotonic()
            # with the change set a Kubernetes source delivers: this one service
            proxy.set_state(new_state, change_sets.compute(state, new_state, [svc.key]))
            state = new_state
            commits.get()
            latencies.append(time.monotonic() - t1)
        with open(f"/proc/{os.getpid()}/status") as fh:
            rss_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))
        with open(os.environ["BENCH_OUT"], "w") as fh:
            json.dump({"cold_sync_s": cold, "change_s": latencies, "rss_kb": rss_kb}, fh)
        os._exit(0)
