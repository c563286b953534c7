"""How fast the poller drains an R2Z2 backlog, and how little it asks at the head.

    make bench ARGS=drain     (or: .venv/bin/python bench/bench_drain.py --backlog 3600)

The real poller (Poller.from_config, as the handler builds it, with the default settings)
against the local R2Z2 (sequence.json lagging up to 51 behind, as the real one) and moto's SQS
and SSM, ticked as EventBridge ticks it: a 50 s budget every 60 s in a 60 s Lambda. A consumer
takes the messages off the queue as the fetcher would (moto's SendMessageBatch slows down with
the queue's depth: over a second a call at 3,600 messages), and counts them. Time is
accelerated, not faked: the clock is the machine's plus every second the poller slept, and a
sleep returns at once, so the work itself (HTTP, SQS, SSM) is measured at its real cost and the
pacing and the waits between ticks cost nothing but their seconds on the clock.

Backlog: the time from the first tick's start until SQS has accepted the last of `--backlog`
files published before it, at POLL_CATCHUP_PACING_MS=100 (the default) and, for
comparison, at 500 (the RedisQ pacing R2Z2 used before). Head: `--idle-minutes` of ticks with
nothing new, the requests they make. Last line:
    drain: backlog=<n> packages_per_s=<x> (pacing 500 ms: <y>/s) head: requests_per_min=<r>, file asks <s> s apart"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import threading
import time
from itertools import pairwise
from urllib.parse import urlsplit

from support import use_real_corpus

from killstream.config import PollerConfig
from killstream.observability import logger, metrics
from killstream.poller.tick import Poller
from killstream_workstation import corpus
from killstream_workstation.local.aws import LocalAws
from killstream_workstation.local.lambda_runtime import LambdaContext
from killstream_workstation.simulators.r2z2 import R2Z2Server

logger.setLevel("WARNING")  # a line per package would be most of the work measured
USER_AGENT = "killstream-bench/0.1 (bench@example.com)"
TICK_EVERY = 60.0  # EventBridge rate(1 minute)
LAMBDA_TIMEOUT = 60  # template.yaml: PollerFunction Timeout


class AcceleratedClock:
    """The machine's monotonic clock plus every second slept; sleeping returns at once."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped

    def sleep(self, seconds: float) -> None:
        self.skipped += max(0.0, seconds)


class Consumer(threading.Thread):
    """Takes the packages off the queue, as the fetcher's event source would: the sequences seen."""

    def __init__(self, aws: LocalAws):
        super().__init__(name="bench-consumer", daemon=True)
        self.aws = aws
        self.sequences: set[int] = set()
        self.stopping = threading.Event()

    def run(self) -> None:
        sqs = self.aws.client("sqs")
        while not self.stopping.is_set():
            messages = sqs.receive_message(QueueUrl=self.aws.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            )
            if messages:
                self.sequences.update(json.loads(m["Body"])["sequence_id"] for m in messages)
                sqs.delete_message_batch(
                    QueueUrl=self.aws.queue_url,
                    Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)],
                )

    def wait_for(self, count: int, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.sequences) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        self.stopping.set()
        self.join()
        return len(self.sequences) >= count


