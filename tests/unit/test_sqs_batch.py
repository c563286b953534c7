"""SendMessageBatch's limits as every sender applies them: what one entry weighs, and where the
calls split."""

from __future__ import annotations

from killstream.sqs_limits import MAX_BYTES, MAX_ENTRIES, MAX_MESSAGE_BYTES, batches, entry_bytes


def sized(n: int, **attributes) -> dict:
    entry: dict = {"MessageBody": "x" * n}
    if attributes:
        entry["MessageAttributes"] = attributes
    return entry


def test_the_limits_are_sqs_own():
    """Item 11: SQS takes messages up to 1 MiB (1,048,576 bytes), a SendMessageBatch as much."""
    assert (MAX_ENTRIES, MAX_BYTES, MAX_MESSAGE_BYTES) == (10, 1_048_576, 1_048_576)


def test_an_entry_weighs_its_utf8_body_and_each_attribute_name_type_and_value():
    assert entry_bytes({"MessageBody": "héllo"}) == 6
    entry = {
        "MessageBody": "{}",
        "MessageAttributes": {
            "killmail_id": {"DataType": "Number", "StringValue": "123"},
            "note": {"DataType": "String", "StringValue": "€"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\x02"},
        },
    }
    assert entry_bytes(entry) == 2 + (11 + 6 + 3) + (4 + 6 + 3) + (4 + 6 + 3)


def test_attributes_the_caller_leaves_empty_weigh_nothing():
    assert entry_bytes({"MessageBody": "abc", "MessageAttributes": {}}) == 3
    assert entry_bytes({"MessageBody": "abc", "MessageAttributes": None}) == 3


def test_ten_entries_make_one_call_and_the_eleventh_starts_the_next():
    assert [len(b) for b in batches([sized(1)] * MAX_ENTRIES)] == [10]
    assert [len(b) for b in batches([sized(1)] * (MAX_ENTRIES + 1))] == [10, 1]
    assert [len(b) for b in batches([sized(1)] * 25)] == [10, 10, 5]


def test_exactly_1_mib_fits_in_one_call_and_one_byte_more_does_not():
    half = MAX_BYTES // 2
    assert [len(b) for b in batches([sized(half), sized(half)])] == [2]
    assert [len(b) for b in batches([sized(half), sized(half + 1)])] == [1, 1]


def test_attribute_bytes_count_towards_the_call():
    half = MAX_BYTES // 2
    attribute = {"id": {"DataType": "Number", "StringValue": "12"}}  # 2 + 6 + 2 bytes
    assert [len(b) for b in batches([sized(half), sized(half - 10, **attribute)])] == [2]
    assert [len(b) for b in batches([sized(half), sized(half - 9, **attribute)])] == [1, 1]


def test_an_entry_too_large_for_any_call_still_goes_alone_in_its_place():
    small, huge = sized(10), sized(MAX_BYTES + 1)
    assert list(batches([small, huge, small])) == [[small], [huge], [small]]
    assert list(batches([huge])) == [[huge]]


def test_items_come_back_whole_and_in_order_when_entry_picks_their_sqs_entry():
    items = [(f"m-{n}", sized(400_000)) for n in range(5)]
    calls = list(batches(iter(items), entry=lambda item: item[1]))
    assert calls == [items[0:2], items[2:4], items[4:5]]


def test_nothing_to_send_makes_no_call():
    assert list(batches([])) == []
