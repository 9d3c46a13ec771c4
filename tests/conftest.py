"""Shared fixtures: one Mininet lab for every end-to-end module (building it
costs more than the tests), and an embedded API server per test."""
import pytest

from kube_helpers import start_server
from topologies import lab as L


def pytest_collection_modifyitems(items):
    """The interactive lab tests build labs with the shared lab's bridge names:
    run them before the shared lab is created (it is created on first use)."""
    items.sort(key=lambda item: item.get_closest_marker("interactive") is None)


@pytest.fixture(scope="session")
def lab():
    the_lab = L.Lab(nodes=2, pods_per_node=2, run_dir="/tmp/nsx-proxy-e2e", of_port=16654,
                    status_port=19910)
    try:
        the_lab.start()
        L.wait_for(the_lab.programmed, 30, what="flows on every node bridge")
        yield the_lab
    finally:
        the_lab.stop()


@pytest.fixture
def server(tmp_path):
    """The lab's API server on a free port, with a kubeconfig for it."""
    srv = start_server(tmp_path)
    yield srv
    srv.stop()
