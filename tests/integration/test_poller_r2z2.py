"""The poller on R2Z2: the real source, sink and cursor store against the local R2Z2 server and
moto's SQS and SSM over HTTP. Most tests run on a fake clock that moves only when the poller
sleeps (the servers answer in real time, which the fake clock does not see); the tests that
measure real spacing say so."""

from __future__ import annotations

import json
import time
import uuid
from itertools import pairwise
from urllib.parse import urlsplit

import boto3
import pytest
import requests

from killstream.config import PollerConfig
from killstream.errors import BUDGET, ENQUEUE_FAILED, REMAINING_TIME, SOURCE_REFUSED
from killstream.observability import metrics
from killstream.poller.counts import TickCounts
from killstream.poller.cursor import CursorStore
from killstream.poller.sink import SqsSink
from killstream.poller.sources.base import source_client
from killstream.poller.sources.r2z2 import UNREADABLE_ATTEMPTS, R2Z2Source
from killstream.poller.tick import Poller
from killstream_workstation.corpus import renumber, sample, split_hash, zkb_for
from killstream_workstation.local.lambda_runtime import LambdaContext, load_handler_module
from killstream_workstation.simulators.faults import GARBAGE_BODY
from killstream_workstation.simulators.hung import HungServer
from killstream_workstation.simulators.r2z2 import R2Z2Server
from tests.support.fakes import FakeClock, RecordingGate, RecordingSqs
from tests.support.sqs import drain

UA = "killstream-tests/0.1 (tests@example.com)"
DOCS = sample()


@pytest.fixture
def r2z2():
    with R2Z2Server(sequence_lag=0) as server:
        yield server


@pytest.fixture
def cursor_parameter(aws) -> str:
    name = f"/killstream/test-{uuid.uuid4().hex[:8]}/r2z2-cursor"
    boto3.client("ssm").put_parameter(Name=name, Value="none", Type="String")
    return name


@pytest.fixture(autouse=True)
def fresh_metrics():
    metrics.clear_metrics()
    yield
    metrics.clear_metrics()


def set_cursor(parameter: str, value: str) -> None:
    boto3.client("ssm").put_parameter(Name=parameter, Value=value, Type="String", Overwrite=True)


def saved_cursor(parameter: str) -> str:
    return boto3.client("ssm").get_parameter(Name=parameter)["Parameter"]["Value"]


def publish(server: R2Z2Server, docs: list[dict], **options) -> list[int]:
    return [server.publish(*split_hash(doc), zkb_for(doc), **options) for doc in docs]


class Rig:
    """Source, sink and cursor store wired as Poller.from_config wires them, with the clock,
    timeouts and SQS client a test chooses. `starts` is every answered request as (clock, path)."""

    def __init__(
        self,
        server: R2Z2Server,
        queue_url: str,
        parameter: str,
        *,
        pacing: float = 0.0,
        budget: float = 50.0,
        clock=None,
        sleep=None,
        read_timeout: float = 5.0,
        sqs=None,
        catchup: float | None = None,
    ):
        self.clock = clock or FakeClock()
        sleep = sleep or self.clock.sleep
        self.gate = RecordingGate(pacing, clock=self.clock, sleep=sleep)
        self.counts = TickCounts()
        self.client = source_client(self.gate, self.counts, UA, connect_timeout=1.0, read_timeout=read_timeout)
        self.source = R2Z2Source(self.client, self.counts, server.url, catchup_pacing=catchup)
        sink = SqsSink(sqs or boto3.client("sqs"), queue_url, flush_within=1.0, clock=self.clock, sleep=sleep)
        self.store = CursorStore(boto3.client("ssm"), parameter, clock=self.clock)
        self.poller = Poller(self.source, sink, self.store, self.gate, self.counts, budget_seconds=budget)
        self.starts: list[tuple[float, str]] = []
        self.client.session.hooks["response"].append(
            lambda response, *args, **kwargs: self.starts.append((self.clock(), urlsplit(response.url).path))
        )

    def tick(self, remaining_ms=None) -> dict:
        return self.poller.tick(remaining_ms)

    def times_of(self, path: str) -> list[float]:
        return [at for at, requested in self.starts if requested == path]


def handler_environment(monkeypatch, server: R2Z2Server, queue_url: str, parameter: str, **more: str) -> None:
    """The poller handler's variables for this server, queue and cursor, and `more`."""
    for name, value in {
        "KILLSTREAM_SOURCE": "r2z2",
        "R2Z2_URL": server.url,
        "QUEUE_URL": queue_url,
        "CURSOR_PARAMETER": parameter,
        "USER_AGENT": UA,
        **more,
    }.items():
        monkeypatch.setenv(name, value)


def sequences(queue_url: str) -> list[int]:
    return [body["sequence_id"] for body, _ in drain(queue_url)]


def served(server: R2Z2Server, sequence: int) -> dict:
    return requests.get(f"{server.url}/{sequence}.json", headers={"User-Agent": UA}, timeout=5).json()


# --- "Done when" --------------------------------------------------------------------------------


class StopWhenAsked(LambdaContext):
    """A Lambda context (as the local runner's StoppableContext) whose stop is asked for once the
    server has been asked for `path`: a tick's end tied to what happened, not to how fast."""

    def __init__(self, server: R2Z2Server, path: str):
        super().__init__("poller", 900)
        self.server = server
        self.path = path
        self.asked = False

    def stop_requested(self) -> bool:
        # The newest few requests are enough: this is asked before every request starts.
        self.asked = self.asked or any(request.path == self.path for request in self.server.requests[-3:])
        return self.asked


