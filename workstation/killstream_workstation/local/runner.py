"""`killstream run` (what `make run` runs): the local pipeline with the original worker's
console — banner, a line per killmail (named where the enricher already knows the names),
the enricher's runs, periodic stats, final statistics on Ctrl+C/SIGTERM. It resumes where the
last run of the same feed into the same database stopped (cursor, replay, queued messages: kept
under .local/, local/state.py), runs the reconciler once a day as its schedule would, and lets
`killstream reconcile` find its stack while it is up.

Before anything starts, every setting is checked (preflight.py), the local directory is locked
for this run (lock.py) and, live, the feed is asked whether it answers. Problems are raised as
one-line failures for the command's error boundary (cli/main.py). Once running, a reader that
goes away (`… | head`) shuts the pipeline down like Ctrl+C does."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import sys
import time

from killstream import __version__
from killstream.alerts.webhook import redact_url, webhook_kind
from killstream.config import DEFAULT_ESI_URL, PollerConfig
from killstream.errors import ConfigError
from killstream.observability import logger
from killstream_workstation.alerts.patterns import DEFAULT_PATTERN, PatternError, check_pattern_text, load_pattern
from killstream_workstation.local.console import ConsoleStream, RunStats, install
from killstream_workstation.local.database import database_url, local_dir, migrate_database, url_origin, where
from killstream_workstation.local.lock import RunLock
from killstream_workstation.local.pipeline import RECONCILE_HOUR_UTC, AlertSettings, LocalPipeline, PipelineSettings
from killstream_workstation.local.preflight import OFFLINE_HINT, check_feed, check_settings
from killstream_workstation.local.replay import BUILT_IN_COUNT, ReplaySet, replay_documents
from killstream_workstation.local.state import RunState
from killstream_workstation.names import NameBook
from killstream_workstation.problems import UsageProblem

RULE = "━" * 60
BUILT_IN = ""
"""What `--replay` with no folder stands for: the built-in generated corpus."""
ENRICH_EVERY_LIVE = 60.0  # template.yaml: EnricherFunction's schedule
ENRICH_EVERY_REPLAY = 10.0
# The contract's bounds (killstream.config.PollerConfig), so a flag out of them is refused by name.
BUDGET_SECONDS = (1, 900)
PACING_MS = (0, 60_000)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_number(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def share(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (a share of the packages), got {text}")
    return value


def whole_number(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replay",
        metavar="DIR",
        nargs="?",
        const=BUILT_IN,
        help="serve a folder of ESI killmail files (*.json with their killmail_hash) through a local R2Z2 (or RedisQ) "
        f"and ESI instead of the live feed (no network needed); without DIR, {BUILT_IN_COUNT} generated killmails",
    )
    parser.add_argument(
        "--rate",
        type=positive_number,
        default=1.5,
        help="replay: publications per second (default 1.5; the poller takes at most one per pacing interval)",
    )
    parser.add_argument(
        "--inline-ratio",
        type=share,
        default=0.5,
        help="replay: share of packages carrying the ESI killmail, 0 to 1 (default 0.5; the rest are fetched from ESI)",
    )
    parser.add_argument("--source", choices=["r2z2", "redisq"], help="default: $KILLSTREAM_SOURCE, else r2z2")
    parser.add_argument(
        "--queue-id", help="redisq: the queueID to listen with (default: $REDISQ_QUEUE_ID; a replay needs none)"
    )
    parser.add_argument(
        "--pacing-ms",
        type=whole_number(*PACING_MS),
        help="milliseconds between feed requests (default: $POLL_PACING_MS, else 500)",
    )
    parser.add_argument(
        "--catchup-pacing-ms",
        type=whole_number(*PACING_MS),
        help="R2Z2 behind the head: milliseconds between requests (default: $POLL_CATCHUP_PACING_MS, else 100)",
    )
    parser.add_argument(
        "--budget",
        type=whole_number(*BUDGET_SECONDS),
        help="seconds per poller tick, 1 to 900 (default: $POLL_BUDGET_SECONDS, else 50)",
    )
    parser.add_argument("--duration", type=positive_number, help="stop by itself after this many seconds")
    parser.add_argument("--user-agent", help="default: $USER_AGENT; the live feed requires app/version (contact)")
    parser.add_argument("--database-url", help="default: $DATABASE_URL, else the embedded server under .local/")
    parser.add_argument(
        "--stats-every", type=positive_number, default=30.0, help="seconds between stats lines (default 30)"
    )
    parser.add_argument(
        "--enrich-every",
        type=positive_number,
        help=f"seconds between enricher runs (default {ENRICH_EVERY_LIVE:g} live, as deployed; "
        f"{ENRICH_EVERY_REPLAY:g} in a replay)",
    )
    parser.add_argument(
        "--alert-webhook",
        metavar="URL",
        help="post the killmails the alert pattern matches to this Discord or Slack webhook (real requests)",
    )
    parser.add_argument(
        "--alert-pattern",
        metavar="FILE",
        help="the alert rule's EventBridge event pattern (JSON; default: kills worth >= 10B ISK, as deployed)",
    )
    parser.add_argument(
        "--alert-kind",
        choices=["discord", "slack"],
        help="what the webhook speaks, when its URL is not discord.com/api/webhooks/… or hooks.slack.com/services/…",
    )
    parser.add_argument("--verbose", action="store_true", help="show every log line, not only killmails and problems")


def run(args: argparse.Namespace) -> int:
    out = ConsoleStream(sys.stdout)
    handler = logger.registered_handler
    log_stream = handler.stream if isinstance(handler, logging.StreamHandler) else None
    saved_stdout, sys.stdout = sys.stdout, out
    try:
        return _run(args, out)
    finally:
        sys.stdout = saved_stdout
        if isinstance(handler, logging.StreamHandler) and handler.stream is out:
            handler.setStream(log_stream)  # the log's own stream back (the console had it)


def alert_settings(args: argparse.Namespace) -> AlertSettings | None:
    """The alert rule `--alert-webhook` asks for, checked before anything starts: the pattern's
    grammar, and that the webhook's kind is known (from its URL or --alert-kind)."""
    if not args.alert_webhook:
        if args.alert_pattern or args.alert_kind:
            raise UsageProblem("--alert-pattern and --alert-kind need --alert-webhook, the webhook to post to")
        return None
    if not re.match(r"^https?://[^/\s]+/", args.alert_webhook):
        raise UsageProblem(f"--alert-webhook must be an http(s) URL, got {redact_url(args.alert_webhook)}")
    try:
        webhook_kind(args.alert_webhook, args.alert_kind, variable="--alert-kind")
        pattern = (
            load_pattern(args.alert_pattern)
            if args.alert_pattern
            else check_pattern_text(json.dumps(DEFAULT_PATTERN), "the default pattern")
        )
    except (ConfigError, PatternError) as exc:
        raise UsageProblem(str(exc)) from None
    return AlertSettings(webhook_url=args.alert_webhook, pattern=pattern, kind=args.alert_kind)


