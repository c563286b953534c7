"""A webhook: which kind it is (Discord or Slack), from its URL or an explicit kind, and how its
URL is written in logs — never whole: the URL is the credential (docs/protocols.md, "Webhooks")."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

from killstream.errors import ConfigError

DISCORD = "discord"
SLACK = "slack"
KINDS = (DISCORD, SLACK)
AUTO = "auto"

_DISCORD_HOSTS = ("discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com")
_DISCORD_PATH = re.compile(r"^/api(?:/v\d+)?/webhooks/(\d+)/([^/?#]+)")
_SLACK_PATH = re.compile(r"^/services/([^/?#]+)/([^/?#]+)/([^/?#]+)")


def kind_from_url(url: str) -> str | None:
    """discord for https://discord.com/api/webhooks/…, slack for https://hooks.slack.com/services/…,
    None for any other address (a relay, a local test server)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "https" and host in _DISCORD_HOSTS and _DISCORD_PATH.match(parts.path):
        return DISCORD
    if parts.scheme == "https" and host == "hooks.slack.com" and _SLACK_PATH.match(parts.path):
        return SLACK
    return None


def webhook_kind(url: str, explicit: str | None, *, variable: str = "WEBHOOK_KIND") -> str:
    """The kind to format for: the explicit one when given, else the URL's. A URL of no known
    kind without an explicit kind is a configuration error naming `variable`."""
    explicit = (explicit or "").strip().lower() or AUTO
    if explicit not in (*KINDS, AUTO):
        raise ConfigError(variable, f"must be one of {', '.join((AUTO, *KINDS))}, got {explicit!r}")
    if explicit != AUTO:
        return explicit
    kind = kind_from_url(url)
    if kind is None:
        raise ConfigError(
            variable,
            f"the webhook {redact_url(url)} is neither https://discord.com/api/webhooks/… nor "
            "https://hooks.slack.com/services/…: say which it speaks (discord or slack)",
        )
    return kind


def redact_url(url: str) -> str:
    """The URL without its secret part: a Discord webhook keeps its id, a Slack one its team, any
    other keeps scheme, host and port."""
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
    if match := _DISCORD_PATH.match(parts.path):
        return f"{base}/api/webhooks/{match[1]}/…"
    if match := _SLACK_PATH.match(parts.path):
        return f"{base}/services/{match[1]}/…"
    return f"{base}/…"


def redactor(url: str) -> Callable[[str], str]:
    """A function that writes `url`, and its path alone, as redact_url does, wherever they appear
    in a text (an exception's message names the URL it failed on)."""
    parts = urlsplit(url)
    secret_path = parts.path + (f"?{parts.query}" if parts.query else "")
    short = redact_url(url)

    def redact(text: str) -> str:
        text = text.replace(url, short)
        if len(secret_path) > 1:
            text = text.replace(secret_path, "/…")
        return text

    return redact
