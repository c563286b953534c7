"""The tick's own logic: when it stops, when it flushes, where it leaves the cursor, what it
reports. The source, SQS and SSM are scripted fakes here (they are not the subject; their real
counterparts are in the integration tests), the clock is fake, the rest is the real code."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest
from botocore.exceptions import EndpointConnectionError

from killstream.errors import BUDGET, ENQUEUE_FAILED, REMAINING_TIME, SOURCE_REFUSED, CursorUnavailable, StopTick
from killstream.http.gate import Gate
from killstream.observability import Metric, metrics
from killstream.package import Package
from killstream.poller.counts import TickCounts
from killstream.poller.cursor import CursorStore
from killstream.poller.sink import SqsSink
from killstream.poller.sources.base import PollResult
from killstream.poller.tick import FINISH_MARGIN, Poller
from tests.support.fakes import FakeClock, FakeSsm, RecordingSqs

NEW_WORK = 1.0


def package(sequence: int) -> Package:
    return Package(
        killmail_id=5000 + sequence,
        hash=f"{sequence:040x}",
        zkb={"totalValue": sequence},
        source="r2z2",
        sequence_id=sequence,
    )


class ScriptedSource:
    """Each poll is one request through the gate, like a real source's. The script holds, per
    poll, a PollResult or a callable(gate) returning one; once it runs out the feed is idle
    (404 and its 6 s wait)."""

    name = "r2z2"
    flush_within = 1.0
    new_work_seconds = NEW_WORK
    finishing_seconds = NEW_WORK

    keeps_cursor = True

    def __init__(self, gate: Gate, counts: TickCounts, script):
        self.gate = gate
        self.counts = counts
        self.script = list(script)
        self.started_at: list[int | None] = []

    def start(self, cursor):
        self.started_at.append(cursor)

    def lag(self, cursor):
        return None if cursor is None else 1000 - cursor

    def poll(self) -> PollResult:
        self.gate.pace()
        if not self.script:
            self.counts.add(Metric.EMPTY_POLLS)
            self.gate.hold(6.0)
            return PollResult()
        step = self.script.pop(0)
        return step(self.gate) if callable(step) else step


def at(sequence: int) -> PollResult:
    return PollResult([package(sequence)], through=sequence)


class Rig:
    def __init__(self, script, *, pacing=0.5, budget=50.0, cursor="none", refuse=lambda killmail_id: False):
        self.clock = FakeClock()
        self.gate = Gate(pacing, clock=self.clock, sleep=self.clock.sleep)
        self.counts = TickCounts()
        self.source = ScriptedSource(self.gate, self.counts, script)
        self.sqs = RecordingSqs(
            clock=self.clock, refuse=lambda entry: refuse(json.loads(entry["MessageBody"])["killmail_id"])
        )
        self.ssm = FakeSsm(self.clock, cursor)
        sink = SqsSink(self.sqs, "https://sqs.local/q", flush_within=1.0, clock=self.clock, sleep=self.clock.sleep)
        store = CursorStore(self.ssm, "/killstream/cursor", clock=self.clock)
        self.poller = Poller(self.source, sink, store, self.gate, self.counts, budget_seconds=budget)

    @property
    def sent(self) -> list[int]:
        """The sequences SQS accepted, in order."""
        return [body["sequence_id"] for body in self.sqs.sent]

    @property
    def batches(self) -> list[tuple[float, list[int]]]:
        """Each SendMessageBatch call: when, and the sequences SQS accepted."""
        return [(at, [body["sequence_id"] for body in bodies]) for at, bodies in self.sqs.accepted]

    def tick(self, remaining_ms=None) -> dict:
        return self.poller.tick(remaining_ms)


@pytest.fixture(autouse=True)
def fresh_metrics():
    metrics.clear_metrics()
    yield
    metrics.clear_metrics()


def test_a_tick_enqueues_in_order_saves_the_cursor_and_reports_once(caplog):
    rig = Rig([at(n) for n in range(1, 6)], cursor="0")
    summary = rig.tick()
    assert rig.sent == [1, 2, 3, 4, 5]
    assert rig.ssm.value == "5"
    assert {
        k: summary[k] for k in ("received", "enqueued", "errors", "invalid", "cursor", "lag", "stopped_because")
    } == {"received": 5, "enqueued": 5, "errors": 0, "invalid": 0, "cursor": 5, "lag": 995, "stopped_because": BUDGET}
    assert summary["empty_polls"] == summary["requests"] - 5
    done = [r for r in caplog.records if r.getMessage() == "tick done"]
    assert len(done) == 1 and done[0].levelname == "INFO"
    assert (done[0].received, done[0].enqueued, done[0].empty_polls, done[0].runtime_seconds) == (
        5,
        5,
        summary["empty_polls"],
        summary["runtime_seconds"],
    )
    received = [r for r in caplog.records if r.getMessage() == "package received"]
    assert [r.killmail_id for r in received] == [5001, 5002, 5003, 5004, 5005]


def test_the_tick_emits_every_metric_once():
    rig = Rig([at(1), at(2)], cursor="0")
    rig.counts.add(Metric.RATE_LIMITED)
    summary = rig.tick()
    emitted = {name: entry["Value"] for name, entry in metrics.metric_set.items()}
    assert emitted == {
        "PackagesReceived": [2],
        "PackagesEnqueued": [2],
        "EmptyPolls": [summary["empty_polls"]],
        "SourceErrors": [0],
        "InvalidPackages": [0],
        "RateLimited": [0],
        "SequenceGaps": [0],
        "EsiDroppedForSize": [0],
        "EnqueueFailures": [0],
        "SourceRefused": [0],
        "PlaceholderPackages": [0],
        "UpdatePointersFollowed": [0],
        "UpdatePointersExpired": [0],
        "PollSeconds": [summary["runtime_seconds"]],
        "CursorLag": [998],
    }
    assert metrics.metric_set["PollSeconds"]["Unit"] == "Seconds"


def test_the_budget_ends_the_tick_and_no_request_starts_after_it():
    rig = Rig([at(n) for n in range(1, 200)], pacing=0.5, budget=5.0, cursor="0")
    summary = rig.tick()
    assert summary["stopped_because"] == BUDGET
    assert summary["requests"] == 10  # at 0, 0.5, … 4.5 s
    assert summary["runtime_seconds"] <= 5.0
    assert rig.sent == list(range(1, 11))


def test_the_remaining_time_margin_ends_the_tick_before_the_budget():
    rig = Rig([at(n) for n in range(1, 200)], pacing=0.5, budget=50.0, cursor="0")
    deadline = rig.clock() + 20.0
    summary = rig.tick(lambda: int((deadline - rig.clock()) * 1000))
    assert summary["stopped_because"] == REMAINING_TIME
    reserve = rig.poller.finish_reserve  # the last SendMessageBatch and the cursor write, one call each
    assert reserve == 2 * rig.poller.sink.call_seconds + FINISH_MARGIN
    assert summary["runtime_seconds"] <= 20.0 - reserve
    # the last starts at 10 s: a request needs NEW_WORK before the hard end at 20 - reserve = 11.5 s
    assert summary["requests"] == 21
    assert deadline - rig.clock() >= reserve


class HungSqs(RecordingSqs):
    """SendMessageBatch to an SQS that never answers: each call takes its whole bound, then fails."""

    def __init__(self, clock: FakeClock, call_seconds: float):
        super().__init__(clock=clock)
        self.fake_clock = clock
        self.call_seconds = call_seconds

    def send_message_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:
        self.calls.append(Entries)
        self.fake_clock.advance(self.call_seconds)
        raise EndpointConnectionError(endpoint_url=QueueUrl)


def test_a_hung_sqs_ends_the_tick_before_the_lambda_does():
    """Defect 4: SqsSink retried 4 times whatever the time left. Each call now starts only when
    its bound fits before the Lambda's end, less the cursor write, so the tick ends in time and
    saves its cursor (before the package SQS never took)."""
    rig = Rig([at(1), at(2)], pacing=0.5, budget=1.0, cursor="0")
    rig.sqs = HungSqs(rig.clock, rig.poller.sink.call_seconds)
    rig.poller.sink.client = rig.sqs
    deadline = rig.clock() + 12.0
    summary = rig.tick(lambda: int((deadline - rig.clock()) * 1000))
    assert deadline - rig.clock() >= FINISH_MARGIN
    # the final flush at 0.5 s: 11.5 s left; after its 4 s, another call would leave too little
    assert len(rig.sqs.calls) == 1
    assert (summary["enqueued"], summary["enqueue_failures"], summary["stopped_because"]) == (0, 2, BUDGET)
    assert rig.ssm.value == "0"


def test_the_cursor_is_written_and_read_only_when_the_call_fits_in_the_time_left(caplog):
    """Defect 4, the cursor's side: its SSM calls, retries included, start only when one fits."""
    clock = FakeClock()
    ssm = FakeSsm(clock, "5")
    store = CursorStore(ssm, "/killstream/cursor", clock=clock, sleep=clock.sleep, call_seconds=4.0)
    store.time_left = lambda: 3.9
    with pytest.raises(CursorUnavailable):
        store.load()
    store.time_left = lambda: 4.0
    assert store.load() == 5
    store.time_left = lambda: 3.9
    assert not store.save(6, final=True) and ssm.puts == []
    (line,) = [r for r in caplog.records if r.getMessage().startswith("cursor not saved")]
    assert line.levelname == "ERROR" and "no time left" in line.getMessage()
    store.time_left = lambda: 4.0
    assert store.save(6, final=True) and ssm.value == "6"


