"""A traced agent's heap snapshot: written on SIGUSR2 only when the process
traces its allocations (PYTHONTRACEMALLOC), and read back by bench.memory
as a person would run it."""
import os
import signal
import subprocess
import sys

from nsx_proxy import heap_snapshot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """if True:
    import logging, os, signal, sys, time
    logging.basicConfig(level=logging.INFO)
    from nsx_proxy import heap_snapshot
    kept = [bytearray(1000) for _ in range(3000)]          # 3 MB alive, from line 5
    print(heap_snapshot.install(sys.argv[1]), flush=True)
    os.kill(os.getpid(), signal.SIGUSR2)
    time.sleep(0.2)                                      # handled between bytecodes
    print(heap_snapshot.path_for(sys.argv[1], os.getpid()))
"""


def run_probe(tmp_path, **env):
    return subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], cwd=REPO,
                          env=dict(os.environ, **env), capture_output=True, text=True,
                          check=True)


def test_a_traced_process_writes_its_snapshot_on_sigusr2_and_bench_memory_reads_it(tmp_path):
    done = run_probe(tmp_path, PYTHONTRACEMALLOC="1")
    installed, path = done.stdout.split()
    assert installed == "True" and os.path.exists(path)
    assert f"heap snapshot (1 frames per allocation) written to {path}" in done.stderr
    shown = subprocess.run([sys.executable, "-m", "bench.memory", "--read", path,
                            "--top", "5"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert shown[0] == f"snapshot {path}" and "MB traced" in shown[1]
    by_line = shown[shown.index("by line:") + 1:]
    assert len(by_line) == 5
    size, unit = by_line[0].split()[:2]                  # the probe's 3 MB comes first
    assert by_line[0].endswith("<string>:5") and unit == "MB" and 2.9 < float(size) < 3.5


def test_without_tracing_sigusr2_is_left_alone(tmp_path):
    import tracemalloc
    assert not tracemalloc.is_tracing()          # pytest's own process, as run here
    before = signal.getsignal(signal.SIGUSR2)
    assert heap_snapshot.install(str(tmp_path)) is False
    assert signal.getsignal(signal.SIGUSR2) is before and not os.listdir(tmp_path)


def test_a_snapshot_that_cannot_be_written_is_one_log_line_and_the_process_goes_on(tmp_path):
    """A signal handler's exception would surface in whatever code it
    interrupted (a sync, a watch): a directory that is not there costs one
    line, and the process carries on."""
    done = run_probe(tmp_path / "gone", PYTHONTRACEMALLOC="1")
    installed, path = done.stdout.split()
    assert installed == "True" and not os.path.exists(path)
    assert f"heap snapshot: cannot write {path}: FileNotFoundError" in done.stderr