@pytest.mark.slow
def test_done_when_one_invocation_at_10_ms_pacing_enqueues_500_packages_in_order(
    r2z2, queue_url, cursor_parameter, monkeypatch, capsys
):
    """Real time, through the real handler: 500 requests at 10 ms pacing take at least 5 s, however
    fast the machine. The invocation is asked to stop once the feed answered past its head (the
    404 for 501), however slow the machine: the one invocation drains all 500, in order."""
    published = publish(r2z2, renumber(DOCS, 500))
    set_cursor(cursor_parameter, "0")
    handler_environment(monkeypatch, r2z2, queue_url, cursor_parameter, POLL_PACING_MS="10", POLL_BUDGET_SECONDS="900")
    handler = load_handler_module("poller").handler
    summary = handler({}, StopWhenAsked(r2z2, "/ephemeral/501.json"))
    assert (summary["received"], summary["enqueued"], summary["cursor"]) == (500, 500, 500)
    assert (summary["errors"], summary["invalid"], summary["enqueue_failures"]) == (0, 0, 0)
    assert summary["stopped_because"] == BUDGET
    assert summary["runtime_seconds"] >= 500 * 0.010 - 0.001  # sequence.json, then 500 files, 10 ms apart
    assert sequences(queue_url) == published == list(range(1, 501))
    assert saved_cursor(cursor_parameter) == "500"
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert [doc["PackagesEnqueued"] for doc in emf] == [[500]]


def test_done_when_default_pacing_catches_up_at_10_requests_a_second_within_the_50_s_budget(
    r2z2, queue_url, cursor_parameter
):
    """Defect 12: 500 ms start to start capped R2Z2 at ~1.65 packages/s. Behind the head each
    request starts POLL_CATCHUP_PACING_MS (100) after the last: a 50 s budget drains up to ~500.
    Injected clock that advances only on sleep; the rest of the path is the handler's
    (Poller.from_config, the Lambda context's remaining time, boto3 through AWS_ENDPOINT_URL)."""
    publish(r2z2, renumber(DOCS, 700))
    set_cursor(cursor_parameter, "0")
    config = PollerConfig.from_env(
        {"R2Z2_URL": r2z2.url, "QUEUE_URL": queue_url, "CURSOR_PARAMETER": cursor_parameter, "USER_AGENT": UA}
    )
    assert (config.pacing_ms, config.catchup_pacing_ms, config.budget_seconds) == (500, 100, 50)
    clock = FakeClock()
    poller = Poller.from_config(config, clock=clock, sleep=clock.sleep)
    summary = poller.tick(LambdaContext("poller", 60, clock=clock).get_remaining_time_in_millis)
    assert summary["stopped_because"] == "budget" and summary["runtime_seconds"] <= 50
    # sequence.json, then 1.json 500 ms later, then one file every 100 ms
    assert len(r2z2.requests) == summary["requests"] == 1 + 1 + int((50 - 0.5) / 0.1 - 1e-9) + 1
    assert summary["enqueued"] == summary["received"] == summary["requests"] - 1
    assert sequences(queue_url) == list(range(1, summary["received"] + 1))
    assert saved_cursor(cursor_parameter) == str(summary["received"])


def test_at_the_head_a_404_waits_6_s_and_sequence_json_is_not_read_every_time(r2z2, queue_url, cursor_parameter):
    """Idle at the head: one request per 6 s, and sequence.json (which moves only every 51
    publications) at the tick's start and then at most once a minute."""
    publish(r2z2, DOCS[:2])
    set_cursor(cursor_parameter, "2")
    rig = Rig(r2z2, queue_url, cursor_parameter, pacing=0.5, budget=50, catchup=0.1)
    summary = rig.tick()
    asks = rig.times_of("/ephemeral/3.json")
    assert len(asks) == 9 and all(b - a >= 6 for a, b in pairwise(asks))
    assert len(rig.times_of("/ephemeral/sequence.json")) == 1
    assert summary["requests"] == 10 and summary["empty_polls"] == 9


# --- the packages -------------------------------------------------------------------------------


def test_packages_arrive_in_sequence_order_with_the_right_bodies(r2z2, queue_url, cursor_parameter):
    docs = DOCS[:6]
    publish(r2z2, docs[:4])
    publish(r2z2, docs[4:], include_esi=False)
    r2z2.republish(docs[1]["killmail_id"], zkb_for(docs[1]) | {"totalValue": 1.5e9})
    set_cursor(cursor_parameter, "0")
    rig = Rig(r2z2, queue_url, cursor_parameter, pacing=0.5, budget=10)
    summary = rig.tick()
    received = drain(queue_url)
    expected = []
    for sequence in range(1, 8):
        file = served(r2z2, sequence)
        expected.append(
            {key: file[key] for key in ("killmail_id", "hash", "zkb", "esi") if key in file}
            | {"source": "r2z2", "sequence_id": sequence, "uploaded_at": file["uploaded_at"]}
        )
    assert [body for body, _ in received] == expected
    assert [attributes for _, attributes in received] == [
        {"source": ("String", "r2z2"), "killmail_id": ("Number", str(body["killmail_id"]))} for body in expected
    ]
    assert "esi" in expected[0] and "esi" not in expected[5]
    assert expected[6]["killmail_id"] == docs[1]["killmail_id"] and expected[6]["zkb"]["totalValue"] == 1.5e9
    assert summary["cursor"] == 7 and saved_cursor(cursor_parameter) == "7"


