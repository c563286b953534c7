"""Properties of the message parser and validator, on inputs nobody would think to write by hand:
arbitrary JSON, truncated bodies, and real killmails with fields dropped, retyped, out of range or
huge. Each ends in a valid model or the typed `PermanentError` — never another exception — and
a model that validates is stored as rows equal to its document. Messages go through
`parse_message`, the fetcher's own first step."""

from __future__ import annotations

import copy
import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from killstream.config import DatabaseConfig
from killstream.storage.connection import Database
from killstream.fetcher.esi import PermanentError
from killstream.fetcher.batch import Message, ParsedMessage, parse_message, write_records
from killstream_workstation.corpus import sample, split_hash, zkb_for
from killstream.package import Package
from killstream.storage.writer import KillmailRecord
from tests.stored import _normalize, assert_zkb, rebuild_esi

# Small documents keep each stored example fast; the shapes are the same as the big ones.
SOURCES = sorted((d for d in sample() if len(d["attackers"]) <= 30 and len(d["victim"].get("items", [])) <= 40),
                 key=lambda d: d["killmail_id"])[:25]
ERROR_TYPES = {"invalid_message", "validation_error", "esi_mismatch"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
# In range for the validator, at the edges of what the columns hold.
EXTREMES = [0, 1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, -0.0, 5e-324, 1e-300, 1e300, -1e300]
OUT_OF_RANGE = [-1, 0, -(2**63), 2**63, 2**64, 10**30, -1.5, 1.5, 1e308, -1e308, float("nan"), float("inf"),
                "", "1", True, False, "2026-13-45T99:99:99Z", "\x00", "\ud800"]


def body_of(doc: dict, zkb: dict | None = None, **package) -> str:
    esi, killmail_hash = split_hash(doc) if "killmail_hash" in doc else (doc, "a" * 40)
    fields = {"killmail_id": SOURCES[0]["killmail_id"], "hash": killmail_hash, "zkb": zkb or {}, "source": "r2z2",
              "esi": esi, **package}
    return json.dumps(fields)


def parse(body: str) -> ParsedMessage:
    """The parsed message, or its failure raised."""
    work = parse_message(Message("m-1", body))
    if work.error is not None:
        raise work.error
    assert work.killmail is work.parsed.killmail
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


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, prefix + (index,))


@st.composite
def mutated(draw, document):
    """`document` with one or two mutations, each at any place in it."""
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 2))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        kind = draw(st.sampled_from(["drop", "retype", "out_of_range", "extreme", "huge"]))
        if kind == "drop":
            del parent[key]
        elif kind == "retype":
            parent[key] = draw(json_values.filter(lambda v, old=parent[key]: type(v) is not type(old)))
        elif kind == "out_of_range":
            parent[key] = draw(st.sampled_from(OUT_OF_RANGE))
        elif kind == "extreme":
            parent[key] = draw(st.sampled_from(EXTREMES))
        elif isinstance(parent[key], list) and parent[key]:
            parent[key] = parent[key] * draw(st.sampled_from([50, 400]))
        else:
            parent[key] = draw(st.sampled_from(["x" * 300_000, 10**400, 2**62]))
    return doc


FAST = settings(max_examples=150, deadline=None)


@FAST
@given(json_values)
def test_arbitrary_json_is_a_package_or_a_typed_error(value):
    parse_or_error(json.dumps(value))


@FAST
@given(st.fixed_dictionaries({}, optional={
    "killmail_id": st.integers() | json_values, "hash": st.sampled_from(["a" * 40, "A" * 40, "a" * 39]) | json_values,
    "zkb": json_values, "esi": json_values, "source": json_values, "sequence_id": st.integers() | json_values,
    "uploaded_at": st.integers() | json_values}))
def test_arbitrary_values_in_the_package_fields_are_a_package_or_a_typed_error(fields):
    parse_or_error(json.dumps(fields))


