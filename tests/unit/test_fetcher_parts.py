"""The fetcher's small pure parts: SQS records in, messages parsed, DLQ batches out, ESI's bucket arithmetic."""

from __future__ import annotations

from datetime import datetime, timezone

from killstream.fetcher import batch as fetcher
from killstream.fetcher.esi import PermanentError, TransientError, _bucket
from killstream.fetcher.batch import DeadLetterQueue, Message, _chunks, _Work
from killstream.sqs_limits import MAX_BYTES, entry_bytes


def letter(n: int, body: str = "{}") -> tuple[_Work, PermanentError]:
    return _Work(Message(f"m-{n}", body)), PermanentError("invalid_message", f"bad {n}")


class RecordingSqs:
    """Stands in for boto3's SQS client: records the batches, refuses the entries it is told to."""

    def __init__(self, refuse_bodies=()):
        self.batches: list[list[dict]] = []
        self.refuse_bodies = set(refuse_bodies)

    def send_message_batch(self, QueueUrl, Entries):
        self.batches.append(Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries if e["MessageBody"] not in self.refuse_bodies],
                "Failed": [{"Id": e["Id"], "Code": "InvalidMessageContents", "SenderFault": True}
                           for e in Entries if e["MessageBody"] in self.refuse_bodies]}


def test_a_record_of_lambdas_sqs_event_becomes_a_message():
    message = Message.from_sqs_record({"messageId": "abc", "body": "{}", "attributes": {"SentTimestamp": "1767225600123"}})
    assert message == Message("abc", "{}", datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=timezone.utc))
    assert Message.from_sqs_record({"messageId": "abc", "body": "{}"}).sent_at is None


def test_dead_letters_go_in_batches_of_at_most_ten():
    sqs = RecordingSqs()
    assert DeadLetterQueue("http://dlq", sqs).send([letter(n) for n in range(23)]) == set()
    assert [len(batch) for batch in sqs.batches] == [10, 10, 3]
    first = sqs.batches[0][0]
    assert first["MessageAttributes"]["error_type"] == {"DataType": "String", "StringValue": "invalid_message"}
    assert first["MessageAttributes"]["error_message"]["StringValue"] == "bad 0"
    assert "killmail_id" not in first["MessageAttributes"]  # unknown for a body that is no package


def test_dead_letter_batches_stay_under_sqs_size_limit():
    big = "x" * 100_000
    entries = [(f"m-{n}", {"MessageBody": big, "MessageAttributes": {}}) for n in range(7)]
    chunks = list(_chunks(entries))
    assert [len(chunk) for chunk in chunks] == [2, 2, 2, 1]
    assert all(sum(entry_bytes(e) for _, e in chunk) <= MAX_BYTES for chunk in chunks)


def test_entries_the_dlq_refuses_are_reported_by_message_id():
    sqs = RecordingSqs(refuse_bodies={"refuse me"})
    letters = [letter(0), letter(1, "refuse me"), letter(2)]
    assert DeadLetterQueue("http://dlq", sqs).send(letters) == {"m-1"}


def test_the_pace_a_bucket_sustains_is_its_window_over_its_tokens_times_a_success():
    assert _bucket("3600/15m") == (3600, 0.5)
    assert _bucket("100/10s") == (100, 0.2)
    assert _bucket("7200/1h") == (7200, 1.0)
    assert _bucket(None) is None
    assert _bucket("lots") is None
    assert _bucket("0/15m") is None


def test_a_message_the_validator_trips_over_is_that_records_transient_failure(monkeypatch):
    def broken(doc):
        raise RuntimeError("validator bug")
    monkeypatch.setattr(fetcher, "parse_zkb", broken)
    work = fetcher.parse_message(Message("m-1", '{"killmail_id": 1, "hash": "' + "a" * 40 + '", "zkb": {}}'))
    assert isinstance(work.error, TransientError)
    assert (work.error.error_type, work.error.message) == ("unexpected_error", "RuntimeError: validator bug")
    assert work.killmail_id == 1
