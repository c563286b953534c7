"""`killstream redrive`: move DLQ messages back to the killmail queue, with SQS's own move task
where it can, else a receive → send → delete loop that deletes a message only once it is sent."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from killstream import sqs_limits
from killstream.fetcher.dead_letters import FAILURE_ATTRIBUTES
from killstream_workstation.dlq.inspect import HOLD_SECONDS, Scan, as_int, describe

MOVE_TASK_POLL_SECONDS = 5
TERMINAL_TASK_STATUSES = ("COMPLETED", "FAILED", "CANCELLED")
UNSUPPORTED_CODES = frozenset(
    {
        "UnsupportedOperation",
        "AWS.SimpleQueueService.UnsupportedOperation",
        "InvalidAction",
        "UnknownOperationException",
        "NotImplemented",
    }
)


@dataclass(frozen=True)
class Progress:
    method: str
    status: str
    moved: int
    to_move: int | None = None
    failed: int = 0


@dataclass
class RedriveResult:
    method: str
    dry_run: bool = False
    status: str = "COMPLETED"
    moved: int = 0
    to_move: int | None = None
    by_error_type: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    not_deleted: int = 0
    skipped: int = 0
    task_handle: str | None = None
    failure_reason: str | None = None
    fallback_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "COMPLETED" and not self.failed and not self.not_deleted


def redrive(
    sqs,
    dlq_url: str,
    source_queue_url: str,
    *,
    error_types: Iterable[str] | None = None,
    dry_run: bool = False,
    prefer_move_task: bool = True,
    progress: Callable[[Progress], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    poll_seconds: float = MOVE_TASK_POLL_SECONDS,
    hold_seconds: int = HOLD_SECONDS,
    wait_seconds: int = 1,
) -> RedriveResult:
    """Move DLQ messages back to the source queue.

    With no error_type filter, SQS's own StartMessageMoveTask does it where the endpoint has it.
    Otherwise (a filter, which move tasks cannot apply; a dry run; an endpoint without move tasks;
    prefer_move_task=False) a receive → send → delete loop does, deleting a message only once its
    send succeeded. `error_types=None` selects everything; an empty collection selects nothing."""
    report = progress or (lambda _: None)
    wanted = None if error_types is None else frozenset(error_types)
    fallback_reason = None
    if prefer_move_task and wanted is None and not dry_run:
        dlq_arn = _queue_arn(sqs, dlq_url)
        source_arn = _queue_arn(sqs, source_queue_url)
        try:
            handle = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=source_arn)["TaskHandle"]
        except (ClientError, NotImplementedError) as exc:
            if not move_task_unsupported(exc):
                raise
            fallback_reason = f"move tasks unsupported by this endpoint ({_error_text(exc)})"
        else:
            return _follow_move_task(sqs, dlq_arn, handle, report, sleep, poll_seconds)
    result = _redrive_loop(sqs, dlq_url, source_queue_url, wanted, dry_run, report, hold_seconds, wait_seconds)
    result.fallback_reason = fallback_reason
    return result


def move_task_unsupported(exc: BaseException) -> bool:
    """Whether StartMessageMoveTask failed because the endpoint lacks it, not because of this request.

    moto in-process raises Python's NotImplementedError; moto's server answers HTTP 500 with an HTML
    page, which botocore reports with the bare status as the error code. Any answer that is not an
    SQS error document means the same: the loop is correct everywhere, so falling back costs only speed."""
    if isinstance(exc, NotImplementedError):
        return True
    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in UNSUPPORTED_CODES or code.isdigit()


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code.isdigit():
            return f"HTTP {code} without an SQS error document"
        return f"{code}: {' '.join(str(error.get('Message', '')).split())[:120]}"
    return f"{type(exc).__name__}: {exc}"


def _queue_arn(sqs, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _follow_move_task(sqs, dlq_arn: str, handle: str, report, sleep, poll_seconds: float) -> RedriveResult:
    while True:
        # One task can be active per queue and ours was just started: the newest task is ours.
        # Completed tasks are listed without their handle, so the handle cannot be matched.
        tasks = sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=1).get("Results", [])
        task = tasks[0] if tasks else {}
        status = task.get("Status", "RUNNING")
        moved = int(task.get("ApproximateNumberOfMessagesMoved") or 0)
        to_move = as_int(task.get("ApproximateNumberOfMessagesToMove"))
        report(Progress("move_task", status, moved, to_move))
        if status in TERMINAL_TASK_STATUSES:
            return RedriveResult(
                method="move_task",
                status=status,
                moved=moved,
                to_move=to_move,
                task_handle=handle,
                failure_reason=task.get("FailureReason"),
            )
        sleep(poll_seconds)


def _redrive_loop(sqs, dlq_url, source_url, wanted, dry_run, report, hold_seconds, wait_seconds) -> RedriveResult:
    result = RedriveResult(method="loop", dry_run=dry_run)
    moved_types: Counter[str] = Counter()
    scan = Scan(sqs, dlq_url, hold_seconds=hold_seconds, wait_seconds=wait_seconds)
    try:
        for batch in scan.batches():
            chosen = []
            for message in batch:
                described = describe(message)
                if wanted is None or described.error_type in wanted:
                    chosen.append((message, described))
                else:
                    result.skipped += 1
            if dry_run:
                result.moved += len(chosen)
                moved_types.update(d.error_type for _, d in chosen)
            else:
                _move(sqs, dlq_url, source_url, chosen, scan, result, moved_types)
            report(Progress("loop", "RUNNING", result.moved, failed=result.failed))
    finally:
        scan.release()
    result.by_error_type = dict(moved_types.most_common())
    report(Progress("loop", "COMPLETED", result.moved, failed=result.failed))
    return result


def _move(sqs, dlq_url, source_url, chosen, scan: Scan, result: RedriveResult, moved_types: Counter) -> None:
    by_id = {str(i): pair for i, pair in enumerate(chosen)}
    entries = [_send_entry(key, message) for key, (message, _) in by_id.items()]
    for batch in sqs_limits.batches(entries):
        answer = sqs.send_message_batch(QueueUrl=source_url, Entries=batch)
        for failure in answer.get("Failed", []):
            _, described = by_id[failure["Id"]]
            result.failed += 1
            result.failures.append(
                f"killmail {described.killmail_id} ({described.message_id}): "
                f"{failure.get('Code')} {failure.get('Message', '')}".rstrip()
            )
        sent = [ok["Id"] for ok in answer.get("Successful", [])]
        for key in sent:
            result.moved += 1
            moved_types[by_id[key][1].error_type] += 1
        if not sent:
            continue
        deleted = sqs.delete_message_batch(
            QueueUrl=dlq_url,
            Entries=[{"Id": key, "ReceiptHandle": by_id[key][0]["ReceiptHandle"]} for key in sent],
        )
        for ok in deleted.get("Successful", []):
            scan.settle(by_id[ok["Id"]][0]["MessageId"])
        # Sent but still in the DLQ: a later redrive sends it again, which the idempotent fetcher absorbs.
        result.not_deleted += len(deleted.get("Failed", []))


def _send_entry(key: str, message: dict) -> dict:
    """The message as the fetcher first saw it: same body and attributes, minus the failure record."""
    entry: dict[str, Any] = {"Id": key, "MessageBody": message["Body"]}
    attributes = {
        name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        for name, value in (message.get("MessageAttributes") or {}).items()
        if name not in FAILURE_ATTRIBUTES
    }
    if attributes:
        entry["MessageAttributes"] = attributes
    return entry
