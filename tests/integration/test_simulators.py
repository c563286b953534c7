"""The local R2Z2, RedisQ and ESI servers, over real HTTP: they must behave as
docs/protocols.md says, or every test built on them proves nothing."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from datetime import UTC, date, datetime
from urllib.parse import urljoin

import pytest
import requests

from killstream_workstation import corpus
from killstream_workstation.corpus import generate, split_hash, zkb_for
from killstream_workstation.simulators.esi import EsiServer
from killstream_workstation.simulators.faults import FaultRates
from killstream_workstation.simulators.hung import HungServer
from killstream_workstation.simulators.r2z2 import PLACEHOLDER_HREF, R2Z2Server
from killstream_workstation.simulators.redisq import FilterError, PackageFilter, RedisQServer

UA = {"User-Agent": "killstream-tests/0.1 (tests@example.com)"}
DOCS = generate(6)


def publish_all(server, docs=DOCS, **options):
    return [server.publish(*split_hash(doc), zkb_for(doc), **options) for doc in docs]


def killmail_url(esi, doc, killmail_hash=None):
    return f"{esi.url}/killmails/{doc['killmail_id']}/{killmail_hash or doc['killmail_hash']}/"


@pytest.fixture
def r2z2():
    with R2Z2Server(sequence_lag=0) as server:
        yield server


def test_history_serves_what_was_published_even_expired_files_for_days_past_the_delay():
    now = datetime(2026, 11, 3, 5, 0, tzinfo=UTC)  # 5 h into Nov 3: Nov 2 not written yet
    docs = corpus.on_days(generate(9), [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)])
    with R2Z2Server(sequence_lag=0, history_now=lambda: now) as server:
        publish_all(server, docs[:5])
        publish_all(server, docs[5:6], raw=False)  # zKillboard never got its body
        publish_all(server, docs[6:])
        server.expire(server.head)  # the live files are gone; history keeps them
        get = lambda path: requests.get(f"{server.history_url}/{path}", headers=UA, timeout=5)  # noqa: E731
        assert get("totals.json").json() == {"20261101": 3}
        assert get("20261102.json").status_code == 404
        assert get("20261101.json").json() == {str(d["killmail_id"]): d["killmail_hash"] for d in docs[:3]}
        now = datetime(2026, 11, 3, 6, 0, 1, tzinfo=UTC)
        assert get("totals.json").json() == {"20261101": 3, "20261102": 3}
        raw = get("raw/20261102.json")
        assert raw.headers["Cache-Control"] == "max-age=31536000"
        assert list(raw.json()) == [str(d["killmail_id"]) for d in docs[3:5]]  # sorted, without the bodiless one
        assert raw.json()[str(docs[3]["killmail_id"])] == split_hash(docs[3])[0]
        server.history.unlisted[date(2026, 11, 1)] = 2
        server.history.fault(date(2026, 11, 1), "malformed_hash")
        server.history.fault(date(2026, 11, 2), "list_garbage")
        server.history.fault(date(2026, 11, 2), "raw_truncated")
        assert get("totals.json").json()["20261101"] == 5
        assert "not-a-hash" in get("20261101.json").json().values()
        assert get("20261102.json").text.startswith("<html>")
        with pytest.raises(ValueError):
            get("raw/20261102.json").json()
        server.history.fault(date(2026, 11, 1), "raw_missing")
        assert get("raw/20261101.json").status_code == 404
        anonymous = http.client.HTTPConnection(server.base_url.removeprefix("http://"), timeout=5)
        anonymous.request("GET", "/history/totals.json")  # http.client sends no User-Agent
        assert anonymous.getresponse().status == 403


@pytest.fixture
def redisq():
    with RedisQServer(ttw_scale=0.02) as server:
        yield server


@pytest.fixture
def esi():
    with EsiServer() as server:
        server.add_many(DOCS)
        yield server


# --- faults, shown on R2Z2 but shared by all three servers -------------------------------------


def test_scripted_faults_are_consumed_in_order_by_matching_requests(r2z2):
    publish_all(r2z2)
    r2z2.faults.script(status=429, headers={"Retry-After": "2"})
    r2z2.faults.script(status=503, when="/2.json", times=2)
    first = requests.get(f"{r2z2.url}/1.json", headers=UA)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "2")
    assert requests.get(f"{r2z2.url}/1.json", headers=UA).status_code == 200
    assert [requests.get(f"{r2z2.url}/2.json", headers=UA).status_code for _ in range(3)] == [503, 503, 200]
    assert r2z2.faults.pending == 0
    assert [(f.kind, f.status, f.scripted) for f in r2z2.faults.injected] == [("status", 429, True)] + [
        ("status", 503, True)
    ] * 2


def test_garbage_stall_and_disconnect(r2z2, capfd):
    publish_all(r2z2)
    r2z2.faults.script(body=b"{garbage")
    with pytest.raises(json.JSONDecodeError):
        requests.get(f"{r2z2.url}/1.json", headers=UA).json()
    r2z2.faults.script(stall=30.0)
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"{r2z2.url}/1.json", headers=UA, timeout=0.2)
    r2z2.faults.script(disconnect=True)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{r2z2.url}/1.json", headers=UA)
    assert requests.get(f"{r2z2.url}/1.json", headers=UA).json()["sequence_id"] == 1
    started = time.monotonic()
    r2z2.stop()
    assert time.monotonic() - started < 10, "a stalled answer (30 s) must not hold up stop()"
    assert capfd.readouterr().err == "", "the servers must stay quiet"


def test_random_faults_are_reproducible_from_the_seed():
    rates = FaultRates(rate_429=0.1, rate_5xx=0.1, rate_garbage=0.1)

    def run():
        with R2Z2Server(seed=42, fault_rates=rates) as server:
            session = requests.Session()
            answers = [session.get(f"{server.url}/sequence.json", headers=UA) for _ in range(200)]
            faulted = [a for a in answers if a.content != b'{"sequence": 0}']
            assert len(faulted) == len(server.faults.injected) == sum(1 for r in server.requests if r.fault)
            return [(a.status_code, a.content) for a in answers]

    first = run()
    assert first == run()
    assert 30 < sum(1 for _, body in first if body != b'{"sequence": 0}') < 90


# --- R2Z2 ---------------------------------------------------------------------------------------


def test_r2z2_serves_packages_and_404s_until_published(r2z2):
    assert requests.get(f"{r2z2.url}/1.json", headers=UA).status_code == 404
    doc = DOCS[0]
    sequence = r2z2.publish(doc, doc["killmail_hash"], zkb_for(doc))
    answer = requests.get(f"{r2z2.url}/{sequence}.json", headers=UA)
    package = answer.json()
    assert answer.headers["Cache-Control"] == "public, max-age=86400"
    assert list(package) == ["killmail_id", "hash", "esi", "zkb", "uploaded_at", "sequence_id"]
    assert package["esi"] == split_hash(doc)[0]
    assert (package["killmail_id"], package["hash"], package["sequence_id"]) == (
        doc["killmail_id"],
        doc["killmail_hash"],
        1,
    )
    assert requests.get(f"{r2z2.url}/sequence.json", headers=UA).json() == {"sequence": 1}
    without_esi = r2z2.publish(*split_hash(DOCS[1]), zkb_for(DOCS[1]), include_esi=False)
    assert "esi" not in requests.get(f"{r2z2.url}/{without_esi}.json", headers=UA).json()


def test_r2z2_sequence_file_lags_the_head():
    with R2Z2Server(first_sequence=1000) as server:
        for _ in range(51):
            publish_all(server, DOCS[:1])
        assert (server.head, requests.get(f"{server.url}/sequence.json", headers=UA).json()) == (
            1050,
            {"sequence": 999},
        )
        publish_all(server, DOCS[:1])
        assert requests.get(f"{server.url}/sequence.json", headers=UA).json() == {"sequence": 1051}


def test_r2z2_republish_skip_and_expire(r2z2):
    publish_all(r2z2, DOCS[:2])
    revalued = {**zkb_for(DOCS[0]), "totalValue": 1.0}
    again = r2z2.republish(DOCS[0]["killmail_id"], revalued)
    package = requests.get(f"{r2z2.url}/{again}.json", headers=UA).json()
    assert (again, package["zkb"], package["killmail_id"]) == (3, revalued, DOCS[0]["killmail_id"])
    assert "sequence_updated" not in package
    r2z2.skip(2)
    after_gap = r2z2.publish(*split_hash(DOCS[2]), zkb_for(DOCS[2]))
    assert after_gap == 6
    assert [requests.get(f"{r2z2.url}/{n}.json", headers=UA).status_code for n in (4, 5, 6)] == [404, 404, 200]
    r2z2.expire(2)
    assert [requests.get(f"{r2z2.url}/{n}.json", headers=UA).status_code for n in (1, 2, 3)] == [404, 404, 200]


def test_r2z2_updates_in_place_and_points_at_the_rewrite_from_the_next_new_file(r2z2):
    publish_all(r2z2, DOCS[:3])
    before = requests.get(f"{r2z2.url}/2.json", headers=UA).json()
    r2z2.update_in_place(2, {**zkb_for(DOCS[1]), "totalValue": 7.0, "labels": ["ganked"]})
    r2z2.update_in_place(1, {**zkb_for(DOCS[0]), "totalValue": 8.0})
    rewritten = requests.get(f"{r2z2.url}/2.json", headers=UA).json()
    assert (rewritten["sequence_id"], rewritten["killmail_id"], rewritten["zkb"]["totalValue"]) == (
        2,
        DOCS[1]["killmail_id"],
        7.0,
    )
    assert rewritten["uploaded_at"] > before["uploaded_at"] and rewritten["esi"] == before["esi"]
    assert r2z2.pending_pointers == 2
    # one pointer per new file, oldest rewrite first; the file carrying it is another killmail
    fourth, fifth, sixth = publish_all(r2z2, DOCS[3:6])
    files = [requests.get(f"{r2z2.url}/{n}.json", headers=UA).json() for n in (fourth, fifth, sixth)]
    assert [f.get("sequence_updated") for f in files] == [2, 1, None]
    assert files[0]["killmail_id"] == DOCS[3]["killmail_id"] and r2z2.pending_pointers == 0


def test_r2z2_placeholders_esi_null_and_stale_404s(r2z2):
    publish_all(r2z2, DOCS[:1])
    placeholder = r2z2.publish_placeholder()
    null_esi = r2z2.publish(*split_hash(DOCS[1]), zkb_for(DOCS[1]), include_esi=False, esi_null=True)
    empty = requests.get(f"{r2z2.url}/{placeholder}.json", headers=UA).json()
    assert "killmail_id" not in empty and "hash" not in empty and empty["zkb"]["href"] == PLACEHOLDER_HREF
    assert PLACEHOLDER_HREF.endswith("/killmails///") and empty["sequence_id"] == placeholder
    package = requests.get(f"{r2z2.url}/{null_esi}.json", headers=UA).json()
    assert package["esi"] is None and package["killmail_id"] == DOCS[1]["killmail_id"]
    r2z2.stale_404(1, times=2)
    assert [requests.get(f"{r2z2.url}/{n}.json", headers=UA).status_code for n in (1, 11, 1, 1)] == [
        404,
        404,  # 11 is not published: a stale 404 for 1 is for 1 alone
        404,
        200,
    ]


def test_a_dripping_answer_sends_its_body_one_byte_at_a_time(r2z2):
    publish_all(r2z2, DOCS[:1])
    r2z2.faults.script(drip=0.05, when="/sequence.json")
    started = time.monotonic()
    answer = requests.get(f"{r2z2.url}/sequence.json", headers=UA, timeout=(1, 0.5), stream=True)
    assert answer.status_code == 200 and time.monotonic() - started < 0.5  # the headers come at once
    body = answer.raw.read()
    assert body == b'{"sequence": 1}' and time.monotonic() - started >= len(body) * 0.05
    assert r2z2.faults.injected[-1].kind == "drip"


def test_a_hung_server_accepts_and_never_answers():
    with HungServer() as hung:
        host, port = hung.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=2) as connection:
            connection.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            connection.settimeout(0.3)
            with pytest.raises(TimeoutError):
                connection.recv(1)
        with pytest.raises(requests.ReadTimeout):
            requests.get(hung.url, timeout=(1, 0.2))
        assert hung.accepted == 2


def test_r2z2_refuses_a_blank_user_agent_and_records_requests(r2z2):
    # requests always sends some User-Agent; http.client sends none.
    connection = http.client.HTTPConnection("127.0.0.1", int(r2z2.base_url.rsplit(":", 1)[1]))
    connection.request("GET", "/ephemeral/sequence.json")
    assert connection.getresponse().status == 403
    connection.close()
    assert requests.get(f"{r2z2.url}/sequence.json", headers={"User-Agent": ""}).status_code == 403
    assert requests.get(f"{r2z2.url}/sequence.json", headers=UA).status_code == 200
    assert [(r.path, r.status) for r in r2z2.requests] == [("/ephemeral/sequence.json", s) for s in (403, 403, 200)]
    assert r2z2.requests[-1].headers["User-Agent"] == UA["User-Agent"]
    assert r2z2.requests[0].started <= r2z2.requests[1].started <= r2z2.requests[2].started <= time.monotonic()


def test_r2z2_background_publisher_keeps_a_steady_rate(r2z2):
    started = time.monotonic()
    r2z2.start_publishing(DOCS[:5], per_second=50)
    assert r2z2.wait_published(timeout=2)
    assert (r2z2.done, r2z2.published_count, r2z2.head) == (True, 5, 5)
    assert time.monotonic() - started >= 4 / 50
    package = requests.get(f"{r2z2.url}/5.json", headers=UA).json()
    assert package["zkb"] == zkb_for(DOCS[4]) and package["killmail_id"] == DOCS[4]["killmail_id"]


# --- RedisQ -------------------------------------------------------------------------------------


def test_redisq_redirects_to_the_package_in_both_shapes(redisq):
    doc_new, doc_old = DOCS[0], DOCS[1]
    redisq.publish(*split_hash(doc_new), zkb_for(doc_new))
    redisq.publish(*split_hash(doc_old), zkb_for(doc_old), include_killmail=True)
    answer = requests.get(redisq.url, params={"queueID": "q", "ttw": 1}, allow_redirects=False)
    assert answer.status_code == 302 and answer.headers["Location"] == "/object.php?objectID=1"
    assert redisq.popped == 1
    package = requests.get(urljoin(answer.url, answer.headers["Location"])).json()["package"]
    assert package == {"killID": doc_new["killmail_id"], "zkb": zkb_for(doc_new)}
    assert package["zkb"]["hash"] == doc_new["killmail_hash"] and package["zkb"]["href"].endswith(
        f"/{doc_new['killmail_hash']}/"
    )
    old = requests.get(redisq.url, params={"queueID": "q", "ttw": 1}).json()["package"]
    assert old["killmail"] == split_hash(doc_old)[0] and old["killID"] == doc_old["killmail_id"]
    assert requests.get(f"{redisq.base_url}/object.php", params={"objectID": "nope"}).status_code == 404


def test_an_empty_redisq_poll_redirects_to_object_id_null_as_listen_js_does(redisq):
    answer = requests.get(redisq.url, params={"queueID": "q", "ttw": 1}, allow_redirects=False)
    assert (answer.status_code, answer.headers["Location"]) == (302, "/object.php?objectID=null")
    assert requests.get(f"{redisq.base_url}/object.php", params={"objectID": "null"}).json() == {"package": None}
    assert redisq.popped == 0


def test_redisq_waits_ttw_then_answers_null_and_clamps_ttw(redisq):
    for ttw, expected in (("1", 0.02), ("100", 0.2), ("0", 0.02)):
        started = time.monotonic()
        assert requests.get(redisq.url, params={"queueID": "q", "ttw": ttw}).json() == {"package": None}
        # the upper bound only tells a clamped ttw (10) from an unclamped one (100: 2 s)
        assert expected <= time.monotonic() - started < expected + 1.5


def test_redisq_wakes_a_waiting_listener_and_keeps_queues_apart(redisq):
    redisq.ttw_scale = 3.0  # a listen held 30 s: woken, it answers long before
    timer = threading.Timer(0.1, lambda: publish_all(redisq, DOCS[:1]))
    timer.start()
    started = time.monotonic()
    first = requests.get(redisq.url, params={"queueID": "a", "ttw": 10}).json()["package"]
    assert first["killID"] == DOCS[0]["killmail_id"] and time.monotonic() - started < 15
    redisq.ttw_scale = 0.2
    publish_all(redisq, DOCS[1:2])
    assert requests.get(redisq.url, params={"queueID": "a"}).json()["package"]["killID"] == DOCS[1]["killmail_id"]
    late = [requests.get(redisq.url, params={"queueID": "b", "ttw": 1}).json()["package"] for _ in range(3)]
    assert [p and p["killID"] for p in late] == [DOCS[0]["killmail_id"], DOCS[1]["killmail_id"], None]
    assert len(redisq.queues["a"]) == len(redisq.queues["b"]) == 0


def test_redisq_429s_without_queue_id_or_for_a_second_listener(redisq):
    assert requests.get(redisq.url).status_code == 429
    assert requests.get(redisq.url, params={"queueID": " "}).status_code == 429
    redisq.ttw_scale = 0.3  # the first listener is held 3 s
    waiting = threading.Thread(target=requests.get, args=(redisq.url,), kwargs={"params": {"queueID": "q", "ttw": 10}})
    waiting.start()
    deadline = time.monotonic() + 10
    while len(redisq.requests) < 3 and time.monotonic() < deadline:  # until the first listener is there
        time.sleep(0.01)
    assert requests.get(redisq.url, params={"queueID": "q", "ttw": 1}).status_code == 429
    assert requests.get(redisq.url, params={"queueID": "other", "ttw": 1}).status_code == 200
    waiting.join()
    assert requests.get(redisq.url, params={"queueID": "q", "ttw": 1}).status_code == 200


def test_redisq_filters(redisq):
    cheap, dear = DOCS[0], DOCS[1]
    redisq.publish(*split_hash(cheap), {**zkb_for(cheap), "totalValue": 1000, "labels": ["pvp", "loc:highsec"]})
    redisq.publish(*split_hash(dear), {**zkb_for(dear), "totalValue": 5e9, "labels": ["pvp", "loc:nullsec"]})

    def kill_ids(queue_id, rule):
        answers = (requests.get(redisq.url, params={"queueID": queue_id, "ttw": 1, "filter": rule}) for _ in range(2))
        return [a.json()["package"]["killID"] for a in answers if a.json()["package"]]

    assert kill_ids("value", "totalValue>=1000000000") == [dear["killmail_id"]]
    assert kill_ids("label", "labels=loc:highsec") == [cheap["killmail_id"]]
    assert kill_ids("and", f"labels=pvp;killID={dear['killmail_id']}") == [dear["killmail_id"]]
    assert kill_ids("or", f"killID={cheap['killmail_id']},totalValue>1e9") == [
        cheap["killmail_id"],
        dear["killmail_id"],
    ]
    assert kill_ids("deep", f"ship_type_id={cheap['victim']['ship_type_id']}") == []
    for invalid in ("a=1;b=2,c=3", "totalValue", "a=1;"):
        assert requests.get(redisq.url, params={"queueID": "bad", "filter": invalid}).status_code == 400


def test_package_filter_searches_nested_values_and_arrays():
    package = {
        "killID": 7,
        "killmail": {"attackers": [{"character_id": 5}, {"character_id": 9}]},
        "zkb": {"npc": False},
    }
    assert PackageFilter.parse("character_id=9").matches(package)
    assert PackageFilter.parse("character_id<6;killID!=8").matches(package)
    assert not PackageFilter.parse("character_id>9").matches(package)
    assert PackageFilter.parse("npc=false").matches(package)
    assert not PackageFilter.parse("missing=1").matches(package)
    with pytest.raises(FilterError):
        PackageFilter.parse("a=1,b=2;c=3")


def test_redisq_shutdown_refuses_after_a_delay():
    with RedisQServer(shutdown=True, shutdown_delay=0.1) as server:
        started = time.monotonic()
        answer = requests.get(server.url, params={"queueID": "q"})
        assert time.monotonic() - started >= 0.1
        assert answer.status_code == 403
        body = answer.json()
        assert (
            body["access"] == "denied!" and "redisq is shutting down" in body["message"] and "R2Z2" in body["message"]
        )


def test_redisq_shares_fault_injection(redisq):
    redisq.faults.script(status=502, when="/object.php")
    publish_all(redisq, DOCS[:1])
    assert requests.get(redisq.url, params={"queueID": "q"}).status_code == 502
    assert [(r.path, r.status, r.fault) for r in redisq.requests] == [
        ("/listen.php", 302, None),
        ("/object.php", 502, "status"),
    ]


# --- ESI ----------------------------------------------------------------------------------------


def test_esi_serves_killmails_with_rate_limit_headers(esi):
    doc = DOCS[0]
    headers = {**UA, "X-Compatibility-Date": "2025-11-06"}
    answer = requests.get(killmail_url(esi, doc), headers=headers)
    assert answer.status_code == 200 and answer.json() == split_hash(doc)[0]
    assert "killmail_hash" not in answer.json()
    assert {
        k: answer.headers[k]
        for k in ("X-Ratelimit-Group", "X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Used")
    } == {
        "X-Ratelimit-Group": "killmail",
        "X-Ratelimit-Limit": "3600/15m",
        "X-Ratelimit-Remaining": "3598",
        "X-Ratelimit-Used": "2",
    }
    assert (answer.headers["X-ESI-Error-Limit-Remain"], answer.headers["X-ESI-Error-Limit-Reset"]) == ("100", "60")
    wrong = requests.get(killmail_url(esi, doc, "0" * 40), headers=headers)
    assert (wrong.status_code, wrong.json()) == (422, {"error": "Invalid killmail_id and/or killmail_hash"})
    assert (wrong.headers["X-Ratelimit-Used"], wrong.headers["X-ESI-Error-Limit-Remain"]) == ("7", "99")
    assert requests.get(f"{esi.url}/killmails/1/{'0' * 40}/", headers=headers).status_code == 422
    assert (esi.hits[doc["killmail_id"]], esi.hits[1], esi.total_hits) == (2, 1, 3)
    assert esi.user_agents == {UA["User-Agent"]: 3} and esi.compatibility_dates == {"2025-11-06": 3}


def test_esi_invalid_status_can_be_404():
    with EsiServer(invalid_status=404) as server:
        assert requests.get(killmail_url(server, DOCS[0])).status_code == 404


def test_esi_token_bucket_empties_and_refills():
    # A window far longer than the four requests take, however busy the machine.
    with EsiServer(rate_limit_tokens=6, rate_limit_window=3.0) as server:
        server.add_many(DOCS)
        answers = [requests.get(killmail_url(server, DOCS[0])) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["X-Ratelimit-Remaining"] for a in answers] == ["4", "2", "0", "0"]
        assert 1 <= int(answers[-1].headers["Retry-After"]) <= 3  # whole seconds until the oldest token returns
        assert answers[0].headers["X-Ratelimit-Limit"] == "6/3s"
        time.sleep(3.05)
        assert requests.get(killmail_url(server, DOCS[0])).status_code == 200


def test_esi_error_limit_answers_420_everywhere_until_reset():
    with EsiServer(error_limit=3, error_window=3.0) as server:
        server.add_many(DOCS)
        remains = [
            requests.get(killmail_url(server, DOCS[0], "f" * 40)).headers["X-ESI-Error-Limit-Remain"] for _ in range(3)
        ]
        assert remains == ["2", "1", "0"]
        assert requests.get(killmail_url(server, DOCS[0])).status_code == 420
        assert requests.get(f"{server.url}/status/").status_code == 420
        time.sleep(3.05)
        assert requests.get(killmail_url(server, DOCS[0])).status_code == 200


def test_esi_per_killmail_faults(esi):
    first, second = DOCS[0], DOCS[1]
    esi.fail(first["killmail_id"], 503, times=2)
    esi.fail(second["killmail_id"], 429)
    assert [requests.get(killmail_url(esi, first)).status_code for _ in range(3)] == [503, 503, 200]
    limited = requests.get(killmail_url(esi, second))
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "1")
    esi.slow(first["killmail_id"], 5.0)
    with pytest.raises(requests.ReadTimeout):
        requests.get(killmail_url(esi, first), timeout=0.2)
    esi.malformed(first["killmail_id"])
    with pytest.raises(json.JSONDecodeError):
        requests.get(killmail_url(esi, first)).json()
    esi.mismatch(first["killmail_id"])
    assert requests.get(killmail_url(esi, first)).json()["killmail_id"] != first["killmail_id"]
    assert requests.get(killmail_url(esi, first)).json() == split_hash(first)[0]
    assert requests.get(killmail_url(esi, second)).status_code == 200
    esi.faults.script(disconnect=True)
    with pytest.raises(requests.ConnectionError):
        requests.get(killmail_url(esi, second))
    assert (esi.hits[first["killmail_id"]], esi.hits[second["killmail_id"]]) == (7, 3), (
        "every request is a hit, answered or not"
    )


def test_esi_latency_and_random_faults():
    with EsiServer(latency=0.05, seed=3, fault_rates=FaultRates(rate_5xx=0.5)) as server:
        server.add_many(DOCS)
        started = time.monotonic()
        statuses = [requests.get(killmail_url(server, DOCS[0])).status_code for _ in range(6)]
        assert time.monotonic() - started >= 6 * 0.05
        assert set(statuses) - {200} <= {500, 502, 503, 504} and 200 in statuses and len(set(statuses)) > 1
        assert len(server.faults.injected) == sum(1 for s in statuses if s != 200)
        assert server.tokens_remaining == 3600 - 2 * statuses.count(200)
