"""Mininet CLI commands for the lab: look at services, move pods, run kubectl."""
import os
import shlex
import subprocess

from mininet.cli import CLI


class LabCLI(CLI):
    prompt = "nsx-lab> "

    def __init__(self, net, lab, **kwargs):
        self.lab = lab
        super().__init__(net, **kwargs)

    def do_services(self, _line):
        """services: each service port, its VIP and its endpoints (node, condition)."""
        for name, vip, port, endpoints in self.lab.cluster.endpoints_table():
            print(f"{name}  {vip}:{port}")
            for ep, node, cond in endpoints or [("(no endpoints)", "", "")]:
                print(f"    {ep:<22} {node:<8} {cond}")

    def do_scale(self, line):
        """scale APP N: give the first N pod hosts label app=APP (Pods created);
        the other hosts that had it lose their Pod (deleted gracefully)."""
        try:
            app, count = line.split()
            count = int(count)
        except ValueError:
            print("usage: scale APP N")
            return
        kubelet = self.lab.cluster.kubelet
        hosts = sorted(kubelet.pods, key=lambda n: (len(n), n))
        members = [h for h in hosts if h in kubelet.scheduled
                   and kubelet.pods[h].labels.get("app") == app]
        free = [h for h in hosts if h not in kubelet.scheduled]
        if count - len(members) > len(free):
            print(f"only {len(members) + len(free)} pod hosts are available for app={app}")
            return
        for name in members[count:]:
            kubelet.unschedule(name)
        for name in free[:max(0, count - len(members))]:
            kubelet.schedule(name, {"app": app})
        print(f"app={app}: {count} pods")

    def do_stop_server(self, line):
        """stop_server POD: stop the pod's server; its readiness probe fails."""
        self.lab.stop_pod_server(line.strip())

    def do_start_server(self, line):
        """start_server POD: start the pod's server again; it becomes ready."""
        self.lab.start_pod_server(line.strip())

    def do_label(self, line):
        """label POD KEY=VALUE ...: replace the pod's labels."""
        parts = line.split()
        if len(parts) < 1:
            print("usage: label POD KEY=VALUE ...")
            return
        labels = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        self.lab.cluster.kubelet.relabel(parts[0], labels)

    def do_kubectl(self, line):
        """kubectl ARGS: kubectl against the lab's API server."""
        env = dict(os.environ, KUBECONFIG=self.lab.cluster.kubeconfig)
        subprocess.run(["kubectl"] + shlex.split(line), env=env)
