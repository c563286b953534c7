"""Alert messages and webhooks, without the network: which kind a webhook is, its URL never
written whole, and the Discord embed and Slack blocks for a killmail event — well-formed by the
local Discord and Slack's own checks (simulators/webhook.py), and cut rather than refused when a
name would break a limit."""

from __future__ import annotations

import pytest

from killstream.alerts.message import DISCORD_TOTAL, cut, discord_message, isk, slack_message, units
from killstream.alerts.webhook import redact_url, redactor, webhook_kind
from killstream.errors import ConfigError
from killstream.events.detail import STORED, UPDATED
from killstream_workstation.simulators.webhook import discord_problems, slack_problems

DISCORD = "https://discord.com/api/webhooks/123456789012345678/s3cr3t-T0KEN_abc"
SLACK = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
DETAIL = {
    "version": 1,
    "killmail_id": 131234567,
    "zkb_version": 0,
    "killmail_time": "2026-11-30T21:14:09Z",
    "solar_system_id": 30000142,
    "solar_system_name": "Jita",
    "security_status": 0.9459,
    "region_id": 10000002,
    "region_name": "The Forge",
    "victim": {
        "character_id": 1,
        "character_name": "Some *Pilot*",
        "corporation_id": 2,
        "corporation_name": "R&D <Corp>",
        "ship_type_id": 11567,
        "ship_type_name": "Avatar",
        "ship_group_name": "Titan",
    },
    "attacker_count": 12,
    "final_blow": {"character_id": 3, "corporation_id": 4, "ship_type_id": 587},
    "zkb": {"totalValue": 102345678901.25, "solo": False, "npc": False},
    "zkillboard_url": "https://zkillboard.com/kill/131234567/",
}


@pytest.mark.parametrize(
    ("url", "explicit", "kind"),
    [
        (DISCORD, None, "discord"),
        ("https://discordapp.com/api/v10/webhooks/1/abc", "auto", "discord"),
        (SLACK, None, "slack"),
        ("https://relay.example.com/hook", "slack", "slack"),
        ("http://127.0.0.1:8080/api/webhooks/1/t", "discord", "discord"),
    ],
)
def test_the_kind_follows_the_url_or_the_explicit_kind(url, explicit, kind):
    assert webhook_kind(url, explicit) == kind


@pytest.mark.parametrize(
    "url", ["https://relay.example.com/hook", "http://discord.com/api/webhooks/1/abc", "https://hooks.slack.com/x"]
)
def test_a_webhook_of_no_known_kind_needs_an_explicit_one_and_the_error_names_the_variable(url):
    with pytest.raises(ConfigError) as raised:
        webhook_kind(url, None)
    assert raised.value.variable == "WEBHOOK_KIND" and "discord or slack" in str(raised.value)
    with pytest.raises(ConfigError, match="--alert-kind"):
        webhook_kind(url, "", variable="--alert-kind")
    with pytest.raises(ConfigError, match="must be one of"):
        webhook_kind(url, "teams")


def test_a_webhook_url_is_never_written_whole():
    assert redact_url(DISCORD) == "https://discord.com/api/webhooks/123456789012345678/…"
    assert redact_url(SLACK) == "https://hooks.slack.com/services/T00000000/…"
    assert redact_url("https://user:pw@relay.example.com/hook/abc?k=1") == "https://relay.example.com/…"
    redact = redactor(DISCORD)
    text = redact(
        f"HTTPSConnectionPool(host='discord.com'): Max retries exceeded with url: {DISCORD[19:]} and {DISCORD}"
    )
    assert "s3cr3t" not in text and "discord.com" in text
    with pytest.raises(ConfigError) as raised:
        webhook_kind("https://relay.example.com/hooks/s3cr3t", None)
    assert "s3cr3t" not in str(raised.value)


def test_discord_embed_names_ship_victim_system_region_value_attackers_and_link():
    message = discord_message(DETAIL, STORED)
    assert discord_problems(message) == []
    (embed,) = message["embeds"]
    assert embed["title"] == "Avatar (Titan) destroyed in Jita (0.9) — 102.35B ISK"
    assert embed["url"] == "https://zkillboard.com/kill/131234567/" and embed["timestamp"] == "2026-11-30T21:14:09Z"
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Victim"] == "Some \\*Pilot\\* (R&D <Corp>)"  # Discord markdown escaped
    assert fields["Region"] == "The Forge" and fields["Attackers"] == "12 attackers"
    assert fields["Final blow"] == "character 3 (corporation 4) in type 587"  # ids until the enricher names them
    assert message["allowed_mentions"] == {"parse": []}  # a name is never a ping
    assert discord_message(DETAIL, UPDATED)["embeds"][0]["title"].startswith("Updated: ")


def test_slack_blocks_say_the_same_escaped_for_mrkdwn():
    message = slack_message(DETAIL, STORED)
    assert slack_problems(message) == []
    header, section, context = message["blocks"]
    assert header["text"]["text"] == "Avatar (Titan) destroyed in Jita (0.9) — 102.35B ISK"
    texts = [field["text"] for field in section["fields"]]
    assert "*Victim*\nSome *Pilot* (R&amp;D &lt;Corp&gt;)" in texts and "*System*\nJita (0.9), The Forge" in texts
    assert "<https://zkillboard.com/kill/131234567/|zKillboard>" in context["elements"][0]["text"]
    assert message["text"].endswith("https://zkillboard.com/kill/131234567/")


def test_a_message_over_the_limits_is_cut_not_refused():
    huge = dict(DETAIL)
    huge["victim"] = {**DETAIL["victim"], "character_name": "🚀" * 3000, "corporation_name": "C" * 5000}
    huge["final_blow"] = {"character_name": "F" * 5000, "corporation_name": "G" * 5000, "ship_type_name": "S" * 999}
    huge["solar_system_name"] = "Y" * 400
    discord = discord_message(huge, STORED)
    assert discord_problems(discord) == []
    (embed,) = discord["embeds"]
    assert units(embed["title"]) <= 256 and embed["title"].endswith("…")
    assert (
        sum(units(f["name"]) + units(f["value"]) for f in embed["fields"])
        + units(embed["title"])
        + units(embed["footer"]["text"])
        <= DISCORD_TOTAL
    )
    slack = slack_message(huge, STORED)
    assert slack_problems(slack) == []


def test_cut_counts_as_javascript_does_and_never_splits_a_character():
    assert cut("abc", 3) == "abc" and cut("abcdef", 4) == "abc…"
    assert cut("🚀🚀🚀", 4) == "🚀…"  # a rocket is two UTF-16 units
    assert isk(102345678901.25) == "102.35B ISK" and isk(None) == "value unknown" and isk(950) == "950 ISK"
