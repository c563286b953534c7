"""The poller on RedisQ: the real source and sink against the local RedisQ server and moto's SQS
over HTTP. Fake clock unless a test says otherwise; the server's ttw is scaled down so a listen
with nothing to give returns in milliseconds."""

from __future__ import annotations

import json
import threading
import time
import uuid
from itertools import pairwise

import boto3
import pytest
import requests
from botocore.config import Config

from killstream.errors import BUDGET, ENQUEUE_FAILED, REMAINING_TIME, SOURCE_REFUSED
from killstream.observability import metrics
from killstream.poller.counts import TickCounts
from killstream.poller.sink import SqsSink
from killstream.poller.sources.base import source_client
from killstream.poller.sources.redisq import READ_TIMEOUT_BEYOND_TTW, RedisQSource
from killstream.poller.tick import Poller
from killstream_workstation.corpus import generate, split_hash, zkb_for
from killstream_workstation.local.lambda_runtime import LambdaContext, StoppableContext, load_handler_module
from killstream_workstation.simulators.faults import GARBAGE_BODY
from killstream_workstation.simulators.hung import HungServer
from killstream_workstation.simulators.redisq import SHUTDOWN_ANSWER, RedisQServer
from tests.support.fakes import FakeClock, RecordingGate, RecordingSqs
from tests.support.sqs import drain

UA = "killstream-tests/0.1 (tests@example.com)"
DOCS = generate(8)
QUEUE_ID = "killstream-test"


@pytest.fixture
def redisq():
    with RedisQServer(ttw_scale=0.01, shutdown_delay=0.05) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_metrics():
    metrics.clear_metrics()
    yield
    metrics.clear_metrics()


def publish(server: RedisQServer, docs: list[dict], **options) -> None:
    for doc in docs:
        server.publish(*split_hash(doc), zkb_for(doc), **options)


class Rig:
    """Wired as Poller.from_config wires a RedisQ poller, with the clock, timeouts and SQS
    client a test chooses."""

    def __init__(
        self,
        server: RedisQServer,
        queue_url: str,
        *,
        pacing: float = 0.5,
        budget: float = 5.0,
        package_filter: str | None = None,
        read_timeout: float | None = None,
        sqs=None,
        clock=None,
        sleep=None,
    ):
        self.clock = clock or FakeClock()
        sleep = sleep or self.clock.sleep
        self.gate = RecordingGate(pacing, clock=self.clock, sleep=sleep)
        self.counts = TickCounts()
        self.client = source_client(
            self.gate, self.counts, UA, connect_timeout=1.0, read_timeout=read_timeout or 1 + READ_TIMEOUT_BEYOND_TTW
        )
        self.source = RedisQSource(self.client, self.counts, server.url, QUEUE_ID, 1, package_filter)
        self.sqs = sqs or RecordingSqs(forward=boto3.client("sqs"))
        sink = SqsSink(self.sqs, queue_url, flush_within=self.source.flush_within, clock=self.clock, sleep=sleep)
        self.poller = Poller(self.source, sink, None, self.gate, self.counts, budget_seconds=budget)
        self.listens: list[float] = []
        self.starts: list[float] = []
        self.client.session.hooks["response"].append(self._record)

    def _record(self, response, *args, **kwargs) -> None:
        # The fake clock moves only when the poller sleeps: an answer's time is its start's.
        self.starts.append(self.clock())
        if "/listen.php" in response.url:
            self.listens.append(self.clock())

    def tick(self, remaining_ms=None, stop_requested=None) -> dict:
        return self.poller.tick(remaining_ms, stop_requested)


def expected_body(doc: dict, *, with_killmail: bool) -> dict:
    esi, killmail_hash = split_hash(doc)
    zkb = {
        "hash": killmail_hash,
        "href": f"https://esi.evetech.net/killmails/{doc['killmail_id']}/{killmail_hash}/",
        **zkb_for(doc),
    }
    return (
        {"killmail_id": doc["killmail_id"], "hash": killmail_hash, "zkb": zkb}
        | ({"esi": esi} if with_killmail else {})
        | {"source": "redisq"}
    )


