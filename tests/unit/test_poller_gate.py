"""The gate every poller request passes through: start-to-start pacing, protocol waits, the tick's
deadline; the tick's counts; and the 429 backoff both sources share. Time is a fake clock that moves only when
something sleeps or a test says work took time."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest

from killstream.errors import BUDGET, REMAINING_TIME, SOURCE_REFUSED, StopTick
from killstream.http.client import RateLimitBackoff
from killstream.http.gate import Gate, Limits
from killstream.observability import Metric
from killstream.poller.counts import TickCounts
from tests.support.fakes import FakeClock


def open_gate(pacing: float, clock: FakeClock, *, limits: Limits | None = None, before_sleep=None) -> Gate:
    gate = Gate(pacing, clock=clock, sleep=clock.sleep)
    gate.begin(limits or Limits(), before_sleep or (lambda until: None))
    return gate


def starts(gate: Gate, clock: FakeClock, count: int, work: float = 0.0) -> list[float]:
    times = []
    for _ in range(count):
        gate.pace()
        times.append(clock())
        clock.advance(work)
    return times


def test_requests_start_once_per_pacing_measured_start_to_start():
    clock = FakeClock()
    gate = open_gate(0.5, clock)
    times = starts(gate, clock, 5, work=0.2)
    assert [round(b - a, 9) for a, b in pairwise(times)] == [0.5] * 4
    assert gate.started == 5


def test_work_longer_than_the_pacing_adds_no_sleep():
    clock = FakeClock()
    gate = open_gate(0.5, clock)
    times = starts(gate, clock, 3, work=0.8)
    assert [round(b - a, 9) for a, b in pairwise(times)] == [0.8, 0.8]
    assert clock.sleeps == []


def test_a_hold_delays_the_next_start_and_a_short_one_never_shortens_the_pacing():
    clock = FakeClock()
    gate = open_gate(0.5, clock)
    gate.pace()
    first = clock()
    gate.hold(6.0)
    gate.pace()
    assert clock() - first == pytest.approx(6.0)
    gate.hold(0.1)
    second = clock()
    gate.pace()
    assert clock() - second == pytest.approx(0.5)


def test_pacing_carries_over_from_one_tick_to_the_next():
    clock = FakeClock()
    gate = open_gate(0.5, clock)
    gate.pace()
    last = clock()
    gate.begin(Limits(), lambda until: None)
    gate.pace()
    assert clock() - last == pytest.approx(0.5)


def test_a_request_that_could_not_start_before_the_deadline_stops_the_tick_without_sleeping():
    clock = FakeClock()
    deadline = clock() + 5.0
    gate = open_gate(0.5, clock, limits=Limits(budget_end=lambda: deadline))
    gate.pace()
    gate.hold(6.0)
    with pytest.raises(StopTick) as stop:
        gate.pace()
    assert stop.value.reason == BUDGET
    assert clock.sleeps == []


def test_the_last_start_is_strictly_before_the_deadline():
    clock = FakeClock()
    deadline = clock() + 2.0
    gate = open_gate(0.5, clock, limits=Limits(hard_end=lambda: deadline))
    times = []
    with pytest.raises(StopTick) as stop:
        while True:
            gate.pace()
            times.append(clock())
    assert stop.value.reason == REMAINING_TIME
    assert len(times) == 4 and max(times) < deadline


def test_new_work_starts_only_with_its_needs_before_the_hard_end_and_finishing_work_passes_the_budget():
    """RedisQ's popped package (defect 1): its read is work that must finish, let through past the
    budget, never past the hard end; a new listen starts only when what it may lead to fits."""
    clock = FakeClock()
    budget_end, hard_end = clock() + 1.0, clock() + 10.0
    gate = open_gate(0.5, clock, limits=Limits(lambda: budget_end, lambda: hard_end, new_work=8.0, finishing=4.0))
    assert gate.pace() == hard_end  # at 0: 0 + 8 < 10; every request learns when it must be over
    assert gate.pace() == hard_end  # at 0.5
    with pytest.raises(StopTick) as stop:
        gate.pace()  # at 1.0: the budget is spent
    assert stop.value.reason == BUDGET
    times = []
    with pytest.raises(StopTick) as stop:
        while True:
            gate.pace(finishing=True)
            times.append(clock())
    assert stop.value.reason == REMAINING_TIME
    assert times == [1000.5 + 0.5 * n for n in range(1, 11)] and max(times) + 4.0 < hard_end
    clock.now = 1000.0
    narrow = open_gate(0.5, clock, limits=Limits(hard_end=lambda: clock() + 7.9, new_work=8.0))
    with pytest.raises(StopTick) as stop:
        narrow.pace()
    assert stop.value.reason == REMAINING_TIME and narrow.started == 0


def test_quicken_shortens_the_pacing_of_the_next_request_only_and_never_a_hold():
    """Catch-up pacing (defect 12): after a file that proves the feed is ahead, the next request
    may come sooner; the one after that is paced as usual, and a protocol's wait still holds."""
    clock = FakeClock()
    gate = open_gate(0.5, clock)
    gate.pace()
    gate.quicken(0.1)
    gate.pace()
    gate.pace()
    assert [round(s, 9) for s in clock.sleeps] == [0.1, 0.5]
    gate.quicken(0.1)
    gate.hold(6.0)
    began = clock()
    gate.pace()
    assert clock() - began == pytest.approx(6.0)
    gate.quicken(2.0)  # never slower than the pacing
    began = clock()
    gate.pace()
    assert clock() - began == pytest.approx(0.5)