def test_a_package_waits_at_most_a_second_for_company():
    rig = Rig([at(n) for n in range(1, 8)], pacing=0.3, budget=10.0, cursor="0")
    received_at = {}
    original = rig.source.poll

    def poll():
        result = original()
        for p in result.packages:
            received_at[p.sequence_id] = rig.clock()
        return result

    rig.source.poll = poll
    rig.tick()
    assert rig.sent == list(range(1, 8))
    for sent_at, batch in rig.batches:
        assert sent_at - received_at[batch[0]] <= 1.0
    assert len(rig.batches) < 7  # batched, not one call per package


def test_a_package_before_a_long_wait_is_sent_before_the_wait():
    rig = Rig([at(1)], pacing=0.5, budget=20.0, cursor="0")
    rig.tick()
    ((sent_at, batch),) = rig.batches
    assert batch == [1] and sent_at < 1000.0 + 1.0


def test_ten_packages_go_at_once_without_waiting_for_the_second():
    rig = Rig([PollResult([package(n) for n in range(1, 11)], through=10)], cursor="0")
    rig.tick()
    assert rig.batches[0] == (1000.0, list(range(1, 11)))


def test_an_sqs_failure_stops_the_tick_with_the_cursor_before_the_unsent_package(caplog):
    rig = Rig([at(n) for n in range(1, 8)], pacing=0.5, cursor="0", refuse=lambda killmail_id: killmail_id == 5004)
    summary = rig.tick()
    assert summary["stopped_because"] == ENQUEUE_FAILED
    assert summary["enqueue_failures"] == 1
    assert rig.ssm.value == "3"
    assert summary["cursor"] == 3
    lost = [r for r in caplog.records if r.levelname == "ERROR" and getattr(r, "killmail_id", None) == 5004]
    assert lost and json.loads(lost[0].package)["sequence_id"] == 4