def paths(server: RedisQServer) -> list[str]:
    return [request.path for request in server.requests]


def test_packages_of_both_shapes_arrive_in_order_with_the_right_bodies(redisq, queue_url):
    publish(redisq, DOCS[:3])
    publish(redisq, DOCS[3:5], include_killmail=True)
    rig = Rig(redisq, queue_url, pacing=0.5, budget=7.5)
    summary = rig.tick()
    received = drain(queue_url)
    assert [body for body, _ in received] == (
        [expected_body(doc, with_killmail=False) for doc in DOCS[:3]]
        + [expected_body(doc, with_killmail=True) for doc in DOCS[3:5]]
    )
    assert [attributes for _, attributes in received] == [
        {"source": ("String", "redisq"), "killmail_id": ("Number", str(doc["killmail_id"]))} for doc in DOCS[:5]
    ]
    assert paths(redisq)[:4] == ["/listen.php", "/object.php", "/listen.php", "/object.php"]
    assert all(request.status != 429 for request in redisq.requests)  # never two of ours in flight
    assert [len(call) for call in rig.sqs.calls] == [1] * 5  # reads are destructive: each goes at once
    assert (summary["received"], summary["enqueued"], summary["empty_polls"], summary["requests"]) == (5, 5, 5, 15)
    assert (summary["cursor"], summary["lag"], summary["stopped_because"]) == (None, None, BUDGET)


def test_the_object_fetch_is_paced_and_counted_like_any_request(redisq, queue_url):
    """RedisQ allows 2 requests/s per IP: at 500 ms pacing a backlog must not make 4."""
    publish(redisq, DOCS)
    rig = Rig(redisq, queue_url, pacing=0.5, budget=4)
    summary = rig.tick()
    assert paths(redisq) == ["/listen.php", "/object.php"] * 4
    assert summary["requests"] == len(rig.starts) == 8 and summary["received"] == 4
    assert [b - a for a, b in pairwise(rig.starts)] == [0.5] * 7


def test_requests_start_no_closer_than_the_pacing_on_the_real_clock(redisq, queue_url):
    """Real clock, real sleeps: every request (listens and object fetches alike) starts at least
    the pacing after the one before. Measured where the gate lets each one go: arrival times at
    the server jitter with the machine's load, the starts themselves cannot."""
    publish(redisq, DOCS)
    pacing = 0.05
    rig = Rig(redisq, queue_url, pacing=pacing, budget=2.0, clock=time.monotonic, sleep=time.sleep)
    rig.tick()
    starts = rig.gate.starts
    assert len(starts) == len(redisq.requests) >= 2 and "/object.php" in paths(redisq)
    assert min(b - a for a, b in pairwise(starts)) >= pacing - 1e-9  # float rounding only


def test_the_listen_carries_queue_id_ttw_and_filter(redisq, queue_url):
    publish(redisq, DOCS[:2])
    Rig(redisq, queue_url, budget=1, package_filter="attackerCount>=1").tick()
    assert redisq.requests[0].query == {"queueID": QUEUE_ID, "ttw": "1", "filter": "attackerCount>=1"}


def test_a_null_package_is_an_empty_poll(redisq, queue_url):
    summary = Rig(redisq, queue_url, budget=3).tick()
    assert summary["empty_polls"] == summary["requests"] == 6
    assert summary["received"] == 0 and drain(queue_url) == []
    assert metrics.metric_set["EmptyPolls"]["Value"] == [6]


def test_a_failed_object_fetch_retries_the_object_never_the_destructive_listen(redisq, queue_url):
    publish(redisq, DOCS[:1])
    redisq.faults.script(status=503, when="/object.php")
    summary = Rig(redisq, queue_url, budget=2).tick()
    assert paths(redisq)[:3] == ["/listen.php", "/object.php", "/object.php"]
    assert summary["errors"] == 1 and summary["enqueued"] == 1
    assert [body["killmail_id"] for body, _ in drain(queue_url)] == [DOCS[0]["killmail_id"]]


