"""The fetcher's small pure parts: SQS records in, messages parsed, DLQ batches out, ESI's bucket arithmetic."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from killstream.errors import PermanentError, TransientError
from killstream.esi.client import parse_bucket
from killstream.fetcher import messages
from killstream.fetcher.dead_letters import ERROR_MESSAGE, ERROR_TYPE, DeadLetter, DeadLetterQueue, chunks, entry
from killstream.fetcher.messages import Message, Unreadable, parse_message
from killstream.package import Package
from killstream.sqs_limits import MAX_BYTES, MAX_MESSAGE_BYTES, entry_bytes
from tests.support.fakes import RecordingSqs


def letter(n: int, body: str = "{}") -> DeadLetter:
    return DeadLetter(Message(f"m-{n}", body), PermanentError("invalid_message", f"bad {n}"))


def test_a_record_of_lambdas_sqs_event_becomes_a_message():
    message = Message.from_sqs_record(
        {"messageId": "abc", "body": "{}", "attributes": {"SentTimestamp": "1767225600123"}}
    )
    assert message == Message("abc", "{}", datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC))
    assert Message.from_sqs_record({"messageId": "abc", "body": "{}"}).sent_at is None


def test_a_dead_letter_always_keeps_its_reason_and_drops_esi_from_its_body_when_both_would_not_fit():
    """Item 11: a message SQS delivered can be 1 MiB; dead-lettered with its reason attributes it
    would be over the limit and refused, reason and all. The esi goes (the fetcher gets it from
    ESI after a redrive), the attributes never."""
    package = Package(killmail_id=7, hash="a" * 40, zkb={"totalValue": 1}, source="r2z2", esi={"pad": "x"})
    body = json.dumps(
        {"killmail_id": 7, "hash": "a" * 40, "zkb": {"totalValue": 1}, "esi": {"pad": "x" * (MAX_MESSAGE_BYTES - 200)}}
        | {"source": "r2z2"}
    )
    assert len(body) <= MAX_MESSAGE_BYTES
    error = PermanentError("validation_error", "killmail_time: is required " + "because " * 200)
    big = entry(DeadLetter(Message("m-1", body), error, package))
    assert entry_bytes(big) <= MAX_MESSAGE_BYTES
    assert big["MessageAttributes"][ERROR_TYPE]["StringValue"] == "validation_error"
    assert big["MessageAttributes"][ERROR_MESSAGE]["StringValue"].startswith("killmail_time: is required")
    kept = json.loads(big["MessageBody"])
    assert "esi" not in kept and kept == {k: v for k, v in json.loads(body).items() if k != "esi"}
    small = entry(DeadLetter(Message("m-2", '{"killmail_id": 8}'), error))
    assert small["MessageBody"] == '{"killmail_id": 8}'  # anything that fits goes as it came
    # a body that is not a package and still too large: cut, the reason kept
    huge = entry(DeadLetter(Message("m-3", "z" * MAX_MESSAGE_BYTES), error))
    assert entry_bytes(huge) <= MAX_MESSAGE_BYTES and huge["MessageAttributes"][ERROR_TYPE]["StringValue"]


def test_dead_letters_go_in_batches_of_at_most_ten():
    sqs = RecordingSqs()
    assert DeadLetterQueue("http://dlq", sqs).send([letter(n) for n in range(23)]) == set()
    assert [len(batch) for batch in sqs.calls] == [10, 10, 3]
    first = sqs.calls[0][0]
    assert first["MessageAttributes"]["error_type"] == {"DataType": "String", "StringValue": "invalid_message"}
    assert first["MessageAttributes"]["error_message"]["StringValue"] == "bad 0"
    assert "killmail_id" not in first["MessageAttributes"]  # unknown for a body that is no package


def test_dead_letter_batches_stay_under_sqs_size_limit():
    big = "x" * 400_000
    entries = [(f"m-{n}", {"MessageBody": big, "MessageAttributes": {}}) for n in range(7)]
    calls = list(chunks(entries))
    assert [len(call) for call in calls] == [2, 2, 2, 1]
    assert all(sum(entry_bytes(e) for _, e in call) <= MAX_BYTES for call in calls)


def test_entries_the_dlq_refuses_are_reported_by_message_id():
    sqs = RecordingSqs(refuse=lambda entry: entry["MessageBody"] == "refuse me")
    letters = [letter(0), letter(1, "refuse me"), letter(2)]
    assert DeadLetterQueue("http://dlq", sqs).send(letters) == {"m-1"}


def test_the_pace_a_bucket_sustains_is_its_window_over_its_tokens_times_a_success():
    assert parse_bucket("3600/15m") == (3600, 0.5)
    assert parse_bucket("100/10s") == (100, 0.2)
    assert parse_bucket("7200/1h") == (7200, 1.0)
    assert parse_bucket(None) is None
    assert parse_bucket("lots") is None
    assert parse_bucket("0/15m") is None


def test_a_message_the_validator_trips_over_is_that_records_transient_failure(monkeypatch):
    def broken(doc):
        raise RuntimeError("validator bug")

    monkeypatch.setattr(messages, "parse_zkb", broken)
    work = parse_message(Message("m-1", '{"killmail_id": 1, "hash": "' + "a" * 40 + '", "zkb": {}, "source": "r2z2"}'))
    assert isinstance(work, Unreadable) and isinstance(work.error, TransientError)
    assert (work.error.error_type, work.error.message) == ("unexpected_error", "RuntimeError: validator bug")
    assert work.killmail_id == 1
