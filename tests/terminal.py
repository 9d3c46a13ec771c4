"""A program in a pseudo-terminal, typed into as a person would (pexpect),
and what a lab run may leave behind: shared by the interactive tests."""
import os
import re
import subprocess

import pexpect


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


PROMPT = "nsx-lab> "


LAB_BRIDGES = {"br-node1", "br-node2", "br-gw", "fabric"}


class Terminal:
    """One program in a pseudo-terminal, typed into like a person would."""

    prompt = PROMPT

    def __init__(self, cmd, start_timeout=180):
        self.transcript = []
        self.child = pexpect.spawn(cmd[0], cmd[1:], cwd=ROOT, encoding="utf-8",
                                   timeout=30, dimensions=(50, 220),
                                   env=dict(os.environ, TERM="dumb"))
        self.child.logfile_read = _Collect(self.transcript)
        self.child.expect_exact(self.prompt, timeout=start_timeout)
        self.banner = self.child.before

    def type(self, line, timeout=30):
        """Type a line; what it printed up to the next prompt."""
        self.child.sendline(line)
        self.child.expect_exact(self.prompt, timeout=timeout)
        out = self.child.before
        return out.split("\n", 1)[1] if "\n" in out else ""    # drop the echo

    def exit(self):
        self.child.sendline("exit")
        self.child.expect(pexpect.EOF, timeout=120)
        self.child.close()
        return self.child.exitstatus

    def kill(self):
        """After a failure: exit the CLI if it still listens, else end it."""
        if not self.child.isalive():
            return
        try:
            self.child.sendline("exit")
            self.child.expect(pexpect.EOF, timeout=60)
        except pexpect.ExceptionPexpect:
            self.child.terminate(force=True)


class _Collect:
    def __init__(self, out):
        self.out = out

    def write(self, text):
        self.out.append(text)

    def flush(self):
        pass


def leftovers(pids=None):
    """Bridges, interfaces and processes a lab run could leave behind
    (``pids`` collects the processes' ids)."""
    bridges = set(subprocess.run(["ovs-vsctl", "list-br"], capture_output=True,
                                 text=True).stdout.split()) & LAB_BRIDGES
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    intfs = set(re.findall(r"\d+: ((?:pod\d+|inet|br-node\d+|br-gw|fabric)-eth\d+|nsx-mgmt"
                           r"|mg-\w+)[@:]", links))
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "mininet:" in cmd or "podserver.py" in cmd or "nsx-proxy-lab" in cmd \
                or "nsx-proxy-seed" in cmd or "nsx-proxy-hosts" in cmd:
            procs.append(cmd.strip())
            if pids is not None:
                pids.append(int(pid))
    return bridges, intfs, procs


def remove(bridges, intfs, pids):
    """Take a failed run's leftovers away (by name and PID), so the next test
    starts clean."""
    for pid in pids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    for br in bridges:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", br], check=False)
    for intf in intfs:
        subprocess.run(["ip", "link", "del", intf], check=False, capture_output=True)
