"""Label and field selectors, as ``?labelSelector=`` and ``?fieldSelector=`` carry them."""
import re

from topologies.apiserver.errors import ApiError

_SET = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split(selector):
    """Split on commas that are not inside a set's parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_labels(selector):
    """A predicate over a labels dict; raises ApiError 400 on bad syntax."""
    tests = []
    for term in _split(selector or ""):
        m = _SET.match(term)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                tests.append(lambda lb, k=key, v=values: lb.get(k) in v)
            else:
                tests.append(lambda lb, k=key, v=values: lb.get(k) not in v)
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            tests.append(lambda lb, k=key, v=value: lb.get(k) != v)
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            tests.append(lambda lb, k=key, v=value: lb.get(k) == v)
        elif term.startswith("!"):
            tests.append(lambda lb, k=term[1:].strip(): k not in lb)
        elif re.match(r"^[\w./-]+$", term):
            tests.append(lambda lb, k=term: k in lb)
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
    return lambda labels: all(t(labels or {}) for t in tests)


_FIELDS = {
    "metadata.name": lambda o: o["metadata"].get("name"),
    "metadata.namespace": lambda o: o["metadata"].get("namespace"),
    "spec.nodeName": lambda o: (o.get("spec") or {}).get("nodeName"),
}


def parse_fields(selector):
    """A predicate over an object; supports the fields the lab and kubectl use."""
    tests = []
    for term in _split(selector or ""):
        negate = "!=" in term
        key, value = (s.strip() for s in term.replace("!=", "=").replace("==", "=").split("=", 1))
        get = _FIELDS.get(key)
        if get is None:
            raise ApiError(400, "BadRequest",
                           f'"{key}" is not a known field selector: only '
                           + ", ".join(f'"{k}"' for k in _FIELDS))
        tests.append(lambda o, g=get, v=value, n=negate: (g(o) == v) != n)
    return lambda obj: all(t(obj) for t in tests)


def selector_matches(selector: dict, labels: dict) -> bool:
    """A Service's map selector: every key equal (an empty map selects nothing)."""
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())
