"""`killstream dlq` and `killstream redrive`: the operator's DLQ commands."""

from __future__ import annotations

import argparse
import os
import re
import sys

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from killstream_workstation.dlq.inspect import RETRIES_EXHAUSTED, inspect_dlq
from killstream_workstation.dlq.redrive import redrive
from killstream_workstation.dlq.render import format_inspection, format_progress, format_result


def add_commands(subparsers) -> None:
    """Register `dlq` and `redrive` on the `killstream` command's subparsers."""
    dlq = subparsers.add_parser("dlq", help="what is in the dead-letter queue, without consuming it")
    dlq.add_argument("--dlq-url", help="default: $DLQ_URL")
    dlq.add_argument(
        "--limit", type=_positive_int, default=100, help="inspect at most this many messages (default 100)"
    )
    dlq.set_defaults(func=cmd_dlq)

    move = subparsers.add_parser("redrive", help="move dead-letter queue messages back to the killmail queue")
    move.add_argument("--dlq-url", help="default: $DLQ_URL")
    move.add_argument("--queue-url", help="the queue to move them to; default: $QUEUE_URL")
    move.add_argument(
        "--error-type",
        action="append",
        dest="error_types",
        metavar="TYPE",
        help=f"only messages with this error_type (repeatable; {RETRIES_EXHAUSTED} = transient "
        "failures SQS moved after 5 receives); always uses the loop",
    )
    move.add_argument("--dry-run", action="store_true", help="report what would move, move nothing")
    move.add_argument(
        "--no-move-task",
        dest="move_task",
        action="store_false",
        help="use the receive/send/delete loop even where SQS move tasks are available",
    )
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
    """An SQS client in AWS_REGION (boto3 itself reads only AWS_DEFAULT_REGION), else in the
    queue's own region when the URL names one (AWS_ENDPOINT_URL still wins)."""
    match = re.match(r"^https://sqs\.([a-z0-9-]+)\.amazonaws\.com/", queue_url)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or (match and match.group(1))
    return boto3.client("sqs", region_name=region) if region else boto3.client("sqs")


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
        result = redrive(
            sqs_client(dlq_url),
            dlq_url,
            queue_url,
            error_types=args.error_types,
            dry_run=args.dry_run,
            prefer_move_task=args.move_task,
            # a dry run moves nothing: its one line is the result ("would move N (…)")
            progress=None if args.dry_run else lambda p: print(format_progress(p), flush=True),
        )
    except (BotoCoreError, ClientError) as exc:
        print(f"error: redrive stopped: {exc}", file=sys.stderr)
        return 1
    print(format_result(result))
    return 0 if result.ok else 1