def run(backlog: int, *, catchup_ms: int, idle_minutes: int) -> tuple[float, float, float]:
    """(packages/s draining the backlog, requests a minute at the head, median seconds between
    the head's asks for the next file within a tick)"""
    env_before = dict(os.environ)
    aws = LocalAws(visibility_timeout=180, prefix=f"bench-drain-{catchup_ms}").start()
    server = R2Z2Server(sequence_lag=51).start()
    try:
        docs = corpus.renumber(corpus.sample(), backlog, first_id=600_000_000)
        for doc in docs:
            esi, killmail_hash = corpus.split_hash(doc)
            server.publish(esi, killmail_hash, corpus.zkb_for(doc), include_esi=False)
        aws.set_cursor("0")
        consumer = Consumer(aws)
        consumer.start()
        config = PollerConfig.from_env(
            {
                "R2Z2_URL": server.url,
                "QUEUE_URL": aws.queue_url,
                "CURSOR_PARAMETER": aws.cursor_parameter,
                "USER_AGENT": USER_AGENT,
                "POLL_CATCHUP_PACING_MS": str(catchup_ms),
            }
        )
        clock = AcceleratedClock()
        poller = Poller.from_config(config, clock=clock, sleep=clock.sleep)
        asked: list[tuple[float, str]] = []  # every answered request: (clock, path)
        poller.source.client.session.hooks["response"].append(
            lambda response, *args, **kwargs: asked.append((clock(), urlsplit(response.url).path))
        )
        accepted_at: dict[int, float] = {}  # sequence -> when SQS took it (the clock)
        send = poller.sink.client.send_message_batch

        def send_and_note(**call):
            answer = send(**call)
            taken = {success["Id"] for success in answer.get("Successful", [])}
            for entry in call["Entries"]:
                if entry["Id"] in taken:
                    accepted_at[json.loads(entry["MessageBody"])["sequence_id"]] = clock()
            return answer

        poller.sink.client.send_message_batch = send_and_note
        began = clock()
        drained_at = math.nan
        while math.isnan(drained_at):
            tick_start = clock()
            summary = poller.tick(LambdaContext("poller", LAMBDA_TIMEOUT, clock=clock).get_remaining_time_in_millis)
            metrics.clear_metrics()
            if (summary["cursor"] or 0) >= backlog:
                drained_at = accepted_at[backlog]  # the tick itself went on at the head
            else:
                clock.sleep(tick_start + TICK_EVERY - clock())
        rate = backlog / (drained_at - began)
        if not consumer.wait_for(backlog):
            raise SystemExit(f"SQS got {len(consumer.sequences)} of the {backlog} packages")
        # the head: nothing new, ticks a minute apart
        clock.sleep(began + math.ceil((clock() - began) / TICK_EVERY) * TICK_EVERY - clock())
        idle_began = clock()
        ticks = []
        for _ in range(idle_minutes):
            tick_start = clock()
            poller.tick(LambdaContext("poller", LAMBDA_TIMEOUT, clock=clock).get_remaining_time_in_millis)
            metrics.clear_metrics()
            ticks.append([at for at, path in asked if at >= tick_start and path.endswith(f"/{backlog + 1}.json")])
            clock.sleep(tick_start + TICK_EVERY - clock())
        idle = [at for at, _ in asked if at >= idle_began]
        per_minute = len(idle) / ((clock() - idle_began) / 60) if idle_minutes else math.nan
        gaps = [b - a for starts in ticks for a, b in pairwise(starts)]
        return rate, per_minute, statistics.median(gaps) if gaps else math.nan
    finally:
        server.stop()
        aws.stop()
        os.environ.clear()
        os.environ.update(env_before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=3600)
    parser.add_argument("--idle-minutes", type=int, default=10)
    parser.add_argument("--no-compare", action="store_true", help="skip the run at the old 500 ms pacing")
    args = parser.parse_args()
    use_real_corpus()
    rate, per_minute, spacing = run(args.backlog, catchup_ms=100, idle_minutes=args.idle_minutes)
    old = math.nan if args.no_compare else run(args.backlog, catchup_ms=500, idle_minutes=0)[0]
    print(
        f"backlog of {args.backlog}: {rate:.2f} packages/s at the default 100 ms catch-up pacing "
        f"({args.backlog / rate / 60:.1f} min), {old:.2f}/s at 500 ms; at the head {per_minute:.1f} requests/min "
        f"over {args.idle_minutes} idle minutes, the next file asked every {spacing:.1f} s"
    )
    print(
        f"drain: backlog={args.backlog} packages_per_s={rate:.2f} (pacing 500 ms: {old:.2f}/s) "
        f"head: requests_per_min={per_minute:.1f}, file asks {spacing:.1f} s apart"
    )


if __name__ == "__main__":
    main()
