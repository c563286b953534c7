"""The gate every poller request passes through: start-to-start pacing, protocol waits, the tick's
deadline; and the 429 backoff both sources share. Time is a fake clock that moves only when
something sleeps or a test says work took time."""

from __future__ import annotations

import math

import pytest

from killstream.poller.sources.base import BUDGET, REMAINING_TIME, SOURCE_REFUSED, Gate, RateLimitBackoff, StopTick


class FakeClock:
    """A monotonic clock that advances only on sleep (or `advance`); records every sleep."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


def open_gate(pacing: float, clock: FakeClock, *, left=lambda: (math.inf, BUDGET), before_sleep=None) -> Gate:
    gate = Gate(pacing, clock=clock, sleep=clock.sleep)
    gate.begin(left, before_sleep or (lambda until: None))
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
    assert [round(b - a, 9) for a, b in zip(times, times[1:])] == [0.5] * 4
    assert gate.requests == 5


def test_work_longer_than_the_pacing_adds_no_sleep():
    clock = FakeClock()
    gate = open_gate(0.5, clock)
    times = starts(gate, clock, 3, work=0.8)
    assert [round(b - a, 9) for a, b in zip(times, times[1:])] == [0.8, 0.8]
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
    gate.begin(lambda: (math.inf, BUDGET), lambda until: None)
    gate.pace()
    assert clock() - last == pytest.approx(0.5)


def test_a_request_that_could_not_start_before_the_deadline_stops_the_tick_without_sleeping():
    clock = FakeClock()
    deadline = clock() + 5.0
    gate = open_gate(0.5, clock, left=lambda: (deadline - clock(), BUDGET))
    gate.pace()
    gate.hold(6.0)
    with pytest.raises(StopTick) as stop:
        gate.pace()
    assert stop.value.reason == BUDGET
    assert clock.sleeps == []


def test_the_last_start_is_strictly_before_the_deadline():
    clock = FakeClock()
    deadline = clock() + 2.0
    gate = open_gate(0.5, clock, left=lambda: (deadline - clock(), REMAINING_TIME))
    times = []
    with pytest.raises(StopTick) as stop:
        while True:
            gate.pace()
            times.append(clock())
    assert stop.value.reason == REMAINING_TIME
    assert len(times) == 4 and max(times) < deadline


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
    clock = FakeClock()
    gate = open_gate(0.0, clock)
    gate.count("EmptyPolls")
    gate.count("SequenceGaps", 3)
    assert gate.counts == {"EmptyPolls": 1, "SequenceGaps": 3}
    gate.begin(lambda: (math.inf, BUDGET), lambda until: None)
    assert gate.counts == {} and gate.requests == 0


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
    gate = open_gate(0.5, clock, left=lambda: (stop_at[0] - clock(), REMAINING_TIME))
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
    for minute in (1, 14):
        clock.now = 1000.0 + 60 * minute
        gate.begin(lambda: (math.inf, BUDGET), lambda until: None)
        with pytest.raises(StopTick) as stop:
            gate.pace()
        assert stop.value.reason == SOURCE_REFUSED and "R2Z2 refuses service: HTTP 403" in stop.value.detail
        assert gate.requests == 0 and clock.sleeps == []
    clock.now = 1000.0 + 900
    gate.pace()
    assert gate.requests == 1 and gate.refused_until() is None
