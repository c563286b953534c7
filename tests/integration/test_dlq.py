"""DLQ inspection and the redrive loop against moto, with queues wired like template.yaml."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from killstream_workstation.cli.dlq import add_commands
from killstream_workstation.dlq.inspect import inspect_dlq
from killstream_workstation.dlq.redrive import Progress, redrive
from killstream_workstation.dlq.render import format_inspection, format_result

REGION = "us-east-1"
HASH = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Queues:
    sqs: Any
    queue_url: str
    dlq_url: str


@pytest.fixture
def queues(monkeypatch):
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_PROFILE", "DLQ_URL", "QUEUE_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        dlq_url = sqs.create_queue(QueueName="killstream-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue_url = sqs.create_queue(
            QueueName="killstream-killmails",
            Attributes={
                "VisibilityTimeout": "360",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
            },
        )["QueueUrl"]
        yield Queues(sqs, queue_url, dlq_url)


def package_body(killmail_id: int) -> str:
    return json.dumps(
        {"killmail_id": killmail_id, "hash": HASH, "zkb": {"hash": HASH, "totalValue": 1.5e7}, "source": "r2z2"}
    )


def provenance(killmail_id: int) -> dict:
    return {
        "source": {"DataType": "String", "StringValue": "r2z2"},
        "killmail_id": {"DataType": "Number", "StringValue": str(killmail_id)},
    }


def fail_permanently(q: Queues, killmail_id: int, error_type: str, error_message: str) -> None:
    """What the fetcher does with a permanent failure."""
    q.sqs.send_message(
        QueueUrl=q.dlq_url,
        MessageBody=package_body(killmail_id),
        MessageAttributes={
            **provenance(killmail_id),
            "error_type": {"DataType": "String", "StringValue": error_type},
            "error_message": {"DataType": "String", "StringValue": error_message},
        },
    )


def exhaust_retries(q: Queues, killmail_ids: list[int]) -> None:
    """Transient failures: the package is received 5 times and SQS's redrive policy moves it."""
    for killmail_id in killmail_ids:
        q.sqs.send_message(
            QueueUrl=q.queue_url, MessageBody=package_body(killmail_id), MessageAttributes=provenance(killmail_id)
        )
    for _ in range(6):
        for _ in range(len(killmail_ids) // 10 + 1):
            q.sqs.receive_message(QueueUrl=q.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    assert counts(q.sqs, q.queue_url) == (0, 0)


def counts(sqs, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def take_all(sqs, url: str) -> list[dict]:
    messages = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300, MessageAttributeNames=["All"]
    ).get("Messages", []):
        messages.extend(batch)
    return messages


def killmail_ids(messages: list[dict]) -> list[int]:
    return sorted(json.loads(m["Body"])["killmail_id"] for m in messages)


@pytest.fixture
def mixed_dlq(queues):
    """12 ESI 404s (more than one receive's worth), 1 invalid package, 2 exhausted retries."""
    for killmail_id in range(1000, 1012):
        fail_permanently(queues, killmail_id, "esi_not_found", f"ESI 404 for killmail {killmail_id}")
    fail_permanently(queues, 2000, "invalid_package", "hash: must be 40 hex characters")
    exhaust_retries(queues, [3000, 3001])
    return queues


def test_inspection_counts_by_error_type_and_leaves_every_message_visible(mixed_dlq):
    summary = inspect_dlq(mixed_dlq.sqs, mixed_dlq.dlq_url, wait_seconds=0)

    assert summary.counts == {"esi_not_found": 12, "retries_exhausted": 2, "invalid_package": 1}
    assert summary.approximate_visible == 15 and not summary.limited
    by_killmail = {m.killmail_id: m for m in summary.messages}
    assert sorted(by_killmail) == [*range(1000, 1012), 2000, 3000, 3001]
    assert by_killmail[2000].error_message == "hash: must be 40 hex characters"
    assert by_killmail[2000].receive_count == 1
    assert by_killmail[3000].error_type == "retries_exhausted" and by_killmail[3000].error_message is None
    assert by_killmail[3000].receive_count > 5
    assert counts(mixed_dlq.sqs, mixed_dlq.dlq_url) == (15, 0)

    again = inspect_dlq(mixed_dlq.sqs, mixed_dlq.dlq_url, wait_seconds=0)
    assert again.counts == summary.counts
    assert {m.killmail_id: m.receive_count for m in again.messages}[2000] == 2


def test_inspection_reads_the_killmail_id_from_the_body_when_the_attribute_is_absent(queues):
    queues.sqs.send_message(QueueUrl=queues.dlq_url, MessageBody=package_body(4242))

    (message,) = inspect_dlq(queues.sqs, queues.dlq_url, wait_seconds=0).messages

    assert (message.killmail_id, message.error_type) == (4242, "retries_exhausted")


def test_inspection_limit_stops_early_and_still_consumes_nothing(mixed_dlq):
    summary = inspect_dlq(mixed_dlq.sqs, mixed_dlq.dlq_url, limit=3, wait_seconds=0)

    assert len(summary.messages) == 3 and summary.limited
    assert counts(mixed_dlq.sqs, mixed_dlq.dlq_url) == (15, 0)


def test_inspection_table_lists_counts_and_messages(mixed_dlq):
    table = format_inspection(inspect_dlq(mixed_dlq.sqs, mixed_dlq.dlq_url, wait_seconds=0))

    assert "~15 visible" in table and "inspected 15" in table
    assert any(line.split() == ["esi_not_found", "12"] for line in table.splitlines())
    assert any(line.split()[:3] == ["2000", "invalid_package", "1"] for line in table.splitlines())


def test_redrive_moves_only_the_selected_error_types_and_makes_them_look_fresh(mixed_dlq):
    progress = []
    result = redrive(
        mixed_dlq.sqs,
        mixed_dlq.dlq_url,
        mixed_dlq.queue_url,
        error_types=["retries_exhausted", "invalid_package"],
        progress=progress.append,
        wait_seconds=0,
    )

    assert (result.method, result.moved, result.failed, result.skipped) == ("loop", 3, 0, 12)
    assert result.by_error_type == {"retries_exhausted": 2, "invalid_package": 1} and result.ok
    assert progress[-1] == Progress("loop", "COMPLETED", 3)
    assert counts(mixed_dlq.sqs, mixed_dlq.dlq_url) == (12, 0)
    redriven = take_all(mixed_dlq.sqs, mixed_dlq.queue_url)
    assert killmail_ids(redriven) == [2000, 3000, 3001]
    for message in redriven:
        killmail_id = json.loads(message["Body"])["killmail_id"]
        assert message["Body"] == package_body(killmail_id)
        assert message["MessageAttributes"] == provenance(killmail_id)
    assert killmail_ids(take_all(mixed_dlq.sqs, mixed_dlq.dlq_url)) == list(range(1000, 1012))


@pytest.mark.timeout(30)
def test_redrive_ends_when_only_unselected_messages_keep_coming_back(queues):
    # hold_seconds=0: every unselected message is visible again at once, as after an expired hold.
    for killmail_id in (1, 2, 3):
        fail_permanently(queues, killmail_id, "esi_not_found", "ESI 404")

    result = redrive(
        queues.sqs, queues.dlq_url, queues.queue_url, error_types=["invalid_package"], hold_seconds=0, wait_seconds=0
    )

    assert (result.moved, result.skipped) == (0, 3)
    assert counts(queues.sqs, queues.dlq_url) == (3, 0)


def test_redrive_of_everything_falls_back_to_the_loop_because_moto_has_no_move_tasks(mixed_dlq):
    result = redrive(mixed_dlq.sqs, mixed_dlq.dlq_url, mixed_dlq.queue_url, wait_seconds=0)

    assert result.method == "loop" and "NotImplementedError" in result.fallback_reason
    assert result.moved == 15 and result.ok
    assert counts(mixed_dlq.sqs, mixed_dlq.dlq_url) == (0, 0)
    assert counts(mixed_dlq.sqs, mixed_dlq.queue_url) == (15, 0)


def test_dry_run_reports_what_would_move_and_moves_nothing(mixed_dlq):
    result = redrive(
        mixed_dlq.sqs,
        mixed_dlq.dlq_url,
        mixed_dlq.queue_url,
        error_types=["esi_not_found"],
        dry_run=True,
        wait_seconds=0,
    )

    assert (result.dry_run, result.moved, result.skipped) == (True, 12, 3)
    assert result.by_error_type == {"esi_not_found": 12}
    assert format_result(result).startswith("would move 12 (esi_not_found 12)")
    assert counts(mixed_dlq.sqs, mixed_dlq.dlq_url) == (15, 0)
    assert counts(mixed_dlq.sqs, mixed_dlq.queue_url) == (0, 0)


def test_an_entry_whose_send_failed_stays_in_the_dlq(mixed_dlq, monkeypatch):
    real_send = mixed_dlq.sqs.send_message_batch

    def send_failing_killmail_2000(QueueUrl, Entries):
        doomed = [e for e in Entries if json.loads(e["MessageBody"])["killmail_id"] == 2000]
        answer = real_send(QueueUrl=QueueUrl, Entries=[e for e in Entries if e not in doomed])
        answer.setdefault("Failed", []).extend(
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "injected"} for e in doomed
        )
        return answer

    monkeypatch.setattr(mixed_dlq.sqs, "send_message_batch", send_failing_killmail_2000)
    result = redrive(
        mixed_dlq.sqs,
        mixed_dlq.dlq_url,
        mixed_dlq.queue_url,
        error_types=["invalid_package", "retries_exhausted"],
        wait_seconds=0,
    )

    assert (result.moved, result.failed, result.ok) == (2, 1, False)
    assert "killmail 2000" in result.failures[0] and "InternalError injected" in result.failures[0]
    assert counts(mixed_dlq.sqs, mixed_dlq.dlq_url) == (13, 0)
    assert 2000 in killmail_ids(take_all(mixed_dlq.sqs, mixed_dlq.dlq_url))
    assert killmail_ids(take_all(mixed_dlq.sqs, mixed_dlq.queue_url)) == [3000, 3001]


def test_a_send_that_errors_deletes_nothing_and_hands_the_messages_back(mixed_dlq, monkeypatch):
    def unreachable(**_):
        raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "injected"}}, "SendMessageBatch")

    monkeypatch.setattr(mixed_dlq.sqs, "send_message_batch", unreachable)
    with pytest.raises(ClientError):
        redrive(mixed_dlq.sqs, mixed_dlq.dlq_url, mixed_dlq.queue_url, prefer_move_task=False, wait_seconds=0)

    assert counts(mixed_dlq.sqs, mixed_dlq.dlq_url) == (15, 0)


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="killstream")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize(
    "argv, variable",
    [
        (["dlq"], "DLQ_URL"),
        (["redrive", "--queue-url", "https://sqs.us-east-1.amazonaws.com/123456789012/q"], "DLQ_URL"),
        (["redrive", "--dlq-url", "https://sqs.us-east-1.amazonaws.com/123456789012/d"], "QUEUE_URL"),
    ],
)
def test_cli_without_a_queue_url_names_the_variable(queues, capsys, argv, variable):
    assert run_cli(argv) == 2
    assert variable in capsys.readouterr().err