def test_catching_up_paces_at_the_catch_up_pacing_and_the_head_still_waits_6_s(r2z2, queue_url, cursor_parameter):
    """Defect 12: a 200 shows the feed may be ahead: the next request starts 100 ms after it.
    A 404 (the head) still holds the next ask 6 s; RedisQ keeps POLL_PACING_MS
    (test_poller_redisq)."""
    publish(r2z2, DOCS[:20])
    set_cursor(cursor_parameter, "0")
    rig = Rig(r2z2, queue_url, cursor_parameter, pacing=0.5, budget=10, catchup=0.1)
    summary = rig.tick()
    files = [at for at, path in rig.starts if path != "/ephemeral/sequence.json"]
    assert [round(b - a, 6) for a, b in pairwise(files[:21])] == [0.1] * 20  # 1 … 20, then 21's 404
    head_asks = rig.times_of("/ephemeral/21.json")
    assert all(b - a >= 6 for a, b in pairwise(head_asks)) and len(head_asks) >= 2
    assert sequences(queue_url) == list(range(1, 21)) and summary["received"] == 20


def test_a_null_placeholder_is_skipped_at_once_counted_and_the_cursor_moves_on(
    r2z2, queue_url, cursor_parameter, caplog
):
    """Item 10: a 200 with no killmail_id, no hash and an href of /killmails/// is no killmail
    and no error: it was read three times as unreadable, and counted invalid."""
    publish(r2z2, DOCS[:1])
    placeholder = r2z2.publish_placeholder()
    publish(r2z2, DOCS[1:2])
    set_cursor(cursor_parameter, "0")
    rig = Rig(r2z2, queue_url, cursor_parameter, budget=10)
    summary = rig.tick()
    assert sequences(queue_url) == [1, 3] and summary["cursor"] == 3
    assert (summary["placeholders"], summary["invalid"], summary["errors"]) == (1, 0, 0)
    assert len(rig.times_of(f"/ephemeral/{placeholder}.json")) == 1
    assert metrics.metric_set["PlaceholderPackages"]["Value"] == [1]
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


def test_esi_null_is_a_metadata_only_package(r2z2, queue_url, cursor_parameter):
    """Item 10: `"esi": null` is a killmail without its body: sent on for the fetcher to get from
    ESI, not taken for an invalid package."""
    publish(r2z2, DOCS[:1], include_esi=False, esi_null=True)
    set_cursor(cursor_parameter, "0")
    summary = Rig(r2z2, queue_url, cursor_parameter, budget=5).tick()
    ((body, _),) = drain(queue_url)
    assert "esi" not in body and body["killmail_id"] == DOCS[0]["killmail_id"]
    assert (summary["enqueued"], summary["invalid"]) == (1, 0)


def test_a_pointer_to_a_file_rewritten_in_place_fetches_it_again_and_enqueues_it(r2z2, queue_url, cursor_parameter):
    """Item 9: zKillboard rewrites {S}.json in place and points at it from the next new file.
    The cursor has passed S: without fetching it again the stored values stay stale."""
    publish(r2z2, DOCS[:3])
    set_cursor(cursor_parameter, "0")
    Rig(r2z2, queue_url, cursor_parameter, budget=5).tick()
    assert sequences(queue_url) == [1, 2, 3] and saved_cursor(cursor_parameter) == "3"
    ganked = zkb_for(DOCS[1]) | {"totalValue": 9.9e9, "labels": ["ganked"]}
    r2z2.update_in_place(2, ganked)
    publish(r2z2, DOCS[3:4])  # 4.json carries "sequence_updated": 2
    rig = Rig(r2z2, queue_url, cursor_parameter, budget=5)
    summary = rig.tick()
    bodies = [body for body, _ in drain(queue_url)]
    assert [body["sequence_id"] for body in bodies] == [4, 2]
    assert bodies[1]["zkb"] == ganked and bodies[1]["uploaded_at"] == served(r2z2, 2)["uploaded_at"]
    assert bodies[1]["uploaded_at"] > bodies[0]["uploaded_at"] - 10 and "sequence_updated" not in bodies[1]
    assert (summary["received"], summary["enqueued"], summary["updates_followed"]) == (2, 2, 1)
    assert summary["cursor"] == 4
    assert metrics.metric_set["UpdatePointersFollowed"]["Value"] == [0, 1]  # the two ticks


