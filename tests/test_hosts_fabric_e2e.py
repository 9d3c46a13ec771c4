"""The multi-host lab in fabric mode (``--fabric``): the hosts' bridges share
one L2 fabric instead of Geneve tunnels; the same traffic must pass."""
import pytest

from lab_helpers import EVERYONE, NODE1, NODE2, converged, web_service, who_until
from topologies import lab as L

pytestmark = pytest.mark.hosts


def test_fabric_mode_carries_pod_service_and_node_port_traffic_across_hosts(fabric_hosts_lab):
    lab = fabric_hosts_lab
    for host in ("node1", "node2", "gw"):
        assert "br-phy" not in lab.ovs[host].vsctl("list-br").split()
        assert lab.ovs[host].vsctl("--columns=type", "find", "interface",
                                   "type=geneve").strip() == ""
    assert lab.curl("pod1", "http://10.1.2.2:8080/") == "pod3"
    assert who_until(lab, "pod3", f"http://{L.DEMO_VIP}/", EVERYONE) == EVERYONE
    lab.cluster.apply_service(web_service("edge-fabric", type_="NodePort", ports=[
        {"name": "http", "port": 80, "targetPort": "http", "nodePort": 30190}]))
    try:
        converged(lab)
        for node_ip in (NODE1, NODE2):
            assert who_until(lab, "inet", f"http://{node_ip}:30190/", EVERYONE) == EVERYONE
    finally:
        lab.cluster.delete_service("edge-fabric")