def test_the_next_tick_starts_at_the_saved_cursor():
    rig = Rig([at(1), at(2)], cursor="0", refuse=lambda killmail_id: killmail_id == 5002)
    rig.tick()
    rig.source.script = [at(2), at(3)]
    rig.sqs.refuse = lambda entry: False
    rig.tick()
    assert rig.source.started_at == [0, 1]
    assert rig.ssm.value == "3"


def test_the_cursor_is_written_at_most_once_a_second_and_at_the_end():
    rig = Rig([at(n) for n in range(1, 40)], pacing=0.1, budget=10.0, cursor="0")
    rig.tick()
    times = [t for t, _ in rig.ssm.puts]
    assert all(b - a >= 1.0 for a, b in pairwise(times[:-1]))
    assert [int(v) for _, v in rig.ssm.puts] == sorted({int(v) for _, v in rig.ssm.puts})
    assert rig.ssm.value == "39"
    assert len(times) <= 6


def test_the_cursor_never_moves_back():
    rig = Rig([at(3)], cursor="7")
    summary = rig.tick()
    assert rig.ssm.puts == [] and summary["cursor"] == 7


def test_without_a_cursor_the_source_starts_from_none():
    rig = Rig([at(42)], cursor=None)
    rig.tick()
    assert rig.source.started_at == [None]
    assert rig.ssm.value == "42"


def test_a_refusal_ends_the_tick_after_flushing_and_saving():
    def refuse(gate):
        raise StopTick(SOURCE_REFUSED, "R2Z2 refuses service: banned")

    rig = Rig([at(1), refuse], cursor="0")
    summary = rig.tick()
    assert summary["stopped_because"] == SOURCE_REFUSED
    assert summary["detail"] == "R2Z2 refuses service: banned"
    assert rig.sent == [1] and rig.ssm.value == "1"


def test_a_bug_still_flushes_what_was_received_and_then_surfaces():
    def crash(gate):
        raise RuntimeError("bug")

    rig = Rig([PollResult([package(1)], through=1), crash], cursor="0")
    with pytest.raises(RuntimeError):
        rig.tick()
    assert rig.sent == [1] and rig.ssm.value == "1"
