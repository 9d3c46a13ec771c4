"""bench.start, small: every step of an agent's first sync runs on the
objects the lab's API server sends, and what it keeps is weighed."""
from bench import start


def test_the_start_breakdown_runs_every_step_and_weighs_what_is_kept(capsys):
    start.main(["--services", "40", "--rounds", "1"])
    out = capsys.readouterr().out
    for step in ("parse the lists' JSON", "pack them into the cache", "translate",
                 "compile node1's bridge", "encode the bundle", "the cache", "the model",
                 "the fragments"):
        assert step in out
    times, kept = start.one_start(start.lists(40), weigh=True)
    assert all(size > 0 for size in kept.values())
