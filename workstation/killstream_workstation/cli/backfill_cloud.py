"""`killstream backfill --cloud`: the range as one execution of the deployed stack's backfill state
machine (template.yaml: BackfillStateMachine; the stack's output BackfillStateMachineArn names
it), followed until it ends: days done / total from the execution's history, then each day that
did not end complete. boto3 reads the usual AWS settings (AWS_REGION, AWS_PROFILE, credentials,
AWS_ENDPOINT_URL for a local stand-in)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import date
from typing import Any

import boto3

from killstream.backfill.plan import MAX_DAYS
from killstream_workstation.problems import Problem, UsageProblem

STACK_VARIABLE = "KILLSTREAM_STACK"
DEFAULT_STACK = "killstream-dev"
OUTPUT = "BackfillStateMachineArn"
POLL_SECONDS = 10.0
RUNNING = "RUNNING"


class StackProblem(Problem):
    """The stack, or its state machine, cannot be found."""


def state_machine_arn(cloudformation: Any, stack_name: str) -> str:
    """The stack's output naming its backfill state machine."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except cloudformation.exceptions.ClientError as error:
        raise StackProblem(
            f"stack {stack_name!r}: {error.response.get('Error', {}).get('Message', error)} "
            f"(--stack-name or ${STACK_VARIABLE} names it; --state-machine-arn names the machine itself)"
        ) from None
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stacks[0].get("Outputs", [])}
    if OUTPUT not in outputs:
        raise StackProblem(f"stack {stack_name!r} has no output {OUTPUT}: deploy this version of template.yaml")
    return outputs[OUTPUT]


def execution_input(days: list[date], source: str) -> dict[str, str]:
    return {"from": f"{days[0]}", "to": f"{days[-1]}", "source": source}


def days_done(events: Iterable[dict]) -> tuple[int, int]:
    """Map iterations ended (succeeded, or failed: a day's error result is a success of its
    iteration) and how many of them failed outright, from an execution's history events."""
    done = failed = 0
    for event in events:
        if event["type"] in ("MapIterationSucceeded", "MapIterationFailed", "MapIterationAborted"):
            done += 1
            failed += event["type"] != "MapIterationSucceeded"
    return done, failed


def history(sfn: Any, execution_arn: str) -> Iterable[dict]:
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn):
        yield from page["events"]


def not_complete(output: str | None) -> list[dict]:
    """The days of a finished execution's output that did not end complete."""
    try:
        doc = json.loads(output or "{}")
    except ValueError:
        return []
    days = doc.get("days") if isinstance(doc, dict) else None
    return [day for day in days or [] if isinstance(day, dict) and day.get("status") != "complete"]


def follow(
    sfn: Any,
    execution_arn: str,
    total: int,
    *,
    say: Callable[[str], None],
    poll_seconds: float = POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Describe the execution until it is no longer running, saying its progress when it changes;
    returns its last description."""
    shown = None
    while True:
        described = sfn.describe_execution(executionArn=execution_arn)
        done, failed = days_done(history(sfn, execution_arn))
        line = f"{described['status'].lower()}: {done}/{total} days" + (f", {failed} failed" if failed else "")
        if line != shown:
            say(line)
            shown = line
        if described["status"] != RUNNING:
            return described
        sleep(poll_seconds)


def run_in_cloud(args: argparse.Namespace, days: list[date]) -> int:
    if args.dry_run:
        raise UsageProblem("--dry-run runs here, not in the cloud: leave out --cloud to see what would be downloaded")
    if len(days) > MAX_DAYS:
        raise UsageProblem(
            f"{len(days):,} days: the state machine takes at most {MAX_DAYS:,} per execution "
            f"(its history's limit); start one per range"
        )
    stack = args.stack_name or os.environ.get(STACK_VARIABLE, "").strip() or DEFAULT_STACK
    arn = args.state_machine_arn or state_machine_arn(boto3.client("cloudformation"), stack)
    sfn = boto3.client("stepfunctions")
    name = f"backfill-{days[0]:%Y%m%d}-{days[-1]:%Y%m%d}-{uuid.uuid4().hex[:8]}"
    started = sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(execution_input(days, args.source)))
    execution = started["executionArn"]
    print(f"☁️  started {name}: {len(days)} day(s) {days[0]} .. {days[-1]} from {args.source}\n   {execution}")
    if args.no_wait:
        print(f"   follow it: aws stepfunctions describe-execution --execution-arn {execution}")
        return 0
    described = follow(sfn, execution, len(days), say=lambda line: print(f"   {line}", file=sys.stderr, flush=True))
    status = described["status"]
    if status != "SUCCEEDED":
        cause = described.get("cause") or described.get("error") or ""
        print(f"backfill --cloud: the execution ended {status}" + (f": {cause}" if cause else ""))
        return 1
    failed = not_complete(described.get("output"))
    for day in failed:
        print(f"  {day.get('day')}: {day.get('status')} — {day.get('error') or ''}".rstrip(" —"))
    print(f"backfill --cloud: days={len(days)} not_complete={len(failed)} execution={name}")
    return 0 if not failed else 1
