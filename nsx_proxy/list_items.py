"""A list response's items, decoded one at a time.

An agent's first list is answered from the API server's watch cache,
whole, whatever the page size asked (resourceVersion "0" ignores
``limit``).  ``json.loads`` of that body builds every item's dicts at once:
at 10,000 Services and their EndpointSlices, 12 MB of JSON became 74 MB
of dicts for the moment it took to pack them, and a process's heap does
not shrink back from such a peak (its arenas end up holding the model and
the flows): the gateway agent's RSS was 133 MB with it, 113 MB without.
:func:`walk` decodes the top-level object's members itself and each item
with the standard library's own decoder (``JSONDecoder.raw_decode``), so
only one item's dicts live at a time, in the same time as ``json.loads``.

Why by hand: the streaming JSON libraries (ijson and the like) parse in
Python or need a C library the image does not have, and are several times
slower than the standard decoder this uses for every value; what is left
here is the top level's punctuation.
"""
import json
import re

_SPACE = re.compile(r"[ \t\n\r]*")      # JSON's whitespace, as RFC 8259 has it
_DECODE = json.JSONDecoder().raw_decode


def walk(body, top):
    """Yield each element of ``body``'s top-level "items" array, in order;
    put every other top-level member into the dict ``top`` (a list's
    ``metadata`` may come before or after its items).  ``body``: the
    response's bytes (UTF-8, as the API server sends JSON) or text.

    Raises ValueError (``json.JSONDecodeError`` or ``UnicodeDecodeError``,
    both ValueErrors) where ``json.loads`` would, as far as it has read: on
    a body that is not a JSON object, bad JSON or data after the object.
    "items" that is not an array is a member like the others: no items."""
    text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
    space = _SPACE.match
    at = space(text, 0).end()
    if text[at:at + 1] != "{":
        raise ValueError(f"a list that is not a JSON object: {text[:80]!r}")
    at = space(text, at + 1).end()
    if text[at:at + 1] == "}":
        at += 1
    else:
        while True:
            if text[at:at + 1] != '"':
                raise _error("a member name", text, at)
            name, at = _DECODE(text, at)
            at = _expect(text, space(text, at).end(), ":")
            at = space(text, at).end()
            if name == "items" and text[at:at + 1] == "[":
                at = yield from _elements(text, space(text, at + 1).end())
            else:
                top[name], at = _DECODE(text, at)
            at = space(text, at).end()
            if text[at:at + 1] == "}":
                at += 1
                break
            at = space(text, _expect(text, at, ",")).end()
    if space(text, at).end() != len(text):
        raise _error("the end of the body", text, at)


def _elements(text, at):
    """Yield the array's elements from ``at`` (just inside its "["); return
    the index just after its "]"."""
    space = _SPACE.match
    if text[at:at + 1] == "]":
        return at + 1
    while True:
        item, at = _DECODE(text, at)
        yield item
        at = space(text, at).end()
        if text[at:at + 1] == "]":
            return at + 1
        at = space(text, _expect(text, at, ",")).end()


def _expect(text, at, char):
    if text[at:at + 1] != char:
        raise _error(repr(char), text, at)
    return at + 1


def _error(what, text, at):
    return json.JSONDecodeError(f"expected {what}", text, at)
