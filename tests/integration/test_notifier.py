"""The notifier Lambda against a local Discord and Slack (simulators/webhook.py), moto's Secrets
Manager (the webhook URL) and SQS (the alert DLQ), through the real handler: what the webhook
received, batchItemFailures, the DLQ's messages with their reasons, and the logs."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import boto3
import pytest

from killstream.errors import ConfigError
from killstream.events.detail import STORED, UPDATED, KillmailEvent
from killstream.observability import metrics
from killstream_workstation.local.lambda_runtime import LambdaContext, load_handler_module, sqs_record
from killstream_workstation.simulators.webhook import WebhookServer

UA = "killstream-tests/0.1 (tests@example.com)"
TOKEN = "tok3n-that-must-never-be-logged"


def alert_body(killmail_id: int, *, detail_type: str = STORED, version: int = 0, name: str = "Pilot") -> str:
    detail = {
        "version": 1,
        "killmail_id": killmail_id,
        "zkb_version": version,
        "killmail_time": "2026-11-30T21:14:09Z",
        "solar_system_id": 30000142,
        "solar_system_name": "Jita",
        "victim": {"character_id": 1, "character_name": name, "ship_type_id": 11567, "ship_type_name": "Avatar"},
        "attacker_count": 3,
        "zkb": {"totalValue": 1.2e10},
        "zkillboard_url": f"https://zkillboard.com/kill/{killmail_id}/",
    }
    event = KillmailEvent(killmail_id, version, detail_type, detail)
    return json.dumps(event.envelope(event_id=str(uuid.uuid4()), time=datetime.now(UTC), account="1", region="r"))


class Notifier:
    def __init__(self, module, webhook: WebhookServer, dlq_url: str):
        self.module = module
        self.webhook = webhook
        self.dlq_url = dlq_url

    def invoke(self, bodies: list[str], timeout: float = 30.0) -> tuple[dict, list[dict]]:
        records = [sqs_record(b, f"m-{n}-{uuid.uuid4().hex[:6]}") for n, b in enumerate(bodies)]
        response = self.module.handler({"Records": records}, LambdaContext("notifier", timeout))
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        return response, [r for r in records if r["messageId"] in failed]

    def dead_letters(self) -> list[dict]:
        sqs = boto3.client("sqs")
        answer = sqs.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        return [
            {**{k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()}, "body": m["Body"]}
            for m in answer.get("Messages", [])
        ]


@pytest.fixture
def webhook():
    with WebhookServer() as server:
        yield server


@pytest.fixture
def make_notifier(aws, webhook, monkeypatch):
    def make(kind: str, url: str | None = None, **env) -> Notifier:
        url = url or (webhook.discord_url(token=TOKEN) if kind == "discord" else webhook.slack_url(token=TOKEN))
        secret = boto3.client("secretsmanager").create_secret(Name=f"hook-{uuid.uuid4().hex[:8]}", SecretString=url)
        dlq_url = boto3.client("sqs").create_queue(QueueName=f"alert-dlq-{uuid.uuid4().hex[:6]}")["QueueUrl"]
        settings = {
            "WEBHOOK_SECRET_ARN": secret["ARN"],
            "WEBHOOK_KIND": kind,
            "ALERT_DLQ_URL": dlq_url,
            "USER_AGENT": UA,
            **env,
        }
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        metrics.clear_metrics()
        return Notifier(load_handler_module("notifier"), webhook, dlq_url)

    return make


@pytest.mark.parametrize("kind", ["discord", "slack"])
def test_every_alert_is_posted_once_well_formed(make_notifier, webhook, kind):
    notifier = make_notifier(kind)
    bodies = [alert_body(100 + n) for n in range(4)] + [alert_body(100, detail_type=UPDATED, version=1)]
    response, failed = notifier.invoke(bodies)
    assert failed == [] and webhook.refused == []
    posts = webhook.posted(kind)
    assert len(posts) == 5
    texts = [json.dumps(post.body) for post in posts]
    assert all(f"kill/{100 + n}/" in texts[n] for n in range(4)) and "Updated: " in texts[4]
    requests = [r for r in webhook.requests if r.method == "POST"]
    assert {r.headers["User-Agent"] for r in requests} == {UA}
    assert all(r.query.get("wait") == "true" for r in requests) == (kind == "discord")
    if kind == "slack":  # paced at about one a second
        starts = [r.started for r in requests]
        assert min(b - a for a, b in zip(starts, starts[1:], strict=False)) >= 0.9


def test_a_redelivered_alert_is_not_posted_twice(make_notifier, webhook):
    notifier = make_notifier("discord")
    body = alert_body(7)
    notifier.invoke([body])
    _, failed = notifier.invoke([body, body])  # SQS delivers it again, twice
    assert failed == [] and len(webhook.posted()) == 1


def test_a_429_storm_delays_but_loses_none(make_notifier, webhook):
    notifier = make_notifier("discord")
    webhook.faults.script(429, headers={"Retry-After": "0.3"}, times=6)
    started = time.monotonic()
    _, failed = notifier.invoke([alert_body(200 + n) for n in range(3)])
    assert failed == [] and len(webhook.posted()) == 3
    assert time.monotonic() - started >= 6 * 0.3
    answers = [r for r in webhook.requests if r.method == "POST"]
    for limited, after in zip(answers, answers[1:], strict=False):
        if limited.status == 429:  # each next try waited the Retry-After out
            assert after.started - limited.started >= 0.28


def test_a_longer_storm_hands_the_alerts_back_and_the_next_delivery_posts_them(make_notifier, webhook):
    notifier = make_notifier("slack")
    webhook.faults.script(429, headers={"Retry-After": "4"}, times=1)
    _, failed = notifier.invoke([alert_body(300), alert_body(301)], timeout=13)  # 3 s to post: no waiting 4
    assert len(failed) == 2 and webhook.posted() == []
    _, failed = notifier.invoke([alert_body(300), alert_body(301)])  # the warm instance still waits it out
    assert failed == [] and len(webhook.posted()) == 2
    assert webhook.requests[1].started - webhook.requests[0].started >= 3.9


def test_discord_s_bucket_is_waited_out_before_it_answers_429(make_notifier, webhook):
    webhook.bucket_size, webhook.bucket_window = 2, 1.0
    notifier = make_notifier("discord")
    _, failed = notifier.invoke([alert_body(400 + n) for n in range(6)])
    assert failed == [] and len(webhook.posted()) == 6
    assert webhook.rate_limited == 0


def test_server_errors_are_retried_and_a_stall_is_given_back(make_notifier, webhook):
    notifier = make_notifier("discord")
    webhook.faults.script(503, times=2)
    _, failed = notifier.invoke([alert_body(500)])
    assert failed == [] and len(webhook.posted()) == 1
    webhook.faults.script(stall=12.0, disconnect=True)  # no answer, ever
    _, failed = notifier.invoke([alert_body(501)], timeout=15)  # 5 s to post: one try, no second
    assert len(failed) == 1 and len(webhook.posted()) == 1
    _, failed = notifier.invoke([alert_body(501)])
    assert failed == [] and len(webhook.posted()) == 2


def test_a_deleted_webhook_dead_letters_with_the_reason_and_is_not_asked_again(make_notifier, webhook, capfd, caplog):
    notifier = make_notifier("discord")
    webhook.delete(webhook.discord_url(token=TOKEN))
    response, failed = notifier.invoke([alert_body(600), alert_body(601), "not json"])
    assert failed == []  # permanent: on the DLQ, not retried
    letters = {letter.get("killmail_id"): letter for letter in notifier.dead_letters()}
    assert letters["600"]["error_type"] == letters["601"]["error_type"] == "webhook_gone"
    assert "404" in letters["600"]["error_message"] and "Unknown Webhook" in letters["600"]["error_message"]
    assert letters[None]["error_type"] == "invalid_alert"
    assert json.loads(letters["600"]["body"])["detail"]["killmail_id"] == 600  # the alert itself, to redrive
    assert len([r for r in webhook.requests if r.method == "POST"]) == 1  # Discord: do not use it again
    logs = capfd.readouterr().out + caplog.text
    assert TOKEN not in logs and "api/webhooks/1/…" in logs


def test_a_message_the_service_refuses_goes_to_the_dlq_with_its_answer(make_notifier, webhook):
    notifier = make_notifier("slack")
    webhook.faults.script(400, body=b"invalid_blocks")
    _, failed = notifier.invoke([alert_body(700)])
    (letter,) = notifier.dead_letters()
    assert failed == [] and letter["error_type"] == "webhook_rejected" and "invalid_blocks" in letter["error_message"]


def test_a_webhook_of_no_known_kind_fails_the_invocation_naming_the_variable(make_notifier, webhook):
    notifier = make_notifier("auto", url=f"{webhook.base_url}/hooks/{TOKEN}")
    with pytest.raises(ConfigError) as raised:
        notifier.invoke([alert_body(800)])
    assert raised.value.variable == "WEBHOOK_KIND" and TOKEN not in str(raised.value)
    assert webhook.requests == []
