"""The SQS sink against moto's SQS over HTTP (boto3 reaches it through AWS_ENDPOINT_URL, as in
the local runner): batch limits, attributes, the oversized-package rule, per-entry retries and
what happens to a package SQS never takes."""

from __future__ import annotations

import json
import time

import boto3
import pytest
from botocore.exceptions import BotoCoreError

from killstream import aws_clients
from killstream.package import Package
from killstream.poller.sink import SqsSink
from killstream.sqs_limits import MAX_BYTES, MAX_MESSAGE_BYTES, entry_bytes
from killstream_workstation.corpus import generate, split_hash, zkb_for
from killstream_workstation.simulators.hung import HungServer
from tests.support.fakes import FakeClock, RecordingSqs
from tests.support.sqs import drain

DOCS = generate(30)


def package(doc: dict, sequence: int, *, esi_padding: int = 0, zkb_padding: int = 0) -> Package:
    esi, killmail_hash = split_hash(doc)
    if esi_padding:
        esi = {**esi, "padding": "x" * esi_padding}
    zkb = zkb_for(doc) | ({"padding": "z" * zkb_padding} if zkb_padding else {})
    return Package(
        killmail_id=doc["killmail_id"],
        hash=killmail_hash,
        zkb=zkb,
        source="r2z2",
        esi=esi,
        sequence_id=sequence,
        uploaded_at=1767225600 + sequence,
    )


def make_sink(queue_url: str, sqs=None, **options) -> tuple[SqsSink, FakeClock]:
    clock = FakeClock()
    return SqsSink(sqs or boto3.client("sqs"), queue_url, clock=clock, sleep=clock.sleep, **options), clock


def test_packages_arrive_with_their_bodies_and_attributes_in_batches_of_at_most_ten(queue_url):
    sqs = RecordingSqs(forward=boto3.client("sqs"))
    sink, _ = make_sink(queue_url, sqs)
    packages = [package(doc, n) for n, doc in enumerate(DOCS[:25], start=1)]
    accepted = []
    for p in packages:
        accepted += sink.add(p).accepted
    accepted += sink.flush().accepted
    assert [len(call) for call in sqs.calls] == [10, 10, 5]
    assert accepted == packages
    received = drain(queue_url)
    assert [body for body, _ in received] == [json.loads(p.to_body()) for p in packages]
    assert [attributes for _, attributes in received] == [
        {"source": ("String", "r2z2"), "killmail_id": ("Number", str(p.killmail_id))} for p in packages
    ]


def test_a_batch_never_exceeds_1_mib(queue_url):
    sqs = RecordingSqs(forward=boto3.client("sqs"))
    sink, _ = make_sink(queue_url, sqs)
    packages = [package(doc, n, esi_padding=300_000) for n, doc in enumerate(DOCS[:9], start=1)]
    for p in packages:
        sink.add(p)
    sink.flush()
    assert all(sum(entry_bytes(e) for e in call) <= MAX_BYTES for call in sqs.calls)
    assert [len(call) for call in sqs.calls] == [3, 3, 3]
    assert [body["killmail_id"] for body, _ in drain(queue_url)] == [p.killmail_id for p in packages]


def test_a_package_up_to_1_mib_goes_whole(queue_url):
    """Item 11: AWS raised SQS's limit from 256 KiB to 1 MiB: a 600 KiB package (a structure kill
    with thousands of attackers) keeps its esi; it went without, for ESI to be asked, before."""
    sink, _ = make_sink(queue_url)
    big = package(DOCS[0], 1, esi_padding=600 * 1024)
    report = sink.add(big)
    report.add(sink.flush())
    assert (report.accepted, report.esi_dropped) == ([big], 0)
    ((body, _),) = drain(queue_url)
    assert body["esi"] == big.esi


