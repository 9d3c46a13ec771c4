"""Shared fixtures: one Mininet lab for every end-to-end module (building it
costs more than the tests), and an embedded API server per test."""
import pytest

from kube_helpers import start_server
from topologies import lab as L


def pytest_collection_modifyitems(items):
    """Labs share names (the fabric bridge, pod hosts), so one runs at a time:
    the interactive lab tests first (before the shared lab is created on
    first use), the multi-host lab's last (after the shared lab is stopped)."""
    items.sort(key=lambda item: (item.get_closest_marker("hosts") is not None,
                                 item.get_closest_marker("interactive") is None))


_RUNNING = {}           # "lab": the shared central lab, while it runs


@pytest.fixture(scope="session")
def lab():
    the_lab = L.Lab(nodes=2, pods_per_node=2, run_dir="/tmp/nsx-proxy-e2e", of_port=16654,
                    status_port=19910)
    _RUNNING["lab"] = the_lab
    try:
        the_lab.start()
        L.wait_for(the_lab.programmed, 30, what="flows on every node bridge")
        yield the_lab
    finally:
        if _RUNNING.pop("lab", None) is not None:
            the_lab.stop()


def _multi_host_lab(run_dir, overlay):
    """The multi-host lab, once the central one is stopped (they share names)."""
    from topologies.hosts import HostsLab
    central = _RUNNING.pop("lab", None)
    if central is not None:
        central.stop()
    the_lab = HostsLab(nodes=2, pods_per_node=2, run_dir=run_dir, overlay=overlay)
    try:
        the_lab.start()
        L.wait_for(the_lab.programmed, 30, what="flows on every host's bridge")
        yield the_lab
    finally:
        the_lab.stop()


@pytest.fixture(scope="module")
def hosts_lab():
    """The multi-host lab: an OVS and an agent per host (topologies/hosts.py),
    joined by Geneve tunnels."""
    yield from _multi_host_lab("/tmp/nsx-proxy-hosts-e2e", overlay=True)


@pytest.fixture(scope="module")
def fabric_hosts_lab():
    """The same, its bridges joined by one L2 fabric (``--fabric``)."""
    yield from _multi_host_lab("/tmp/nsx-proxy-hosts-fabric", overlay=False)


@pytest.fixture
def server(tmp_path):
    """The lab's API server on a free port, with a kubeconfig for it."""
    srv = start_server(tmp_path)
    yield srv
    srv.stop()
