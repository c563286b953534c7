"""The whole pipeline on one machine: the real poller, fetcher and enricher handlers, a local AWS
endpoint (moto), PostgreSQL, and either the live feed or an offline replay; with an alert, the
rule on the event bus, its queue and the real notifier handler posting to a webhook.

The fetcher (and the notifier) are driven as Lambda's SQS event source drives them: batches
really received from the queue, the records the handler did not report in `batchItemFailures`
deleted, the rest left to become visible again, and SQS itself moving them to the DLQ after
maxReceiveCount. The fetcher publishes to the local bus, and moto routes what the rule's pattern
matches to the alert queue, as EventBridge would (with moto's matcher: local/aws.py). The
reconciler runs once a day, as its schedule would (`reconcile_daily`), or on demand
(`run_reconciler`).

With a `state_dir`, a stopped pipeline resumes: stop() saves the cursor, how far the replay had
published, and every message still in the queue or the DLQ (in flight included); setup() takes
them up again when the feed is the same (local/state.py). The alert queue is not saved: its
alerts are posted, or lost with the run."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

from killstream.config import DEFAULT_R2Z2_URL, DEFAULT_REDISQ_URL, FETCHER_TIMEOUT_SECONDS
from killstream.observability import logger, metrics
from killstream_workstation.local.aws import REGION, LocalAlert, LocalAws
from killstream_workstation.local.console import INVOCATION_FAILED, RunStats, StatsCounter
from killstream_workstation.local.database import where
from killstream_workstation.local.lambda_runtime import (
    InvocationKilled,
    LambdaContext,
    StoppableContext,
    load_handler_module,
    sqs_event,
)
from killstream_workstation.local.replay import LOCAL_QUEUE_ID, Replay
from killstream_workstation.local.state import RunState, SavedRun

SCHEDULED_EVENT = {
    "version": "0",
    "id": "local",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "000000000000",
    "region": REGION,
    "resources": [],
    "detail": {},
}
POLLER_TIMEOUT_SECONDS = 60  # template.yaml: PollerFunction Timeout (FetcherFunction's: in killstream.config)
ENRICHER_TIMEOUT_SECONDS = 60  # template.yaml: EnricherFunction Timeout
NOTIFIER_TIMEOUT_SECONDS = 30  # alerts/template.yaml: NotifierFunction Timeout
RECONCILER_TIMEOUT_SECONDS = 900  # template.yaml: ReconcilerFunction Timeout
RECONCILE_HOUR_UTC = 4  # template.yaml: ReconcileSchedule's default, cron(0 4 * * ? *)


@dataclass(frozen=True)
class AlertSettings:
    """One alert rule: its pattern (JSON text), the webhook, and its kind when the URL does not say."""

    webhook_url: str
    pattern: str
    kind: str | None = None
    visibility_timeout: int = 6 * NOTIFIER_TIMEOUT_SECONDS


@dataclass
class PipelineSettings:
    database_url: str
    user_agent: str
    source: str = "r2z2"
    replay: list[dict] | None = None  # killmail documents to publish locally; None = live feed
    replay_rate: float = 2.0  # publications per second
    inline_ratio: float = 0.5  # share of replayed packages carrying the ESI killmail
    esi_latency: float = 0.0
    pacing_ms: int | None = None
    catchup_pacing_ms: int | None = None
    budget_seconds: int = 50
    tick_interval: float = 60.0  # EventBridge fires once a minute
    visibility_timeout: int = 6 * FETCHER_TIMEOUT_SECONDS
    fetcher_workers: int = 1
    duplicate_delivery_rate: float = 0.0  # fault injection: a finished record is not deleted
    stop_request_rate: float = 0.0  # fault injection: a tick is asked to stop (as by SIGTERM) mid-way
    enrich_interval: float | None = None  # seconds between enricher runs (EventBridge: 60); None: no enricher
    alert: AlertSettings | None = None  # the alert rule, its queue and the notifier; None: none
    seed: int = 1
    extra_env: dict = field(default_factory=dict)
    state_dir: Path | None = None
    """Resume from, and save to, this folder (`killstream run`: .local/). None: start afresh."""
    initial_cursor: str | None = None
    """The cursor when there is nothing to resume: default "0" for a replay, "none" (the head) live."""
    reconcile_daily: bool = False
    """Run the reconciler every day at RECONCILE_HOUR_UTC, as its EventBridge schedule does."""


class LocalPipeline:
    poller: ModuleType
    """The poller function's module: one Lambda instance (set by setup(), replaced when killed)."""

    def __init__(self, settings: PipelineSettings, stats: RunStats | None = None):
        self.settings = settings
        self.stats = stats or RunStats()
        self.stop_event = threading.Event()
        self.stopped = False
        self._counter: StatsCounter | None = None
        self._rng = random.Random(settings.seed)
        self._rng_lock = threading.Lock()
        self.duplicate_deliveries = 0
        self.poller_ticks = 0
        self.stop_requests = 0
        self.poller_overruns = 0
        """Poller invocations still running when their Lambda's time was up (Lambda would kill them)."""
        self._aws: LocalAws | None = None
        self.replay: Replay | None = None
        """The offline feed, when the settings ask for a replay (set by setup())."""
        self.fetchers: list[ModuleType] = []
        self.enricher: ModuleType | None = None
        self.enrich_runs: list[dict] = []
        """The summary each enricher run returned, in order."""
        self.reconciler: ModuleType | None = None
        self.queue_arn = ""
        self.alert: LocalAlert | None = None
        """The alert rule's resources on the local endpoint (set by setup() when settings ask)."""
        self.notifier: ModuleType | None = None
        self.resumed: SavedRun | None = None
        """What setup() took up from the last run of the same feed (None: it started afresh)."""
        self.saved: SavedRun | None = None
        """What stop() saved for the next run (None: nothing, or it could not)."""
        self._restored = False
        """setup() has put the resumed messages back: only then may stop() save over them."""
        self.poller_paused = threading.Event()
        self._threads: list[threading.Thread] = []
        self._held: dict[str, dict] = {}
        """Messages a fetcher received and has not deleted: in flight, or waiting to be visible again."""
        self._held_lock = threading.Lock()

    @property
    def aws(self) -> LocalAws:
        """The local AWS endpoint (setup() starts it)."""
        if self._aws is None:
            raise RuntimeError("LocalPipeline.setup() has not run")
        return self._aws

    # --- setup --------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        s = self.settings
        env = {
            "KILLSTREAM_SOURCE": s.source,
            "QUEUE_URL": self.aws.queue_url,
            "DLQ_URL": self.aws.dlq_url,
            "EVENT_BUS_NAME": self.aws.event_bus_name,
            "CURSOR_PARAMETER": self.aws.cursor_parameter,
            "DATABASE_URL": s.database_url,
            "USER_AGENT": s.user_agent,
            "POLL_BUDGET_SECONDS": str(s.budget_seconds),
            # EMF documents are for CloudWatch; locally the console shows the same facts
            # (cleared after each invocation: Powertools prints a set once 100 values pile up)
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "killstream",
        }
        if s.pacing_ms is not None:
            env["POLL_PACING_MS"] = str(s.pacing_ms)
        if s.catchup_pacing_ms is not None:
            env["POLL_CATCHUP_PACING_MS"] = str(s.catchup_pacing_ms)
        if self.replay:
            env.update(self.replay.environment())
            env["HISTORY_PACING_MS"] = "50"
            if s.source == "redisq" and not os.environ.get("REDISQ_QUEUE_ID"):
                env["REDISQ_QUEUE_ID"] = LOCAL_QUEUE_ID
        if self.alert is not None and s.alert is not None:
            env["WEBHOOK_SECRET_ARN"] = self.alert.secret_arn
            env["WEBHOOK_KIND"] = s.alert.kind or "auto"
            env["ALERT_DLQ_URL"] = self.alert.dlq_url
        env.update(s.extra_env)
        return env

    def feed(self) -> str:
        """Which feed a cursor belongs to, and into which database: a replay of these documents
        (through a local R2Z2 or RedisQ), or a live URL. Another database starts afresh: a cursor
        saved for one would skip what the other never had."""
        s = self.settings
        into = where(s.database_url)
        if s.replay is not None:
            ids = ",".join(str(doc["killmail_id"]) for doc in s.replay)
            digest = hashlib.sha1(f"{s.source}|{ids}|{s.inline_ratio}|{s.seed}".encode()).hexdigest()[:16]
            return f"replay:{len(s.replay)}:{digest} -> {into}"
        name, default = ("R2Z2_URL", DEFAULT_R2Z2_URL) if s.source == "r2z2" else ("REDISQ_URL", DEFAULT_REDISQ_URL)
        return f"live:{s.source}:{s.extra_env.get(name) or os.environ.get(name) or default} -> {into}"

    def setup(self) -> LocalPipeline:
        """Everything but the two Lambda loops: AWS endpoint, replay servers, environment."""
        s = self.settings
        self._aws = LocalAws(visibility_timeout=s.visibility_timeout).start()
        self.resumed = RunState(s.state_dir).load(self.feed()) if s.state_dir else None
        # Afresh, replays start at the first sequence; the live feed at its head (no cursor yet).
        fresh = s.initial_cursor or ("0" if s.replay is not None else "none")
        self.aws.set_cursor(self.resumed.cursor if self.resumed else fresh)
        if s.replay is not None:
            self.replay = Replay(
                s.replay,
                rate=s.replay_rate,
                inline_ratio=s.inline_ratio,
                esi_latency=s.esi_latency,
                seed=s.seed,
                source=s.source,
                published=self.resumed.published if self.resumed else 0,
            ).start()
        if s.alert is not None:
            self.alert = self.aws.create_alert(
                pattern=s.alert.pattern, webhook_url=s.alert.webhook_url, visibility_timeout=s.alert.visibility_timeout
            )
        os.environ.update(self.environment())
        # Locally metrics are off (POWERTOOLS_METRICS_DISABLED): an invocation that recorded none,
        # or whose set another thread's invocation flushed, is nothing to warn about.
        warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)
        self._counter = StatsCounter(self.stats)
        logging.getLogger(logger.name).addFilter(self._counter)
        self.poller = load_handler_module("poller")
        # One module per fetcher worker: each is its own Lambda instance, with its own
        # database connection and ESI session, as concurrent executions are in AWS.
        self.fetchers = [load_handler_module("fetcher") for _ in range(s.fetcher_workers)]
        if s.enrich_interval is not None:
            self.enricher = load_handler_module("enricher")
        if self.alert is not None:
            self.notifier = load_handler_module("notifier")
        sqs = self.aws.client("sqs")
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=self.aws.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        if self.resumed:
            _send_all(sqs, self.aws.queue_url, self.resumed.queue)
            _send_all(sqs, self.aws.dlq_url, self.resumed.dlq)
        self._restored = True
        return self

    def start(self) -> LocalPipeline:
        """Start the poller schedule and the fetcher event source."""
        if self._aws is None:
            self.setup()
        self._threads = [threading.Thread(target=self._poll_forever, name="poller")]
        self._threads += [
            threading.Thread(target=self._fetch_forever, args=(module,), name=f"fetcher-{n}")
            for n, module in enumerate(self.fetchers)
        ]
        if self.enricher is not None:
            self._threads.append(threading.Thread(target=self._enrich_forever, args=(self.enricher,), name="enricher"))
        if self.notifier is not None and self.alert is not None:
            self._threads.append(
                threading.Thread(target=self._notify_forever, args=(self.notifier, self.alert), name="notifier")
            )
        if self.settings.reconcile_daily:
            self._threads.append(threading.Thread(target=self._reconcile_daily, name="reconciler"))
        for thread in self._threads:
            thread.start()
        return self

    # --- the two Lambdas ----------------------------------------------------------------

    def _poll_forever(self) -> None:
        while not self.stop_event.is_set():
            if self.poller_paused.is_set():  # an outage of the poller alone (the chaos suite's)
                self.stop_event.wait(0.2)
                continue
            started = time.monotonic()
            context = StoppableContext("killstream-poller", POLLER_TIMEOUT_SECONDS, *self._tick_stops())
            try:
                self.poller.handler(SCHEDULED_EVENT, context)
                self.poller_ticks += 1
                if context.get_remaining_time_in_millis() <= 0:
                    self.poller_overruns += 1
                    logger.error("poller invocation outlived its timeout", extra={"timeout": POLLER_TIMEOUT_SECONDS})
            except InvocationKilled:
                logger.warning("poller instance killed mid-invocation; the next tick starts a fresh one")
                self.poller = load_handler_module("poller")
            except Exception as exc:  # a failed invocation: Lambda logs it and the schedule fires again
                logger.exception(f"poller invocation failed: {exc}", extra={INVOCATION_FAILED: "poller"})
            metrics.clear_metrics()
            # the next scheduled invocation
            self.stop_event.wait(max(0.0, self.settings.tick_interval - (time.monotonic() - started)))

    def _tick_stops(self) -> tuple[threading.Event, ...]:
        """What asks this tick to stop: shutdown, the poller paused (the chaos suite's outage), or
        (fault injection) a stop at a random moment."""
        own = threading.Event()
        with self._rng_lock:
            if self._rng.random() < self.settings.stop_request_rate:
                self.stop_requests += 1
                timer = threading.Timer(self._rng.uniform(0, self.settings.budget_seconds), own.set)
                timer.daemon = True
                timer.start()
        return self.stop_event, self.poller_paused, own

    def _enrich_forever(self, enricher: ModuleType) -> None:
        interval = self.settings.enrich_interval or 0.0
        while not self.stop_event.wait(interval):  # the schedule's first run comes one interval in
            self._enrich_once(
                enricher, StoppableContext("killstream-enricher", ENRICHER_TIMEOUT_SECONDS, self.stop_event)
            )

    def _enrich_once(self, enricher: ModuleType, context: LambdaContext) -> None:
        try:
            self.enrich_runs.append(enricher.handler(SCHEDULED_EVENT, context))
        except Exception as exc:  # a failed run: Lambda logs it and the schedule fires again
            logger.exception(f"enricher invocation failed: {exc}", extra={INVOCATION_FAILED: "enricher"})
        metrics.clear_metrics()

    def _fetch_forever(self, fetcher) -> None:
        self._consume_forever(fetcher, self.aws.queue_url, self.run_fetcher_batch)

    def _notify_forever(self, notifier, alert: LocalAlert) -> None:
        def run(module, sqs, messages: list[dict]) -> set[str]:
            return self.run_batch(
                module,
                sqs,
                messages,
                queue_url=alert.queue_url,
                queue_arn=alert.queue_arn,
                function="killstream-notifier",
                timeout=NOTIFIER_TIMEOUT_SECONDS,
            )

        self._consume_forever(notifier, alert.queue_url, run)

    def _consume_forever(self, module, queue_url: str, run) -> None:
        """Lambda's SQS event source: receive batches of up to 10 and invoke on each."""
        sqs = self.aws.client("sqs")
        while not self.stop_event.is_set():
            messages = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if messages:
                if queue_url == self.aws.queue_url:  # the killmail queue's are saved by stop()
                    with self._held_lock:
                        self._held.update((m["MessageId"], m) for m in messages)
                run(module, sqs, messages)

    def run_fetcher_batch(self, fetcher, sqs, messages: list[dict]) -> set[str]:
        """Invoke the fetcher on one batch and settle it as Lambda does. Returns the failed ids."""
        return self.run_batch(
            fetcher,
            sqs,
            messages,
            queue_url=self.aws.queue_url,
            queue_arn=self.queue_arn,
            function="killstream-fetcher",
            timeout=FETCHER_TIMEOUT_SECONDS,
        )

    def run_batch(
        self, module, sqs, messages: list[dict], *, queue_url: str, queue_arn: str, function: str, timeout: float
    ) -> set[str]:
        """Invoke a queue's handler on one batch and settle it as Lambda does. Returns the failed ids."""
        event = sqs_event(messages, queue_arn)
        context = LambdaContext(function, timeout)
        try:
            response = module.handler(event, context) or {}
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except Exception as exc:  # the whole invocation failed: every record returns to the queue
            failed = {m["MessageId"] for m in messages}
            logger.exception(
                f"{function} invocation failed: {exc}", extra={INVOCATION_FAILED: function.removeprefix("killstream-")}
            )
        metrics.clear_metrics()
        done = [m for m in messages if m["MessageId"] not in failed]
        self.settle(sqs, done, queue_url)
        return failed

    def settle(self, sqs, done: list[dict], queue_url: str | None = None) -> None:
        """Delete the records the handler finished with (duplicate deliveries: from the killmail
        queue only, where the fault injection is)."""
        queue_url = queue_url or self.aws.queue_url
        if self.settings.duplicate_delivery_rate and queue_url == self.aws.queue_url:
            with self._rng_lock:
                kept = [m for m in done if self._rng.random() >= self.settings.duplicate_delivery_rate]
                self.duplicate_deliveries += len(done) - len(kept)
            done = kept
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(chunk)],
            )
        with self._held_lock:
            for message in done:
                self._held.pop(message["MessageId"], None)

    # --- the reconciler -----------------------------------------------------------------

    def run_reconciler(self, event: dict | None = None) -> dict:
        """One invocation of the reconciler's handler (its scheduled event, or one naming days)."""
        if self.reconciler is None:
            self.reconciler = load_handler_module("reconciler")
        context = StoppableContext("killstream-reconciler", RECONCILER_TIMEOUT_SECONDS, self.stop_event)
        try:
            return self.reconciler.handler(SCHEDULED_EVENT if event is None else event, context)
        finally:
            metrics.clear_metrics()

    def _reconcile_daily(self) -> None:
        while not self.stop_event.wait(_seconds_until_hour(RECONCILE_HOUR_UTC)):
            try:
                self.run_reconciler()
            except Exception as exc:  # a failed run: Lambda logs it, and the next day's run comes
                logger.exception(f"reconciler invocation failed: {exc}", extra={INVOCATION_FAILED: "reconciler"})

    # --- running ------------------------------------------------------------------------

    def refresh_dlq_count(self) -> int:
        count = self.aws.queue_depth(self.aws.dlq_url)
        with self.stats.lock:
            self.stats.in_dlq = count
        return count

    def wait_until(self, predicate, timeout: float, poll: float = 0.2) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            if self.stop_event.wait(poll):
                return predicate()
        return predicate()

    def stop(self) -> None:
        """Finish the tick and the batch in flight, then stop everything. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        self.stop_event.set()
        for thread in self._threads:
            thread.join()
        if self.enricher is not None and self.replay is not None:
            # A replay's last killmails may be stored after the enricher's last scheduled run: one
            # more run, once every batch is in, leaves the replayed data named (the local ESI answers
            # at once; live, the next deployment's schedule would do it a minute later).
            self._enrich_once(self.enricher, LambdaContext("killstream-enricher", ENRICHER_TIMEOUT_SECONDS))
        if self._aws:
            self.refresh_dlq_count()
            # interrupted before setup() had restored the last run (Ctrl+C at start-up), the saved
            # state is left as it was: saving now would drop the messages it holds
            if self.settings.state_dir and self._restored:
                try:
                    self.saved = self.save_state()
                except Exception:  # the run still stops; the next one starts from the saved cursor
                    logger.exception("could not save this run's state for the next one")
        if self.replay:
            self.replay.stop()
        if self._aws:
            self.aws.stop()
        if self._counter:
            logging.getLogger(logger.name).removeFilter(self._counter)

    def save_state(self) -> SavedRun:
        """The cursor, the replay's progress, and every message the queue and the DLQ hold,
        for the next run of this feed: the local SQS dies with this process."""
        sqs = self.aws.client("sqs")
        cursor = self.aws.client("ssm").get_parameter(Name=self.aws.cursor_parameter)["Parameter"]["Value"]
        queued = _receive_all(sqs, self.aws.queue_url)
        dead = _receive_all(sqs, self.aws.dlq_url)
        seen = {m["MessageId"] for m in queued + dead}
        with self._held_lock:  # received by a fetcher, not finished, not visible again yet
            queued += [m for message_id, m in self._held.items() if message_id not in seen]
        before = self.resumed
        with self.stats.lock:
            handled = set(self.stats.handled)
        saved = SavedRun(
            feed=self.feed(),
            cursor=cursor,
            published=max(self.replay.published if self.replay else 0, before.published if before else 0),
            queue=[_portable(m) for m in queued],
            dlq=[_portable(m) for m in dead],
            # a replay's killmails handled so far, this run's and the runs' it resumed (live: none kept)
            handled=sorted(handled | set(before.handled if before else ())) if self.replay else [],
        )
        assert self.settings.state_dir is not None
        RunState(self.settings.state_dir).save(saved)
        return saved


def _seconds_until_hour(hour: int) -> float:
    now = datetime.now(UTC)
    at = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    return ((at if at > now else at + timedelta(days=1)) - now).total_seconds()


def _receive_all(sqs, queue_url: str) -> list[dict]:
    """Every visible message, left on the queue (it is about to go away with the endpoint). Each
    is hidden long enough not to come round again while the rest are read."""
    out: dict[str, dict] = {}
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            WaitTimeSeconds=0,
            VisibilityTimeout=3600,
        ).get("Messages", [])
        fresh = [m for m in messages if m["MessageId"] not in out]
        if not fresh:
            return list(out.values())
        out.update((m["MessageId"], m) for m in fresh)


def _portable(message: dict) -> dict:
    attributes = {
        name: {"DataType": value["DataType"], "StringValue": value["StringValue"]}
        for name, value in (message.get("MessageAttributes") or {}).items()
        if "StringValue" in value
    }
    return {"body": message["Body"], "attributes": attributes}


def _send_all(sqs, queue_url: str, messages: list[dict]) -> None:
    for start in range(0, len(messages), 10):
        chunk = messages[start : start + 10]
        entries = [
            {"Id": str(n), "MessageBody": m["body"], "MessageAttributes": m["attributes"]} for n, m in enumerate(chunk)
        ]
        answer = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        if answer.get("Failed"):
            raise RuntimeError(f"the local SQS refused restored messages: {answer['Failed']}")
