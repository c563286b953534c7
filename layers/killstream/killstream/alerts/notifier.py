"""The notifier's core: one SQS batch of alerts (killmail events an EventBridge rule matched) in,
each posted to the webhook, one result per message (docs/events.md, "Alerts").

Every post goes through the one HTTP discipline (killstream/http): the User-Agent, timeouts,
retries of 5xx and transport failures, pacing through the gate, and the invocation's deadline.
Within the webhook's limits (docs/protocols.md, "Webhooks"): posts are paced for the kind (Slack
about one a second), a Discord bucket that says it is spent is waited out, and a 429's
Retry-After is honoured before the same alert is posted again; an alert that cannot wait in the
time left goes back to SQS. A webhook that answers 401/403/404/410 is gone: its alert goes to the
DLQ with Discord's or Slack's answer as the reason, and the webhook is not asked again (Discord
restricts clients that keep using a deleted webhook) until its secret changes. An alert that
Discord or Slack refuses (another 4xx) goes to the DLQ too. An alert this instance has already
posted (a redelivery) is not posted twice."""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aws_lambda_powertools.utilities import parameters

from killstream.alerts.message import message_for
from killstream.alerts.webhook import DISCORD, redact_url, redactor, webhook_kind
from killstream.config import NotifierConfig
from killstream.errors import FetchError, PermanentError, StopTick, TransientError
from killstream.events.detail import DETAIL_TYPES
from killstream.fetcher.dead_letters import DeadLetter, DeadLetterQueue
from killstream.fetcher.messages import Message
from killstream.http.client import HttpClient, RateLimitBackoff, Reply, Unreachable
from killstream.http.gate import Gate, Limits
from killstream.observability import Metric, MetricUnit, logger, metrics

PACING_SECONDS = {DISCORD: 0.25, "slack": 1.0}
"""The least time between two posts: Slack asks for at most one message a second; Discord's
bucket headers say the rest."""
GONE = (401, 403, 404, 410)
MAX_RATE_LIMITED = 10
"""429s one alert may meet in an invocation before it goes back to the queue."""
MIN_RATE_LIMIT_WAIT = 0.2
RESERVE_SECONDS = 2.0
"""Left for the DLQ sends and the answer, after the longest post that may still start."""
REMEMBERED = 10_000
SECRET_MAX_AGE_SECONDS = 300


class Outcome(StrEnum):
    POSTED = "posted"
    DUPLICATE = "duplicate"  # posted already by this instance: not posted again
    RETRY = "retry"  # transient: back to the queue
    DEAD_LETTERED = "dead_lettered"  # permanent: on the DLQ with its reason


OUTCOME_METRICS = {
    Outcome.POSTED: Metric.ALERTS_POSTED,
    Outcome.DUPLICATE: Metric.ALERTS_DUPLICATE,
    Outcome.RETRY: Metric.ALERTS_RETRIED,
    Outcome.DEAD_LETTERED: Metric.ALERTS_DEAD_LETTERED,
}


@dataclass(frozen=True)
class AlertResult:
    outcome: Outcome
    killmail_id: int | None = None
    error: FetchError | None = None

    @property
    def retry(self) -> bool:
        return self.outcome is Outcome.RETRY


@dataclass(frozen=True)
class Alert:
    """A readable alert: which killmail event, and the message posted for it."""

    killmail_id: int
    key: tuple[int, int, str]
    """(killmail_id, zkb_version, detail-type): what a redelivery repeats."""
    detail_type: str
    detail: Mapping[str, Any]


def read_alert(body: str) -> Alert:
    """An SQS body as EventBridge's SQS target writes it: the whole event. PermanentError when it
    is not a killmail event of ours."""
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise PermanentError("invalid_alert", f"the body is not JSON: {exc}") from None
    if not isinstance(event, dict) or not isinstance(event.get("detail"), dict):
        raise PermanentError("invalid_alert", "the body is not an EventBridge event with a detail")
    detail, detail_type = event["detail"], event.get("detail-type")
    killmail_id = detail.get("killmail_id")
    if detail_type not in DETAIL_TYPES or type(killmail_id) is not int:
        raise PermanentError("invalid_alert", f"not a killmail event (detail-type {detail_type!r})")
    version = detail.get("zkb_version")
    return Alert(killmail_id, (killmail_id, version if type(version) is int else 0, detail_type), detail_type, detail)


