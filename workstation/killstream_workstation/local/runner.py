"""`killstream run` (what `make run` runs): the local pipeline with the original worker's
console — banner, a line per killmail (named where the enricher already knows the names),
the enricher's runs, periodic stats, final statistics on Ctrl+C/SIGTERM."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time

import requests

from killstream import __version__
from killstream.alerts.webhook import redact_url, webhook_kind
from killstream.config import DEFAULT_ESI_URL, DEFAULT_R2Z2_URL, PollerConfig, int_setting, user_agent
from killstream.errors import ConfigError
from killstream.observability import logger
from killstream_workstation.alerts.patterns import DEFAULT_PATTERN, PatternError, check_pattern_text, load_pattern
from killstream_workstation.local.console import RunStats, install
from killstream_workstation.local.database import database_url, migrate_database
from killstream_workstation.local.pipeline import AlertSettings, LocalPipeline, PipelineSettings
from killstream_workstation.local.replay import BUILT_IN_COUNT, replay_documents
from killstream_workstation.names import NameBook

RULE = "━" * 60
BUILT_IN = ""
"""What `--replay` with no folder stands for: the built-in generated corpus."""
OFFLINE_HINT = 'make run ARGS="--replay"'
ENRICH_EVERY_LIVE = 60.0  # template.yaml: EnricherFunction's schedule
ENRICH_EVERY_REPLAY = 10.0


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replay",
        metavar="DIR",
        nargs="?",
        const=BUILT_IN,
        help="serve a folder of ESI killmail files (*.json with their killmail_hash) through a local R2Z2 and "
        f"ESI instead of the live feed (no network needed); without DIR, {BUILT_IN_COUNT} generated killmails",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=1.5,
        help="replay: publications per second (default 1.5; the poller takes at most one per pacing interval)",
    )
    parser.add_argument(
        "--inline-ratio",
        type=float,
        default=0.5,
        help="replay: share of packages carrying the ESI killmail (default 0.5; the rest are fetched from ESI)",
    )
    parser.add_argument("--source", choices=["r2z2", "redisq"], help="default: $KILLSTREAM_SOURCE, else r2z2")
    parser.add_argument("--pacing-ms", type=int, help="default: $POLL_PACING_MS, else 500")
    parser.add_argument("--budget", type=int, help="seconds per poller tick (default: $POLL_BUDGET_SECONDS, else 50)")
    parser.add_argument("--duration", type=float, help="stop by itself after this many seconds")
    parser.add_argument("--user-agent", help="default: $USER_AGENT; the live feed requires app/version (contact)")
    parser.add_argument("--database-url", help="default: $DATABASE_URL, else the embedded server under .local/")
    parser.add_argument("--stats-every", type=float, default=30.0, help="seconds between stats lines (default 30)")
    parser.add_argument(
        "--enrich-every",
        type=float,
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


def alert_settings(args: argparse.Namespace) -> AlertSettings | None:
    """The alert rule `--alert-webhook` asks for, checked before anything starts: the pattern's
    grammar, and that the webhook's kind is known (from its URL or --alert-kind)."""
    if not args.alert_webhook:
        if args.alert_pattern or args.alert_kind:
            raise ConfigError("--alert-webhook", "--alert-pattern and --alert-kind need a webhook to post to")
        return None
    if not re.match(r"^https?://[^/\s]+/", args.alert_webhook):
        raise ConfigError("--alert-webhook", "must be an http(s) URL")
    webhook_kind(args.alert_webhook, args.alert_kind, variable="--alert-kind")
    pattern = (
        load_pattern(args.alert_pattern)
        if args.alert_pattern
        else check_pattern_text(json.dumps(DEFAULT_PATTERN), "the default pattern")
    )
    return AlertSettings(webhook_url=args.alert_webhook, pattern=pattern, kind=args.alert_kind)


def _live_feed_reachable(url: str, agent: str) -> str | None:
    try:
        requests.get(f"{url}/sequence.json", headers={"User-Agent": agent}, timeout=(5, 10)).raise_for_status()
        return None
    except requests.HTTPError as exc:
        return f"HTTP {exc.response.status_code}"
    except requests.RequestException as exc:
        text = str(exc)
        for marker, meaning in (
            ("NameResolution", "its name does not resolve"),
            ("timed out", "timed out"),
            ("Connection refused", "connection refused"),
        ):
            if marker in text:
                return meaning
        return type(exc).__name__


