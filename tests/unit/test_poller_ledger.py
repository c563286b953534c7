"""How far the cursor may move: only past positions whose packages SQS has taken, in poll order."""

from __future__ import annotations

from killstream.package import Package
from killstream.poller.tick import Ledger


def package(sequence: int) -> Package:
    return Package(killmail_id=1000 + sequence, hash="a" * 40, zkb={}, source="r2z2", sequence_id=sequence)


def test_the_cursor_moves_only_once_a_position_s_package_is_accepted():
    ledger = Ledger(10)
    first = package(11)
    ledger.record(11, [first])
    assert ledger.committed == 10
    ledger.settle([first])
    assert ledger.committed == 11


def test_an_unaccepted_package_holds_back_every_later_position():
    ledger = Ledger(10)
    packages = {n: package(n) for n in (11, 12, 13)}
    for n, p in packages.items():
        ledger.record(n, [p])
    ledger.settle([packages[12], packages[13]])
    assert ledger.committed == 10
    ledger.settle([packages[11]])
    assert ledger.committed == 13


def test_positions_without_a_package_settle_at_once_but_not_past_a_waiting_one():
    ledger = Ledger(None)
    waiting = package(5)
    ledger.record(5, [waiting])
    ledger.record(9, [])  # a gap skipped up to 9, or an invalid package at 9
    assert ledger.committed is None
    ledger.settle([waiting])
    assert ledger.committed == 9
    ledger.record(12, [])
    assert ledger.committed == 12


def test_equal_packages_are_told_apart():
    ledger = Ledger(0)
    twin_a, twin_b = package(1), package(1)
    ledger.record(1, [twin_a])
    ledger.record(2, [twin_b])
    ledger.settle([twin_b])
    assert ledger.committed == 0
