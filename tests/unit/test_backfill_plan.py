"""The backfill state machine's plan step: an execution's input turned into its days (never today,
never before the archive's first day, at most MAX_DAYS), a bad input named; the handler builds
nothing at import and a bad variable fails the invocation naming it."""

from __future__ import annotations

from datetime import date

import pytest

from killstream.backfill.archives import parse_totals
from killstream.backfill.plan import DEFAULT_DAYS, MAX_DAYS, InvalidBackfillInput, plan
from killstream.config import BackfillConfig
from killstream.errors import ConfigError
from killstream_workstation.local.lambda_runtime import LambdaContext, load_handler_module

TODAY = date(2026, 12, 1)


def test_no_input_is_the_last_30_complete_days_from_everef():
    days, source = plan({}, TODAY)
    assert source == "everef" and len(days) == DEFAULT_DAYS == 30
    assert days[0] == date(2026, 11, 1) and days[-1] == date(2026, 11, 30)
    assert plan(None, TODAY) == (days, source)  # a parameter-free start passes no object at all


def test_a_range_and_a_source_are_taken_as_given():
    days, source = plan({"from": "2026-07-01", "to": "2026-07-03", "source": "zkillboard"}, TODAY)
    assert (days, source) == ([date(2026, 7, 1), date(2026, 7, 2), date(2026, 7, 3)], "zkillboard")
    assert plan({"to": "2026-11-10"}, TODAY)[0][0] == date(2026, 10, 12)  # 30 days ending there
    assert plan({"from": "2026-11-29"}, TODAY)[0] == [date(2026, 11, 29), date(2026, 11, 30)]


@pytest.mark.parametrize(
    "given, says",
    [
        ({"to": "2026-12-01"}, "not a complete UTC day yet"),
        ({"from": "2026-11-05", "to": "2026-11-01"}, "is after"),
        ({"from": "2007-12-04", "to": "2007-12-10"}, "begins on 2007-12-05"),
        ({"from": "2026-06-30", "to": "2026-07-02", "source": "zkillboard"}, "begins on 2026-07-01"),
        ({"from": "2008-01-01", "to": "2026-11-30"}, f"at most {MAX_DAYS:,} per execution"),
        ({"from": "yesterday"}, "not a YYYY-MM-DD day"),
        ({"from": 20261101}, "must be a YYYY-MM-DD string"),
        ({"source": "esi"}, "source: one of everef, zkillboard"),
    ],
)
def test_a_bad_input_is_named(given, says):
    with pytest.raises(InvalidBackfillInput, match=says):
        plan(given, TODAY)


def test_totals_keep_only_days_with_counts():
    entries = [
        ("20261130", 15873),
        ("20261131", 3),
        ("total", 9),
        ("20261129", -1),
        ("20261128", "12"),
        ("20261127", 0),
    ]
    assert parse_totals(entries) == {date(2026, 11, 30): 15873, date(2026, 11, 27): 0}


def test_everef_url_is_checked_and_defaults_to_everefs():
    env = {"USER_AGENT": "killstream/0.1 (ops@example.com)", "DATABASE_URL": "postgresql://h/db"}
    assert BackfillConfig.from_env(env).everef_url == "https://data.everef.net/killmails"
    assert BackfillConfig.from_env(env | {"EVEREF_URL": "http://mirror.local/k/"}).everef_url == "http://mirror.local/k"
    with pytest.raises(ConfigError, match="EVEREF_URL"):
        BackfillConfig.from_env(env | {"EVEREF_URL": "data.everef.net"})
    with pytest.raises(ConfigError, match="HISTORY_URL"):
        BackfillConfig.from_env(env | {"HISTORY_URL": "ftp://x"})


@pytest.fixture
def handler_module(monkeypatch):
    for name in ("USER_AGENT", "DATABASE_URL", "DB_SECRET_ARN", "EVEREF_URL", "HISTORY_URL"):
        monkeypatch.delenv(name, raising=False)
    return load_handler_module("backfill")


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_the_plan_step_names_a_bad_input_before_anything_is_built(handler_module):
    with pytest.raises(InvalidBackfillInput, match="source"):
        handler_module.handler({"action": "plan", "input": {"source": "nope"}}, LambdaContext("b", 900))
    with pytest.raises(ValueError, match="unknown action"):
        handler_module.handler({"action": "everything"}, LambdaContext("b", 900))


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_a_bad_variable_fails_a_day_naming_it(handler_module, monkeypatch, caplog):
    monkeypatch.setenv("USER_AGENT", "killstream/0.1 (ops@example.com)")
    monkeypatch.setenv("DATABASE_URL", "postgresql://h/db")
    monkeypatch.setenv("EVEREF_URL", "everef")
    with pytest.raises(ConfigError, match="EVEREF_URL"):
        handler_module.handler({"action": "day", "day": "2026-11-01", "source": "everef"}, LambdaContext("b", 900))
    assert "bad configuration: EVEREF_URL" in caplog.text