def test_cli_dlq_reads_the_url_from_the_environment(mixed_dlq, monkeypatch, capsys):
    monkeypatch.setenv("DLQ_URL", mixed_dlq.dlq_url)

    assert run_cli(["dlq", "--limit", "20"]) == 0
    assert "retries_exhausted" in capsys.readouterr().out
    assert counts(mixed_dlq.sqs, mixed_dlq.dlq_url) == (15, 0)


def test_cli_redrive_selects_error_types_and_reports(mixed_dlq, monkeypatch, capsys):
    monkeypatch.setenv("DLQ_URL", mixed_dlq.dlq_url)
    monkeypatch.setenv("QUEUE_URL", mixed_dlq.queue_url)

    assert run_cli(["redrive", "--error-type", "invalid_package", "--error-type", "retries_exhausted"]) == 0
    out = capsys.readouterr().out
    assert "redrive loop COMPLETED: 3 moved, 0 failed" in out
    assert "left in the DLQ, not selected: 12" in out
    assert counts(mixed_dlq.sqs, mixed_dlq.dlq_url) == (12, 0)


def test_cli_redrive_dry_run_without_move_task_moves_nothing(mixed_dlq, monkeypatch, capsys):
    monkeypatch.setenv("QUEUE_URL", mixed_dlq.queue_url)

    assert run_cli(["redrive", "--dlq-url", mixed_dlq.dlq_url, "--dry-run", "--no-move-task"]) == 0
    # a dry run reads as one: no progress of a move, only what would move
    out = capsys.readouterr().out
    assert out.splitlines() == ["would move 15 (esi_not_found 12, retries_exhausted 2, invalid_package 1)"]
    assert counts(mixed_dlq.sqs, mixed_dlq.queue_url) == (0, 0)


def test_cli_redrive_dry_run_of_one_error_type_says_only_what_would_move(mixed_dlq, monkeypatch, capsys):
    monkeypatch.setenv("DLQ_URL", mixed_dlq.dlq_url)
    monkeypatch.setenv("QUEUE_URL", mixed_dlq.queue_url)

    assert run_cli(["redrive", "--error-type", "retries_exhausted", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["would move 2 (retries_exhausted 2)", "left in the DLQ, not selected: 13"]
    assert "RUNNING" not in out and "COMPLETED" not in out and "moved" not in out
