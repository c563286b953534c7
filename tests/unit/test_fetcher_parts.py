"""The fetcher's small pure parts: SQS records in, messages parsed, DLQ batches out, ESI's bucket arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime

from killstream.errors import PermanentError, TransientError
from killstream.esi.client import parse_bucket
from killstream.fetcher import messages
from killstream.fetcher.dead_letters import DeadLetter, DeadLetterQueue, chunks
from killstream.fetcher.messages import Message, Unreadable, parse_message
from killstream.sqs_limits import MAX_BYTES, entry_bytes
from tests.support.fakes import RecordingSqs


def letter(n: int, body: str = "{}") -> DeadLetter:
    return DeadLetter(Message(f"m-{n}", body), PermanentError("invalid_message", f"bad {n}"))


def test_a_record_of_lambdas_sqs_event_becomes_a_message():
    message = Message.from_sqs_record(
        {"messageId": "abc", "body": "{}", "attributes": {"SentTimestamp": "1767225600123"}}
    )
    assert message == Message("abc", "{}", datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC))
    assert Message.from_sqs_record({"messageId": "abc", "body": "{}"}).sent_at is None


def test_dead_letters_go_in_batches_of_at_most_ten():
    sqs = RecordingSqs()
    assert DeadLetterQueue("http://dlq", sqs).send([letter(n) for n in range(23)]) == set()
    assert [len(batch) for batch in sqs.calls] == [10, 10, 3]
    first = sqs.calls[0][0]
    assert first["MessageAttributes"]["error_type"] == {"DataType": "String", "StringValue": "invalid_message"}
    assert first["MessageAttributes"]["error_message"]["StringValue"] == "bad 0"
    assert "killmail_id" not in first["MessageAttributes"]  # unknown for a body that is no package


def test_dead_letter_batches_stay_under_sqs_size_limit():
    big = "x" * 100_000
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
    work = parse_message(Message("m-1", '{"killmail_id": 1, "hash": "' + "a" * 40 + '", "zkb": {}}'))
    assert isinstance(work, Unreadable) and isinstance(work.error, TransientError)
    assert (work.error.error_type, work.error.message) == ("unexpected_error", "RuntimeError: validator bug")
    assert work.killmail_id == 1
