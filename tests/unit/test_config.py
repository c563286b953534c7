"""The configuration contract: defaults, and a bad value fails fast naming its variable."""

import pytest

from killstream.config import (
    DatabaseConfig,
    EnricherConfig,
    FetcherConfig,
    NotifierConfig,
    PollerConfig,
    ReconcilerConfig,
)
from killstream.errors import ConfigError

POLLER = {
    "QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/q",
    "CURSOR_PARAMETER": "/ks/cursor",
    "USER_AGENT": "killstream/0.1 (ops@example.com)",
}
FETCHER = {
    "DLQ_URL": "https://sqs.us-east-1.amazonaws.com/1/dlq",
    "DATABASE_URL": "postgresql://h/db",
    "USER_AGENT": "killstream/0.1 (ops@example.com)",
}


def test_poller_defaults():
    config = PollerConfig.from_env(POLLER)
    assert (config.source, config.pacing_ms, config.budget_seconds, config.redisq_ttw) == ("r2z2", 500, 50, 1)
    assert config.r2z2_url == "https://r2z2.zkillboard.com/ephemeral"
    assert config.catchup_pacing_ms == 100
    assert PollerConfig.from_env({**POLLER, "POLL_CATCHUP_PACING_MS": "250"}).catchup_pacing_ms == 250


def test_fetcher_defaults():
    """Item 13: X-Compatibility-Date comes from ESI_COMPATIBILITY_DATE, 2026-08-18 by default."""
    config = FetcherConfig.from_env(FETCHER)
    assert (config.esi_url, config.esi_parallelism, config.esi_compatibility_date) == (
        "https://esi.evetech.net",
        4,
        "2026-08-18",
    )
    assert FetcherConfig.from_env({**FETCHER, "ESI_COMPATIBILITY_DATE": "2026-10-01"}).esi_compatibility_date == (
        "2026-10-01"
    )


def test_the_enricher_sends_the_same_compatibility_date():
    """Item 13 for the enricher's universe routes: the same variable, default and check."""
    env = {"DATABASE_URL": "postgresql://h/db", "USER_AGENT": "killstream/0.1 (ops@example.com)"}
    assert EnricherConfig.from_env(env).esi_compatibility_date == "2026-08-18"
    chosen = EnricherConfig.from_env({**env, "ESI_COMPATIBILITY_DATE": "2026-10-01"})
    assert chosen.esi_compatibility_date == "2026-10-01"
    with pytest.raises(ConfigError) as excinfo:
        EnricherConfig.from_env({**env, "ESI_COMPATIBILITY_DATE": "2026-13-01"})
    assert excinfo.value.variable == "ESI_COMPATIBILITY_DATE"


@pytest.mark.parametrize(
    "variable, value",
    [
        ("KILLSTREAM_SOURCE", "kafka"),
        ("POLL_PACING_MS", "fast"),
        ("POLL_PACING_MS", "-1"),
        ("POLL_BUDGET_SECONDS", "0"),
        ("POLL_CATCHUP_PACING_MS", "soon"),
        ("POLL_CATCHUP_PACING_MS", "60001"),
        ("REDISQ_TTW", "11"),
        ("R2Z2_URL", "ftp://x"),
        ("QUEUE_URL", ""),
        ("USER_AGENT", ""),
        ("USER_AGENT", "killstream/0.1"),
        ("USER_AGENT", "python-requests"),
    ],
)
def test_a_bad_poller_value_names_its_variable(variable, value):
    with pytest.raises(ConfigError) as excinfo:
        PollerConfig.from_env({**POLLER, variable: value})
    assert excinfo.value.variable == variable and variable in str(excinfo.value)


def test_redisq_needs_a_queue_id_and_r2z2_a_cursor_parameter():
    with pytest.raises(ConfigError, match="REDISQ_QUEUE_ID"):
        PollerConfig.from_env({**POLLER, "KILLSTREAM_SOURCE": "redisq"})
    without_cursor = {k: v for k, v in POLLER.items() if k != "CURSOR_PARAMETER"}
    with pytest.raises(ConfigError, match="CURSOR_PARAMETER"):
        PollerConfig.from_env(without_cursor)
    assert (
        PollerConfig.from_env({**without_cursor, "KILLSTREAM_SOURCE": "redisq", "REDISQ_QUEUE_ID": "q"}).source
        == "redisq"
    )


