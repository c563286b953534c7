"""The ESI client against the local ESI server, over real HTTP. Time is faked (the client's
clock and sleep are injected) so waits of minutes are checked in milliseconds; the server counts
every request, so "never retried" and "did not call" are measured where they happen."""

from __future__ import annotations

import time

import pytest

from killstream.config import DEFAULT_ESI_COMPATIBILITY_DATE
from killstream.errors import PermanentError, TransientError
from killstream.esi.killmails import KillmailClient
from killstream_workstation.corpus import generate, split_hash
from killstream_workstation.simulators.esi import EsiServer
from tests.support.fakes import FakeClock

UA = "killstream-tests/0.1 (tests@example.com)"
DOCS = generate(8)


@pytest.fixture
def esi():
    with EsiServer() as server:
        server.add_many(DOCS)
        yield server


@pytest.fixture
def fake_time():
    return FakeClock()


def make_client(server, fake_time, **options) -> KillmailClient:
    options.setdefault("jitter", lambda: 0.5)
    return KillmailClient(server.url, UA, clock=fake_time, sleep=fake_time.sleep, **options)


def fetch(client, fake_time, doc, *, within=60.0, killmail_hash=None):
    return client.fetch(doc["killmail_id"], killmail_hash or doc["killmail_hash"], fake_time.now + within)


def test_a_killmail_is_fetched_validated_and_identified(esi, fake_time):
    client = make_client(esi, fake_time)
    killmail = fetch(client, fake_time, DOCS[0])
    esi_doc, _ = split_hash(DOCS[0])
    assert killmail.killmail_id == DOCS[0]["killmail_id"]
    assert killmail.document == esi_doc
    assert len(killmail.attackers) == len(DOCS[0]["attackers"])
    assert esi.user_agents == {UA: 1}
    assert esi.compatibility_dates == {"2026-08-18": 1} == {DEFAULT_ESI_COMPATIBILITY_DATE: 1}
    assert [r.path for r in esi.requests] == [f"/killmails/{DOCS[0]['killmail_id']}/{DOCS[0]['killmail_hash']}/"]
    assert client.take_counts() == {"requests": 1, "errors": 0, "rate_limited": 0}
    assert client.take_counts() == {"requests": 0, "errors": 0, "rate_limited": 0}


def test_connections_are_kept_alive_between_fetches(esi, fake_time):
    client = make_client(esi, fake_time)
    for doc in DOCS[:4]:
        fetch(client, fake_time, doc)
    pools = client.session.get_adapter(esi.url).poolmanager.pools
    assert [(pools[key].num_connections, pools[key].num_requests) for key in pools.keys()] == [(1, 4)]


@pytest.mark.parametrize("status", [400, 404, 422])
def test_an_invalid_id_or_hash_is_permanent_and_never_retried(esi, fake_time, status):
    client = make_client(esi, fake_time)
    esi.fail(DOCS[1]["killmail_id"], status, times=None)
    with pytest.raises(PermanentError) as caught:
        fetch(client, fake_time, DOCS[1])
    assert caught.value.error_type == "esi_invalid_killmail"
    assert str(status) in caught.value.message
    assert esi.hits[DOCS[1]["killmail_id"]] == 1
    assert fake_time.sleeps == []


def test_a_wrong_hash_is_refused_by_esi_and_permanent(esi, fake_time):
    client = make_client(esi, fake_time)
    with pytest.raises(PermanentError) as caught:
        fetch(client, fake_time, DOCS[1], killmail_hash="0" * 40)
    assert caught.value.error_type == "esi_invalid_killmail"
    assert esi.total_hits == 1


def test_a_document_for_another_killmail_is_a_permanent_mismatch(esi, fake_time):
    client = make_client(esi, fake_time)
    esi.mismatch(DOCS[2]["killmail_id"])
    with pytest.raises(PermanentError) as caught:
        fetch(client, fake_time, DOCS[2])
    assert caught.value.error_type == "esi_mismatch"
    assert esi.total_hits == 1


def test_a_document_that_fails_validation_is_permanent(esi, fake_time):
    client = make_client(esi, fake_time)
    esi.faults.script(body=b'{"killmail_id": 1, "victim": {}, "attackers": []}', when=f"/{DOCS[2]['killmail_id']}/")
    with pytest.raises(PermanentError) as caught:
        fetch(client, fake_time, DOCS[2])
    assert caught.value.error_type == "validation_error"
    assert esi.total_hits == 1


def test_server_errors_are_retried_twice_with_growing_jittered_backoff(esi, fake_time):
    jitters = iter([0.0, 1.0])
    client = make_client(esi, fake_time, backoff=0.5, jitter=lambda: next(jitters))
    esi.fail(DOCS[3]["killmail_id"], 503, times=2)
    killmail = fetch(client, fake_time, DOCS[3])
    assert killmail.killmail_id == DOCS[3]["killmail_id"]
    assert esi.hits[DOCS[3]["killmail_id"]] == 3
    # base × 2^attempt × (0.5 + jitter)
    assert fake_time.sleeps == [0.25, 1.5]
    assert client.take_counts() == {"requests": 3, "errors": 2, "rate_limited": 0}


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_after_two_retries_are_transient(esi, fake_time, status):
    client = make_client(esi, fake_time)
    esi.fail(DOCS[3]["killmail_id"], status, times=None)
    with pytest.raises(TransientError) as caught:
        fetch(client, fake_time, DOCS[3])
    assert caught.value.error_type == "esi_unavailable"
    assert esi.hits[DOCS[3]["killmail_id"]] == 3


