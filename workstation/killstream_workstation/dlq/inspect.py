"""The dead-letter queue: look at it (`killstream dlq`) and move it back (`killstream redrive`).

Messages reach the DLQ two ways:
- permanent failures: the fetcher sends the package itself, with message attributes
  `error_type`, `error_message`, `source` and `killmail_id`;
- transient failures: SQS moves the message after the queue's maxReceiveCount (5) receives.
  It carries no `error_type`; it is reported as `retries_exhausted`.

SQS has no peek. Inspecting a message means receiving it, which adds one to its
ApproximateReceiveCount (the count shown includes the inspection's own receive); that is
inherent to SQS and harmless here, since the DLQ has no redrive policy of its own. Inspection and
the redrive loop keep what they receive invisible for `hold_seconds` while they scan, so each
receive returns messages not yet seen, and make everything they leave behind visible again
(visibility 0) when they finish, error or not. A run that is killed leaves those messages
invisible until the hold expires.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from killstream import sqs_limits

RETRIES_EXHAUSTED = "retries_exhausted"
FAILURE_ATTRIBUTES = ("error_type", "error_message")
HOLD_SECONDS = 60
MOVE_TASK_POLL_SECONDS = 5
TERMINAL_TASK_STATUSES = ("COMPLETED", "FAILED", "CANCELLED")
UNSUPPORTED_CODES = frozenset({
    "UnsupportedOperation",
    "AWS.SimpleQueueService.UnsupportedOperation",
    "InvalidAction",
    "UnknownOperationException",
    "NotImplemented",
})


@dataclass(frozen=True)
class DlqMessage:
    message_id: str
    killmail_id: int | None
    error_type: str
    error_message: str | None
    receive_count: int | None


@dataclass(frozen=True)
class Inspection:
    dlq_url: str
    approximate_visible: int
    approximate_in_flight: int
    messages: tuple[DlqMessage, ...]
    counts: dict[str, int]
    limited: bool


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


def describe(message: dict) -> DlqMessage:
    """What a received DLQ message says about its killmail and why it failed."""
    attributes = message.get("MessageAttributes") or {}
    error_type = _attribute(attributes, "error_type") or RETRIES_EXHAUSTED
    killmail_id = _as_int(_attribute(attributes, "killmail_id"))
    if killmail_id is None:
        try:
            body = json.loads(message.get("Body") or "")
        except ValueError:
            body = None
        if isinstance(body, dict):
            killmail_id = _as_int(body.get("killmail_id"))
    receive_count = _as_int((message.get("Attributes") or {}).get("ApproximateReceiveCount"))
    return DlqMessage(message["MessageId"], killmail_id, error_type, _attribute(attributes, "error_message"), receive_count)


def _attribute(attributes: dict, name: str) -> str | None:
    return (attributes.get(name) or {}).get("StringValue")


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class _Scan:
    """Receives every message of a queue once, holding each invisible until it is settled
    (deleted) or the scan is released."""

    def __init__(self, sqs, url: str, *, hold_seconds: int, wait_seconds: int):
        self.sqs = sqs
        self.url = url
        self.hold_seconds = hold_seconds
        self.wait_seconds = wait_seconds
        self.seen: set[str] = set()
        self.held: dict[str, str] = {}

    def batches(self, limit: int | None = None) -> Iterator[list[dict]]:
        while limit is None or len(self.seen) < limit:
            wanted = 10 if limit is None else min(10, limit - len(self.seen))
            messages = self.sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=wanted,
                VisibilityTimeout=self.hold_seconds,
                # Long polling asks every SQS server; a short poll may answer empty while messages remain.
                WaitTimeSeconds=self.wait_seconds,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            ).get("Messages", [])
            fresh = []
            for message in messages:
                message_id = message["MessageId"]
                # A message whose hold expired comes back with a new receipt handle; only the newest works.
                self.held[message_id] = message["ReceiptHandle"]
                if message_id not in self.seen:
                    self.seen.add(message_id)
                    fresh.append(message)
            if not fresh:
                return
            yield fresh

    def settle(self, message_id: str) -> None:
        self.held.pop(message_id, None)

    def release(self) -> None:
        handles = list(self.held.values())
        for start in range(0, len(handles), 10):
            # A release that fails only delays visibility until the hold expires.
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.url,
                Entries=[{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                         for i, h in enumerate(handles[start:start + 10])],
            )
        self.held.clear()


def inspect_dlq(sqs, dlq_url: str, *, limit: int | None = None, hold_seconds: int = HOLD_SECONDS,
                wait_seconds: int = 1) -> Inspection:
    """Counts by error_type and one line per message, leaving every message in the DLQ, visible.
    Each inspected message's ApproximateReceiveCount goes up by one: SQS has no peek."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    scan = _Scan(sqs, dlq_url, hold_seconds=hold_seconds, wait_seconds=wait_seconds)
    messages: list[DlqMessage] = []
    try:
        for batch in scan.batches(limit):
            messages.extend(describe(m) for m in batch)
    finally:
        scan.release()
    return Inspection(
        dlq_url=dlq_url,
        approximate_visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
        approximate_in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        messages=tuple(messages),
        counts=dict(Counter(m.error_type for m in messages).most_common()),
        limited=limit is not None and len(messages) >= limit,
    )


