"""The reconciler Lambda's handler and its window: nothing built at import, the days an event
asks for (never today), and a bad configuration failing the invocation naming the variable."""

from __future__ import annotations

from datetime import date

import pytest

from killstream.errors import ConfigError
from killstream.reconcile.reconciler import days_between, window
from killstream_workstation.local.lambda_runtime import LambdaContext, load_handler_module

TODAY = date(2026, 12, 1)


@pytest.fixture
def handler_module(monkeypatch):
    for name in ("USER_AGENT", "DATABASE_URL", "DB_SECRET_ARN", "RECONCILE_DAYS", "HISTORY_URL", "QUEUE_URL"):
        monkeypatch.delenv(name, raising=False)
    return load_handler_module("reconciler")


def test_the_window_is_the_last_complete_days_oldest_first():
    assert window(3, TODAY) == [date(2026, 11, 28), date(2026, 11, 29), date(2026, 11, 30)]
    assert days_between(date(2026, 11, 29), date(2026, 12, 5), TODAY) == [date(2026, 11, 29), date(2026, 11, 30)]
    assert days_between(TODAY, TODAY, TODAY) == []


def test_an_event_may_name_days_and_the_schedule_checks_the_configured_window(handler_module, monkeypatch):
    assert handler_module.days_of({"from": "2026-11-20", "to": "2026-11-22"}, TODAY) == [
        date(2026, 11, 20),
        date(2026, 11, 21),
        date(2026, 11, 22),
    ]
    assert handler_module.days_of({"from": "2026-11-30"}, TODAY) == [date(2026, 11, 30)]
    assert handler_module.days_of({"days": 2}, TODAY) == [date(2026, 11, 29), date(2026, 11, 30)]
    monkeypatch.setenv("USER_AGENT", "killstream/0.1 (ops@example.com)")
    monkeypatch.setenv("DATABASE_URL", "postgresql://h/db")
    monkeypatch.setenv("RECONCILE_DAYS", "4")
    assert handler_module.days_of({"detail-type": "Scheduled Event"}, TODAY) == window(4, TODAY)


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_a_bad_variable_fails_the_invocation_naming_it(handler_module, monkeypatch, caplog):
    monkeypatch.setenv("USER_AGENT", "killstream/0.1 (ops@example.com)")
    monkeypatch.setenv("DATABASE_URL", "postgresql://h/db")
    monkeypatch.setenv("RECONCILE_DAYS", "a week")
    with pytest.raises(ConfigError) as raised:
        handler_module.handler({}, LambdaContext("killstream-reconciler", 900))
    assert raised.value.variable == "RECONCILE_DAYS"
    assert any("RECONCILE_DAYS" in record.getMessage() for record in caplog.records)
