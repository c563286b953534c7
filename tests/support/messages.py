"""Messages for the fetcher's property tests: real killmails made into message bodies, the
hypothesis strategies that mutate them, and the parser's answer as a test reads it."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable

from hypothesis import event
from hypothesis import strategies as st

from killstream.errors import PermanentError
from killstream.fetcher.messages import Found, Message, ParsedMessage, Unreadable, Wanted, parse_message
from killstream_workstation.corpus import sample, split_hash

# Small documents keep each stored example fast; the shapes are the same as the big ones.
SOURCES = sorted(
    (d for d in sample() if len(d["attackers"]) <= 30 and len(d["victim"].get("items", [])) <= 40),
    key=lambda d: d["killmail_id"],
)[:25]
ERROR_TYPES = {"invalid_message", "validation_error", "esi_mismatch"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
# In range for the validator, at the edges of what the columns hold.
EXTREMES = [0, 1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, -0.0, 5e-324, 1e-300, 1e300, -1e300]
OUT_OF_RANGE = [
    -1,
    0,
    -(2**63),
    2**63,
    2**64,
    10**30,
    -1.5,
    1.5,
    1e308,
    -1e308,
    float("nan"),
    float("inf"),
    "",
    "1",
    True,
    False,
    "2026-13-45T99:99:99Z",
    "\x00",
    "\ud800",
]


def body_of(doc: dict, zkb: dict | None = None, **package) -> str:
    esi, killmail_hash = split_hash(doc) if "killmail_hash" in doc else (doc, "a" * 40)
    fields = {
        "killmail_id": SOURCES[0]["killmail_id"],
        "hash": killmail_hash,
        "zkb": zkb or {},
        "source": "r2z2",
        "esi": esi,
        **package,
    }
    return json.dumps(fields)


def parse(body: str) -> ParsedMessage:
    """The parsed message, or its failure raised."""
    work = parse_message(Message("m-1", body))
    if isinstance(work, Unreadable):
        raise work.error
    assert isinstance(work.stage, Wanted if work.parsed.killmail is None else Found)
    return work.parsed


def parse_or_error(body) -> ParsedMessage | None:
    try:
        parsed = parse(body)
    except PermanentError as exc:
        assert exc.error_type in ERROR_TYPES
        assert exc.message
        event(exc.error_type)
        return None
    event("valid")
    assert isinstance(parsed, ParsedMessage)
    return parsed


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, prefix + (index,))


def _not_of_type(old: type) -> Callable[[object], bool]:
    return lambda value: type(value) is not old


@st.composite
def mutated(draw, document):
    """`document` with one or two mutations, each at any place in it."""
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 2))):
        candidates = [p for p in paths(doc) if p]
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        kind = draw(st.sampled_from(["drop", "retype", "out_of_range", "extreme", "huge"]))
        if kind == "drop":
            del parent[key]
        elif kind == "retype":
            parent[key] = draw(json_values.filter(_not_of_type(type(parent[key]))))
        elif kind == "out_of_range":
            parent[key] = draw(st.sampled_from(OUT_OF_RANGE))
        elif kind == "extreme":
            parent[key] = draw(st.sampled_from(EXTREMES))
        elif isinstance(parent[key], list) and parent[key]:
            parent[key] = parent[key] * draw(st.sampled_from([50, 400]))
        else:
            parent[key] = draw(st.sampled_from(["x" * 300_000, 10**400, 2**62]))
    return doc


def without_nulls(value):
    """ESI leaves an unknown optional field out; a null there means the same."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value