@pytest.mark.parametrize(
    "variable, value",
    [
        ("ESI_PARALLELISM", "0"),
        ("ESI_PARALLELISM", "many"),
        ("ESI_URL", "esi.evetech.net"),
        ("DLQ_URL", ""),
        ("DB_SSLMODE", "sometimes"),
        ("DB_SECRET_ARN", "my-secret"),
        ("ESI_COMPATIBILITY_DATE", "18/08/2026"),
        ("ESI_COMPATIBILITY_DATE", "2026-8-18"),
        ("ESI_COMPATIBILITY_DATE", "2026-02-30"),
        ("ESI_COMPATIBILITY_DATE", "latest"),
    ],
)
def test_a_bad_fetcher_value_names_its_variable(variable, value):
    with pytest.raises(ConfigError) as excinfo:
        FetcherConfig.from_env({**FETCHER, variable: value})
    assert excinfo.value.variable == variable


def test_tls_is_verified_by_default_whenever_credentials_come_from_the_secret():
    arn = "arn:aws:secretsmanager:us-east-1:1:secret:db"
    assert DatabaseConfig.from_env({"DB_SECRET_ARN": arn}).sslmode == "verify-full"
    assert DatabaseConfig.from_env({"DB_SECRET_ARN": arn, "DATABASE_URL": "postgresql://h/db"}).sslmode == "verify-full"
    assert DatabaseConfig.from_env({"DATABASE_URL": "postgresql://localhost/db"}).sslmode is None
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        DatabaseConfig.from_env({})


def test_the_event_bus_is_optional_and_named_or_an_arn():
    assert FetcherConfig.from_env(FETCHER).event_bus_name is None
    arn = "arn:aws:events:us-east-1:123456789012:event-bus/killstream-dev-killmails"
    for name in ("killstream-dev-killmails", arn):
        assert FetcherConfig.from_env({**FETCHER, "EVENT_BUS_NAME": name}).event_bus_name == name
    with pytest.raises(ConfigError) as raised:
        FetcherConfig.from_env({**FETCHER, "EVENT_BUS_NAME": "no spaces allowed"})
    assert raised.value.variable == "EVENT_BUS_NAME"


NOTIFIER = {
    "WEBHOOK_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:hook-AbCdEf",
    "ALERT_DLQ_URL": "https://sqs.us-east-1.amazonaws.com/1/alert-dlq",
    "USER_AGENT": "killstream/0.1 (ops@example.com)",
}


def test_notifier_defaults_to_the_kind_its_url_says():
    config = NotifierConfig.from_env(NOTIFIER)
    assert config.webhook_kind is None and config.alert_dlq_url.endswith("/alert-dlq")
    assert NotifierConfig.from_env({**NOTIFIER, "WEBHOOK_KIND": "Slack"}).webhook_kind == "slack"


@pytest.mark.parametrize(
    "variable, value",
    [
        ("WEBHOOK_SECRET_ARN", ""),
        ("WEBHOOK_SECRET_ARN", "https://discord.com/api/webhooks/1/x"),
        ("WEBHOOK_KIND", "teams"),
        ("ALERT_DLQ_URL", ""),
        ("USER_AGENT", "curl"),
    ],
)
def test_a_bad_notifier_value_names_its_variable(variable, value):
    with pytest.raises(ConfigError) as raised:
        NotifierConfig.from_env({**NOTIFIER, variable: value})
    assert raised.value.variable == variable


RECONCILER = {"DATABASE_URL": "postgresql://h/db", "USER_AGENT": "killstream/0.1 (ops@example.com)"}


def test_reconciler_defaults_and_the_cli_shape_without_a_queue():
    config = ReconcilerConfig.from_env(RECONCILER)
    assert config.history_url == "https://r2z2.zkillboard.com/history"
    assert (config.days, config.raw_threshold, config.pacing_ms) == (7, 500, 1000)
    assert config.queue_url is None and config.dlq_url is None and config.esi_url == "https://esi.evetech.net"
    assert config.esi_compatibility_date == "2026-08-18"
    deployed = ReconcilerConfig.from_env(RECONCILER | {"QUEUE_URL": POLLER["QUEUE_URL"], "HISTORY_URL": "http://h/x/"})
    assert deployed.queue_url == POLLER["QUEUE_URL"] and deployed.history_url == "http://h/x"


@pytest.mark.parametrize(
    "variable, value",
    [
        ("HISTORY_URL", "r2z2.zkillboard.com/history"),
        ("RECONCILE_DAYS", "0"),
        ("RECONCILE_DAYS", "a week"),
        ("RECONCILE_RAW_THRESHOLD", "0"),
        ("HISTORY_PACING_MS", "-5"),
        ("ESI_COMPATIBILITY_DATE", "2026-8-18"),  # the CLI's reconcile asks ESI itself without a queue
        ("QUEUE_URL", "not a url"),
        ("USER_AGENT", "curl"),
    ],
)
def test_bad_reconciler_values_name_their_variable(variable, value):
    with pytest.raises(ConfigError) as raised:
        ReconcilerConfig.from_env(RECONCILER | {variable: value})
    assert raised.value.variable == variable
