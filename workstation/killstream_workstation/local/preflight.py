"""What `killstream run` checks before it starts anything (PostgreSQL, moto, the replay servers):
every setting, through the same contract the Lambdas read (killstream.config), so a bad one is
named at once; and, live, that the chosen feed answers — one line saying what it means if not."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import requests

from killstream.config import EnricherConfig, FetcherConfig, PollerConfig, ReconcilerConfig
from killstream.errors import ConfigError
from killstream.http.client import Reply, answer_message
from killstream_workstation.local.replay import LOCAL_QUEUE_ID
from killstream_workstation.problems import Problem, UsageProblem

OFFLINE_HINT = 'make run ARGS="--replay"'
REDISQ_SHUTDOWN = "2026-05-31"
"""When zKillboard shut its own RedisQ down (docs/protocols.md, "RedisQ")."""

# What the local pipeline sets itself once its endpoints are up: stand-ins, so the contract can
# check everything else before they are.
PLACEHOLDERS = {
    "QUEUE_URL": "http://127.0.0.1/queue",
    "DLQ_URL": "http://127.0.0.1/dlq",
    "CURSOR_PARAMETER": "/killstream-local/r2z2-cursor",
    "DATABASE_URL": "postgresql://127.0.0.1/postgres",
}
# What a replay points the functions at instead (pipeline.py: Replay.environment()), per source.
REPLAY_PLACEHOLDERS = {
    "r2z2": {
        "R2Z2_URL": "http://127.0.0.1/ephemeral",
        "HISTORY_URL": "http://127.0.0.1/history",
        "HISTORY_PACING_MS": "50",
        "ESI_URL": "http://127.0.0.1",
    },
    "redisq": {"REDISQ_URL": "http://127.0.0.1/listen.php", "HISTORY_PACING_MS": "50", "ESI_URL": "http://127.0.0.1"},
}
FLAGS = {
    "KILLSTREAM_SOURCE": "--source",
    "REDISQ_QUEUE_ID": "--queue-id",
    "POLL_PACING_MS": "--pacing-ms",
    "POLL_CATCHUP_PACING_MS": "--catchup-pacing-ms",
    "POLL_BUDGET_SECONDS": "--budget",
    "USER_AGENT": "--user-agent",
}


class ConfigProblem(UsageProblem):
    """A bad setting, naming its variable and the command's flag for it (`flags`: variable → flag)."""

    def __init__(self, error: ConfigError, flags: Mapping[str, str] = FLAGS):
        flag = flags.get(error.variable)
        super().__init__(f"configuration error: {error}" + (f" (set by {flag} or {error.variable})" if flag else ""))
        self.variable = error.variable


class FeedUnreachable(Problem):
    pass


@dataclass(frozen=True)
class RunSettings:
    """The run's settings as the poller will read them, and what the runner adds to its environment."""

    poller: PollerConfig
    extra_env: dict[str, str]


def check_settings(
    env: Mapping[str, str],
    *,
    user_agent: str,
    source: str | None,
    pacing_ms: int | None,
    budget_seconds: int | None,
    queue_id: str | None,
    replay: bool,
    catchup_pacing_ms: int | None = None,
) -> RunSettings:
    """Every setting the poller, the fetcher, the enricher and the reconciler will read, checked
    now: the flags win over the environment, and both go through the contract's checks
    (ConfigProblem names the variable)."""
    extra_env = {"REDISQ_QUEUE_ID": queue_id} if queue_id else {}
    # a replay listens to the local RedisQ with a queueID of its own unless given one (pipeline.py)
    has_queue_id = bool(env.get("REDISQ_QUEUE_ID", "").strip())
    replay_default = {"REDISQ_QUEUE_ID": LOCAL_QUEUE_ID} if replay and not has_queue_id else {}
    flags = {
        "KILLSTREAM_SOURCE": source,
        "POLL_PACING_MS": None if pacing_ms is None else str(pacing_ms),
        "POLL_CATCHUP_PACING_MS": None if catchup_pacing_ms is None else str(catchup_pacing_ms),
        "POLL_BUDGET_SECONDS": None if budget_seconds is None else str(budget_seconds),
    }
    planned = {
        **env,
        **replay_default,
        **{name: value for name, value in flags.items() if value is not None},
        **extra_env,
        **PLACEHOLDERS,
        "USER_AGENT": user_agent,
    }
    if replay:
        planned |= REPLAY_PLACEHOLDERS.get(planned.get("KILLSTREAM_SOURCE", "r2z2").strip().lower(), {})
    try:
        poller = PollerConfig.from_env(planned)
        FetcherConfig.from_env(planned)
        EnricherConfig.from_env(planned)  # `run` runs the enricher on its schedule too
        ReconcilerConfig.from_env(planned)  # and the reconciler once a day
    except ConfigError as error:
        raise ConfigProblem(error) from error
    return RunSettings(poller, extra_env)


def _network_meaning(error: requests.RequestException) -> str:
    text = str(error)
    for marker, meaning in (
        ("NameResolution", "its name does not resolve"),
        ("Name or service not known", "its name does not resolve"),
        ("timed out", "timed out"),
        ("Connection refused", "connection refused"),
        ("Network is unreachable", "the network is unreachable"),
        ("No route to host", "no route to the host"),
        ("SSL", "the TLS handshake failed"),
    ):
        if marker in text:
            return meaning
    return type(error).__name__


def feed_problem(source: str, url: str, user_agent: str) -> str | None:
    """Why the live feed cannot be used from here, or None. R2Z2 is asked for sequence.json;
    RedisQ for its listen URL without a queueID, which pops nothing from any queue."""
    try:
        response = requests.get(
            f"{url}/sequence.json" if source == "r2z2" else url,
            headers={"User-Agent": user_agent},
            timeout=(5, 10),
            allow_redirects=False,
        )
    except requests.RequestException as error:
        return _network_meaning(error)
    status = response.status_code
    if status == 403:
        reply = Reply(status, response.text, response.headers, response.url)
        return f"it refuses service: {answer_message(reply)}"
    if (source == "r2z2" and status != 200) or status >= 500 or status == 404:
        return f"HTTP {status}"
    return None


def check_feed(source: str, url: str, user_agent: str) -> None:
    problem = feed_problem(source, url, user_agent)
    if problem is None:
        return
    if source == "redisq":
        raise FeedUnreachable(
            f"cannot reach RedisQ at {url} ({problem}): zKillboard shut its RedisQ down on {REDISQ_SHUTDOWN}, "
            f"so REDISQ_URL must point at a compatible endpoint; or poll R2Z2 (--source r2z2), "
            f'or run offline: make run ARGS="--source redisq --replay"'
        )
    raise FeedUnreachable(
        f"cannot reach the live feed (R2Z2) at {url} ({problem}): check the network, or run offline: {OFFLINE_HINT}"
    )