def test_work_is_offered_the_wait_before_the_gate_sleeps():
    clock = FakeClock()
    offered = []
    gate = open_gate(0.5, clock, before_sleep=lambda until: offered.append((clock(), until)))
    gate.pace()
    gate.pace()
    assert offered == [(1000.0, 1000.5)]


def test_work_done_before_sleeping_counts_against_the_wait():
    clock = FakeClock()
    gate = open_gate(1.0, clock, before_sleep=lambda until: clock.advance(0.3))
    gate.pace()
    start = clock()
    gate.pace()
    assert clock() - start == pytest.approx(1.0)
    assert clock.sleeps == [pytest.approx(0.7)]


def test_counts_belong_to_one_tick():
    counts = TickCounts()
    counts.add(Metric.EMPTY_POLLS)
    counts.add(Metric.SEQUENCE_GAPS, 3)
    assert (counts[Metric.EMPTY_POLLS], counts[Metric.SEQUENCE_GAPS], counts[Metric.SOURCE_ERRORS]) == (1, 3, 0)
    counts.reset()
    assert counts[Metric.EMPTY_POLLS] == counts[Metric.SEQUENCE_GAPS] == 0


def test_the_gate_counts_the_requests_it_lets_through_and_when_the_last_started():
    clock = FakeClock()
    gate = open_gate(0.5, clock)
    assert gate.started == 0 and gate.last_start == -math.inf
    starts(gate, clock, 3)
    assert gate.started == 3 and gate.last_start == clock()


def test_rate_limit_backoff_honours_retry_after_else_doubles_from_5_to_60_seconds():
    backoff = RateLimitBackoff()
    assert [backoff.wait(None) for _ in range(6)] == [5, 10, 20, 40, 60, 60]
    backoff.reset()
    assert backoff.wait("7") == 7.0
    assert backoff.wait("soon") == 10  # not seconds: the exponential schedule goes on
    backoff.reset()
    assert backoff.wait(None) == 5


def test_a_deadline_that_moves_closer_during_a_wait_is_noticed_within_a_second():
    clock = FakeClock()
    stop_at = [math.inf]
    gate = open_gate(0.5, clock, limits=Limits(hard_end=lambda: stop_at[0]))
    gate.pace()
    gate.hold(6.0)
    original_sleep = clock.sleep

    def sleep(seconds):
        original_sleep(seconds)
        stop_at[0] = clock()  # shutdown: no time left from now on

    gate.sleep = sleep
    began = clock()
    with pytest.raises(StopTick) as stop:
        gate.pace()
    assert stop.value.reason == REMAINING_TIME
    assert clock() - began <= 1.0


def test_a_refusal_ends_every_tick_at_once_until_its_time_has_passed():
    clock = FakeClock()
    gate = open_gate(0.5, clock)
    gate.pace()
    gate.refuse(900.0, "R2Z2 refuses service: HTTP 403")
    assert gate.started == 1
    for minute in (1, 14):
        clock.now = 1000.0 + 60 * minute
        gate.begin(Limits(), lambda until: None)
        with pytest.raises(StopTick) as stop:
            gate.pace()
        assert stop.value.reason == SOURCE_REFUSED and "R2Z2 refuses service: HTTP 403" in stop.value.detail
        assert gate.started == 1 and clock.sleeps == []
    clock.now = 1000.0 + 900
    gate.pace()
    assert gate.started == 2 and gate.refused_until() is None
