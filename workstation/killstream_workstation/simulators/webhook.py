"""A local Discord and Slack for the notifier (docs/protocols.md, "Webhooks"): Discord's Execute
Webhook (`POST /api/webhooks/{id}/{token}`) and Slack's incoming webhooks
(`POST /services/{team}/{bot}/{token}`) on one server.

Each post is checked as the real services check it — Discord's embed limits, Slack's Block Kit
limits — and a malformed one answered 400 with the service's own kind of reason. Discord answers
204 (200 with the message when `?wait=true`) and keeps a rate-limit bucket per webhook, with its
X-RateLimit-* headers and a 429 (Retry-After, `retry_after`) when spent; Slack answers 200 `ok`.
A deleted webhook answers 404. Faults (429 storms, 5xx, stalls, dropped connections) come from
the fault injector every simulator shares: `server.faults.script(429, headers={"Retry-After": "1"})`."""

from __future__ import annotations

import itertools
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from killstream_workstation.simulators.faults import FaultRates
from killstream_workstation.simulators.http_server import Request, Response, SimulatorServer, json_response

DISCORD_PATH = re.compile(r"^/api(?:/v\d+)?/webhooks/(\d+)/([^/]+)$")
SLACK_PATH = re.compile(r"^/services/([^/]+)/([^/]+)/([^/]+)$")


def _length(text: Any) -> int:
    return len(str(text).encode("utf-16-le")) // 2


def discord_problems(body: Any) -> list[str]:
    """What Discord would refuse in an Execute Webhook body (its documented embed limits)."""
    if not isinstance(body, dict):
        return ["the body is not a JSON object"]
    embeds, content = body.get("embeds") or [], body.get("content")
    problems = []
    if not embeds and not content:
        problems.append("one of content, embeds is required")
    if content is not None and _length(content) > 2000:
        problems.append("content: more than 2000 characters")
    if len(embeds) > 10:
        problems.append("embeds: more than 10")
    total = 0
    limits = {"title": 256, "description": 4096}
    for n, embed in enumerate(embeds):
        for key, limit in limits.items():
            if key in embed and _length(embed[key]) > limit:
                problems.append(f"embeds[{n}].{key}: more than {limit} characters")
            total += _length(embed.get(key, ""))
        fields = embed.get("fields") or []
        if len(fields) > 25:
            problems.append(f"embeds[{n}].fields: more than 25")
        for m, item in enumerate(fields):
            name, value = str(item.get("name", "")), str(item.get("value", ""))
            if not name.strip() or not value.strip():
                problems.append(f"embeds[{n}].fields[{m}]: name and value are required")
            if _length(name) > 256 or _length(value) > 1024:
                problems.append(f"embeds[{n}].fields[{m}]: name over 256 or value over 1024 characters")
            total += _length(name) + _length(value)
        footer = (embed.get("footer") or {}).get("text", "")
        if _length(footer) > 2048:
            problems.append(f"embeds[{n}].footer.text: more than 2048 characters")
        author = (embed.get("author") or {}).get("name", "")
        total += _length(footer) + _length(author)
    if total > 6000:
        problems.append(f"embeds: {total} characters in all, more than 6000")
    return problems


def slack_problems(body: Any) -> list[str]:
    """What Slack would refuse in an incoming webhook body (Block Kit's limits)."""
    if not isinstance(body, dict):
        return ["the body is not a JSON object"]
    blocks = body.get("blocks") or []
    problems = []
    if not body.get("text") and not blocks:
        problems.append("no_text")
    if len(blocks) > 50:
        problems.append("invalid_blocks: more than 50 blocks")
    for n, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "header":
            text = block.get("text") or {}
            if text.get("type") != "plain_text" or _length(text.get("text", "")) > 150:
                problems.append(f"invalid_blocks: blocks[{n}] header must be plain_text of at most 150 characters")
        elif kind == "section":
            fields = block.get("fields") or []
            if not fields and not block.get("text"):
                problems.append(f"invalid_blocks: blocks[{n}] section needs text or fields")
            if len(fields) > 10 or any(_length(f.get("text", "")) > 2000 for f in fields):
                problems.append(f"invalid_blocks: blocks[{n}] at most 10 fields of 2000 characters")
            if block.get("text") and _length(block["text"].get("text", "")) > 3000:
                problems.append(f"invalid_blocks: blocks[{n}] text over 3000 characters")
        elif kind == "context":
            elements = block.get("elements") or []
            if not elements or len(elements) > 10:
                problems.append(f"invalid_blocks: blocks[{n}] context needs 1 to 10 elements")
        elif kind not in ("divider",):
            problems.append(f"invalid_blocks: blocks[{n}] has unknown type {kind!r}")
    return problems