@FAST
@given(st.sampled_from(SOURCES), st.data())
def test_a_truncated_body_is_a_typed_error(doc, data):
    body = body_of(doc, zkb_for(doc), killmail_id=doc["killmail_id"])
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(PermanentError) as caught:
        parse(body[:cut])
    assert caught.value.error_type == "invalid_message"


@FAST
@given(st.sampled_from(["", "null", "[]", "0", '"text"', "{", "[" * 50_000, '{"a": ' * 5_000]))
def test_bodies_that_are_not_an_object_are_a_typed_error(body):
    with pytest.raises(PermanentError) as caught:
        parse(body)
    assert caught.value.error_type == "invalid_message"


@FAST
@given(st.sampled_from(SOURCES).flatmap(lambda doc: st.tuples(st.just(doc), mutated(zkb_for(doc)))))
def test_a_mutated_zkb_block_is_valid_or_a_typed_error(source):
    doc, zkb = source
    parse_or_error(body_of(doc, zkb, killmail_id=doc["killmail_id"]))


def _without_nulls(value):
    """ESI leaves an unknown optional field out; a null there means the same."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(SOURCES).flatmap(lambda doc: st.tuples(st.just(doc), mutated(doc))))
def test_a_mutated_killmail_is_rejected_with_a_typed_error_or_stored_exactly(database_url, conn, source):
    original, doc = source
    killmail_id = original["killmail_id"]
    zkb = zkb_for(original)
    parsed = parse_or_error(body_of(doc, zkb, killmail_id=killmail_id))
    if parsed is None:
        return
    assert parsed.killmail.killmail_id == killmail_id
    with conn:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM killmails WHERE killmail_id = %s", (killmail_id,))
    database = Database(DatabaseConfig(database_url, None, None, None))
    [result] = write_records(database, [KillmailRecord(parsed.killmail, parsed.package.hash, parsed.zkb, "r2z2")])
    database.close()
    # A value the validator lets through but a column cannot hold is a validator bug: at
    # run time it costs a DLQ entry where the message should have been refused up front.
    assert not isinstance(result, PermanentError), f"validated, yet PostgreSQL refused it: {result.message}"
    rebuilt = rebuild_esi(conn, killmail_id)
    rebuilt.pop("_esi")
    assert rebuilt.pop("_attacker_count") == len(doc["attackers"])
    assert rebuilt == _normalize(_without_nulls(doc))
    assert stored_document(conn, killmail_id) == as_json_numbers(split_hash(doc)[0] if "killmail_hash" in doc else doc)
    assert_zkb(conn, killmail_id, zkb)


def as_json_numbers(value):
    """A JSON document with its numbers as exact decimals: jsonb writes 1e308 as 1 and 308
    zeros, the same JSON number, which Python would read back as an int unequal to the float."""
    return json.loads(value if isinstance(value, str) else json.dumps(value), parse_float=Decimal, parse_int=Decimal)


def stored_document(conn, killmail_id: int):
    with conn.cursor() as cur:
        cur.execute("SELECT esi::text FROM killmails WHERE killmail_id = %s", (killmail_id,))
        return as_json_numbers(cur.fetchone()[0])


def test_a_message_that_validates_carries_its_own_killmail():
    doc = SOURCES[0]
    parsed = parse(body_of(doc, zkb_for(doc), killmail_id=doc["killmail_id"], sequence_id=7))
    assert parsed.package == Package.from_body(body_of(doc, zkb_for(doc), killmail_id=doc["killmail_id"],
                                                       sequence_id=7))
    assert parsed.killmail.document == split_hash(doc)[0]
    assert parsed.zkb.total_value is not None


def test_an_inline_killmail_for_another_id_is_a_mismatch():
    doc = SOURCES[0]
    with pytest.raises(PermanentError) as caught:
        parse(body_of(doc, zkb_for(doc), killmail_id=doc["killmail_id"] + 1))
    assert caught.value.error_type == "esi_mismatch"