def redrive(sqs, dlq_url: str, source_queue_url: str, *, error_types: Iterable[str] | None = None,
            dry_run: bool = False, prefer_move_task: bool = True,
            progress: Callable[[Progress], None] | None = None, sleep: Callable[[float], None] = time.sleep,
            poll_seconds: float = MOVE_TASK_POLL_SECONDS, hold_seconds: int = HOLD_SECONDS,
            wait_seconds: int = 1) -> RedriveResult:
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
        to_move = _as_int(task.get("ApproximateNumberOfMessagesToMove"))
        report(Progress("move_task", status, moved, to_move))
        if status in TERMINAL_TASK_STATUSES:
            return RedriveResult(method="move_task", status=status, moved=moved, to_move=to_move,
                                 task_handle=handle, failure_reason=task.get("FailureReason"))
        sleep(poll_seconds)


def _redrive_loop(sqs, dlq_url, source_url, wanted, dry_run, report, hold_seconds, wait_seconds) -> RedriveResult:
    result = RedriveResult(method="loop", dry_run=dry_run)
    moved_types: Counter[str] = Counter()
    scan = _Scan(sqs, dlq_url, hold_seconds=hold_seconds, wait_seconds=wait_seconds)
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


def _move(sqs, dlq_url, source_url, chosen, scan: _Scan, result: RedriveResult, moved_types: Counter) -> None:
    by_id = {str(i): pair for i, pair in enumerate(chosen)}
    entries = [_send_entry(key, message) for key, (message, _) in by_id.items()]
    for batch in sqs_limits.batches(entries):
        answer = sqs.send_message_batch(QueueUrl=source_url, Entries=batch)
        for failure in answer.get("Failed", []):
            _, described = by_id[failure["Id"]]
            result.failed += 1
            result.failures.append(f"killmail {described.killmail_id} ({described.message_id}): "
                                   f"{failure.get('Code')} {failure.get('Message', '')}".rstrip())
        sent = [ok["Id"] for ok in answer.get("Successful", [])]
        for key in sent:
            result.moved += 1
            moved_types[by_id[key][1].error_type] += 1
        if not sent:
            continue
        deleted = sqs.delete_message_batch(
            QueueUrl=dlq_url, Entries=[{"Id": key, "ReceiptHandle": by_id[key][0]["ReceiptHandle"]} for key in sent],
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


# --- console ---------------------------------------------------------------------------------

def format_inspection(summary: Inspection, *, message_width: int = 80) -> str:
    header = (f"DLQ {summary.dlq_url}: ~{summary.approximate_visible} visible, "
              f"~{summary.approximate_in_flight} in flight; inspected {len(summary.messages)}"
              + (" (limit reached)" if summary.limited else ""))
    if not summary.messages:
        return header + "\nthe DLQ is empty"
    type_width = max(len("error_type"), *(len(t) for t in summary.counts))
    lines = [header, "", f"{'error_type':<{type_width}}  {'count':>7}"]
    lines += [f"{error_type:<{type_width}}  {count:>7}" for error_type, count in summary.counts.items()]
    lines += ["", f"{'killmail_id':>12}  {'error_type':<{type_width}}  {'receives':>8}  error_message"]
    for m in summary.messages:
        text = " ".join((m.error_message or "").split())
        if len(text) > message_width:
            text = text[:message_width - 1] + "…"
        killmail = "?" if m.killmail_id is None else str(m.killmail_id)
        receives = "?" if m.receive_count is None else str(m.receive_count)
        lines.append(f"{killmail:>12}  {m.error_type:<{type_width}}  {receives:>8}  {text}".rstrip())
    lines += ["", "receive counts include this inspection's own receive"]
    return "\n".join(lines)


def format_progress(progress: Progress) -> str:
    if progress.method == "move_task":
        if progress.to_move:
            percent = 100 * progress.moved // progress.to_move
            return f"move task {progress.status}: {progress.moved}/{progress.to_move} moved ({percent}%)"
        return f"move task {progress.status}: {progress.moved} moved"
    return f"redrive loop {progress.status}: {progress.moved} moved, {progress.failed} failed"


def format_result(result: RedriveResult) -> str:
    lines = []
    if result.fallback_reason:
        lines.append(f"fell back to the receive/send/delete loop: {result.fallback_reason}")
    if result.method == "move_task":
        total = "" if result.to_move is None else f" of {result.to_move}"
        lines.append(f"move task {result.task_handle} {result.status}: {result.moved}{total} moved")
        if result.failure_reason:
            lines.append(f"failure reason: {result.failure_reason}")
        return "\n".join(lines)
    kinds = ", ".join(f"{t} {n}" for t, n in result.by_error_type.items())
    verb = "would move" if result.dry_run else "moved"
    lines.append(f"{verb} {result.moved}" + (f" ({kinds})" if kinds else ""))
    if result.skipped:
        lines.append(f"left in the DLQ, not selected: {result.skipped}")
    if result.failed:
        lines.append(f"send failed, left in the DLQ: {result.failed}")
        lines += [f"  {failure}" for failure in result.failures]
    if result.not_deleted:
        lines.append(f"sent but not deleted from the DLQ (a later redrive sends them again): {result.not_deleted}")
    return "\n".join(lines)


def add_commands(subparsers) -> None:
    """Register `dlq` and `redrive` on the `killstream` command's subparsers."""
    dlq = subparsers.add_parser("dlq", help="what is in the dead-letter queue, without consuming it")
    dlq.add_argument("--dlq-url", help="default: $DLQ_URL")
    dlq.add_argument("--limit", type=_positive_int, default=100, help="inspect at most this many messages (default 100)")
    dlq.set_defaults(func=cmd_dlq)

    move = subparsers.add_parser("redrive", help="move dead-letter queue messages back to the killmail queue")
    move.add_argument("--dlq-url", help="default: $DLQ_URL")
    move.add_argument("--queue-url", help="the queue to move them to; default: $QUEUE_URL")
    move.add_argument("--error-type", action="append", dest="error_types", metavar="TYPE",
                      help=f"only messages with this error_type (repeatable; {RETRIES_EXHAUSTED} = transient "
                           "failures SQS moved after 5 receives); always uses the loop")
    move.add_argument("--dry-run", action="store_true", help="report what would move, move nothing")
    move.add_argument("--no-move-task", dest="move_task", action="store_false",
                      help="use the receive/send/delete loop even where SQS move tasks are available")
    move.set_defaults(func=cmd_redrive)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _url_or_env(explicit: str | None, variable: str, option: str) -> str | None:
    url = explicit or os.environ.get(variable, "").strip()
    if not url:
        print(f"error: no queue URL: pass {option} or set {variable}", file=sys.stderr)
    return url or None


def sqs_client(queue_url: str):
    """An SQS client in the queue's own region when the URL names one (AWS_ENDPOINT_URL still wins)."""
    match = re.match(r"^https://sqs\.([a-z0-9-]+)\.amazonaws\.com/", queue_url)
    if match and not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        return boto3.client("sqs", region_name=match.group(1))
    return boto3.client("sqs")


def cmd_dlq(args: argparse.Namespace) -> int:
    dlq_url = _url_or_env(args.dlq_url, "DLQ_URL", "--dlq-url")
    if not dlq_url:
        return 2
    try:
        summary = inspect_dlq(sqs_client(dlq_url), dlq_url, limit=args.limit)
    except (BotoCoreError, ClientError) as exc:
        print(f"error: cannot read the DLQ: {exc}", file=sys.stderr)
        return 1
    print(format_inspection(summary))
    return 0


def cmd_redrive(args: argparse.Namespace) -> int:
    dlq_url = _url_or_env(args.dlq_url, "DLQ_URL", "--dlq-url")
    queue_url = _url_or_env(args.queue_url, "QUEUE_URL", "--queue-url")
    if not dlq_url or not queue_url:
        return 2
    try:
        result = redrive(sqs_client(dlq_url), dlq_url, queue_url, error_types=args.error_types,
                         dry_run=args.dry_run, prefer_move_task=args.move_task,
                         progress=lambda p: print(format_progress(p), flush=True))
    except (BotoCoreError, ClientError) as exc:
        print(f"error: redrive stopped: {exc}", file=sys.stderr)
        return 1
    print(format_result(result))
    return 0 if result.ok else 1