def test_an_object_that_cannot_be_read_is_logged_with_its_url_and_the_poller_goes_on(redisq, queue_url, caplog):
    publish(redisq, DOCS[:2])
    redisq.faults.script(status=503, when="/object.php", times=4)  # the first try and every retry
    summary = Rig(redisq, queue_url, budget=10).tick()
    assert paths(redisq)[:6] == ["/listen.php"] + ["/object.php"] * 4 + ["/listen.php"]
    assert summary["errors"] == 4 + 1 and summary["enqueued"] == 1
    assert [body["killmail_id"] for body, _ in drain(queue_url)] == [DOCS[1]["killmail_id"]]
    (lost,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert lost.object_url == f"{redisq.base_url}/object.php?objectID=1" and "503" in lost.problem
    assert metrics.metric_set["SourceErrors"]["Value"] == [5]


def test_a_429_on_the_object_backs_off_and_asks_for_the_object_again(redisq, queue_url, caplog):
    publish(redisq, DOCS[:1])
    redisq.faults.script(status=429, when="/object.php")
    rig = Rig(redisq, queue_url, pacing=0.5, budget=10)
    summary = rig.tick()
    assert paths(redisq)[:3] == ["/listen.php", "/object.php", "/object.php"]
    assert rig.starts[2] - rig.starts[1] == 5  # the first 429 backoff
    assert (summary["rate_limited"], summary["errors"], summary["enqueued"]) == (1, 0, 1)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_package_popped_by_the_last_listen_of_a_tick_is_read_and_sent_past_the_budget(redisq, queue_url, caplog):
    """Defect 1: the object read went through the gate, which stopped the tick once the budget was
    spent: RedisQ had already removed the package, and the tick logged it lost ("popped from the
    queue but not read") with the Lambda's time to spare. A popped package must finish."""
    publish(redisq, DOCS[:3])
    rig = Rig(redisq, queue_url, pacing=0.5, budget=0.5)  # room for one listen, not its object read
    context = LambdaContext("poller", 60, clock=rig.clock)
    summary = rig.tick(context.get_remaining_time_in_millis)
    assert paths(redisq) == ["/listen.php", "/object.php"] and redisq.popped == 1
    assert (summary["received"], summary["enqueued"], summary["errors"]) == (1, 1, 0)
    assert summary["stopped_because"] == BUDGET
    assert [body["killmail_id"] for body, _ in drain(queue_url)] == [DOCS[0]["killmail_id"]]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_stop_asked_for_mid_listen_still_reads_and_sends_the_popped_package(redisq, queue_url, caplog):
    """Defect 1, Ctrl+C in `killstream run`: the local context dropped the remaining time to 0 and
    the popped package was lost (8 popped, 7 stored). Stopping ends the budget, not the time."""
    publish(redisq, DOCS[:3])
    stop = threading.Event()
    redisq.received = lambda request: stop.set() if request.path == "/listen.php" else None
    rig = Rig(redisq, queue_url, pacing=0.5, budget=30)
    context = StoppableContext("poller", 60, stop, clock=rig.clock)
    summary = rig.tick(context.get_remaining_time_in_millis, context.stop_requested)
    assert paths(redisq) == ["/listen.php", "/object.php"]
    assert (summary["received"], summary["enqueued"], summary["errors"], summary["stopped_because"]) == (
        1,
        1,
        0,
        BUDGET,
    )
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_listen_starts_only_when_the_listen_its_object_and_the_send_fit_in_the_remaining_time(redisq, queue_url):
    """The reserve for a listen is the whole of what it may start: the listen, the object read
    and the SQS send, before the Lambda's end."""
    publish(redisq, DOCS[:2])
    rig = Rig(redisq, queue_url, pacing=0.5, budget=50)
    needs = rig.source.new_work_seconds + rig.poller.finish_reserve
    assert needs >= 2 * rig.client.longest_request + rig.poller.sink.call_seconds
    short = LambdaContext("poller", needs - 0.01, clock=rig.clock)
    summary = rig.tick(short.get_remaining_time_in_millis)
    assert (summary["requests"], summary["stopped_because"], redisq.popped) == (0, REMAINING_TIME, 0)
    enough = LambdaContext("poller", needs + 0.4, clock=rig.clock)
    summary = rig.tick(enough.get_remaining_time_in_millis)
    assert paths(redisq) == ["/listen.php", "/object.php"]
    assert (summary["enqueued"], summary["stopped_because"]) == (1, REMAINING_TIME)


def test_an_object_read_the_lambda_has_no_time_left_for_logs_the_object_url(redisq, queue_url, caplog):
    """Past the Lambda's remaining time nothing goes, not even a popped package's read (here its
    retries, after 503s): then its address, in the log, is the one copy left."""
    publish(redisq, DOCS[:2])
    rig = Rig(redisq, queue_url, pacing=0.5, budget=50)
    needs = rig.source.new_work_seconds + rig.poller.finish_reserve
    context = LambdaContext("poller", needs + 0.4, clock=rig.clock)
    # A slow listen (within its bound) leaves the object read room for its first tries only.
    slow = rig.client.longest_request - 0.5
    redisq.received = lambda request: rig.clock.advance(slow) if request.path == "/listen.php" else None
    redisq.faults.script(status=503, when="/object.php", times=None)
    summary = rig.tick(context.get_remaining_time_in_millis)
    assert paths(redisq) == ["/listen.php", "/object.php", "/object.php"]
    assert summary["stopped_because"] == REMAINING_TIME and summary["received"] == 0
    (lost,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "remaining_time" in lost.problem
    # popped from the queue, but still there to be fetched by hand
    redisq.faults.clear()
    recovered = requests.get(lost.object_url, headers={"User-Agent": UA}, timeout=5).json()["package"]
    assert recovered["killID"] == DOCS[0]["killmail_id"]


def test_an_empty_poll_redirected_to_object_id_null_is_an_empty_poll_not_a_lost_package(redisq, queue_url, caplog):
    """Defect 2: listen.js redirects an empty poll to /object.php?objectID=null; read at a tick's
    end, that was a false "popped … not read" ERROR and a SourceErrors."""
    rig = Rig(redisq, queue_url, pacing=0.5, budget=0.5)
    summary = rig.tick()
    assert paths(redisq) == ["/listen.php"]  # an empty poll costs one request, not two
    assert (summary["empty_polls"], summary["errors"], summary["received"]) == (1, 0, 0)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_5xx_on_the_listen_is_retried(redisq, queue_url):
    publish(redisq, DOCS[:1])
    redisq.faults.script(status=502, when="/listen.php")
    summary = Rig(redisq, queue_url, budget=2).tick()
    assert summary["errors"] == 1 and summary["enqueued"] == 1


def test_a_stalled_listen_hits_the_read_timeout_and_is_retried(redisq, queue_url):
    publish(redisq, DOCS[:1])
    redisq.faults.script(stall=30.0, when="/listen.php")
    began = time.monotonic()
    summary = Rig(redisq, queue_url, budget=2, read_timeout=0.2).tick()
    assert time.monotonic() - began < 15, "the read timeout, not the 30 s stall, ended the request"
    assert summary["errors"] == 1 and summary["enqueued"] == 1


def test_a_second_concurrent_request_gets_429_and_the_poller_backs_off(redisq, queue_url):
    """Another client holds a listen on our queue for ~0.5 s of real time; the poller, on a
    fake clock, meets 429s and waits 5 s, then 10 s (fake), without an exception."""
    holder = threading.Thread(
        target=requests.get,
        args=(redisq.url,),
        kwargs={"params": {"queueID": QUEUE_ID, "ttw": 10}, "headers": {"User-Agent": UA}, "timeout": 5},
    )
    redisq.ttw_scale = 0.05
    holder.start()
    while not redisq.requests:
        time.sleep(0.005)
    rig = Rig(redisq, queue_url, pacing=0.5, budget=20)
    summary = rig.tick()
    holder.join()
    assert summary["rate_limited"] == 3 and summary["stopped_because"] == BUDGET
    assert [round(b - a) for a, b in pairwise(rig.listens)] == [5, 10]
    assert metrics.metric_set["RateLimited"]["Value"] == [3]


def test_a_bad_filter_400_stops_the_tick_as_a_configuration_error(redisq, queue_url, caplog):
    publish(redisq, DOCS[:2])
    summary = Rig(redisq, queue_url, budget=5, package_filter="solo=true;npc=false,awox=true").tick()
    assert summary["stopped_because"] == SOURCE_REFUSED and summary["refused"] == 1
    assert summary["requests"] == 1
    (error,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "REDISQ_FILTER" in error.getMessage() and "cannot mix" in error.getMessage()


def test_a_rejected_filter_is_not_asked_again_on_the_warm_instance_and_said_once(redisq, queue_url, caplog):
    """Defect 3: the 400 was asked for again every tick, for ever. It is configuration: said
    once, naming REDISQ_FILTER; later ticks of the warm instance end at once, counted
    SourceRefused; a cold start (or another filter) asks once."""
    bad = "solo=true;npc=false,awox=true"
    rig = Rig(redisq, queue_url, budget=5, package_filter=bad)
    first = rig.tick()
    assert (first["refused"], first["requests"], len(redisq.requests)) == (1, 1, 1)
    later = []
    for _ in range(3):
        rig.clock.advance(60)
        later.append(rig.tick())
    assert len(redisq.requests) == 1
    assert {(s["stopped_because"], s["requests"], s["refused"]) for s in later} == {(SOURCE_REFUSED, 0, 1)}
    assert "REDISQ_FILTER" in later[0]["detail"]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "REDISQ_FILTER" in errors[0].getMessage()
    assert metrics.metric_set["SourceRefused"]["Value"] == [1, 1, 1, 1]
    # a changed filter is asked for
    rig.source.set_filter("totalValue>=1")
    publish(redisq, DOCS[:1])
    assert rig.tick()["enqueued"] == 1
    cold = Rig(redisq, queue_url, budget=5, package_filter=bad)
    assert cold.tick()["refused"] == 1 and cold.gate.started == 1


def test_the_shutdown_403_is_one_clear_error_and_stops_the_tick(redisq, queue_url, caplog):
    redisq.shutdown = True
    summary = Rig(redisq, queue_url, budget=5).tick()
    assert summary["stopped_because"] == SOURCE_REFUSED and summary["requests"] == 1
    (error,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert error.getMessage() == f"RedisQ refuses service: {SHUTDOWN_ANSWER['message']}"
    assert summary["detail"] == error.getMessage()
    assert metrics.metric_set["SourceRefused"]["Value"] == [1]


def test_after_the_shutdown_403_the_warm_poller_asks_nothing_for_15_minutes(redisq, queue_url, caplog):
    redisq.shutdown = True
    rig = Rig(redisq, queue_url, budget=5)
    rig.tick()
    refused_at = rig.clock()
    rig.clock.now = refused_at + 60  # the next scheduled tick, same warm instance
    caplog.clear()
    summary = rig.tick()
    assert len(redisq.requests) == 1
    assert (summary["stopped_because"], summary["requests"], summary["refused"]) == (SOURCE_REFUSED, 0, 0)
    (line,) = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert line.getMessage().startswith("not asking again before ") and "redisq is shutting down" in line.getMessage()
    assert line.seconds_left == 14 * 60

    rig.clock.now = refused_at + 15 * 60
    redisq.shutdown = False
    publish(redisq, DOCS[:1])
    assert rig.tick()["enqueued"] == 1


def test_a_shutdown_403_on_the_object_logs_the_object_url_and_stops(redisq, queue_url, caplog):
    publish(redisq, DOCS[:1])
    redisq.faults.script(status=403, body=json.dumps(SHUTDOWN_ANSWER).encode(), when="/object.php")
    summary = Rig(redisq, queue_url, budget=5).tick()
    assert summary["stopped_because"] == SOURCE_REFUSED and summary["refused"] == 1 and summary["errors"] == 1
    refusal, lost = [r for r in caplog.records if r.levelname == "ERROR"]
    assert refusal.getMessage() == f"RedisQ refuses service: {SHUTDOWN_ANSWER['message']}"
    assert lost.object_url.endswith("/object.php?objectID=1") and refusal.getMessage() in lost.problem


def test_garbage_and_invalid_packages_are_counted_logged_raw_and_the_poller_goes_on(redisq, queue_url, caplog):
    publish(redisq, DOCS[:3])
    redisq.faults.script(body=GARBAGE_BODY, when="/object.php")
    no_hash = json.dumps({"package": {"killID": 42, "zkb": {"totalValue": 1}}})
    redisq.faults.script(body=no_hash.encode(), when="/object.php")
    summary = Rig(redisq, queue_url, budget=3).tick()
    assert summary["invalid"] == 2 and summary["enqueued"] == 1
    assert [body["killmail_id"] for body, _ in drain(queue_url)] == [DOCS[2]["killmail_id"]]
    raws = [r.raw for r in caplog.records if r.getMessage().startswith("invalid package")]
    assert raws == [GARBAGE_BODY.decode(), no_hash]


def test_a_package_sqs_will_not_take_is_logged_in_full_and_the_tick_stops_reading(redisq, queue_url, caplog):
    publish(redisq, DOCS[:4])
    refused = DOCS[1]["killmail_id"]
    summary = Rig(
        redisq, queue_url, budget=10, sqs=RecordingSqs(forward=boto3.client("sqs"), fail={refused: -1})
    ).tick()
    assert summary["stopped_because"] == ENQUEUE_FAILED and summary["enqueue_failures"] == 1
    assert paths(redisq).count("/object.php") == 2  # nothing more popped from the queue
    (error,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert error.killmail_id == refused
    assert json.loads(error.package) == expected_body(DOCS[1], with_killmail=False)
    assert metrics.metric_set["EnqueueFailures"]["Value"] == [1]


def test_a_hung_sqs_ends_the_tick_in_time_and_each_package_it_would_not_take_is_logged_whole(redisq, queue_url, caplog):
    """Defect 4, RedisQ's side: sends to an SQS that never answers are tried only while one more
    call fits before the Lambda's end, and the package, already gone from RedisQ, is logged whole
    at ERROR (the only copy left). Real clock; SQS calls cut at 0.5 s here (the shipped bound is
    in killstream.aws_clients, and the handler is held to it in test_poller_r2z2)."""
    publish(redisq, DOCS[:1])
    with HungServer() as hung:
        config = Config(connect_timeout=0.25, read_timeout=0.25, retries={"mode": "standard", "total_max_attempts": 1})
        sqs = boto3.client("sqs", endpoint_url=hung.url, config=config)
        rig = Rig(redisq, queue_url, pacing=0.1, budget=0.5, clock=time.monotonic, sleep=time.sleep, sqs=sqs)
        rig.poller.sink.call_seconds = 0.5
        lambda_time = rig.source.new_work_seconds + rig.poller.finish_reserve + 1.0
        context = LambdaContext("poller", lambda_time)
        summary = rig.tick(context.get_remaining_time_in_millis)
        assert hung.accepted >= 1
    assert context.get_remaining_time_in_millis() > 0
    assert (summary["received"], summary["enqueued"], summary["enqueue_failures"]) == (1, 0, 1)
    (error,) = [r for r in caplog.records if r.getMessage() == "SQS would not take package after every attempt"]
    assert error.levelname == "ERROR" and json.loads(error.package) == expected_body(DOCS[0], with_killmail=False)


def test_the_handler_polls_redisq_from_the_environment(redisq, queue_url, monkeypatch):
    """Real clock: a 1 s budget."""
    publish(redisq, DOCS[:3])
    for name, value in {
        "KILLSTREAM_SOURCE": "redisq",
        "REDISQ_URL": redisq.url,
        "REDISQ_QUEUE_ID": f"q-{uuid.uuid4().hex[:6]}",
        "QUEUE_URL": queue_url,
        "USER_AGENT": UA,
        "POLL_PACING_MS": "100",
        "POLL_BUDGET_SECONDS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CURSOR_PARAMETER", raising=False)
    summary = load_handler_module("poller").handler({}, LambdaContext("poller", 60))
    assert (summary["source"], summary["enqueued"], summary["cursor"]) == ("redisq", 3, None)
    assert len(drain(queue_url)) == 3
    assert boto3.client("ssm").describe_parameters()["Parameters"] == []
