"""`killstream alerts test`: which stored killmails a pattern would have matched, by EventBridge's
own pattern test, so a rule is tuned before it is deployed.

Each stored killmail becomes the event the fetcher would have published for it (the same
builder, events/detail.py, as a `Killmail Stored` event with its current values and names), and:
- against AWS (the default, with your credentials; AWS_ENDPOINT_URL honoured): one
  TestEventPattern call per event — EventBridge's matcher, free, a few at a time. An invalid
  pattern is refused by it with EventBridge's reason;
- locally (`--local`): moto does not implement TestEventPattern, so the events go through a
  private local endpoint the way `make run` routes them: a rule with the pattern on a bus, its
  SQS target drained. That is moto's matcher, exactly what the local pipeline would alert on —
  not EventBridge's."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError

from killstream.events.bus import EventBus
from killstream.events.detail import STORED, KillmailEvent, killmail_event
from killstream_workstation.alerts.patterns import PatternError

TEST_ACCOUNT = "123456789012"
"""The account the test events say they come from (patterns rarely name one)."""
AWS_PARALLELISM = 8
AWS_CLIENT_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 8}, max_pool_connections=AWS_PARALLELISM)


class LocalEndpointError(RuntimeError):
    """The local endpoint did not take the test events."""


@dataclass(frozen=True)
class Verdict:
    event: KillmailEvent
    matched: bool


def stored_events(rows: Sequence[dict[str, Any]]) -> list[KillmailEvent]:
    """The event each stored killmail was (or would have been) first published as."""
    return [killmail_event(row, STORED) for row in rows]


def match_with_eventbridge(
    pattern: str, events: Sequence[KillmailEvent], client: Any, *, region: str, parallelism: int = AWS_PARALLELISM
) -> list[Verdict]:
    """TestEventPattern for every event; PatternError when EventBridge refuses the pattern."""
    now = datetime.now(UTC)

    def test(event: KillmailEvent) -> bool:
        envelope = event.envelope(event_id=str(uuid.uuid4()), time=now, account=TEST_ACCOUNT, region=region)
        try:
            answer = client.test_event_pattern(EventPattern=pattern, Event=json.dumps(envelope))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidEventPatternException":
                raise PatternError(f"EventBridge refuses the pattern: {exc.response['Error'].get('Message')}") from None
            raise
        if "Result" not in answer:  # moto answers an empty 200: it does not implement the call
            raise LocalEndpointError(
                "the endpoint answered TestEventPattern without a Result (moto does not implement it): use --local"
            )
        return bool(answer["Result"])

    if not events:  # still ask once, so an invalid pattern is refused even over no killmails
        test(KillmailEvent(0, 0, STORED, {"killmail_id": 0}))
        return []
    with ThreadPoolExecutor(max_workers=parallelism) as pool:
        return [Verdict(event, matched) for event, matched in zip(events, pool.map(test, events), strict=True)]


def match_with_local_endpoint(
    pattern: str, events: Sequence[KillmailEvent], make_rule: Callable[[str], tuple[str, str]], client_for: Any
) -> list[Verdict]:
    """Through a local endpoint's routing: `make_rule(pattern)` puts a rule with the pattern on a
    bus and returns (bus name, its target queue's URL); every event is put on that bus and the
    queue drained. moto matches as moto does (local/aws.py)."""
    bus_name, queue_url = make_rule(pattern)
    refused = [reason for reason in EventBus(bus_name, client_for("events")).put(events) if reason]
    if refused:
        raise LocalEndpointError(f"the local endpoint refused {len(refused)} events: {refused[0]}")
    sqs = client_for("sqs")
    matched: set[int] = set()
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not messages:
            break
        for message in messages:
            matched.add(json.loads(message["Body"])["detail"]["killmail_id"])
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)],
        )
    return [Verdict(event, event.killmail_id in matched) for event in events]