def test_no_retry_is_made_when_its_backoff_would_pass_the_deadline(esi, fake_time):
    client = make_client(esi, fake_time, backoff=5.0, connect_timeout=1.0)
    esi.fail(DOCS[3]["killmail_id"], 500, times=None)
    with pytest.raises(TransientError) as caught:
        fetch(client, fake_time, DOCS[3], within=4.0)
    assert caught.value.error_type == "esi_unavailable"
    assert esi.total_hits == 1
    assert fake_time.sleeps == []


def test_a_cut_off_body_is_retried_as_a_transport_failure(esi, fake_time):
    client = make_client(esi, fake_time)
    esi.malformed(DOCS[4]["killmail_id"])
    assert fetch(client, fake_time, DOCS[4]).killmail_id == DOCS[4]["killmail_id"]
    assert esi.hits[DOCS[4]["killmail_id"]] == 2


def test_bodies_that_stay_malformed_end_transient(esi, fake_time):
    client = make_client(esi, fake_time)
    esi.malformed(DOCS[4]["killmail_id"], times=None)
    with pytest.raises(TransientError) as caught:
        fetch(client, fake_time, DOCS[4])
    assert caught.value.error_type == "esi_unavailable"
    assert "malformed JSON" in caught.value.message


def test_a_body_nested_deeper_than_json_parses_is_permanent_and_not_retried(esi, fake_time):
    client = make_client(esi, fake_time)
    esi.faults.script(body=b"[" * 100_000, when=f"/{DOCS[5]['killmail_id']}/", times=None)
    with pytest.raises(PermanentError) as caught:
        fetch(client, fake_time, DOCS[5])
    assert caught.value.error_type == "validation_error"
    assert "nested too deeply" in caught.value.message
    assert esi.total_hits == 1


def test_slow_answers_time_out_and_are_retried(esi, fake_time):
    client = make_client(esi, fake_time, read_timeout=0.2)
    esi.slow(DOCS[5]["killmail_id"], 1.0, times=1)
    assert fetch(client, fake_time, DOCS[5]).killmail_id == DOCS[5]["killmail_id"]
    assert esi.hits[DOCS[5]["killmail_id"]] == 2
    assert len(fake_time.sleeps) == 1


def test_answers_that_stay_slow_end_transient(esi, fake_time):
    client = make_client(esi, fake_time, read_timeout=0.2)
    esi.slow(DOCS[5]["killmail_id"], 1.0, times=None)
    with pytest.raises(TransientError) as caught:
        fetch(client, fake_time, DOCS[5])
    assert caught.value.error_type == "esi_unavailable"
    assert "Timeout" in caught.value.message
    assert esi.hits[DOCS[5]["killmail_id"]] == 3


def test_a_dripping_answer_ends_at_the_deadline(esi):
    """Defect 8: ESI answering one byte every 0.3 s (read timeout 1 s, deadline 5 s) kept the
    fetch 14.1 s: the read timeout bounds each socket read, not the request. Real clock."""
    client = KillmailClient(esi.url, UA, read_timeout=1.0)
    esi.drip(DOCS[4]["killmail_id"], 0.3, times=None)
    began = time.monotonic()
    with pytest.raises(TransientError) as caught:
        client.fetch(DOCS[4]["killmail_id"], DOCS[4]["killmail_hash"], began + 5.0)
    assert time.monotonic() - began < 5.0 + 1.0
    assert caught.value.error_type == "esi_unavailable" and "Timeout" in caught.value.message


def test_the_compatibility_date_is_the_configured_one(esi, fake_time):
    """Item 13: X-Compatibility-Date is ESI_COMPATIBILITY_DATE's (it was a constant, 2025-11-06)."""
    client = make_client(esi, fake_time, compatibility_date="2026-10-01")
    fetch(client, fake_time, DOCS[0])
    assert esi.compatibility_dates == {"2026-10-01": 1}


def test_connection_errors_end_transient(fake_time):
    with EsiServer() as server:
        url = server.url
    client = KillmailClient(url, UA, clock=fake_time, sleep=fake_time.sleep, jitter=lambda: 0.5)
    with pytest.raises(TransientError) as caught:
        client.fetch(DOCS[0]["killmail_id"], DOCS[0]["killmail_hash"], fake_time.now + 60)
    assert caught.value.error_type == "esi_unavailable"
    assert "ConnectionError" in caught.value.message
    assert client.take_counts() == {"requests": 3, "errors": 3, "rate_limited": 0}