@dataclass
class Post:
    """One post the server accepted."""

    kind: str
    path: str
    body: dict
    at: float = field(default_factory=time.monotonic)


class WebhookServer(SimulatorServer):
    """Point a webhook URL at `discord_url()` or `slack_url()` (with an explicit kind: the address
    is not discord.com's or hooks.slack.com's). `posts` holds what was accepted, in order;
    `delete(url)` makes a webhook answer 404 from then on."""

    def __init__(
        self,
        *,
        bucket_size: int = 5,
        bucket_window: float = 2.0,
        seed: int = 0,
        fault_rates: FaultRates | None = None,
        latency: float = 0.0,
    ):
        super().__init__(seed=seed, fault_rates=fault_rates, latency=latency)
        self.bucket_size = bucket_size
        self.bucket_window = bucket_window
        self.posts: list[Post] = []
        self.rate_limited = 0
        """429s the Discord bucket answered (faults not counted)."""
        self.refused: list[tuple[str, list[str]]] = []
        """(path, problems) of every post refused as malformed."""
        self._deleted: set[str] = set()
        self._buckets: dict[str, tuple[float, int]] = {}
        self._ids = itertools.count(1)
        self._state = threading.Lock()

    def discord_url(self, webhook_id: int = 1, token: str = "local-token") -> str:
        return f"{self.base_url}/api/webhooks/{webhook_id}/{token}"

    def slack_url(self, team: str = "T0LOCAL", bot: str = "B0LOCAL", token: str = "local-token") -> str:
        return f"{self.base_url}/services/{team}/{bot}/{token}"

    def delete(self, url: str) -> None:
        path = url.removeprefix(self.base_url).split("?", 1)[0]
        with self._state:
            self._deleted.add(path)

    def posted(self, kind: str | None = None) -> list[Post]:
        with self._state:
            return [post for post in self.posts if kind is None or post.kind == kind]

    def respond(self, request: Request) -> Response:
        if request.method != "POST":
            return json_response({"message": "405: Method Not Allowed", "code": 0}, 405)
        if DISCORD_PATH.match(request.path):
            return self._discord(request)
        if SLACK_PATH.match(request.path):
            return self._slack(request)
        return json_response({"message": "404: Not Found", "code": 0}, 404)

    def _discord(self, request: Request) -> Response:
        with self._state:
            if request.path in self._deleted:
                return json_response({"message": "Unknown Webhook", "code": 10015}, 404)
            now = time.monotonic()
            started, used = self._buckets.get(request.path, (now, 0))
            if now - started >= self.bucket_window:
                started, used = now, 0
            reset_after = max(0.0, self.bucket_window - (now - started))
            headers = {
                "X-RateLimit-Limit": str(self.bucket_size),
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Bucket": "local",
            }
            if used >= self.bucket_size:
                self.rate_limited += 1
                retry = f"{reset_after:.3f}"
                headers |= {
                    "X-RateLimit-Remaining": "0",
                    "Retry-After": str(math.ceil(reset_after)),
                    "X-RateLimit-Scope": "user",
                }
                return json_response(
                    {"message": "You are being rate limited.", "retry_after": float(retry), "global": False},
                    429,
                    headers,
                )
            body, problem = _json(request.body)
            problems = [problem] if problem else discord_problems(body)
            if problems:
                self.refused.append((request.path, problems))
                return json_response({"code": 50035, "message": "Invalid Form Body", "errors": problems}, 400, headers)
            self._buckets[request.path] = (started, used + 1)
            headers["X-RateLimit-Remaining"] = str(self.bucket_size - used - 1)
            self.posts.append(Post("discord", request.path, body))
            if request.query.get("wait", "").lower() == "true":
                return json_response({"id": str(next(self._ids)), "embeds": body.get("embeds", [])}, 200, headers)
            return Response(204, b"", headers)

    def _slack(self, request: Request) -> Response:
        with self._state:
            if request.path in self._deleted:
                return Response(404, b"no_service", {"Content-Type": "text/html"})
            body, problem = _json(request.body)
            problems = [problem] if problem else slack_problems(body)
            if problems:
                self.refused.append((request.path, problems))
                return Response(400, problems[0].split(":")[0].encode(), {"Content-Type": "text/html"})
            self.posts.append(Post("slack", request.path, body))
            return Response(200, b"ok", {"Content-Type": "text/html"})


def _json(raw: bytes) -> tuple[Any, str | None]:
    try:
        return json.loads(raw), None
    except ValueError:
        return None, "invalid_payload: the body is not JSON"