def run(args: argparse.Namespace) -> int:
    env = os.environ
    replay = None if args.replay is None else replay_documents(args.replay or None)
    agent = (
        args.user_agent
        or env.get("USER_AGENT")
        or (f"killstream/{__version__} (local replay)" if replay is not None else None)
    )
    try:
        agent = user_agent({"USER_AGENT": agent or ""})
    except ConfigError:
        print(
            "killstream run: the live feed needs a User-Agent with your contact: "
            "USER_AGENT='killstream/0.1 (you@example.com)' make run — or try offline: "
            f"{OFFLINE_HINT}",
            file=sys.stderr,
        )
        return 2
    source = args.source or env.get("KILLSTREAM_SOURCE", "r2z2")
    try:  # the flags win over the environment; both go through the contract's checks
        budget = int_setting(
            {"POLL_BUDGET_SECONDS": str(args.budget or env.get("POLL_BUDGET_SECONDS", ""))},
            "POLL_BUDGET_SECONDS",
            50,
            1,
            900,
        )
        pacing = int_setting(
            {"POLL_PACING_MS": str(args.pacing_ms if args.pacing_ms is not None else env.get("POLL_PACING_MS", ""))},
            "POLL_PACING_MS",
            500,
            0,
            60_000,
        )
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2

    if replay is None and source == "r2z2":
        feed = env.get("R2Z2_URL", DEFAULT_R2Z2_URL)
        problem = _live_feed_reachable(feed, agent)
        if problem:
            print(
                f"❌ Cannot reach the live feed at {feed} ({problem}) — run offline instead: {OFFLINE_HINT}",
                file=sys.stderr,
            )
            return 1

    try:
        alert = alert_settings(args)
    except (ConfigError, PatternError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2

    url = database_url(args.database_url)
    applied = migrate_database(url)
    print(f"Schema: {'applied ' + ', '.join(applied) if applied else 'up to date'}")

    settings = PipelineSettings(
        database_url=url,
        user_agent=agent,
        source=source,
        replay=replay,
        replay_rate=args.rate,
        inline_ratio=args.inline_ratio,
        pacing_ms=pacing,
        budget_seconds=budget,
        tick_interval=budget + 10 if replay is None else budget,
        enrich_interval=args.enrich_every or (ENRICH_EVERY_LIVE if replay is None else ENRICH_EVERY_REPLAY),
        alert=alert,
    )
    stats = RunStats()
    pipeline = LocalPipeline(settings, stats)
    names = NameBook(url)
    install(logger, stats, verbose=args.verbose, names=names)
    try:
        pipeline.setup()
        # fail fast, naming the variable, as the Lambda would on its first invocation
        PollerConfig.from_env()
    except ConfigError as exc:
        pipeline.stop()
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2

    if replay is not None:
        origin = f"from {args.replay}" if args.replay else "(generated)"
        feed = f"local replay of {len(replay)} killmails {origin} at {args.rate:g}/s"
    else:
        feed = os.environ.get("R2Z2_URL" if source == "r2z2" else "REDISQ_URL", "")
    print(f"🌊 killstream {__version__} — local pipeline started")
    print(f"📡 Source: {source} — {feed}")
    print(f"📬 Queue: {pipeline.aws.queue_url} (DLQ {pipeline.aws.dlq_url}) on {pipeline.aws.endpoint_url}")
    print(f"⏱️  Poll pacing: {pacing} ms, tick budget {budget} s")
    print(f"🗄️  Database: {url.rsplit('@', 1)[-1]}")
    print(f"🏷️  Enricher: every {settings.enrich_interval:g} s, names from {os.environ.get('ESI_URL', DEFAULT_ESI_URL)}")
    print(f"📣 Events: bus {pipeline.aws.event_bus_name}")
    if alert is not None:
        kind = webhook_kind(alert.webhook_url, alert.kind)
        rule = args.alert_pattern or "kills worth >= 10B ISK"
        print(f"🚨 Alerts: {rule} → {kind} webhook {redact_url(alert.webhook_url)}")
    print(RULE)
    print("🎯 Listening for killmails...  (Ctrl+C to stop)\n")
    pipeline.start()

    signal.signal(signal.SIGINT, lambda *_: pipeline.stop_event.set())
    signal.signal(signal.SIGTERM, lambda *_: pipeline.stop_event.set())
    deadline = time.monotonic() + args.duration if args.duration else None
    next_stats = time.monotonic() + args.stats_every
    replay_reported = False
    while not pipeline.stop_event.wait(0.5):
        now = time.monotonic()
        if deadline and now >= deadline:
            break
        if now >= next_stats:
            pipeline.refresh_dlq_count()
            print(f"📊 {stats.line()}")
            next_stats = now + args.stats_every
        if (
            pipeline.replay
            and replay is not None
            and pipeline.replay.done.is_set()
            and not replay_reported
            and pipeline.aws.queue_depth(pipeline.aws.queue_url) == 0
            and stats.received >= len(replay)
        ):
            print(f"🏁 Replay complete: all {len(replay)} killmails published and handled. Ctrl+C to stop.")
            replay_reported = True

    print("\n🛑 Shutting down: finishing the tick and the batch in flight…")
    pipeline.stop()
    names.close()
    print(stats.final())
    return 0