def test_a_pointer_to_an_expired_file_is_counted_and_logged_not_an_error(r2z2, queue_url, cursor_parameter, caplog):
    """Item 9: files live ~24 h; a pointer to one gone is UpdatePointersExpired and an INFO line."""
    publish(r2z2, DOCS[:2])
    r2z2.update_in_place(1, zkb_for(DOCS[0]) | {"totalValue": 1.0})
    r2z2.expire(1)
    publish(r2z2, DOCS[2:3])  # 3.json points at 1, which is gone
    set_cursor(cursor_parameter, "2")
    summary = Rig(r2z2, queue_url, cursor_parameter, budget=5).tick()
    assert sequences(queue_url) == [3] and summary["cursor"] == 3
    assert (summary["updates_expired"], summary["updates_followed"], summary["errors"]) == (1, 0, 0)
    (line,) = [r for r in caplog.records if "expired" in r.getMessage()]
    assert line.levelname == "INFO" and line.sequence_updated == 1 and line.sequence_id == 3
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_pointer_whose_file_cannot_be_read_now_holds_the_cursor_and_is_followed_later(
    r2z2, queue_url, cursor_parameter
):
    """Item 9: the file carrying a pointer is settled only with the rewritten file it points at:
    when that cannot be read now, both are asked for again, never the pointer dropped."""
    publish(r2z2, DOCS[:2])
    r2z2.update_in_place(1, zkb_for(DOCS[0]) | {"totalValue": 2.0})
    publish(r2z2, DOCS[2:3])
    set_cursor(cursor_parameter, "2")
    r2z2.faults.script(status=503, when=lambda path: path == "/ephemeral/1.json", times=4)
    summary = Rig(r2z2, queue_url, cursor_parameter, pacing=0.1, budget=30).tick()
    assert [body["sequence_id"] for body, _ in drain(queue_url)] == [3, 1]  # 3 asked for again with 1
    assert summary["updates_followed"] == 1 and summary["cursor"] == 3


def test_an_oversized_package_goes_without_esi(r2z2, queue_url, cursor_parameter):
    """Over SQS's 1 MiB (item 11: no longer 256 KiB) a package goes without its esi."""
    doc = dict(DOCS[0])
    doc["victim"] = {
        **doc["victim"],
        "items": [{"flag": 5, "item_type_id": 34, "singleton": 0, "quantity_dropped": n} for n in range(20_000)],
    }
    publish(r2z2, [doc, DOCS[1]])
    set_cursor(cursor_parameter, "0")
    summary = Rig(r2z2, queue_url, cursor_parameter, budget=5).tick()
    (big, _), (small, _) = drain(queue_url)
    assert "esi" not in big and big["killmail_id"] == doc["killmail_id"]
    assert "esi" in small
    assert (summary["esi_dropped"], summary["enqueued"], summary["cursor"]) == (2 - 1, 2, 2)
    assert metrics.metric_set["EsiDroppedForSize"]["Value"] == [1]


# --- pacing, budget, remaining time -------------------------------------------------------------


def test_request_starts_are_never_closer_than_the_pacing_on_the_real_clock(r2z2, queue_url, cursor_parameter):
    """Real clock and real sleeps, about 1 s of them. The exact spacing is asserted with a fake
    clock in test_poller_gate; here real sleeping must respect it too, measured where the gate
    lets each request go (arrival at the server adds a delay that grows with the machine's load)."""
    publish(r2z2, renumber(DOCS, 40))
    set_cursor(cursor_parameter, "0")
    pacing = 0.1
    rig = Rig(r2z2, queue_url, cursor_parameter, pacing=pacing, budget=1.0, clock=time.monotonic, sleep=time.sleep)
    summary = rig.tick()
    starts = rig.gate.starts
    assert len(starts) == len(r2z2.requests) >= 2 and summary["enqueued"] == len(starts) - 1
    assert min(b - a for a, b in pairwise(starts)) >= pacing - 1e-9  # float rounding only


def test_the_budget_is_respected(r2z2, queue_url, cursor_parameter):
    publish(r2z2, renumber(DOCS, 100))
    set_cursor(cursor_parameter, "0")
    rig = Rig(r2z2, queue_url, cursor_parameter, pacing=0.5, budget=5)
    began = rig.clock()
    summary = rig.tick()
    assert summary["stopped_because"] == BUDGET
    assert max(at for at, _ in rig.starts) < began + 5
    assert len(rig.starts) == summary["requests"] == 10
    assert summary["runtime_seconds"] <= 5


def test_the_remaining_time_margin_is_respected(r2z2, queue_url, cursor_parameter):
    publish(r2z2, renumber(DOCS, 100))
    set_cursor(cursor_parameter, "0")
    rig = Rig(r2z2, queue_url, cursor_parameter, pacing=0.5, budget=50)
    context = LambdaContext("poller", 20, clock=rig.clock)
    began = rig.clock()
    summary = rig.tick(context.get_remaining_time_in_millis)
    reserve = rig.poller.finish_reserve
    assert summary["stopped_because"] == REMAINING_TIME
    assert max(at for at, _ in rig.starts) < began + 20 - reserve - rig.source.new_work_seconds
    assert context.get_remaining_time_in_millis() / 1000 >= reserve
    assert saved_cursor(cursor_parameter) == str(summary["enqueued"])


# --- the cursor ---------------------------------------------------------------------------------


def test_an_sqs_failure_leaves_the_cursor_before_the_unsent_package_and_the_next_tick_resends_it(
    r2z2, queue_url, cursor_parameter
):
    docs = DOCS[:5]
    publish(r2z2, docs)
    set_cursor(cursor_parameter, "0")
    failing = RecordingSqs(forward=boto3.client("sqs"), fail={docs[2]["killmail_id"]: -1})
    first = Rig(r2z2, queue_url, cursor_parameter, pacing=0.1, budget=20, sqs=failing).tick()
    assert first["stopped_because"] == ENQUEUE_FAILED and first["enqueue_failures"] == 1
    assert saved_cursor(cursor_parameter) == "2"
    assert 3 not in sequences(queue_url)

    again = Rig(r2z2, queue_url, cursor_parameter, pacing=0.1, budget=20)
    second = again.tick()
    assert [path for _, path in again.starts][:2] == ["/ephemeral/sequence.json", "/ephemeral/3.json"]
    assert sequences(queue_url) == [3, 4, 5]
    assert second["cursor"] == 5 and saved_cursor(cursor_parameter) == "5"


