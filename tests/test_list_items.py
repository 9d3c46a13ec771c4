"""A list response decoded one item at a time (nsx_proxy/list_items.py)."""
import json
import random
import tracemalloc

import pytest

from nsx_proxy import kube_cache, list_items


def _walk(body):
    top = {}
    items = list(list_items.walk(body, top))
    return items, top


def _random_json(rng, depth=0):
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 7, 2 ** 70, 1.5, -2e-3])
    if kind in (2, 3):
        return rng.choice(["", "a", "é\u2028\"\\/", "10.0.0.1", "\U0001f600", "x" * 40])
    if kind in (4, 5):
        return {f"k{i}": _random_json(rng, depth + 1) for i in range(rng.randrange(4))}
    return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


def test_it_reads_what_json_loads_reads_in_every_layout():
    rng = random.Random(6)
    for case in range(300):
        doc = {"kind": "ServiceList", "apiVersion": "v1"}
        items = [_random_json(rng) for _ in range(rng.randrange(5))]
        meta = {"resourceVersion": str(case), "continue": "" if case % 2 else "tok"}
        # metadata before or after the items, as a server may order them
        layout = [("metadata", meta), ("items", items)]
        doc.update(layout if case % 3 else layout[::-1])
        indent = (None, 1, "\t", " \r\n ")[case % 4]
        text = json.dumps(doc, indent=indent, ensure_ascii=bool(case % 5))
        got, top = _walk(text.encode() if case % 2 else text)
        assert got == items == json.loads(text)["items"]
        assert top == {k: v for k, v in json.loads(text).items() if k != "items"}


def test_items_that_are_not_an_array_are_a_member_like_the_others():
    assert _walk(b'{"items": {"a": 1}, "metadata": {}}') == ([], {"items": {"a": 1},
                                                                 "metadata": {}})
    assert _walk(b'{"items": null}') == ([], {"items": None})
    assert _walk(b' { } ') == ([], {})
    assert _walk(b'{"items": [ ]}') == ([], {})


@pytest.mark.parametrize("body", [b"[]", b"null", b'"items"', b"[{}]"])
def test_a_body_that_is_not_an_object_is_refused(body):
    with pytest.raises(ValueError, match="not a JSON object"):
        _walk(body)


@pytest.mark.parametrize("body", [
    b"", b"{", b'{"items": [1, 2}', b'{"items": [1 2]}',
    b'{"items": [1,]}', b'{"items": []', b'{"items": [] "x": 1}', b'{items: []}',
    b'{"items" []}', b'{"items": []} x', b'{"items": []}{}', b'{"a": tru}',
    b'{"items": [{"a": 1}, {"b": }]}', b'{"items": ["\xff"]}', b'{"a": 1,}'])
def test_a_body_json_loads_refuses_is_refused(body):
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(ValueError):
        _walk(body)


def test_items_come_one_at_a_time_before_the_rest_is_read():
    walker = list_items.walk(b'{"items": [{"n": 1}, {"n": 2}, oops]}', {})
    assert next(walker) == {"n": 1}
    assert next(walker) == {"n": 2}
    with pytest.raises(ValueError):
        next(walker)


def _slice(i):
    return {"metadata": {"namespace": "ns", "name": f"s{i}", "resourceVersion": str(i),
                         "labels": {"kubernetes.io/service-name": f"s{i}"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080,
                                              "protocol": "TCP"}],
            "endpoints": [{"addresses": [f"10.{i % 250}.{k}.{i % 200}"],
                           "conditions": {"ready": True, "serving": True,
                                          "terminating": False},
                           "nodeName": f"node{k}",
                           "targetRef": {"kind": "Pod", "namespace": "ns",
                                         "name": f"s{i}-{k}"}} for k in range(5)]}


def _peak_while_packing(items):
    tracemalloc.start()
    try:
        cache = kube_cache.KubeCache(started=0)
        cache.replace_slices(items())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_whole_list_in_one_page_is_packed_without_all_its_dicts_at_once():
    body = json.dumps({"metadata": {"resourceVersion": "9"},
                       "items": [_slice(i) for i in range(3000)]}).encode()
    walked = _peak_while_packing(lambda: list_items.walk(body, {}))
    loaded = _peak_while_packing(lambda: iter(json.loads(body)["items"]))
    # the dicts of 3,000 slices are about 3x the packed cache they become
    assert walked < loaded / 2, (walked, loaded)
