"""The run's console: counts read from the handlers' log records (the ticks' errors, the
killmails handled), a reader that goes away, and the stats' wording."""

import io
import logging

from killstream_workstation.local.console import (
    INVOCATION_FAILED,
    ConsoleStream,
    RunStats,
    StatsCounter,
    isk,
    plural,
)


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
