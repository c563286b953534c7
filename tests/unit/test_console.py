"""The console's lines for killmails and enricher runs, from the records the handlers log."""

from __future__ import annotations

import logging

from killstream_workstation.local.console import ConsoleFormatter, QuietFilter, RunStats
from killstream_workstation.names import describe


def record(message: str, **extra) -> logging.LogRecord:
    return logging.makeLogRecord({"name": "fetcher", "msg": message, "levelname": "INFO", "levelno": 20, **extra})


SAVED = {
    "outcome": "saved",
    "killmail_id": 131234567,
    "total_value": 88_530_000.0,
    "victim_ship_type_id": 24698,
    "victim_character_id": 2112345678,
    "victim_corporation_id": 98000001,
    "solar_system_id": 30000142,
}


def test_a_saved_killmail_says_its_victim_ship_and_system_by_id_until_they_are_named():
    line = ConsoleFormatter(RunStats()).format(record("saved 131234567", **SAVED))
    assert line.startswith(
        "✅ Saved: 131234567 — type 24698 (character 2112345678, corporation 98000001) in system 30000142, "
        "88.53M ISK | Stats: 0 received"
    )


def test_names_replace_the_ids_they_are_known_for():
    assert (
        describe(24698, 2112345678, 98000001, 30000142, ("Drake", "Pilot Name", "Corp Name", "Jita"))
        == "Drake (Pilot Name, Corp Name) in Jita"
    )
    assert describe(24698, None, 98000001, 30000142, ("Drake", None, None, "Jita")) == (
        "Drake (corporation 98000001) in Jita"
    )
    assert describe(35832, None, None, 30000142) == "type 35832 in system 30000142"


def test_a_saved_line_without_ids_keeps_the_value_only():
    line = ConsoleFormatter(RunStats()).format(record("saved 1", outcome="saved", killmail_id=1, total_value=2e9))
    assert line.startswith("✅ Saved: 1 (2.00B ISK) | Stats:")


def test_an_enricher_run_is_one_line_and_passes_the_quiet_filter():
    done = record(
        "enrichment done", named=24, unresolvable=1, pending=0, requests=9, killmails=12, stopped_because=None
    )
    assert ConsoleFormatter(RunStats()).format(done) == (
        "🏷️  Names: 24 named, 1 unresolvable, 0 pending (9 ESI calls, 12 killmails read)"
    )
    assert QuietFilter(verbose=False).filter(done)
    stopped = record(
        "enrichment done", named=0, pending=5, stopped_because="esi_unavailable", problem="ESI answered 503"
    )
    assert ConsoleFormatter(RunStats()).format(stopped).endswith("— stopped: ESI answered 503")
