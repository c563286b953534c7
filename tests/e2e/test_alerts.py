"""Alerts end to end, as `make run --alert-webhook URL --alert-pattern FILE` runs them: the corpus
replayed through the real poller and fetcher, the fetcher's events on the local bus, the rule's
pattern routing its matches (moto's matcher) to the alert queue, and the real notifier posting
them to a local Discord or Slack. The webhook receives exactly the killmails the pattern
selects, once each, well-formed; a 429 storm delays them but loses none; killmails delivered to
the fetcher twice are not alerted twice."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from killstream_workstation import corpus
from killstream_workstation.local.pipeline import AlertSettings
from killstream_workstation.simulators.webhook import WebhookServer, discord_problems, slack_problems

ALERTS = 12


def chosen(docs: list[dict]) -> tuple[str, set[int]]:
    """A pattern over the events' value in millions that matches the ALERTS most valuable kills."""
    values = sorted(((corpus.zkb_for(doc)["totalValue"], doc["killmail_id"]) for doc in docs), reverse=True)
    threshold = (values[ALERTS - 1][0] + values[ALERTS][0]) / 2 / 1e6
    pattern = {
        "source": ["killstream"],
        "detail-type": ["Killmail Stored"],
        "detail": {"total_value_millions": [{"numeric": [">", threshold]}]},
    }
    return json.dumps(pattern), {killmail_id for _, killmail_id in values[:ALERTS]}


def alerted(post) -> int:
    text = json.dumps(post.body)
    return int(text.split("zkillboard.com/kill/")[1].split("/")[0])


def run_until_settled(pipeline, webhook: WebhookServer, expected: int) -> None:
    assert pipeline.wait_until(lambda: len(webhook.posted()) >= expected, timeout=240), len(webhook.posted())
    # every delivery done: the killmail queue and the alert queue empty, nothing in flight
    aws = pipeline.aws
    assert pipeline.wait_until(
        lambda: aws.queue_depth(aws.queue_url) == 0 and aws.queue_depth(pipeline.alert.queue_url) == 0, timeout=120
    )
    assert aws.queue_depth(pipeline.alert.dlq_url) == 0
    pipeline.stop()


@pytest.mark.slow
def test_discord_gets_exactly_the_matching_kills_once_through_a_429_storm_and_redeliveries(pipeline_factory):
    docs = corpus.sample()
    pattern, expected = chosen(docs)
    with WebhookServer() as webhook:
        webhook.faults.script(429, headers={"Retry-After": "0.5"}, times=8, when="/api/webhooks/")
        pipeline = pipeline_factory(
            docs,
            inline_ratio=0.5,
            # a fifth of the finished killmail messages come back (one coming back five times ends
            # on the killmail DLQ as retries_exhausted: stored and published all the same)
            duplicate_delivery_rate=0.2,
            alert=AlertSettings(webhook.discord_url(), pattern, "discord", visibility_timeout=5),
        )
        run_until_settled(pipeline, webhook, len(expected))
        posts = webhook.posted("discord")
        assert pipeline.duplicate_deliveries > 0
        assert Counter(map(alerted, posts)) == Counter(expected)  # exactly those, once each
        assert len([f for f in webhook.faults.injected if f.status == 429]) == 8  # the storm happened
        assert webhook.refused == [] and all(discord_problems(post.body) == [] for post in posts)


@pytest.mark.slow
def test_slack_gets_the_same_kills_as_blocks(pipeline_factory):
    docs = corpus.sample()
    pattern, expected = chosen(docs)
    with WebhookServer() as webhook:
        pipeline = pipeline_factory(docs, alert=AlertSettings(webhook.slack_url(), pattern, "slack"))
        run_until_settled(pipeline, webhook, len(expected))
        posts = webhook.posted("slack")
        assert Counter(map(alerted, posts)) == Counter(expected)
        assert webhook.refused == [] and all(slack_problems(post.body) == [] for post in posts)
        assert all(post.body["blocks"][0]["type"] == "header" for post in posts)