def _user_agent(args: argparse.Namespace, replay: bool) -> str:
    agent = args.user_agent or os.environ.get("USER_AGENT", "").strip()
    if agent:
        return agent
    if replay:
        return f"killstream/{__version__} (local replay)"
    raise UsageProblem(
        "the live feed needs a User-Agent with your contact: USER_AGENT='killstream/0.1 (you@example.com)' "
        f"make run — or try offline: {OFFLINE_HINT}"
    )


def _run(args: argparse.Namespace, out: ConsoleStream) -> int:
    replay: ReplaySet | None = None if args.replay is None else replay_documents(args.replay or None)
    if replay is not None:
        for rejected in replay.rejected:
            print(f"⚠️  --replay: left out {rejected}", file=sys.stderr)
    agent = _user_agent(args, replay is not None)
    checked = check_settings(
        os.environ,
        user_agent=agent,
        source=args.source,
        pacing_ms=args.pacing_ms,
        catchup_pacing_ms=args.catchup_pacing_ms,
        budget_seconds=args.budget,
        queue_id=args.queue_id,
        replay=replay is not None,
    )
    config = checked.poller
    alert = alert_settings(args)
    lock = RunLock(local_dir()).acquire()
    try:
        if replay is None:
            check_feed(config.source, config.r2z2_url if config.source == "r2z2" else config.redisq_url, agent)
        return _run_pipeline(args, out, replay, checked.extra_env, config, agent, alert)
    finally:
        lock.release()


