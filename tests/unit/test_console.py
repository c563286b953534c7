"""The run's console: counts read from the handlers' log records (the ticks' errors, the
killmails handled), a reader that goes away, the stats' wording, and the lines for killmails
and enricher runs."""

import io
import logging

from killstream_workstation.local.console import (
    INVOCATION_FAILED,
    ConsoleFormatter,
    ConsoleStream,
    QuietFilter,
    RunStats,
    StatsCounter,
    isk,
    plural,
)
from killstream_workstation.names import describe


def record(msg, level=logging.INFO, **fields):
    log_record = logging.LogRecord("killstream", level, __file__, 1, msg, None, None)
    log_record.__dict__.update(fields)
    return log_record


def count(*records):
    stats = RunStats()
    counter = StatsCounter(stats)
    for log_record in records:
        assert counter.filter(log_record) is True  # it filters nothing
    return stats


def test_final_errors_agree_with_the_ticks_errors():
    stats = count(
        record("request failed", logging.WARNING, problem="NameResolutionError"),
        record("tick done", received=0, errors=5),
        record("tick done", received=0, errors=2),
        record("RedisQ refuses service: bye", logging.ERROR),  # counted as refused by its tick, not an error
    )
    assert stats.errors == 7
    assert "Errors: 7" in stats.final() and "7 errors" in stats.line()


def test_a_failed_invocation_is_an_error_too():
    stats = count(record("poller invocation failed: boom", logging.ERROR, **{INVOCATION_FAILED: "poller"}))
    assert stats.errors == 1


def test_handled_counts_killmails_done_with_not_attempts():
    stats = count(
        record("package received"),
        record("fetching 1", outcome="fetching", killmail_id=1),
        record("failed 1", logging.WARNING, outcome="failed", killmail_id=1, retry=True),
        record("saved 1", outcome="saved", killmail_id=1),
        record("skipped 2", outcome="skipped", killmail_id=2),
        record("failed 3", logging.WARNING, outcome="failed", killmail_id=3, retry=False),
        record("failed 4", logging.WARNING, outcome="failed", killmail_id=4, retry=True),
    )
    assert stats.handled == {1, 2, 3}
    assert stats.received == 1 and stats.outcomes["failed"] == 3
    final = stats.final()
    assert "Failed: 3" in final and "Errors: 0" in final


class ClosedPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_reader_that_goes_away_stops_the_output_and_says_so_once():
    gone = []
    out = ConsoleStream(ClosedPipe(), on_reader_gone=lambda: gone.append(True))
    assert out.write("first line\n") == len("first line\n")
    out.write("second line\n")
    out.flush()
    assert out.closed_by_reader.is_set() and gone == [True]


def test_a_reader_that_stays_gets_every_line():
    sink = io.StringIO()
    out = ConsoleStream(sink, on_reader_gone=lambda: None)
    print("one", file=out)
    print("two", file=out)
    assert sink.getvalue() == "one\ntwo\n" and not out.closed_by_reader.is_set()


def test_counts_read_as_words():
    assert plural(1, "kill") == "1 kill"
    assert plural(2, "kill") == "2 kills"
    assert plural(1024, "live killmail") == "1,024 live killmails"
    assert plural(0, "kill") == "0 kills"
    assert isk(88_530_000) == "88.53M ISK"


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


def test_an_enricher_run_counts_read_as_words_too():
    one = record("enrichment done", named=1, unresolvable=0, pending=0, requests=1, killmails=1, stopped_because=None)
    assert ConsoleFormatter(RunStats()).format(one) == (
        "🏷️  Names: 1 named, 0 unresolvable, 0 pending (1 ESI call, 1 killmail read)"
    )
    many = record("enrichment done", named=1500, unresolvable=0, pending=2, requests=3, killmails=1200)
    assert "1,500 named" in ConsoleFormatter(RunStats()).format(many)
    assert "(3 ESI calls, 1,200 killmails read)" in ConsoleFormatter(RunStats()).format(many)
