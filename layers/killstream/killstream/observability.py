"""One place for logging and metrics: Powertools Logger (JSON) and Metrics (EMF), and the names
of every metric the functions publish (the alarms and the dashboard in template.yaml use them).

Service name and namespace come from POWERTOOLS_SERVICE_NAME and
POWERTOOLS_METRICS_NAMESPACE, as Powertools reads them."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "killstream"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "killstream"))


class Metric:
    """Metric names (namespace `killstream`, dimension `service`). They are a contract."""

    # poller, once per tick
    PACKAGES_RECEIVED = "PackagesReceived"
    PACKAGES_ENQUEUED = "PackagesEnqueued"
    EMPTY_POLLS = "EmptyPolls"
    SOURCE_ERRORS = "SourceErrors"
    INVALID_PACKAGES = "InvalidPackages"
    RATE_LIMITED = "RateLimited"
    SOURCE_REFUSED = "SourceRefused"
    SEQUENCE_GAPS = "SequenceGaps"
    ESI_DROPPED_FOR_SIZE = "EsiDroppedForSize"
    ENQUEUE_FAILURES = "EnqueueFailures"
    CURSOR_LAG = "CursorLag"
    POLL_SECONDS = "PollSeconds"
    PLACEHOLDER_PACKAGES = "PlaceholderPackages"
    UPDATE_POINTERS_FOLLOWED = "UpdatePointersFollowed"
    UPDATE_POINTERS_EXPIRED = "UpdatePointersExpired"
    # fetcher, once per batch
    KILLMAILS_STORED = "KillmailsStored"
    KILLMAILS_DUPLICATE = "KillmailsDuplicate"
    ZKB_UPDATED = "ZkbUpdated"
    ESI_FETCHES = "EsiFetches"
    ESI_ERRORS = "EsiErrors"
    ESI_RATE_LIMITED = "EsiRateLimited"
    PERMANENT_FAILURES = "PermanentFailures"
    TRANSIENT_FAILURES = "TransientFailures"
    INGEST_LAG_SECONDS = "IngestLagSeconds"
    DB_WRITE_MS = "DbWriteMs"
    # fetcher, once per batch: its killmail events on the bus (killstream/events)
    EVENTS_PUBLISHED = "EventsPublished"
    EVENT_PUBLISH_FAILURES = "EventPublishFailures"
    # reconciler, once per run
    DAYS_CHECKED = "DaysChecked"
    KILLMAILS_MISSING = "KillmailsMissing"
    KILLMAILS_RECOVERED = "KillmailsRecovered"
    DAYS_INCOMPLETE = "DaysIncomplete"
    DAYS_STILL_INCOMPLETE = "DaysStillIncomplete"  # incomplete after two runs or more: the alarm's
    HISTORY_ERRORS = "HistoryErrors"
    HISTORY_REQUESTS = "HistoryRequests"
    # backfill, once per invocation (the state machine's Lambda: one day)
    BACKFILL_DAYS = "BackfillDays"
    BACKFILL_DAYS_FAILED = "BackfillDaysFailed"  # a day not complete after its run: the alarm's
    BACKFILL_KILLMAILS_STORED = "BackfillKillmailsStored"
    BACKFILL_KILLMAIL_ERRORS = "BackfillKillmailErrors"
    # enricher, once per run (with EsiFetches, EsiErrors and EsiRateLimited)
    NAMES_RESOLVED = "NamesResolved"
    NAMES_UNRESOLVABLE = "NamesUnresolvable"
    NAMES_PENDING = "NamesPending"
    # notifier, once per batch of alerts (killstream/alerts)
    ALERTS_POSTED = "AlertsPosted"
    ALERTS_DUPLICATE = "AlertsDuplicate"
    ALERTS_RETRIED = "AlertsRetried"
    ALERTS_DEAD_LETTERED = "AlertsDeadLettered"
    WEBHOOK_RATE_LIMITED = "WebhookRateLimited"


__all__ = ["logger", "metrics", "Metric", "MetricUnit"]