def _run_pipeline(
    args: argparse.Namespace,
    out: ConsoleStream,
    replay: ReplaySet | None,
    extra_env: dict[str, str],
    config: PollerConfig,
    agent: str,
    alert: AlertSettings | None = None,
) -> int:
    url = database_url(args.database_url)
    applied = migrate_database(url, url_origin(args.database_url))
    print(f"Schema: {'applied ' + ', '.join(applied) if applied else 'up to date'}")

    settings = PipelineSettings(
        database_url=url,
        user_agent=agent,
        source=config.source,
        replay=None if replay is None else replay.docs,
        replay_rate=args.rate,
        inline_ratio=args.inline_ratio,
        pacing_ms=config.pacing_ms,
        catchup_pacing_ms=config.catchup_pacing_ms,
        budget_seconds=config.budget_seconds,
        tick_interval=config.budget_seconds + 10 if replay is None else config.budget_seconds,
        enrich_interval=args.enrich_every or (ENRICH_EVERY_LIVE if replay is None else ENRICH_EVERY_REPLAY),
        extra_env=extra_env,
        alert=alert,
        state_dir=local_dir(),
        # a RedisQ replay has no local history to check against (only the local R2Z2 serves one)
        reconcile_daily=not (replay is not None and config.source == "redisq"),
    )
    stats = RunStats()
    pipeline = LocalPipeline(settings, stats)
    names = NameBook(url)
    state = RunState(local_dir())
    install(logger, stats, verbose=args.verbose, stream=out, names=names)
    try:
        pipeline.setup()
        _banner(args, pipeline, replay, config)
        state.publish_stack(_stack(pipeline, url, agent))
        pipeline.start()
        previous = [signal.signal(s, lambda *_: pipeline.stop_event.set()) for s in (signal.SIGINT, signal.SIGTERM)]
        try:
            _watch(args, pipeline, stats, replay, out)
            print("\n🛑 Shutting down: finishing the tick and the batch in flight…")
            state.withdraw_stack()
            pipeline.stop()
        finally:
            for number, handler in zip((signal.SIGINT, signal.SIGTERM), previous, strict=True):
                signal.signal(number, handler)
    finally:
        # whatever ended the run (Ctrl+C at start-up, the reader gone, a failure), nothing is left running
        state.withdraw_stack()
        pipeline.stop()
        names.close()
    print(stats.final())
    if pipeline.saved is not None:
        print(f"💾 Saved for the next run in {state.path}: the cursor and every message still queued")
    return 0


def _stack(pipeline: LocalPipeline, url: str, agent: str) -> dict[str, str]:
    """Where this run's stack is, for `killstream reconcile` in another shell."""
    environment = pipeline.environment()
    return {
        "aws_endpoint_url": pipeline.aws.endpoint_url,
        "queue_url": pipeline.aws.queue_url,
        "dlq_url": pipeline.aws.dlq_url,
        "history_url": environment.get("HISTORY_URL", ""),
        "esi_url": environment.get("ESI_URL", ""),
        "database_url": url,
        "user_agent": agent,
    }


