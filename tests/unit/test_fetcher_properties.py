"""Properties of the message parser and validator, on inputs nobody would think to write by hand:
arbitrary JSON, truncated bodies, and real killmails with fields dropped, retyped, out of range or
huge. Each ends in a valid model or the typed `PermanentError`, never another exception. Messages
go through `parse_message`, the fetcher's own first step. (That a model which validates is stored
exactly is tests/integration/test_fetcher_properties.py.)"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from killstream.errors import PermanentError
from killstream.package import Package
from killstream_workstation.corpus import split_hash, zkb_for
from tests.support.messages import SOURCES, body_of, json_values, mutated, parse, parse_or_error

FAST = settings(max_examples=150, deadline=None)


@FAST
@given(json_values)
def test_arbitrary_json_is_a_package_or_a_typed_error(value):
    parse_or_error(json.dumps(value))


@FAST
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "killmail_id": st.integers() | json_values,
            "hash": st.sampled_from(["a" * 40, "A" * 40, "a" * 39]) | json_values,
            "zkb": json_values,
            "esi": json_values,
            "source": json_values,
            "sequence_id": st.integers() | json_values,
            "uploaded_at": st.integers() | json_values,
        },
    )
)
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


def test_a_message_that_validates_carries_its_own_killmail():
    doc = SOURCES[0]
    parsed = parse(body_of(doc, zkb_for(doc), killmail_id=doc["killmail_id"], sequence_id=7))
    assert parsed.package == Package.from_body(
        body_of(doc, zkb_for(doc), killmail_id=doc["killmail_id"], sequence_id=7)
    )
    assert parsed.killmail.document == split_hash(doc)[0]
    assert parsed.zkb.total_value is not None


def test_an_inline_killmail_for_another_id_is_a_mismatch():
    doc = SOURCES[0]
    with pytest.raises(PermanentError) as caught:
        parse(body_of(doc, zkb_for(doc), killmail_id=doc["killmail_id"] + 1))
    assert caught.value.error_type == "esi_mismatch"
