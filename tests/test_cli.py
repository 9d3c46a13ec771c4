"""How the nsx-proxy CLI finds the controller, and what it says when it cannot."""
import socket
import subprocess
import sys

import pytest

from controller import cli


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(*args):
    return subprocess.run([sys.executable, "-m", "controller.cli", *args, "services"],
                          capture_output=True, text=True, timeout=30)


def test_the_config_file_the_controller_uses_names_the_endpoint(tmp_path):
    conf = tmp_path / "nsx-proxy.conf"
    port = free_port()
    conf.write_text(f"[nsx_proxy]\nsource = kubernetes\nstatus_port = {port}   # ours\n")
    args = cli.build_parser().parse_args(["--config-file", str(conf), "services"])
    assert cli.find_controller(args) == (f"http://127.0.0.1:{port}",
                                         f"--config-file {conf}")
    done = run("--config-file", str(conf))          # nothing listens there
    assert done.returncode == 2
    assert done.stderr.startswith(f"nsx-proxy: cannot reach the controller at "
                                  f"http://127.0.0.1:{port} (from --config-file {conf}):")


def test_controller_flag_wins_and_is_named_when_unreachable():
    port = free_port()
    done = run("--controller", f"http://127.0.0.1:{port}")
    assert done.returncode == 2 and "(from --controller)" in done.stderr


def test_a_config_without_the_endpoint_or_a_missing_file_is_a_clear_error(tmp_path):
    off = tmp_path / "off.conf"
    off.write_text("[nsx_proxy]\nstatus_port = 0\n")
    with pytest.raises(SystemExit, match="turns the status endpoint off"):
        cli.status_url(str(off))
    with pytest.raises(SystemExit, match="cannot read the config file"):
        cli.status_url(str(tmp_path / "nope.conf"))


def test_without_flags_a_running_labs_config_then_the_default(tmp_path, monkeypatch):
    lab_conf = tmp_path / "lab.conf"
    lab_conf.write_text("[nsx_proxy]\nstatus_port = 19999\n")
    args = cli.build_parser().parse_args(["services"])
    monkeypatch.setattr(cli, "KNOWN_CONFIGS", (str(tmp_path / "absent"), str(lab_conf)))
    assert cli.find_controller(args) == ("http://127.0.0.1:19999", f"the config {lab_conf}")
    monkeypatch.setattr(cli, "KNOWN_CONFIGS", ())
    assert cli.find_controller(args) == ("http://127.0.0.1:9910", "the default")


def test_ovs_output_of_both_families_parses():
    from controller import ovs_text
    groups = ovs_text.group_buckets(
        " group_id=7,type=select,bucket=bucket_id:0,actions=ct(commit,table=38,zone=100,"
        "nat(dst=10.1.1.2:8080)),bucket=bucket_id:1,actions=ct(commit,table=38,zone=100,"
        "nat(dst=[fd00:10:1:2::2]:8080))")
    assert groups == {7: [("10.1.1.2", 8080), ("fd00:10:1:2::2", 8080)]}
    (entry,) = ovs_text.conntrack_entries(
        "tcp,orig=(src=fd00:10:1:1::2,dst=fd00:96::a,sport=40000,dport=80),"
        "reply=(src=fd00:10:1:2::2,dst=fd00:10:1:1::2,sport=8080,dport=40000),zone=100,"
        "protoinfo=(state=ESTABLISHED)")
    assert entry["original"] == {"src": "fd00:10:1:1::2", "dst": "fd00:96::a",
                                 "sport": 40000, "dport": 80}
    assert (entry["reply"]["src"], entry["zone"], entry["state"]) == \
        ("fd00:10:1:2::2", 100, "ESTABLISHED")


def test_an_ipv6_affinity_buckets_endpoint_is_read_back_from_its_register():
    """Affinity buckets load the endpoint into reg0 (32 bits): an IPv6 one as
    its CRC-32.  What the CLI reads from the group's text maps back to it."""
    import world
    from controller import flows as F
    from controller import fragments, ovs_text
    _, groups = fragments.flatten(world.compile_for(
        world.NODE1_DS, world.dual_stack_state(world.web_dual_stack(affinity=600))))
    seen = {ip for g in groups.values()
            for ip, _ in ovs_text.group_buckets(F.group_text(g))[g.group_id]}
    pods = [world.PODS6["pod1"], world.PODS6["pod3"]]
    assert seen == {p.ip for p in pods} | {ovs_text.affinity_alias(p.ip6) for p in pods}
    assert ovs_text.affinity_alias("10.1.1.2") == "10.1.1.2"