def test_an_oversized_package_goes_without_esi_and_is_counted(queue_url, caplog):
    sink, _ = make_sink(queue_url)
    big = package(DOCS[0], 1, esi_padding=MAX_MESSAGE_BYTES)
    report = sink.add(big)
    report.add(sink.flush())
    assert (report.accepted, report.esi_dropped, report.failed, report.dropped) == ([big], 1, [], [])
    ((body, _),) = drain(queue_url)
    assert "esi" not in body
    assert body == json.loads(big.to_body(with_esi=False))
    warned = [
        r for r in caplog.records if r.levelname == "WARNING" and getattr(r, "killmail_id", None) == big.killmail_id
    ]
    assert warned


def test_a_package_too_large_even_without_esi_is_logged_in_full_and_never_sent(queue_url, caplog):
    sink, _ = make_sink(queue_url)
    huge = package(DOCS[0], 1, zkb_padding=MAX_MESSAGE_BYTES)
    report = sink.add(huge)
    report.add(sink.flush())
    assert report.dropped == [huge] and report.accepted == []
    assert drain(queue_url) == []
    (logged,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert logged.killmail_id == huge.killmail_id and logged.package == huge.to_body(with_esi=False)


def test_entries_refused_individually_are_retried_until_taken(queue_url):
    packages = [package(doc, n) for n, doc in enumerate(DOCS[:4], start=1)]
    sqs = RecordingSqs(forward=boto3.client("sqs"), fail={packages[1].killmail_id: 2})
    sink, clock = make_sink(queue_url, sqs)
    for p in packages:
        sink.add(p)
    report = sink.flush()
    assert sorted(p.sequence_id for p in report.accepted) == [1, 2, 3, 4] and report.failed == []
    assert [len(call) for call in sqs.calls] == [4, 1, 1]
    assert len(clock.sleeps) == 2
    assert sorted(body["sequence_id"] for body, _ in drain(queue_url)) == [1, 2, 3, 4]


def test_a_failed_call_is_retried(queue_url):
    sqs = RecordingSqs(forward=boto3.client("sqs"), call_errors=1)
    sink, _ = make_sink(queue_url, sqs)
    p = package(DOCS[0], 1)
    sink.add(p)
    assert sink.flush().accepted == [p]
    assert len(drain(queue_url)) == 1


def test_a_package_sqs_never_takes_is_reported_and_logged_in_full(queue_url, caplog):
    packages = [package(doc, n) for n, doc in enumerate(DOCS[:3], start=1)]
    sqs = RecordingSqs(forward=boto3.client("sqs"), fail={packages[2].killmail_id: -1})
    sink, _ = make_sink(queue_url, sqs, attempts=4)
    for p in packages:
        sink.add(p)
    report = sink.flush()
    assert report.failed == [packages[2]] and report.accepted == packages[:2]
    assert len(sqs.calls) == 4
    (logged,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert logged.killmail_id == packages[2].killmail_id
    assert Package.from_body(logged.package) == packages[2]


def test_a_package_is_due_within_flush_within_of_arriving(queue_url):
    sink, clock = make_sink(queue_url, flush_within=1.0)
    assert sink.due_at is None
    sink.add(package(DOCS[0], 1))
    clock.advance(0.4)
    sink.add(package(DOCS[1], 2))
    assert sink.due_at == 1001.0 and sink.pending == 2
    sink.flush()
    assert sink.due_at is None and sink.pending == 0


def test_one_aws_call_never_outlives_call_seconds(aws):
    """Defect 4: botocore's own retries and timeouts must fit what the poller plans with. (Its
    `max_attempts` counts retries, not attempts: with it, one call was two.)"""
    with HungServer() as hung:
        sqs = boto3.client("sqs", endpoint_url=hung.url, config=aws_clients.CONFIG)
        began = time.monotonic()
        with pytest.raises(BotoCoreError):
            sqs.send_message_batch(QueueUrl=f"{hung.url}/1/q", Entries=[{"Id": "0", "MessageBody": "{}"}])
        took = time.monotonic() - began
        assert hung.accepted == 1
    assert aws_clients.READ_TIMEOUT <= took < aws_clients.CALL_SECONDS + 1.0