def test_a_restart_resumes_exactly_at_the_cursor(r2z2, queue_url, cursor_parameter):
    publish(r2z2, DOCS[:10])
    set_cursor(cursor_parameter, "6")
    rig = Rig(r2z2, queue_url, cursor_parameter, budget=5)
    rig.tick()
    package_requests = [path for _, path in rig.starts if path != "/ephemeral/sequence.json"]
    assert package_requests[:5] == [f"/ephemeral/{n}.json" for n in (7, 8, 9, 10, 11)]
    assert sequences(queue_url) == [7, 8, 9, 10]
    assert saved_cursor(cursor_parameter) == "10"


def test_without_a_cursor_it_starts_at_sequence_json(queue_url, cursor_parameter):
    with R2Z2Server(sequence_lag=5) as server:  # sequence.json moves in steps, as the real one does
        publish(server, DOCS[:20])
        assert server.advertised_sequence == 18
        summary = Rig(server, queue_url, cursor_parameter, budget=5).tick()
    assert sequences(queue_url) == [18, 19, 20]
    assert summary["cursor"] == 20 and saved_cursor(cursor_parameter) == "20"


def test_the_cursor_store_reads_no_cursor_from_none_and_only_moves_forward(cursor_parameter):
    clock = FakeClock()
    store = CursorStore(boto3.client("ssm"), cursor_parameter, clock=clock)
    assert store.load() is None
    assert store.save(5) and saved_cursor(cursor_parameter) == "5"
    clock.advance(0.5)
    assert not store.save(6) and saved_cursor(cursor_parameter) == "5"  # under a second after the last write
    assert store.save(6, final=True) and saved_cursor(cursor_parameter) == "6"
    clock.advance(2)
    assert not store.save(4) and saved_cursor(cursor_parameter) == "6"
    assert CursorStore(boto3.client("ssm"), cursor_parameter).load() == 6
    assert CursorStore(boto3.client("ssm"), "/killstream/no-such-parameter").load() is None


# --- error paths --------------------------------------------------------------------------------


def test_a_404_waits_at_least_6_seconds_before_asking_again(r2z2, queue_url, cursor_parameter):
    publish(r2z2, DOCS[:2])
    set_cursor(cursor_parameter, "0")
    rig = Rig(r2z2, queue_url, cursor_parameter, pacing=0.5, budget=30)
    summary = rig.tick()
    asks = rig.times_of("/ephemeral/3.json")
    assert len(asks) >= 4
    assert all(b - a >= 6 for a, b in pairwise(asks))
    assert summary["empty_polls"] == len(asks) and summary["enqueued"] == 2
    assert summary["stopped_because"] == BUDGET


def test_an_expired_cursor_skips_forward_counting_and_logging_the_gap(r2z2, queue_url, cursor_parameter, caplog):
    publish(r2z2, renumber(DOCS, 200))
    r2z2.expire(150)
    set_cursor(cursor_parameter, "10")
    rig = Rig(r2z2, queue_url, cursor_parameter, budget=30)
    summary = rig.tick()
    assert sequences(queue_url) == list(range(151, 201))
    assert summary["sequence_gaps"] == 140 and summary["cursor"] == 200
    assert metrics.metric_set["SequenceGaps"]["Value"] == [140]
    (gap,) = [r for r in caplog.records if r.getMessage().startswith("sequence gap")]
    assert (gap.first_missing, gap.last_missing, gap.count, gap.missing) == (11, 150, 140, None)
    assert gap.sequences == "11-150" and "11-150" in gap.getMessage() and "reconciler" in gap.getMessage()
    missing_asked = {path for _, path in rig.starts} & {f"/ephemeral/{n}.json" for n in range(12, 151)}
    assert len(missing_asked) < 15  # found by search, not by asking for every missing file


def test_a_skipped_sequence_is_counted_and_its_number_logged(r2z2, queue_url, cursor_parameter, caplog):
    publish(r2z2, DOCS[:3])
    r2z2.skip(1)
    publish(r2z2, DOCS[3:6])
    set_cursor(cursor_parameter, "0")
    rig = Rig(r2z2, queue_url, cursor_parameter, budget=30)
    summary = rig.tick()
    assert sequences(queue_url) == [1, 2, 3, 5, 6, 7]
    assert summary["sequence_gaps"] == 1 and summary["cursor"] == 7
    (gap,) = [r for r in caplog.records if r.getMessage().startswith("sequence gap")]
    assert gap.missing == [4]
    # Skipping is for ever: two 404s a full wait apart, the feed known to be past it (sequence.json
    # said 7 when the tick began), and only then the search for the next file, a wait later.
    first_404, second_404 = rig.times_of("/ephemeral/4.json")
    (head,) = rig.times_of("/ephemeral/sequence.json")
    assert head <= first_404 and second_404 - first_404 >= 6 and rig.times_of("/ephemeral/5.json")[0] - second_404 >= 6
    # the first 404 of 4 was an empty poll, the confirming one was not; then 8 is not published yet
    assert summary["empty_polls"] == 1 + len(rig.times_of("/ephemeral/8.json"))


