"""One Mininet lab for every end-to-end module: building it costs more than the tests."""
import pytest

from topologies import lab as L


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
