"""The streaming reader of large JSON objects (day lists, raw day files): the same entries as
json.loads whatever the chunking, a clear error for a cut or broken file, and bounded buffering."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from killstream.reconcile.jsonstream import MalformedJson, TruncatedJson, object_entries

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
documents = st.dictionaries(st.text(max_size=12), values, max_size=12)


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, start = [], 0
    for size in sizes:
        if start >= len(data):
            break
        chunks.append(data[start : start + size])
        start += size
    if start < len(data):
        chunks.append(data[start:])
    return chunks


@settings(max_examples=150, deadline=None)
@given(documents, st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=400), st.booleans())
def test_every_chunking_gives_the_entries_json_loads_gives(doc, sizes, ascii_only):
    data = json.dumps(doc, ensure_ascii=ascii_only, indent=None if sizes[0] % 2 else 1).encode()
    assert dict(object_entries(chunked(data, sizes))) == json.loads(data)
    assert len(list(object_entries(chunked(data, sizes)))) == len(doc)


@settings(max_examples=150, deadline=None)
@given(documents.filter(bool), st.integers(min_value=1, max_value=7), st.data())
def test_a_file_cut_anywhere_is_an_error_after_a_true_prefix_of_its_entries(doc, size, data):
    whole = json.dumps(doc).encode()
    cut = data.draw(st.integers(min_value=0, max_value=len(whole) - 1))
    seen = []
    with pytest.raises(MalformedJson) as raised:
        for entry in object_entries(chunked(whole[:cut], [size] * len(whole))):
            seen.append(entry)
    assert seen == list(doc.items())[: len(seen)]
    assert raised.value.entries == len(seen)


def test_a_cut_file_says_it_is_truncated_and_how_far_it_got():
    data = json.dumps({str(n): {"killmail_id": n, "attackers": [1, 2, 3]} for n in range(100)}).encode()
    with pytest.raises(TruncatedJson) as raised:
        list(object_entries([data[: len(data) // 2]]))
    assert 40 <= raised.value.entries <= 50
    assert "truncated" in str(raised.value) and f"after {raised.value.entries} entries" in str(raised.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"<html>Bad gateway</html>", "expected a JSON object"),
        (b"[1, 2, 3]", "expected a JSON object"),
        (b'{"1": 2,, "3": 4}', "expected a key"),
        (b'{"1" 2}', "':' after a key"),
        (b'{"1": tru, "2": 3}', "Expecting value"),
        (b'{"1": 2} trailing', "data after the object"),
        (b'{"1": "\xff"}', "not UTF-8"),
        (b"", "truncated"),
    ],
)
def test_what_is_not_an_object_of_entries_is_named(text, reason):
    with pytest.raises(MalformedJson) as raised:
        list(object_entries([text]))
    assert reason in str(raised.value)


def test_an_empty_object_has_no_entries():
    assert list(object_entries([b" {", b" } \n"])) == []


def test_numbers_split_between_chunks_are_read_whole():
    assert list(object_entries([b'{"a": 12', b"34", b'5, "b": -1', b".5e", b"3}"])) == [("a", 12345), ("b", -1500.0)]


def test_an_entry_larger_than_the_limit_is_refused_without_reading_the_rest():
    def endless():
        yield b'{"1": "'
        while True:
            yield b"x" * 1000

    with pytest.raises(MalformedJson, match="longer than"):
        list(object_entries(endless(), max_entry_chars=50_000))


def test_the_buffer_stays_small_over_a_long_file():
    entry = json.dumps({"killmail_id": 1, "attackers": list(range(50))})
    chunks = (b"{" + b",".join(f'"{n}": {entry}'.encode() for n in range(k, k + 10)) for k in range(0, 20_000, 10))

    def joined():
        first = True
        for chunk in chunks:
            yield chunk if first else b"," + chunk[1:]
            first = False
        yield b"}"

    reader = object_entries(joined())
    count = 0
    for _ in reader:
        count += 1
        frame = reader.gi_frame
        if frame is not None and count % 1000 == 0:
            assert len(frame.f_locals["text"].text) < 4 * 1024 * 1024
    assert count == 20_000