def _banner(args: argparse.Namespace, pipeline: LocalPipeline, replay: ReplaySet | None, config: PollerConfig) -> None:
    if replay is not None and pipeline.replay is not None:
        origin = f"from {args.replay}" if args.replay else "(generated)"
        feed = f"local replay of {len(replay.docs)} killmails {origin} at {args.rate:g}/s on {pipeline.replay.url}"
    elif config.source == "redisq":
        feed = f"{config.redisq_url} (queueID {config.redisq_queue_id})"
    else:
        feed = config.r2z2_url
    print(f"🌊 killstream {__version__} — local pipeline started")
    print(f"📡 Source: {config.source} — {feed}")
    print(f"📬 Queue: {pipeline.aws.queue_url} (DLQ {pipeline.aws.dlq_url}) on {pipeline.aws.endpoint_url}")
    catchup = min(config.catchup_pacing_ms, config.pacing_ms)  # the gate never paces slower behind the head
    budget = config.budget_seconds
    print(f"⏱️  Poll pacing: {config.pacing_ms} ms ({catchup} ms catching up on R2Z2), tick budget {budget} s")
    print(f"🗄️  Database: {where(pipeline.settings.database_url)}")
    print(
        f"🏷️  Enricher: every {pipeline.settings.enrich_interval:g} s, "
        f"names from {os.environ.get('ESI_URL', DEFAULT_ESI_URL)}"
    )
    resumed = pipeline.resumed
    if resumed:
        print(
            f"↩️  Resuming the last run of this feed at cursor {resumed.cursor}: {len(resumed.queue)} queued and "
            f"{len(resumed.dlq)} dead-lettered message(s) restored"
        )
    else:
        print(f"🆕 Starting afresh (nothing saved for this feed and database in {local_dir()})")
    if pipeline.settings.reconcile_daily:
        print(f"🔎 Reconciler: daily at {RECONCILE_HOUR_UTC:02d}:00 UTC; now: killstream reconcile (uses this stack)")
    else:
        print("🔎 Reconciler: off (a RedisQ replay has no local history to check against)")
    print(f"📣 Events: bus {pipeline.aws.event_bus_name}")
    alert = pipeline.settings.alert
    if alert is not None:
        kind = webhook_kind(alert.webhook_url, alert.kind)
        rule = args.alert_pattern or "kills worth >= 10B ISK"
        print(f"🚨 Alerts: {rule} → {kind} webhook {redact_url(alert.webhook_url)}")
    print(RULE)
    print("🎯 Listening for killmails...  (Ctrl+C to stop)\n")


def _watch(
    args: argparse.Namespace, pipeline: LocalPipeline, stats: RunStats, replay: ReplaySet | None, out: ConsoleStream
) -> None:
    """Until Ctrl+C/SIGTERM, --duration, or the reader of the output goes away."""
    deadline = time.monotonic() + args.duration if args.duration else None
    next_stats = time.monotonic() + args.stats_every
    replay_reported = False
    while not pipeline.stop_event.wait(0.5):
        now = time.monotonic()
        if out.closed_by_reader.is_set() or (deadline and now >= deadline):
            break
        if now >= next_stats:
            pipeline.refresh_dlq_count()
            print(f"📊 {stats.line()}")
            next_stats = now + args.stats_every
        if replay is not None and not replay_reported and _replay_complete(pipeline, stats, replay):
            print(f"🏁 Replay complete: all {replay.distinct} killmails published and handled. Ctrl+C to stop.")
            replay_reported = True


def _replay_complete(pipeline: LocalPipeline, stats: RunStats, replay: ReplaySet) -> bool:
    """Every replayed killmail published and handled (stored, skipped, updated or dead-lettered),
    by this run or the runs it resumed, and nothing left in the queue."""
    if pipeline.replay is None or not pipeline.replay.done.is_set():
        return False
    before = set(pipeline.resumed.handled) if pipeline.resumed else set()
    with stats.lock:
        handled = len(stats.handled | before)
    return handled >= replay.distinct and pipeline.aws.queue_depth(pipeline.aws.queue_url) == 0
