"""The one configuration contract: environment variables read by the Lambda handlers,
the local runner and template.yaml alike. A bad value fails fast, naming the variable."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from killstream.errors import ConfigError

SOURCES = ("r2z2", "redisq")
DEFAULT_R2Z2_URL = "https://r2z2.zkillboard.com/ephemeral"
DEFAULT_REDISQ_URL = "https://zkillredisq.stream/listen.php"
DEFAULT_ESI_URL = "https://esi.evetech.net"
DEFAULT_ESI_COMPATIBILITY_DATE = "2026-08-18"
"""The newest date ESI listed in October 2026 (docs/protocols.md, "ESI")."""
DEFAULT_HISTORY_URL = "https://r2z2.zkillboard.com/history"
DEFAULT_EVEREF_URL = "https://data.everef.net/killmails"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
WEBHOOK_KINDS = ("auto", "discord", "slack")

FETCHER_TIMEOUT_SECONDS = 30
"""template.yaml's FetcherFunction Timeout (a test holds the two equal): the fetcher's database
limits derive from it, here and nowhere else."""
FETCHER_BATCH_SIZE = 100
"""template.yaml's FetcherBatchSize default (a test holds the two equal; the local pipeline gathers
batches of this size): up to this many SQS messages per fetcher invocation. A backlog is then
written in transactions of 100 (the writer at 10 a transaction does about half its rate at
100), a quiet feed still waits at most FETCHER_BATCHING_WINDOW_SECONDS."""
FETCHER_BATCHING_WINDOW_SECONDS = 2
"""template.yaml's MaximumBatchingWindowInSeconds: how long the event source gathers a batch
(a BatchSize over 10 needs at least 1)."""
DB_STATEMENT_TIMEOUT_MS = FETCHER_TIMEOUT_SECONDS * 1000 // 3
"""statement_timeout of the fetcher's connection: one statement (a lock wait, a connection whose
server went away) can take a third of the invocation, never the whole of it."""
DB_TCP_USER_TIMEOUT_MS = DB_STATEMENT_TIMEOUT_MS
"""How long sent data may stay unacknowledged before the connection is dropped (a half-open
connection after an RDS failover): the server-side statement_timeout cannot end that wait."""
DB_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
"""TCP keepalives: an idle connection to a server that is gone is found out in about 11 s."""


def _text(env: Mapping[str, str], name: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = env.get(name, "").strip()
    if not value:
        if required:
            raise ConfigError(name, "is required")
        return default
    return value


def _required_text(env: Mapping[str, str], name: str) -> str:
    value = _text(env, name, required=True)
    assert value is not None  # _text raised ConfigError otherwise
    return value


def int_setting(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low} and {high}, got {value}")
    return value


def date_setting(env: Mapping[str, str], name: str, default: str) -> str:
    """A calendar date written YYYY-MM-DD."""
    value = _text(env, name, default) or default
    try:
        valid = re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) is not None and bool(date.fromisoformat(value))
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(name, f"must be a date written YYYY-MM-DD, e.g. {default}, got {value!r}")
    return value


def _url(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    """An http(s) URL, without its trailing slash; required when there is no default."""
    value = _text(env, name, default, required=default is None)
    if value is None or not re.match(r"^https?://[^/\s]+", value):
        raise ConfigError(name, f"must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


# The template's UserAgent pattern: "app/version (contact)".
USER_AGENT_RE = re.compile(r"^[^\s/]+/\S+ \(.*\S.*\)$")
APP_VERSION_RE = re.compile(r"^[^\s/()]+/[^\s()]+$")


def user_agent(env: Mapping[str, str]) -> str:
    """zKillboard and ESI refuse anonymous clients: insist on `app/version (contact)`."""
    value = _required_text(env, "USER_AGENT")
    if USER_AGENT_RE.match(value):
        return value
    if APP_VERSION_RE.match(value):
        raise ConfigError(
            "USER_AGENT",
            f"{value!r} has no contact: zKillboard and ESI want one to reach you by, e.g. '{value} (you@example.com)'",
        )
    raise ConfigError(
        "USER_AGENT", f"must be 'app/version (contact)', e.g. 'killstream/0.1 (you@example.com)', got {value!r}"
    )


def _redisq_queue_id(env: Mapping[str, str], source: str) -> str | None:
    value = _text(env, "REDISQ_QUEUE_ID")
    if value is None and source == "redisq":
        # docs/protocols.md, "RedisQ": the queue's position is kept per queueID
        raise ConfigError("REDISQ_QUEUE_ID", "is required when the source is redisq (one id per deployment)")
    return value


@dataclass(frozen=True)
class PollerConfig:
    source: str
    r2z2_url: str
    redisq_url: str
    redisq_queue_id: str | None
    redisq_ttw: int
    redisq_filter: str | None
    pacing_ms: int
    catchup_pacing_ms: int
    budget_seconds: int
    queue_url: str
    cursor_parameter: str | None
    user_agent: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PollerConfig:
        env = os.environ if env is None else env
        source = (_text(env, "KILLSTREAM_SOURCE", "r2z2") or "r2z2").lower()
        if source not in SOURCES:
            raise ConfigError("KILLSTREAM_SOURCE", f"must be one of {', '.join(SOURCES)}, got {source!r}")
        config = cls(
            source=source,
            r2z2_url=_url(env, "R2Z2_URL", DEFAULT_R2Z2_URL),
            redisq_url=_url(env, "REDISQ_URL", DEFAULT_REDISQ_URL),
            redisq_queue_id=_redisq_queue_id(env, source),
            redisq_ttw=int_setting(env, "REDISQ_TTW", 1, 1, 10),
            redisq_filter=_text(env, "REDISQ_FILTER"),
            pacing_ms=int_setting(env, "POLL_PACING_MS", 500, 0, 60_000),
            catchup_pacing_ms=int_setting(env, "POLL_CATCHUP_PACING_MS", 100, 0, 60_000),
            budget_seconds=int_setting(env, "POLL_BUDGET_SECONDS", 50, 1, 900),
            queue_url=_url(env, "QUEUE_URL"),
            cursor_parameter=_text(env, "CURSOR_PARAMETER", required=source == "r2z2"),
            user_agent=user_agent(env),
        )
        return config


@dataclass(frozen=True)
class DatabaseConfig:
    database_url: str | None
    secret_arn: str | None
    sslmode: str | None
    sslrootcert: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DatabaseConfig:
        env = os.environ if env is None else env
        url = _text(env, "DATABASE_URL")
        arn = _text(env, "DB_SECRET_ARN")
        if not url and not arn:
            raise ConfigError("DATABASE_URL", "set DATABASE_URL or DB_SECRET_ARN")
        if arn and not arn.startswith("arn:"):
            raise ConfigError("DB_SECRET_ARN", f"must be a Secrets Manager ARN, got {arn!r}")
        # credentials from Secrets Manager mean a real database: TLS verified unless told otherwise
        sslmode = _text(env, "DB_SSLMODE", "verify-full" if arn else None)
        if sslmode is not None and sslmode not in SSL_MODES:
            raise ConfigError("DB_SSLMODE", f"must be one of {', '.join(SSL_MODES)}, got {sslmode!r}")
        return cls(database_url=url, secret_arn=arn, sslmode=sslmode, sslrootcert=_text(env, "DB_SSLROOTCERT"))


# An EventBridge bus: its name, or its ARN.
EVENT_BUS_RE = re.compile(r"^(arn:aws[a-z-]*:events:[a-z0-9-]+:\d{12}:event-bus/)?[/.\-_A-Za-z0-9]{1,256}$")


def event_bus_name(env: Mapping[str, str]) -> str | None:
    """EVENT_BUS_NAME: where the fetcher publishes its killmail events; unset, it publishes none."""
    value = _text(env, "EVENT_BUS_NAME")
    if value is not None and not EVENT_BUS_RE.match(value):
        raise ConfigError("EVENT_BUS_NAME", f"must be an EventBridge bus name or ARN, got {value!r}")
    return value


@dataclass(frozen=True)
class FetcherConfig:
    esi_url: str
    esi_compatibility_date: str
    esi_parallelism: int
    user_agent: str
    dlq_url: str
    database: DatabaseConfig
    event_bus_name: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FetcherConfig:
        env = os.environ if env is None else env
        return cls(
            esi_url=_url(env, "ESI_URL", DEFAULT_ESI_URL),
            esi_compatibility_date=date_setting(env, "ESI_COMPATIBILITY_DATE", DEFAULT_ESI_COMPATIBILITY_DATE),
            esi_parallelism=int_setting(env, "ESI_PARALLELISM", 4, 1, 16),
            user_agent=user_agent(env),
            dlq_url=_url(env, "DLQ_URL"),
            database=DatabaseConfig.from_env(env),
            event_bus_name=event_bus_name(env),
        )


def _optional_url(env: Mapping[str, str], name: str) -> str | None:
    return _url(env, name) if _text(env, name) else None


@dataclass(frozen=True)
class ReconcilerConfig:
    """The daily reconciler (docs/protocols.md, "R2Z2 history"). Without QUEUE_URL (the CLI) it
    fetches the few missing killmails from ESI itself, through the fetcher; DLQ_URL is then where
    its permanent failures go, when set."""

    history_url: str
    days: int
    raw_threshold: int
    pacing_ms: int
    queue_url: str | None
    esi_url: str
    esi_compatibility_date: str
    esi_parallelism: int
    dlq_url: str | None
    user_agent: str
    database: DatabaseConfig

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReconcilerConfig:
        env = os.environ if env is None else env
        return cls(
            history_url=_url(env, "HISTORY_URL", DEFAULT_HISTORY_URL),
            days=int_setting(env, "RECONCILE_DAYS", 7, 1, 31),
            # ESI's killmail bucket (3,600 tokens / 15 min, 2 a fetch) and a raw file's size: see
            # docs/protocols.md, "R2Z2 history" and README, "Completeness".
            raw_threshold=int_setting(env, "RECONCILE_RAW_THRESHOLD", 500, 1, 1_000_000),
            pacing_ms=int_setting(env, "HISTORY_PACING_MS", 1000, 0, 60_000),
            queue_url=_optional_url(env, "QUEUE_URL"),
            esi_url=_url(env, "ESI_URL", DEFAULT_ESI_URL),
            esi_compatibility_date=date_setting(env, "ESI_COMPATIBILITY_DATE", DEFAULT_ESI_COMPATIBILITY_DATE),
            esi_parallelism=int_setting(env, "ESI_PARALLELISM", 4, 1, 16),
            dlq_url=_optional_url(env, "DLQ_URL"),
            user_agent=user_agent(env),
            database=DatabaseConfig.from_env(env),
        )


@dataclass(frozen=True)
class BackfillConfig:
    """A backfill from the public archives (docs/protocols.md, "EVE Ref archives"): EVE Ref's
    daily archives, or zKillboard's raw day files (the reconciler's HISTORY_URL)."""

    everef_url: str
    history_url: str
    user_agent: str
    database: DatabaseConfig

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BackfillConfig:
        env = os.environ if env is None else env
        return cls(
            everef_url=_url(env, "EVEREF_URL", DEFAULT_EVEREF_URL),
            history_url=_url(env, "HISTORY_URL", DEFAULT_HISTORY_URL),
            user_agent=user_agent(env),
            database=DatabaseConfig.from_env(env),
        )


@dataclass(frozen=True)
class EnricherConfig:
    esi_url: str
    esi_compatibility_date: str
    user_agent: str
    database: DatabaseConfig

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EnricherConfig:
        env = os.environ if env is None else env
        return cls(
            esi_url=_url(env, "ESI_URL", DEFAULT_ESI_URL),
            esi_compatibility_date=date_setting(env, "ESI_COMPATIBILITY_DATE", DEFAULT_ESI_COMPATIBILITY_DATE),
            user_agent=user_agent(env),
            database=DatabaseConfig.from_env(env),
        )


@dataclass(frozen=True)
class NotifierConfig:
    webhook_secret_arn: str
    webhook_kind: str | None
    alert_dlq_url: str
    user_agent: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NotifierConfig:
        env = os.environ if env is None else env
        arn = _required_text(env, "WEBHOOK_SECRET_ARN")
        if not arn.startswith("arn:"):
            raise ConfigError("WEBHOOK_SECRET_ARN", f"must be a Secrets Manager ARN, got {arn!r}")
        kind = (_text(env, "WEBHOOK_KIND", "auto") or "auto").lower()
        if kind not in WEBHOOK_KINDS:
            raise ConfigError("WEBHOOK_KIND", f"must be one of {', '.join(WEBHOOK_KINDS)}, got {kind!r}")
        return cls(
            webhook_secret_arn=arn,
            webhook_kind=None if kind == "auto" else kind,
            alert_dlq_url=_url(env, "ALERT_DLQ_URL"),
            user_agent=user_agent(env),
        )
