"""An alert's message, from a killmail event's detail (docs/events.md): ship, victim, system,
region, value, attackers and the zKillboard link, as a Discord embed or as Slack blocks, within
each one's limits (docs/protocols.md, "Webhooks"). Text over a limit is cut, never refused:
an alert with a shortened name is worth more than none."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from killstream.alerts.webhook import DISCORD, SLACK
from killstream.events.detail import UPDATED

# Discord's embed limits (characters; counted here in UTF-16 code units, as the widest reading).
DISCORD_TITLE = 256
DISCORD_DESCRIPTION = 4096
DISCORD_FIELDS = 25
DISCORD_FIELD_NAME = 256
DISCORD_FIELD_VALUE = 1024
DISCORD_FOOTER = 2048
DISCORD_TOTAL = 6000
# Slack's Block Kit limits.
SLACK_HEADER = 150
SLACK_FIELDS = 10
SLACK_FIELD_TEXT = 2000
SLACK_SECTION_TEXT = 3000
SLACK_FALLBACK_TEXT = 3000
ELLIPSIS = "…"
COLOR_STORED = 0xB22222
COLOR_UPDATED = 0xDAA520


def units(text: str) -> int:
    """Length in UTF-16 code units: what a JavaScript-side count of characters sees."""
    return len(text.encode("utf-16-le")) // 2


def cut(text: str, limit: int) -> str:
    """`text` in at most `limit` units, ending in an ellipsis when it was longer."""
    if units(text) <= limit:
        return text
    kept, used = [], units(ELLIPSIS)
    for char in text:
        size = units(char)
        if used + size > limit:
            break
        kept.append(char)
        used += size
    return "".join(kept).rstrip() + ELLIPSIS


def isk(value: float | None) -> str:
    if value is None:
        return "value unknown"
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:,.2f}{suffix} ISK"
    return f"{value:,.0f} ISK"


@dataclass(frozen=True)
class Summary:
    """What every kind of message says, in plain text (each kind escapes it for its markup)."""

    updated: bool
    killmail_id: int
    title: str
    ship: str
    victim: str
    system: str
    region: str
    value: str
    attackers: str
    final_blow: str
    link: str
    time: str


def _named(part: Mapping[str, Any], what: str, label: str) -> str | None:
    name, ident = part.get(f"{what}_name"), part.get(f"{what}_id")
    if name:
        return str(name)
    return f"{label} {ident}" if ident is not None else None


def _who(part: Mapping[str, Any]) -> str:
    person = _named(part, "character", "character")
    groups = [g for g in (_named(part, "corporation", "corporation"), _named(part, "alliance", "alliance")) if g]
    if person is None:
        return " / ".join(groups) or "unknown"
    return f"{person} ({' / '.join(groups)})" if groups else person


def summarize(detail: Mapping[str, Any], detail_type: str) -> Summary:
    victim = detail.get("victim") or {}
    final = detail.get("final_blow") or {}
    zkb = detail.get("zkb") or {}
    ship = _named(victim, "ship_type", "type") or "unknown ship"
    if victim.get("ship_group_name"):
        ship = f"{ship} ({victim['ship_group_name']})"
    system = str(detail.get("solar_system_name") or f"system {detail.get('solar_system_id')}")
    if detail.get("security_status") is not None:
        system = f"{system} ({float(detail['security_status']):.1f})"
    flags = [flag for flag in ("solo", "npc", "awox") if zkb.get(flag)]
    count = detail.get("attacker_count")
    attackers = f"{count} attacker{'' if count == 1 else 's'}" if count is not None else "attackers unknown"
    if flags:
        attackers = f"{attackers} ({', '.join(flags)})"
    final_blow = _who(final) if final else "unknown"
    if final.get("ship_type_id") is not None:
        final_blow = f"{final_blow} in {_named(final, 'ship_type', 'type')}"
    value = isk(zkb.get("totalValue"))
    updated = detail_type == UPDATED
    return Summary(
        updated=updated,
        killmail_id=int(detail["killmail_id"]),
        title=f"{'Updated: ' if updated else ''}{ship} destroyed in {system} — {value}",
        ship=ship,
        victim=_who(victim),
        system=system,
        region=str(
            detail.get("region_name")
            or (f"region {detail['region_id']}" if "region_id" in detail else "not known yet (system not named)")
        ),
        value=value,
        attackers=attackers,
        final_blow=final_blow,
        link=str(detail.get("zkillboard_url") or f"https://zkillboard.com/kill/{detail['killmail_id']}/"),
        time=str(detail.get("killmail_time") or ""),
    )


# --- Discord --------------------------------------------------------------------------------


def _discord_escape(text: str) -> str:
    """Names shown as written, not as markdown (a leading > would quote the line)."""
    for char in "\\*_~`|":
        text = text.replace(char, f"\\{char}")
    return f"\\{text}" if text.startswith(">") else text


def discord_message(detail: Mapping[str, Any], detail_type: str) -> dict[str, Any]:
    """One embed (Execute Webhook), mentions off: a name is never a ping."""
    s = summarize(detail, detail_type)
    fields = [
        ("Ship", s.ship),
        ("Victim", s.victim),
        ("System", s.system),
        ("Region", s.region),
        ("Value", s.value),
        ("Attackers", s.attackers),
        ("Final blow", s.final_blow),
    ]
    embed: dict[str, Any] = {
        "title": cut(s.title, DISCORD_TITLE),
        "url": s.link,
        "color": COLOR_UPDATED if s.updated else COLOR_STORED,
        "fields": [
            {"name": name, "value": cut(_discord_escape(value), DISCORD_FIELD_VALUE), "inline": True}
            for name, value in fields[:DISCORD_FIELDS]
        ],
        "footer": {"text": cut(f"killmail {s.killmail_id} · zKillboard: {s.link}", DISCORD_FOOTER)},
    }
    if s.time:
        embed["timestamp"] = s.time
    _fit_discord(embed)
    return {"embeds": [embed], "allowed_mentions": {"parse": []}}


def _discord_units(embed: Mapping[str, Any]) -> int:
    texts = [embed.get("title", ""), embed.get("description", ""), embed.get("footer", {}).get("text", "")]
    texts += [part for field in embed.get("fields", []) for part in (field["name"], field["value"])]
    return sum(units(text) for text in texts)


def _fit_discord(embed: dict[str, Any]) -> None:
    """Within the 6,000 a message's embeds may hold in all: the longest field value is halved
    until they fit."""
    while _discord_units(embed) > DISCORD_TOTAL:
        longest = max(embed["fields"], key=lambda field: units(field["value"]))
        longest["value"] = cut(longest["value"], max(1, units(longest["value"]) // 2))


# --- Slack ----------------------------------------------------------------------------------


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(detail: Mapping[str, Any], detail_type: str) -> dict[str, Any]:
    """A header, one section of fields and a context line with the link; `text` is the fallback
    notifications show."""
    s = summarize(detail, detail_type)
    fields = [
        ("Ship", s.ship),
        ("Victim", s.victim),
        ("System", f"{s.system}, {s.region}"),
        ("Value", s.value),
        ("Attackers", s.attackers),
        ("Final blow", s.final_blow),
    ]
    return {
        "text": cut(f"{s.title} {s.link}", SLACK_FALLBACK_TEXT),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": cut(s.title, SLACK_HEADER), "emoji": False}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": cut(f"*{name}*\n{_slack_escape(value)}", SLACK_FIELD_TEXT)}
                    for name, value in fields[:SLACK_FIELDS]
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": cut(f"<{s.link}|zKillboard> · killmail {s.killmail_id} · {s.time}", SLACK_SECTION_TEXT),
                    }
                ],
            },
        ],
    }


def message_for(kind: str, detail: Mapping[str, Any], detail_type: str) -> dict[str, Any]:
    if kind == DISCORD:
        return discord_message(detail, detail_type)
    if kind == SLACK:
        return slack_message(detail, detail_type)
    raise ValueError(f"no message format for webhook kind {kind!r}")