def test_error_limited_stops_every_call_until_the_reset_has_passed(esi, fake_time):
    client = make_client(esi, fake_time)
    esi.fail(DOCS[0]["killmail_id"], 420, headers={"X-ESI-Error-Limit-Reset": "30"})
    with pytest.raises(TransientError) as first:
        fetch(client, fake_time, DOCS[0])
    assert first.value.error_type == "esi_error_limited"
    fake_time.now += 29
    with pytest.raises(TransientError) as second:
        fetch(client, fake_time, DOCS[1])
    assert second.value.error_type == "esi_error_limited"
    assert esi.total_hits == 1, "no call may reach ESI while it is error-limited"
    fake_time.now += 1.5
    assert fetch(client, fake_time, DOCS[1]).killmail_id == DOCS[1]["killmail_id"]
    assert esi.total_hits == 2
    assert client.take_counts() == {"requests": 2, "errors": 1, "rate_limited": 2}


def test_retry_after_is_slept_out_when_it_fits(esi, fake_time):
    client = make_client(esi, fake_time)
    esi.fail(DOCS[6]["killmail_id"], 429, headers={"Retry-After": "7"})
    assert fetch(client, fake_time, DOCS[6], within=60).killmail_id == DOCS[6]["killmail_id"]
    assert fake_time.sleeps == [7.0]
    assert esi.hits[DOCS[6]["killmail_id"]] == 2


def test_retry_after_longer_than_the_time_left_is_transient_without_waiting(esi, fake_time):
    client = make_client(esi, fake_time)
    esi.fail(DOCS[6]["killmail_id"], 429, headers={"Retry-After": "120"})
    with pytest.raises(TransientError) as caught:
        fetch(client, fake_time, DOCS[6], within=60)
    assert caught.value.error_type == "esi_rate_limited"
    assert fake_time.sleeps == []
    assert esi.total_hits == 1
    # The wait is the IP's, not the killmail's: the next fetch is held back as well.
    with pytest.raises(TransientError):
        fetch(client, fake_time, DOCS[7], within=60)
    assert esi.total_hits == 1


def test_a_low_rate_limit_remaining_paces_requests_to_what_the_bucket_sustains(esi, fake_time):
    client = make_client(esi, fake_time)
    fetch(client, fake_time, DOCS[0])
    fetch(client, fake_time, DOCS[1])
    assert fake_time.sleeps == [], "a full bucket needs no pacing"
    esi.faults.script(headers={"X-Ratelimit-Remaining": "40"})  # under 10 % of 3600/15m
    fetch(client, fake_time, DOCS[2])
    fetch(client, fake_time, DOCS[3])
    fetch(client, fake_time, DOCS[4])
    # 2 tokens per success at 3600 tokens / 900 s: one fetch per 0.5 s
    assert fake_time.sleeps == [0.5]
    assert esi.total_hits == 5
    # A later answer with a healthy bucket ends the pacing.
    fake_time.now += 10
    fetch(client, fake_time, DOCS[5])
    fetch(client, fake_time, DOCS[6])
    assert fake_time.sleeps == [0.5]


def test_the_real_token_bucket_running_low_slows_the_client_before_esi_says_no(fake_time):
    with EsiServer(rate_limit_tokens=40, rate_limit_window=20.0) as server:
        server.add_many(DOCS)
        client = make_client(server, fake_time)
        for doc in DOCS:
            fetch(client, fake_time, doc)
        # 2 tokens per fetch: 40 → 24 after 8; low water (10 %) not reached yet.
        assert fake_time.sleeps == []
        # 18 fetches leave 4 tokens (10 %): from then on one fetch per 20 s / 40 tokens × 2.
        for doc in DOCS + DOCS[:4]:
            fetch(client, fake_time, doc)
        assert [r.status for r in server.requests] == [200] * 20
        assert fake_time.sleeps == [1.0]


def test_the_url_is_built_from_the_configured_base(esi, fake_time):
    client = KillmailClient(esi.url + "/", UA, clock=fake_time, sleep=fake_time.sleep)
    assert client.url(5, "ab" * 20) == f"{esi.url}/killmails/5/{'ab' * 20}/"


def test_no_call_is_made_once_the_deadline_has_come(esi, fake_time):
    client = make_client(esi, fake_time, connect_timeout=3.0)
    with pytest.raises(TransientError) as caught:
        fetch(client, fake_time, DOCS[0], within=2.0)
    assert caught.value.error_type == "out_of_time"
    assert esi.total_hits == 0


def test_rate_limited_answers_after_every_retry_end_transient(esi, fake_time):
    client = make_client(esi, fake_time)
    esi.fail(DOCS[6]["killmail_id"], 429, headers={"Retry-After": "1"}, times=None)
    with pytest.raises(TransientError) as caught:
        fetch(client, fake_time, DOCS[6], within=60)
    assert caught.value.error_type == "esi_rate_limited"
    assert esi.hits[DOCS[6]["killmail_id"]] == 3
    assert fake_time.sleeps == [1.0, 1.0]
    assert client.take_counts() == {"requests": 3, "errors": 3, "rate_limited": 3}