def test_a_file_that_404s_once_after_sequence_json_passed_it_is_asked_for_again_not_skipped(
    r2z2, queue_url, cursor_parameter, caplog
):
    """A CDN edge may serve a cached 404 for a file that exists: one 404 is not a gap."""
    publish(r2z2, DOCS[:5])
    set_cursor(cursor_parameter, "0")
    r2z2.faults.script(status=404, when="/3.json")
    rig = Rig(r2z2, queue_url, cursor_parameter, pacing=0.5, budget=30)
    summary = rig.tick()
    assert sequences(queue_url) == [1, 2, 3, 4, 5]
    assert summary["sequence_gaps"] == 0 and summary["cursor"] == 5
    assert not [r for r in caplog.records if r.getMessage().startswith("sequence gap")]
    refused, served_after = rig.times_of("/ephemeral/3.json")
    assert served_after - refused >= 6


def test_a_404_waits_6_seconds_even_when_sequence_json_then_fails(r2z2, queue_url, cursor_parameter):
    publish(r2z2, DOCS[:2])
    set_cursor(cursor_parameter, "0")
    # sequence.json answers 404 (not a retried 5xx, whose backoffs would add up to 6 s anyway)
    # every time once 3.json has been asked for.
    r2z2.faults.script(
        status=404,
        times=None,
        when=lambda path: (
            path.endswith("/sequence.json") and any(request.path == "/ephemeral/3.json" for request in r2z2.requests)
        ),
    )
    rig = Rig(r2z2, queue_url, cursor_parameter, pacing=0.5, budget=150)
    summary = rig.tick()
    asks = rig.times_of("/ephemeral/3.json")
    assert len(asks) >= 20
    assert all(b - a >= 6 for a, b in pairwise(asks))
    # at the head sequence.json is asked again once a minute: each of those reads failed
    assert summary["errors"] == len(rig.times_of("/ephemeral/sequence.json")) - 1 >= 2
    assert summary["sequence_gaps"] == 0


def test_a_file_the_gap_search_meets_with_one_stale_404_is_not_skipped(r2z2, queue_url, cursor_parameter, caplog):
    """Defect 5: the cursor's own file needs two 404s 6 s apart, but files probed by the gap
    search were taken as absent on one. Sequence 2 a real gap, 3 present but answering one stale
    404: 3 was lost ("missing": [2, 3])."""
    publish(r2z2, DOCS[:1])
    r2z2.skip(1)
    publish(r2z2, DOCS[1:4])  # 3, 4, 5
    r2z2.stale_404(3)
    set_cursor(cursor_parameter, "0")
    rig = Rig(r2z2, queue_url, cursor_parameter, budget=60)
    summary = rig.tick()
    assert sequences(queue_url) == [1, 3, 4, 5]
    gaps = [r.missing for r in caplog.records if r.getMessage().startswith("sequence gap")]
    assert gaps == [[2]] and summary["sequence_gaps"] == 1
    stale, found = rig.times_of("/ephemeral/3.json")[:2]
    assert found - stale >= 6  # asked again, a wait later, before anything was skipped


def test_a_stale_404_at_the_edge_of_an_expired_range_does_not_move_the_edge(r2z2, queue_url, cursor_parameter, caplog):
    """Defect 5 in a long gap: the gallop/bisect probes the edge of an expired range; one stale
    404 on the first file still served must not make it (and those before the next probe) lost."""
    publish(r2z2, renumber(DOCS, 200))
    r2z2.expire(150)
    r2z2.stale_404(151)
    set_cursor(cursor_parameter, "10")
    summary = Rig(r2z2, queue_url, cursor_parameter, budget=60).tick()
    assert sequences(queue_url) == list(range(151, 201))
    assert summary["sequence_gaps"] == 140
    (gap,) = [r for r in caplog.records if r.getMessage().startswith("sequence gap")]
    assert (gap.first_missing, gap.last_missing) == (11, 150)


def test_files_between_two_nearby_gaps_are_not_skipped(r2z2, queue_url, cursor_parameter, caplog):
    publish(r2z2, DOCS[:2])  # 1, 2
    r2z2.skip(2)  # 3, 4 missing
    publish(r2z2, DOCS[2:3])  # 5
    r2z2.skip(2)  # 6, 7 missing
    publish(r2z2, DOCS[3:9])  # 8 … 13
    set_cursor(cursor_parameter, "0")
    summary = Rig(r2z2, queue_url, cursor_parameter, budget=60).tick()
    assert sequences(queue_url) == [1, 2, 5, 8, 9, 10, 11, 12, 13]
    assert summary["sequence_gaps"] == 4 and summary["cursor"] == 13
    gaps = [r.missing for r in caplog.records if r.getMessage().startswith("sequence gap")]
    assert gaps == [[3, 4], [6, 7]]


def test_a_429_honours_retry_after(r2z2, queue_url, cursor_parameter):
    publish(r2z2, DOCS[:3])
    set_cursor(cursor_parameter, "0")
    r2z2.faults.script(status=429, headers={"Retry-After": "7"}, when="/2.json")
    rig = Rig(r2z2, queue_url, cursor_parameter, pacing=0.5, budget=20)
    summary = rig.tick()
    limited, retried = rig.times_of("/ephemeral/2.json")
    assert retried - limited >= 7
    assert summary["rate_limited"] == 1 and sequences(queue_url) == [1, 2, 3]


