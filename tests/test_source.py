"""The YAML source: translation into the model and one-by-one rejection."""
import logging

import yaml

from nsx_proxy import model, validate
from nsx_proxy.yaml_source import YamlFileSource, parse_state

DOC = yaml.safe_load("""
nodes:
  - {name: node1, internalIP: 192.168.100.1, podCIDR: 10.1.1.0/24}
  - {name: bad-node, internalIP: 192.168.100.2, podCIDR: 10.1.2.7/24}
services:
  - name: web
    clusterIP: 10.96.0.10
    ports:
      - {name: http, protocol: TCP, port: 80, targetPort: http-alt}
      - {name: dns, protocol: udp, port: 53, targetPort: 5353}
      - {name: zero, protocol: TCP, port: 0}
      - {name: big, protocol: TCP, port: 70000}
      - {name: gre, protocol: GRE, port: 47}
    endpoints:
      - {ip: 10.1.1.2, node: node1, ports: {http: 8080}}
      - {ip: 10.1.1.3, node: node1, ports: {http: 9090}, ready: false}
      - {node: node1}
  - {name: bad-ip, clusterIP: 10.96.0.300, ports: [{port: 80}]}
  - {name: v6, clusterIP: "fd00::1", ports: [{port: 80}]}
  - {name: zz-dup, clusterIP: 10.96.0.10, ports: [{port: 81}]}
  - {name: ok, clusterIP: 10.96.0.11, ports: [{port: 80}]}
""")


def test_good_objects_survive_bad_neighbours(caplog):
    caplog.set_level(logging.WARNING)
    rejects = validate.RejectLog()
    st = parse_state(DOC, rejects)
    assert sorted(k.name for k in st.services) == ["ok", "web"]
    assert list(st.nodes) == ["node1"]
    web = st.services[model.ServiceKey("default", "web")]
    assert [(p.name, p.protocol, p.port) for p in web.ports] == [
        ("http", "TCP", 80), ("dns", "UDP", 53)]
    http = web.ports[0]
    # a named targetPort resolves per endpoint
    assert [(e.ip, e.port, e.ready) for e in http.endpoints] == [
        ("10.1.1.2", 8080, True), ("10.1.1.3", 9090, False)]
    text = caplog.text
    for needle in ("default/bad-ip", "not an IP address", "IPv6",
                   "outside 1-65535", "'GRE' is not one of", "endpoint IP missing",
                   "already used by default/web", "10.1.2.7/24"):
        assert needle in text, needle


def test_rejections_are_logged_once_per_reason(caplog):
    caplog.set_level(logging.WARNING)
    rejects = validate.RejectLog()
    parse_state(DOC, rejects)
    first = len(caplog.records)
    parse_state(DOC, rejects)
    assert len(caplog.records) == first
    assert sum(rejects.counts.values()) == first


def test_file_source_keeps_last_good_state_on_a_broken_file(tmp_path):
    path = tmp_path / "state.yaml"
    seen = []
    src = YamlFileSource(str(path), seen.append, spawn=None, sleep=None)
    assert not src.poll_once()                       # missing: wait, deliver nothing
    path.write_text(yaml.safe_dump(DOC))
    assert src.poll_once() and len(seen[-1].services) == 2
    assert not src.poll_once()                       # unchanged: nothing new
    path.write_text("services: [ {name: x")          # half-written
    assert not src.poll_once()
    assert len(seen) == 1


def test_a_consumer_that_raises_is_logged_and_the_poll_loop_and_runner_go_on(tmp_path,
                                                                              caplog):
    """A bug downstream of a source (here: on_change raising) is one logged
    traceback per failure; the state it was handed is delivered again on the
    next poll (nothing is lost), the file keeps being watched, and the
    rate-limited runner that drives syncs keeps running and retries by itself."""
    import time
    from nsx_proxy.runner import BoundedFrequencyRunner, thread_hub
    path = tmp_path / "state.yaml"
    path.write_text(yaml.safe_dump(DOC))
    seen, fail = [], [True]

    def on_change(state):
        if fail[0]:
            fail[0] = False
            raise RuntimeError("a bug downstream")
        seen.append(state)
    polls = []

    def sleep(seconds):
        polls.append(seconds)
        if len(polls) > 3:
            raise SystemExit          # end the test's loop (not an Exception)
    src = YamlFileSource(str(path), on_change, spawn=None, sleep=sleep)
    try:
        src._loop()
    except SystemExit:
        pass
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == \
        ["state file poll failed"]
    assert len(seen) == 1 and seen[0].services      # delivered again on the next poll
    path.write_text(yaml.safe_dump(dict(DOC, services=DOC["services"][:1])))
    assert src.poll_once() and len(seen[-1].services) == 1      # and it goes on

    runs = []

    def run():
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("a bad run")
    runner = BoundedFrequencyRunner("sync", run, thread_hub(), min_interval=0.01,
                                    max_interval=5)
    runner.retry_interval = 0.05
    runner.start()
    runner.request()                  # once: the retry needs no second request
    deadline = time.monotonic() + 5
    while len(runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.stop()
    assert len(runs) == 2 and runner.failures == 1
    lines = [r.getMessage() for r in caplog.records if "run failed" in r.getMessage()]
    assert lines == ["sync: run failed; nothing it carried is lost, retrying in 0.1 s"]
