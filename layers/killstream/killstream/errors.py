"""Every error the core raises, in one place: what a caller may catch, and what each one means."""

from __future__ import annotations

import json
from typing import Any


class ConfigError(ValueError):
    """A configuration variable is missing or has a value we cannot use."""

    def __init__(self, variable: str, reason: str):
        super().__init__(f"{variable}: {reason}")
        self.variable = variable


class KillmailValidationError(ValueError):
    """The document cannot be stored as it is. `field` is a dotted path into it."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class InvalidPackage(ValueError):
    """A package that cannot be normalized. Carries the raw text so it can be logged."""

    def __init__(self, reason: str, raw: Any = None):
        super().__init__(reason)
        self.reason = reason
        self.raw = raw if isinstance(raw, str) else _safe_dump(raw)


def _safe_dump(raw: Any) -> str:
    try:
        return json.dumps(raw)[:10_000]
    except (TypeError, ValueError):
        return repr(raw)[:10_000]


class FetchError(Exception):
    """A message that did not become a stored killmail. `error_type` is short and stable: it
    becomes the DLQ's `error_type` attribute and the log's `reason`."""

    transient = False

    def __init__(self, error_type: str, message: str):
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


class PermanentError(FetchError):
    """Will fail the same way every time: dead-letter it, don't retry it."""


class TransientError(FetchError):
    """May succeed on a later delivery: give it back to the queue."""

    transient = True


class EsiStatusError(Exception):
    """ESI answered a status its client core does not handle itself (not 2xx, 420, 429 or 5xx).
    What it means belongs to the route: an invalid killmail, an unknown id, a bug of ours."""

    def __init__(self, status: int, excerpt: str):
        super().__init__(f"ESI answered {status}: {excerpt}")
        self.status = status
        self.excerpt = excerpt


class DatabaseUnavailable(Exception):
    """PostgreSQL (or the secret that opens it) cannot be reached now; nothing was written."""


class CursorUnavailable(Exception):
    """The poller's cursor (SSM) could not be read: the tick cannot know where to start."""


# Why a poller tick ended, as the tick summary's `stopped_because` says it.
BUDGET = "budget"
REMAINING_TIME = "remaining_time"
SOURCE_REFUSED = "source_refused"
ENQUEUE_FAILED = "enqueue_failed"


class StopTick(Exception):
    """Nothing more may start this tick; `reason` is one of the stop reasons above."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail
