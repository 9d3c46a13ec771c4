"""Reading raw API JSON without trusting its shape.

The watches hand over JSON exactly as the API server sent it, and an API
server (the lab's, an aggregated one, a buggy admission webhook) may send
any shape: a string where a map belongs, a list of strings where a list of
objects belongs, ``null`` anywhere.  Every reader of raw objects goes
through these helpers, so a wrong type at any depth reads as "absent"
instead of raising ``AttributeError`` in the middle of a sync.  Readers
that must *reject* a malformed field (translate) check the type themselves
and raise ``validate.Invalid`` with a reason.

Why by hand: the official client's model classes would validate, but
decoding 10,000 Services into them costs more than everything else the
proxy does (see translate.py); these are three one-line functions.
"""
import sys
from typing import Any, Mapping, Sequence

_EMPTY_MAP: Mapping = {}


def as_map(value: Any) -> Mapping:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else _EMPTY_MAP


def as_list(value: Any) -> Sequence:
    """``value`` if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else ()


def field(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...``, or None where a step is not an object or
    the key is missing."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def text(value: Any) -> str:
    """``value`` if it is a non-empty string, else ''."""
    return value if isinstance(value, str) else ""


def metadata(obj: Any) -> Mapping:
    return as_map(field(obj, "metadata"))


def spec(obj: Any) -> Mapping:
    return as_map(field(obj, "spec"))


def labels(obj: Any) -> Mapping:
    return as_map(field(obj, "metadata", "labels"))


def annotations(obj: Any) -> Mapping:
    return as_map(field(obj, "metadata", "annotations"))


def key(obj: Any):
    """(namespace, name) of an object, each '' unless a string (so keys of
    broken objects still hash and sort with the others).  The namespace is
    interned: a cluster has few, and 10,000 Services and slices, and the
    model made from them, each kept their own copy (1 MB and more)."""
    meta = metadata(obj)
    return sys.intern(text(meta.get("namespace"))), text(meta.get("name"))


def resource_version(obj: Any):
    return metadata(obj).get("resourceVersion")
