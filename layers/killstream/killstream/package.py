"""The package: what the poller puts on SQS and the fetcher takes off it.

Its JSON body is a contract (redrive and tests rely on it):
    {"killmail_id": 131234567, "hash": "<40 hex>", "zkb": {...as received...},
     "esi": {...ESI killmail, or absent...}, "source": "r2z2",
     "sequence_id": 98765432, "uploaded_at": 1767225600}
Every source normalizes its own shape into it. `source` is one of SOURCES; every string in the
body must be text that encodes as UTF-8 (JSON's "\\ud800" escape decodes to one that does not),
so a body that would fail its batch downstream fails alone, here, with its reason."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from killstream.errors import InvalidPackage, KillmailValidationError
from killstream.killmail import validate_hash, validate_id, validate_object

SOURCES = ("r2z2", "redisq", "history", "everef", "zkillboard")
"""Where a package may come from: the live feeds, and the reconciler's and backfill's sources
(docs/protocols.md, "R2Z2 history", "EVE Ref archives"). The one list: a body naming another is
invalid."""


@dataclass(frozen=True)
class Package:
    killmail_id: int
    hash: str
    zkb: dict
    source: str
    esi: dict | None = None
    sequence_id: int | None = None
    uploaded_at: int | None = None

    def to_body(self, *, with_esi: bool = True) -> str:
        body: dict[str, Any] = {"killmail_id": self.killmail_id, "hash": self.hash, "zkb": self.zkb}
        if with_esi and self.esi is not None:
            body["esi"] = self.esi
        body["source"] = self.source
        if self.sequence_id is not None:
            body["sequence_id"] = self.sequence_id
        if self.uploaded_at is not None:
            body["uploaded_at"] = self.uploaded_at
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_body(cls, body: str | bytes | dict) -> Package:
        """Parse an SQS message body written by `to_body`, every field of the contract checked."""
        doc = _decode(body)
        source = doc.get("source")
        if source not in SOURCES:
            raise InvalidPackage(f"source: must be one of {', '.join(SOURCES)}, got {ascii(source)}", body)
        return _build(
            doc,
            killmail_id=doc.get("killmail_id"),
            killmail_hash=doc.get("hash"),
            zkb=doc.get("zkb"),
            esi=doc.get("esi"),
            source=doc.get("source"),
            sequence_id=doc.get("sequence_id"),
            uploaded_at=doc.get("uploaded_at"),
        )


def _decode(body: str | bytes | dict) -> dict:
    if isinstance(body, dict):
        return body
    try:
        doc = json.loads(body)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidPackage(
            f"not JSON: {type(exc).__name__}: {exc}", body if isinstance(body, str) else repr(body)
        ) from None
    if not isinstance(doc, dict):
        raise InvalidPackage(f"not a JSON object but {type(doc).__name__}", body)
    return doc


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(value: Any, path: str) -> None:
    """Every string in `value` (keys too) encodes as UTF-8: PostgreSQL and SQS take no lone surrogate."""
    if isinstance(value, str):
        if not _encodes(value):
            raise KillmailValidationError(path, "holds text that is not valid Unicode (a lone surrogate)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, f"{path} key")
            _check_text(item, f"{path}.{key}" if _encodes(key) else path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_text(item, f"{path}[{index}]")


def _build(
    raw: Any,
    *,
    killmail_id: Any,
    killmail_hash: Any,
    zkb: Any,
    esi: Any,
    source: Any,
    sequence_id: Any = None,
    uploaded_at: Any = None,
) -> Package:
    """A Package from the fields a source's shape gives (any JSON value each), validated."""
    try:
        if killmail_id is None:
            raise KillmailValidationError("killmail_id", "is required")
        if killmail_hash is None:
            raise KillmailValidationError("hash", "is required")
        _check_text(zkb, "zkb")
        package = Package(
            killmail_id=validate_id(killmail_id, "killmail_id", minimum=1),
            hash=validate_hash(killmail_hash),
            zkb=validate_object({} if zkb is None else zkb, "zkb"),
            source=source if isinstance(source, str) and source else "unknown",
            esi=None if esi is None else validate_object(esi, "esi"),
            sequence_id=None if sequence_id is None else validate_id(sequence_id, "sequence_id"),
            uploaded_at=None if uploaded_at is None else validate_id(uploaded_at, "uploaded_at"),
        )
    except KillmailValidationError as exc:
        raise InvalidPackage(str(exc), raw) from None
    return package


PLACEHOLDER_HREF_END = "/killmails///"


def is_placeholder(doc: Any) -> bool:
    """An R2Z2 null placeholder (docs/protocols.md, "R2Z2"): a 200 with no killmail_id, no hash,
    and a zkb.href ending in /killmails///. Neither a killmail nor an error."""
    if not isinstance(doc, dict) or doc.get("killmail_id") is not None or doc.get("hash") is not None:
        return False
    zkb = doc.get("zkb")
    href = zkb.get("href") if isinstance(zkb, dict) else None
    return isinstance(href, str) and href.endswith(PLACEHOLDER_HREF_END)


def from_r2z2(body: str | bytes | dict) -> Package:
    """An R2Z2 `/{sequence}.json` document."""
    doc = _decode(body)
    zkb = doc.get("zkb")
    killmail_hash = doc.get("hash") or (zkb.get("hash") if isinstance(zkb, dict) else None)
    return _build(
        doc,
        killmail_id=doc.get("killmail_id"),
        killmail_hash=killmail_hash,
        zkb=zkb,
        esi=doc.get("esi"),
        source="r2z2",
        sequence_id=doc.get("sequence_id"),
        uploaded_at=doc.get("uploaded_at"),
    )


def from_redisq(package: Any) -> Package:
    """The `package` of a RedisQ answer, in either shape: since 2025-12 metadata only
    (`killID` + `zkb`), before that with the full ESI killmail under `killmail`."""
    if not isinstance(package, dict):
        raise InvalidPackage(f"package is not an object but {type(package).__name__}", package)
    zkb = package.get("zkb")
    return _build(
        package,
        killmail_id=package.get("killID"),
        killmail_hash=zkb.get("hash") if isinstance(zkb, dict) else None,
        zkb=zkb,
        esi=package.get("killmail"),
        source="redisq",
    )
