"""The history client over the shared HTTP client: 429s waited out as asked, 5xx retried, a 403
ends the run, a body cut off or dripping past its deadline is an error for that file alone."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from killstream.reconcile.history import HistoryClient, HistoryError, HistoryRefused
from killstream_workstation import corpus
from killstream_workstation.simulators.r2z2 import R2Z2Server
from tests.support.fakes import FakeClock

UA = "killstream-tests/1.0 (ci@example.com)"
DAY = datetime.now(UTC).date() - timedelta(days=2)


@pytest.fixture
def r2z2():
    with R2Z2Server(sequence_lag=0, history_delay=timedelta(0)) as server:
        for doc in corpus.on_days(corpus.sample()[:5], [DAY]):
            body, killmail_hash = corpus.split_hash(doc)
            server.publish(body, killmail_hash, corpus.zkb_for(doc))
        yield server


def client(url: str, clock: FakeClock | None = None) -> HistoryClient:
    if clock is None:
        return HistoryClient.build(url, UA, pacing_seconds=0)
    return HistoryClient.build(url, UA, pacing_seconds=0.5, clock=clock, sleep=clock.sleep)


def test_totals_day_list_and_raw_file_with_the_user_agent_and_pacing(r2z2):
    clock = FakeClock()
    history = client(r2z2.history_url, clock)
    assert history.totals() == {DAY: 5}
    listed = history.day_list(DAY)
    assert listed.hashes == r2z2.history.killmails(DAY) and listed.malformed == {}
    with history.raw_day(DAY) as entries:
        assert entries is not None
        assert [int(key) for key, _ in entries] == sorted(r2z2.history.killmails(DAY))
    assert {request.headers["User-Agent"] for request in r2z2.requests} == {UA}
    assert history.requests == 3 and clock.sleeps == [0.5, 0.5]  # requests start 0.5 s apart


def test_a_429_is_waited_out_as_retry_after_says_and_a_5xx_retried(r2z2):
    clock = FakeClock()
    r2z2.faults.script(429, headers={"Retry-After": "7"}, when="/history/totals.json")
    r2z2.faults.script(503, when="/history/totals.json")
    assert client(r2z2.history_url, clock).totals() == {DAY: 5}
    assert sum(clock.sleeps) >= 7 + 0.5  # Retry-After, then the 5xx backoff (the gate sleeps in slices)
    assert [request.status for request in r2z2.requests] == [429, 503, 200]


def test_a_403_refuses_the_rest_of_the_run(r2z2):
    history = client(r2z2.history_url)
    r2z2.faults.script(403, when="/history/")
    with pytest.raises(HistoryRefused, match="refuses service"):
        history.day_list(DAY)
    with pytest.raises(Exception, match="not asking again"):
        history.totals()  # the gate remembers the refusal
    assert len(r2z2.requests) == 1


def test_no_raw_file_is_none_and_no_day_list_an_error(r2z2):
    history = client(r2z2.history_url)
    other = DAY - timedelta(days=5)
    with history.raw_day(other) as entries:
        assert entries is None
    with pytest.raises(HistoryError, match="no day list"):
        history.day_list(other)


@contextmanager
def raw_server(send) -> Iterator[str]:
    """A socket server answering every connection with `send(connection)`."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(65536)
                try:
                    send(connection)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/history"
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_a_body_cut_off_after_its_headers_is_an_error_after_what_arrived():
    body = b'{"1": "' + b"a" * 40 + b'", "2": "'

    def cut(connection):
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + body)

    with raw_server(cut) as url:
        with pytest.raises(HistoryError, match="cut off") as raised:
            client(url).day_list(DAY)
    assert "IncompleteRead" in str(raised.value)


def test_a_body_that_drips_in_ends_at_the_files_deadline(monkeypatch):
    from killstream.reconcile import history as module

    monkeypatch.setattr(module, "DAY_LIST_SECONDS", 1.0)

    def drip(connection):
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{")
        for _ in range(100):
            time.sleep(0.1)
            connection.sendall(b" ")

    with raw_server(drip) as url:
        started = time.monotonic()
        with pytest.raises(HistoryError, match="took too long"):
            client(url).day_list(DAY)
    assert time.monotonic() - started < 8  # not the 10 s the body would take
