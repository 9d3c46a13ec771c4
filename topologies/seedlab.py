"""The seed documents' labs, reproduced: python -m topologies.seedlab 001|002|004 [--check].

Each seed is a manifest in topologies/seeds/ (Services, and labels for the
lab's pods) plus a check that drives the traffic the seed shows: from a pod
and from the Internet host through the gateway router.  Without --check the
lab stays up in its CLI, with the seed loaded, for ``dump-flows`` /
``dump-groups`` (docs/labs.md walks through them).
"""
import argparse
import os
import shutil
import sys
import time

from topologies import lab as L
from topologies.cluster import load_manifests
from topologies.progress import Progress

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = {"001": "contrail-001.yaml", "002": "nodeport-002.yaml", "004": "externalip-004.yaml"}
NODE_IPS = ("192.168.100.1", "192.168.100.2")


def manifest(seed):
    return os.path.join(HERE, "seeds", SEEDS[seed])


def _answers(lab, client, url, expected, tries=40, patience=10.0):
    """Who answers ``url`` from ``client``: at least ``tries`` connections, and
    for up to ``patience`` seconds until every expected pod has answered (a
    pod whose readiness probe flaps under load is out of the group for a
    moment; it must come back, not be there at one instant)."""
    seen, deadline, n = set(), time.monotonic() + patience, 0
    while not expected <= seen and (n < tries or time.monotonic() < deadline):
        seen.add(lab.curl(client, url))
        n += 1
    seen.discard("")
    ok = seen == expected
    print(f"  {client:>5} -> {url:<34} answered by {sorted(seen)}"
          f"{'' if ok else f'  (expected {sorted(expected)})'}")
    return ok


def start_alt_servers(lab, pods, port=9090):
    """Seed 001's second target port: a server on 9090 in the backend pods."""
    return [lab.net.get(p).popen(["python3", f"{HERE}/podserver.py", "--name", p,
                                  "--tcp", str(port), "--udp", str(port + 1)])
            for p in pods]


def check_001(lab):
    print("seed 001: ClusterIP, multi-port and LoadBalancer over pod1 (node1) and pod3 (node2)")
    backends = {"pod1", "pod3"}
    return all([
        _answers(lab, "pod2", "http://10.105.139.153:8888/", backends),
        _answers(lab, "pod4", "http://10.101.102.27:8888/", backends),
        _answers(lab, "pod4", "http://10.101.102.27:9999/", backends),
        _answers(lab, "inet", "http://101.101.101.252:8888/", backends),
    ])


def check_002(lab):
    print("seed 002: NodePort 31155 and an auto-allocated one, on every node IP")
    auto = lab.cluster.core.read_namespaced_service(
        "livefire-nodeport-auto", "default").spec.ports[0].node_port
    everyone = {p.name for p in lab.pods}
    return all(_answers(lab, "inet", f"http://{ip}:{port}/", everyone)
               for ip in NODE_IPS for port in (31155, auto))


def check_004(lab):
    print("seed 004: external IP 169.10.10.1, backends on node2 only, ECMP to both nodes")
    groups = [g for g in lab.dump_groups("br-gw")]
    print(f"  br-gw: {groups}")
    return _answers(lab, "inet", "http://169.10.10.1/", {"pod3", "pod4"}) and \
        all(g.count("bucket=") == 2 for g in groups)


CHECKS = {"001": check_001, "002": check_002, "004": check_004}
HINTS = {
    "001": "Try: sh ovs-ofctl -O OpenFlow13 dump-flows br-gw table=60 | "
           "inet curl -s 101.101.101.252:8888 | pod2 curl -s 10.105.139.153:8888",
    "002": "Try: inet curl -s 192.168.100.1:31155 | "
           "sh ovs-ofctl -O OpenFlow13 dump-flows br-node1 table=30",
    "004": "Try: inet curl -s 169.10.10.1 | sh ovs-ofctl -O OpenFlow13 dump-groups br-gw",
}


def apply(lab, seed):
    """Load a seed into a running lab; returns an undo callable."""
    services, labels = load_manifests([manifest(seed)])
    kubelet = lab.cluster.kubelet
    before = {p: dict(kubelet.pods[p].labels) for p in labels}
    for pod, pod_labels in labels.items():
        kubelet.relabel(pod, pod_labels)
    for body in services:
        lab.cluster.apply_service(body)
    procs = start_alt_servers(lab, ["pod1", "pod3"]) if seed == "001" else []

    def undo():
        for proc in procs:
            proc.kill()
            proc.wait()
        for body in services:
            lab.cluster.delete_service(body["metadata"]["name"])
        for pod, pod_labels in before.items():
            kubelet.relabel(pod, pod_labels)
    return undo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seed", choices=sorted(SEEDS))
    parser.add_argument("--check", action="store_true", help="run the check and exit")
    parser.add_argument("--run-dir", default="/tmp/nsx-proxy-seed")
    args = parser.parse_args(argv)
    L.console(args.run_dir)
    print(f"starting seed lab {args.seed}")
    lab = L.Lab(2, 2, run_dir=args.run_dir, dual_stack=False, manifests=[manifest(args.seed)],
                progress=Progress())
    try:
        lab.start()
        procs = start_alt_servers(lab, ["pod1", "pod3"]) if args.seed == "001" else []
        with lab.progress.step("waiting for every bridge to be programmed"):
            L.wait_for(lab.programmed, 30, what="flows on every bridge")
        ok = CHECKS[args.seed](lab)
        print("OK" if ok else "FAILED")
        if not args.check:
            L.interact(lab, HINTS[args.seed])
        for proc in procs:
            proc.kill()
        return 0 if ok else 1
    finally:
        lab.stop()
        shutil.rmtree(args.run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