class Notifier:
    """`process(messages, time_left)` → {message_id: AlertResult}. Keeps its HTTP session, the
    webhook's state and what it posted for the next batch of a warm instance."""

    def __init__(
        self,
        *,
        webhook_url: Callable[[], str],
        kind: str | None,
        dead_letters: DeadLetterQueue,
        user_agent: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._webhook_url = webhook_url
        self._explicit_kind = kind
        self.dead_letters = dead_letters
        self.user_agent = user_agent
        self._clock = clock
        self._sleep = sleep
        self._url: str | None = None
        self.kind = ""
        self.client: HttpClient | None = None
        self._gone: str | None = None
        self._posted: OrderedDict[tuple[int, int, str], None] = OrderedDict()

    @classmethod
    def from_config(cls, config: NotifierConfig) -> Notifier:
        # A provider of its own (not Powertools' shared default): its client is made from the
        # environment this notifier was built in.
        secrets = parameters.SecretsProvider()

        def webhook_url() -> str:
            value = secrets.get(config.webhook_secret_arn, max_age=SECRET_MAX_AGE_SECONDS)
            return (value.decode() if isinstance(value, bytes) else str(value)).strip()

        return cls(
            webhook_url=webhook_url,
            kind=config.webhook_kind,
            dead_letters=DeadLetterQueue(config.alert_dlq_url),
            user_agent=config.user_agent,
        )

    def _connect(self) -> HttpClient:
        """The client for the webhook the secret names now (a new URL starts afresh)."""
        url = self._webhook_url()
        if url != self._url or self.client is None:
            self.kind = webhook_kind(url, self._explicit_kind)  # ConfigError: fails the invocation
            gate = Gate(PACING_SECONDS[self.kind], clock=self._clock, sleep=self._sleep)
            self.client = HttpClient(gate, self.user_agent, redact=redactor(url))
            self._url, self._gone = url, None
        return self.client

    def process(self, messages: Sequence[Message], time_left: float) -> dict[str, AlertResult]:
        client = self._connect()
        # A post that starts may take its whole connect and read timeouts: none starts that could
        # end past the invocation's deadline (the batch would be retried, its posts made twice).
        hard_end = self._clock() + max(0.0, time_left - RESERVE_SECONDS)
        client.gate.begin(Limits(hard_end=lambda: hard_end, new_work=client.longest_request), lambda until: None)
        results: dict[str, AlertResult] = {}
        letters: list[DeadLetter] = []
        out_of_time: FetchError | None = None
        rate_limited = 0
        for message in messages:
            try:
                alert = read_alert(message.body)
            except PermanentError as unreadable:
                letters.append(DeadLetter(message, unreadable))
                results[message.message_id] = AlertResult(Outcome.DEAD_LETTERED, None, unreadable)
                continue
            if alert.key in self._posted:
                results[message.message_id] = AlertResult(Outcome.DUPLICATE, alert.killmail_id)
                continue
            if out_of_time is not None:
                results[message.message_id] = AlertResult(Outcome.RETRY, alert.killmail_id, out_of_time)
                continue
            error, limited = self._post(client, alert)
            rate_limited += limited
            if error is None:
                self._remember(alert.key)
                results[message.message_id] = AlertResult(Outcome.POSTED, alert.killmail_id)
            elif isinstance(error, PermanentError):
                letters.append(DeadLetter(message, error, killmail_id=alert.killmail_id))
                results[message.message_id] = AlertResult(Outcome.DEAD_LETTERED, alert.killmail_id, error)
            else:
                if error.error_type == "out_of_time":
                    out_of_time = error
                results[message.message_id] = AlertResult(Outcome.RETRY, alert.killmail_id, error)
        refused = self.dead_letters.send(letters) if letters else set()
        for message_id in refused:
            result = results[message_id]
            reason = (
                f"could not dead-letter ({result.error.error_type}: {result.error.message})" if result.error else ""
            )
            results[message_id] = AlertResult(
                Outcome.RETRY, result.killmail_id, TransientError("dlq_unavailable", reason)
            )
        self._report(results, rate_limited)
        return results

    def _post(self, client: HttpClient, alert: Alert) -> tuple[FetchError | None, int]:
        """Post one alert: (None when posted, else why not; the 429s met)."""
        assert self._url is not None
        if self._gone is not None:
            return PermanentError("webhook_gone", self._gone), 0
        body = message_for(self.kind, alert.detail, alert.detail_type)
        # Discord confirms a message it saved only when asked to wait for it.
        url = f"{self._url}{'&' if '?' in self._url else '?'}wait=true" if self.kind == DISCORD else self._url
        backoff = RateLimitBackoff()
        limited = 0
        while True:
            try:
                reply = client.post(url, body)
            except Unreachable as exc:
                return TransientError("webhook_unavailable", f"{self.kind} webhook unreachable: {exc}"), limited
            except StopTick:
                return TransientError("out_of_time", "no time left in this invocation to post"), limited
            self._observe_bucket(client, reply)
            if 200 <= reply.status < 300:
                return None, limited
            if reply.status == 429:
                limited += 1
                if limited >= MAX_RATE_LIMITED:
                    return TransientError("webhook_rate_limited", f"{self.kind} answered 429 {limited} times"), limited
                client.gate.hold(max(MIN_RATE_LIMIT_WAIT, backoff.wait(_retry_after(reply))))
                continue
            answer = f"{self.kind} answered {reply.status}: {_excerpt(reply)}"
            if reply.status in GONE:
                self._gone = f"{answer} (webhook {redact_url(self._url)} deleted or revoked: not asked again)"
                return PermanentError("webhook_gone", self._gone), limited
            return PermanentError("webhook_rejected", answer), limited

    @staticmethod
    def _observe_bucket(client: HttpClient, reply: Reply) -> None:
        """Discord's bucket headers: once it says none are left, wait for its reset."""
        if reply.headers.get("X-RateLimit-Remaining") == "0":
            reset_after = _seconds(reply.headers.get("X-RateLimit-Reset-After"))
            if reset_after is not None:
                client.gate.hold(reset_after)

    def _remember(self, key: tuple[int, int, str]) -> None:
        self._posted[key] = None
        while len(self._posted) > REMEMBERED:
            self._posted.popitem(last=False)

    def _report(self, results: Mapping[str, AlertResult], rate_limited: int) -> None:
        for result in results.values():
            if result.error is None:
                logger.info(
                    f"alert {result.outcome.value} {result.killmail_id}",
                    extra={"killmail_id": result.killmail_id, "alert": result.outcome.value, "kind": self.kind},
                )
            else:
                logger.warning(
                    f"alert for {result.killmail_id or 'message'} not posted: {result.error.message}",
                    extra={
                        "killmail_id": result.killmail_id,
                        "alert": result.outcome.value,
                        "error_type": result.error.error_type,
                        "reason": result.error.message,
                        "kind": self.kind,
                    },
                )
        outcomes = [result.outcome for result in results.values()]
        for outcome, name in OUTCOME_METRICS.items():
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=outcomes.count(outcome))
        metrics.add_metric(name=Metric.WEBHOOK_RATE_LIMITED, unit=MetricUnit.Count, value=rate_limited)


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _retry_after(reply: Reply) -> str | None:
    """Retry-After, else Discord's JSON `retry_after` (seconds)."""
    if reply.headers.get("Retry-After") is not None:
        return reply.headers["Retry-After"]
    try:
        doc = json.loads(reply.text)
    except ValueError:
        return None
    value = doc.get("retry_after") if isinstance(doc, dict) else None
    return str(value) if isinstance(value, int | float) else None


def _excerpt(reply: Reply) -> str:
    return reply.text.strip()[:300] or "(no body)"