def test_a_429_without_retry_after_backs_off_exponentially_from_5_seconds(r2z2, queue_url, cursor_parameter):
    publish(r2z2, DOCS[:3])
    set_cursor(cursor_parameter, "0")
    r2z2.faults.script(status=429, when="/2.json", times=3)
    rig = Rig(r2z2, queue_url, cursor_parameter, pacing=0.5, budget=40)
    summary = rig.tick()
    asks = rig.times_of("/ephemeral/2.json")
    assert [round(b - a) for a, b in pairwise(asks)] == [5, 10, 20]
    assert summary["rate_limited"] == 3 and sequences(queue_url) == [1, 2, 3]


def test_a_403_stops_the_tick_with_a_clear_error(r2z2, queue_url, cursor_parameter, caplog):
    publish(r2z2, DOCS[:5])
    set_cursor(cursor_parameter, "0")
    r2z2.faults.script(status=403, body=b"Forbidden: rate limit violations", when="/3.json")
    rig = Rig(r2z2, queue_url, cursor_parameter, budget=20)
    summary = rig.tick()
    assert summary["stopped_because"] == SOURCE_REFUSED and summary["refused"] == 1
    assert [path for _, path in rig.starts][-1] == "/ephemeral/3.json"
    assert sequences(queue_url) == [1, 2] and saved_cursor(cursor_parameter) == "2"
    (error,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert error.getMessage() == "R2Z2 refuses service: HTTP 403 Forbidden: rate limit violations"
    assert summary["detail"] == error.getMessage()
    assert metrics.metric_set["SourceRefused"]["Value"] == [1]


def test_after_a_403_the_warm_poller_asks_nothing_for_15_minutes_and_a_cold_start_asks_once(
    r2z2, queue_url, cursor_parameter, caplog
):
    publish(r2z2, DOCS[:5])
    set_cursor(cursor_parameter, "0")
    r2z2.faults.script(status=403, body=b"Forbidden", when="/3.json")
    rig = Rig(r2z2, queue_url, cursor_parameter, pacing=0.5, budget=20)
    assert rig.tick()["refused"] == 1
    refused_at = rig.clock()
    asked = len(r2z2.requests)

    caplog.clear()
    quiet = []
    for minute in range(1, 15):  # the next ticks of the same warm instance, a minute apart
        rig.clock.now = refused_at + 60 * minute
        quiet.append(rig.tick())
    assert len(r2z2.requests) == asked
    assert {(s["stopped_because"], s["requests"], s["refused"], s["runtime_seconds"]) for s in quiet} == {
        (SOURCE_REFUSED, 0, 0, 0)
    }
    waits = [r for r in caplog.records if r.getMessage().startswith("not asking again before")]
    assert len(waits) == 14 and all(r.levelname == "WARNING" for r in waits)
    assert waits[0].seconds_left == 14 * 60 and "R2Z2 refuses service: HTTP 403 Forbidden" in waits[0].getMessage()
    assert quiet[0]["detail"] == waits[0].getMessage()

    # A cold start knows nothing of the refusal: it asks once, and is refused again.
    r2z2.faults.script(status=403, body=b"Forbidden", when="/3.json")
    cold = Rig(r2z2, queue_url, cursor_parameter, pacing=0.5, budget=20)
    assert cold.tick()["refused"] == 1 and len(r2z2.requests) == asked + 2  # sequence.json, 3.json

    rig.clock.now = refused_at + 15 * 60
    summary = rig.tick()
    assert summary["refused"] == 0 and summary["stopped_because"] == BUDGET
    assert sequences(queue_url) == [1, 2, 3, 4, 5] and summary["cursor"] == 5


def test_5xx_is_retried_three_times_with_backoff(r2z2, queue_url, cursor_parameter):
    publish(r2z2, DOCS[:3])
    set_cursor(cursor_parameter, "0")
    r2z2.faults.script(status=503, when="/2.json", times=3)
    rig = Rig(r2z2, queue_url, cursor_parameter, pacing=0.1, budget=20)
    summary = rig.tick()
    asks = rig.times_of("/ephemeral/2.json")
    assert len(asks) == 4
    assert [round(b - a, 3) for a, b in pairwise(asks)] == [0.5, 1.0, 2.0]
    assert summary["errors"] == 3 and sequences(queue_url) == [1, 2, 3]


def test_a_run_of_errors_backs_off_longer_and_the_poller_goes_on(r2z2, queue_url, cursor_parameter):
    publish(r2z2, DOCS[:3])
    set_cursor(cursor_parameter, "0")
    r2z2.faults.script(status=500, when="/2.json", times=7)
    rig = Rig(r2z2, queue_url, cursor_parameter, pacing=0.1, budget=40)
    summary = rig.tick()
    asks = rig.times_of("/ephemeral/2.json")
    gaps = [round(b - a, 3) for a, b in pairwise(asks)]
    assert gaps[:4] == [0.5, 1.0, 2.0, 4.0]  # one poll's retries, then the next poll after the last backoff
    assert gaps[4:] == [5.0, 5.0, 5.0]  # five failures in a row and more
    assert summary["errors"] == 7 and sequences(queue_url) == [1, 2, 3]


def test_garbage_and_truncated_bodies_are_counted_invalid_and_the_poller_goes_on(
    r2z2, queue_url, cursor_parameter, caplog
):
    publish(r2z2, DOCS[:5])
    set_cursor(cursor_parameter, "0")
    # each stays unreadable however often it is asked for
    r2z2.faults.script(body=GARBAGE_BODY, when="/2.json", times=UNREADABLE_ATTEMPTS)
    r2z2.faults.script(body=b"<html>oops</html>", when="/3.json", times=UNREADABLE_ATTEMPTS)
    r2z2.faults.script(
        body=json.dumps({"killmail_id": 7, "zkb": {}}).encode(), when="/4.json", times=UNREADABLE_ATTEMPTS
    )
    summary = Rig(r2z2, queue_url, cursor_parameter, budget=10).tick()
    assert summary["invalid"] == 3 and summary["stopped_because"] == BUDGET
    assert sequences(queue_url) == [1, 5]
    assert summary["cursor"] == 5
    raws = [r.raw for r in caplog.records if r.getMessage().startswith("invalid package")]
    assert raws[:2] == [GARBAGE_BODY.decode(), "<html>oops</html>"]


def test_a_body_unreadable_once_is_asked_for_again_and_not_lost(r2z2, queue_url, cursor_parameter):
    publish(r2z2, DOCS[:3])
    set_cursor(cursor_parameter, "0")
    r2z2.faults.script(body=GARBAGE_BODY[: len(GARBAGE_BODY) // 2], when="/2.json", times=UNREADABLE_ATTEMPTS - 1)
    summary = Rig(r2z2, queue_url, cursor_parameter, budget=10).tick()
    assert summary["invalid"] == 0
    assert sequences(queue_url) == [1, 2, 3] and summary["cursor"] == 3


def test_a_stalled_server_hits_the_read_timeout_and_is_retried(r2z2, queue_url, cursor_parameter):
    publish(r2z2, DOCS[:3])
    set_cursor(cursor_parameter, "0")
    r2z2.faults.script(stall=30.0, when="/2.json")
    rig = Rig(r2z2, queue_url, cursor_parameter, budget=10, read_timeout=0.2)
    began = time.monotonic()
    summary = rig.tick()
    assert time.monotonic() - began < 15, "the read timeout, not the 30 s stall, ended the request"
    assert summary["errors"] == 1 and sequences(queue_url) == [1, 2, 3]


def test_a_dripping_file_is_cut_by_the_requests_bound_and_asked_for_again(r2z2, queue_url, cursor_parameter):
    """Defect 8: the read timeout bounds each socket read, so a file sent one byte every 0.3 s
    held its request for as long as it dripped. Real clock: connect + read timeout (2 s here)
    bound the whole request."""
    publish(r2z2, DOCS[:3])
    set_cursor(cursor_parameter, "0")
    r2z2.faults.script(drip=0.3, when="/2.json")
    rig = Rig(r2z2, queue_url, cursor_parameter, budget=8, read_timeout=1.0, clock=time.monotonic, sleep=time.sleep)
    began = time.monotonic()
    summary = rig.tick()
    assert time.monotonic() - began < 8 + 2 + 5, "the bound, not the drip (minutes for this file), ended it"
    first_try, second_try = [r for r in r2z2.requests if r.path == "/ephemeral/2.json"][-2:]
    assert second_try.started - first_try.started < 2 + 1 + 2  # cut at 2 s, then a 0.5 s backoff
    assert summary["errors"] == 1 and sequences(queue_url) == [1, 2, 3]


def test_a_hung_sqs_ends_the_tick_before_the_lambda_timeout(r2z2, queue_url, cursor_parameter, monkeypatch):
    """Defect 4: SqsSink made up to 4 attempts, each a boto3 call of up to 3 attempts x (3 s
    connect + 5 s read): with SQS hung, a 1 s budget and 12 s of Lambda time, the tick still ran
    at 15 s. Real clock, the handler's own clients: AWS_ENDPOINT_URL_SQS points SQS alone at a
    server that accepts and never answers; SSM is moto's."""
    publish(r2z2, DOCS[:3])
    set_cursor(cursor_parameter, "0")
    with HungServer() as hung:
        handler_environment(
            monkeypatch, r2z2, queue_url, cursor_parameter, POLL_BUDGET_SECONDS="1", AWS_ENDPOINT_URL_SQS=hung.url
        )
        context = LambdaContext("poller", 12)
        summary = load_handler_module("poller").handler({}, context)
        assert hung.accepted >= 1
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS")
    assert context.get_remaining_time_in_millis() > 0, "the tick outlived the Lambda"
    assert summary["enqueued"] == 0 and summary["enqueue_failures"] == summary["received"] >= 1
    assert saved_cursor(cursor_parameter) == "0" and sequences(queue_url) == []


def test_a_dropped_connection_is_retried(r2z2, queue_url, cursor_parameter):
    publish(r2z2, DOCS[:3])
    set_cursor(cursor_parameter, "0")
    r2z2.faults.script(disconnect=True, when="/2.json")
    summary = Rig(r2z2, queue_url, cursor_parameter, budget=10).tick()
    assert summary["errors"] == 1 and sequences(queue_url) == [1, 2, 3]
