"""`killstream alerts test --pattern FILE [--last 24h]`: which stored killmails an alert rule's
event pattern would have matched (alerts/tester.py), so a rule is tuned before it is deployed."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from killstream.storage.publication import PublicationStore
from killstream_workstation.alerts.patterns import PatternError, load_pattern
from killstream_workstation.alerts.tester import (
    AWS_CLIENT_CONFIG,
    LocalEndpointError,
    Verdict,
    match_with_eventbridge,
    match_with_local_endpoint,
    stored_events,
)
from killstream_workstation.local.database import database_url, open_connection, url_origin
from killstream_workstation.problems import Problem, UsageProblem

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration(text: str) -> timedelta:
    match = DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"a duration like 90m, 24h or 7d, got {text!r}")
    return timedelta(**{UNIT[match[2]]: float(match[1])})


def add_commands(subparsers) -> None:
    """Register `alerts` on the `killstream` command's subparsers."""
    alerts = subparsers.add_parser("alerts", help="alert rules: test an event pattern on the stored killmails")
    commands = alerts.add_subparsers(dest="alerts_command", required=True)
    test = commands.add_parser(
        "test",
        help="show which stored killmails an event pattern would have matched (EventBridge's TestEventPattern)",
    )
    test.add_argument("--pattern", required=True, metavar="FILE", help="the rule's event pattern (JSON)")
    test.add_argument(
        "--last",
        type=duration,
        default=timedelta(hours=24),
        help="killmails stored this recently (default 24h; e.g. 90m, 7d)",
    )
    test.add_argument(
        "--limit",
        type=int,
        default=50_000,
        help="at most this many killmails, oldest first (default 50000; TestEventPattern is one call per killmail)",
    )
    test.add_argument(
        "--local",
        action="store_true",
        help="match with a private local endpoint (moto's matcher, "
        "what `make run` alerts on) instead of EventBridge; needs no AWS account",
    )
    test.add_argument("--show", type=int, default=20, help="matches listed (default 20; all are counted)")
    test.add_argument("--database-url", help="default: $DATABASE_URL, else the embedded server")
    test.set_defaults(func=cmd_test)


def cmd_test(args: argparse.Namespace) -> int:
    """A bad pattern or no region is a UsageProblem (exit 2), the matcher failing a Problem (1):
    one line each, from the command's error boundary (cli/main.py)."""
    try:
        pattern = load_pattern(args.pattern)
    except PatternError as exc:
        raise UsageProblem(str(exc)) from None
    conn = open_connection(database_url(args.database_url), url_origin(args.database_url))
    try:
        rows = PublicationStore(conn).stored_since(args.last, args.limit)
    finally:
        conn.close()
    events = stored_events(rows)
    try:
        verdicts, matcher = _match(pattern, events, local=args.local)
    except PatternError as exc:
        raise UsageProblem(str(exc)) from None
    except NoRegionError:
        raise UsageProblem("no AWS region: set AWS_REGION (or use --local)") from None
    except (BotoCoreError, ClientError, LocalEndpointError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise Problem(f"{matcher_name(args.local)} failed: {first}") from None
    matched = [v for v in verdicts if v.matched]
    print(
        f"🎯 {args.pattern}: {len(matched)} of {len(events)} killmails stored in the last {_ago(args.last)} "
        f"match ({matcher})"
    )
    for verdict in matched[: max(0, args.show)]:
        print(f"   {_line(verdict)}")
    if len(matched) > args.show:
        print(f"   … and {len(matched) - args.show} more")
    return 0


def matcher_name(local: bool) -> str:
    return "the local endpoint" if local else "TestEventPattern"


def _match(pattern: str, events, *, local: bool) -> tuple[list[Verdict], str]:
    if local:
        from killstream_workstation.local.aws import LocalAws

        aws = LocalAws(visibility_timeout=30, prefix="killstream-alerts-test").start()
        try:

            def make_rule(text: str) -> tuple[str, str]:
                try:
                    alert = aws.create_alert(pattern=text, webhook_url="http://127.0.0.1/unused", visibility_timeout=30)
                except ClientError as exc:
                    raise PatternError(f"the local endpoint refuses the pattern: {exc}") from None
                return aws.event_bus_name, alert.queue_url

            verdicts = match_with_local_endpoint(pattern, events, make_rule, aws.client)
        finally:
            aws.stop()
        return verdicts, "moto's matcher on a private local endpoint, as `make run` routes alerts — not EventBridge's"
    client = boto3.client("events", config=AWS_CLIENT_CONFIG)
    region = client.meta.region_name
    if not region:
        raise NoRegionError()
    return match_with_eventbridge(pattern, events, client, region=region), f"EventBridge TestEventPattern in {region}"


def _ago(age: timedelta) -> str:
    seconds = age.total_seconds()
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size and seconds % size == 0 and (unit != "d" or seconds > 86400):
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _line(verdict: Verdict) -> str:
    d = verdict.event.detail
    victim = d.get("victim", {})
    ship = victim.get("ship_type_name") or f"type {victim.get('ship_type_id')}"
    system = d.get("solar_system_name") or f"system {d.get('solar_system_id')}"
    region = f", {d['region_name']}" if d.get("region_name") else ""
    value = d.get("total_value_millions")
    worth = f"{value / 1000:,.2f}B ISK" if value is not None else "? ISK"
    return f"{d['killmail_id']}  {d['killmail_time']}  {ship} in {system}{region}, {worth}  {d['zkillboard_url']}"
