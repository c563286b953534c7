"""The fetcher's messages: one SQS message in, read (the body contract: `read_message`), then
either settled as a re-delivery of what is stored (`Duplicate`, its documents never parsed) or
validated (`validate_message`) and carried through the batch as a work item whose stage says
what is known of it. Each stage holds exactly what that stage knows, so no step has to guess
from which fields are still None."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from killstream.errors import FetchError, InvalidPackage, KillmailValidationError, PermanentError, TransientError
from killstream.killmail import Killmail, Zkb, parse_killmail, parse_zkb
from killstream.observability import logger
from killstream.package import Package
from killstream.storage.writer import Outcome

ERROR_MESSAGE_CHARS = 1000


@dataclass(frozen=True)
class Message:
    """One SQS message: its id (what batchItemFailures names), body, and when it was sent."""

    message_id: str
    body: str
    sent_at: datetime | None = None
    receive_count: int = 1
    """SQS's ApproximateReceiveCount: this is its n-th delivery (SQS dead-letters it after
    maxReceiveCount)."""

    @classmethod
    def from_sqs_record(cls, record: Mapping) -> Message:
        """From a record of Lambda's SQS event (a plain dict)."""
        attributes = record.get("attributes") or {}
        sent = attributes.get("SentTimestamp")
        sent_at = datetime.fromtimestamp(int(sent) / 1000, UTC) if sent else None
        count = str(attributes.get("ApproximateReceiveCount") or "1")
        return cls(record["messageId"], record["body"], sent_at, int(count) if count.isdigit() else 1)


@dataclass(frozen=True)
class ParsedMessage:
    """A message's package, validated: its zkb block and, when it came inline, its killmail."""

    package: Package
    zkb: Zkb
    killmail: Killmail | None


# --- the stages of a readable message, in the order a batch moves it through them -------------


@dataclass(frozen=True)
class Wanted:
    """Its killmail is still to be found: in another message, in the database, or at ESI."""


@dataclass(frozen=True)
class Found:
    """Its killmail is at hand: ready to be written."""

    killmail: Killmail


@dataclass(frozen=True)
class Stored:
    """Written: the store says what the write did."""

    killmail: Killmail
    outcome: Outcome


@dataclass(frozen=True)
class Failed:
    """It will not be stored in this batch, for this reason."""

    error: FetchError


Stage = Wanted | Found | Stored | Failed


@dataclass
class Item:
    """A readable message on its way through the batch."""

    message: Message
    parsed: ParsedMessage
    stage: Stage

    @property
    def package(self) -> Package:
        return self.parsed.package

    @property
    def killmail_id(self) -> int:
        return self.parsed.package.killmail_id

    @property
    def total_value(self) -> float | None:
        value = self.parsed.zkb.total_value
        return None if value is None else float(value)


@dataclass(frozen=True)
class Unreadable:
    """A message the fetcher cannot read as a storable package. `package` is there when the body
    was one (so the DLQ entry can name its killmail) but what it carries failed validation."""

    message: Message
    error: FetchError
    package: Package | None = None

    @property
    def killmail_id(self) -> int | None:
        return self.package.killmail_id if self.package else None

    @property
    def total_value(self) -> float | None:
        return None


@dataclass(frozen=True)
class Read:
    """A message whose body keeps the contract (`Package.from_body`); its zkb and ESI documents
    are not validated yet."""

    message: Message
    package: Package

    @property
    def killmail_id(self) -> int:
        return self.package.killmail_id


@dataclass(frozen=True)
class Duplicate(Read):
    """A re-delivery settled before its documents were parsed: the killmail is stored, and the
    stored publication is at least as new as this one's (StoredKey.settles), so writing it would
    change nothing. `unpublished`: why its killmail's event, still to go, could not be published
    (the message is then given back)."""

    unpublished: str | None = None

    @property
    def total_value(self) -> float | None:
        value = self.package.zkb.get("totalValue")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


Work = Item | Duplicate | Unreadable


def parse_message(message: Message) -> Item | Unreadable:
    """The message as the poller wrote it, validated. Any flaw in it is its `PermanentError`."""
    read = read_message(message)
    return read if isinstance(read, Unreadable) else validate_message(read)


def read_message(message: Message) -> Read | Unreadable:
    """The body contract alone: what the batch needs to know which killmail a message is for
    and which publication it carries, before any document is parsed."""
    try:
        return Read(message, Package.from_body(message.body))
    except InvalidPackage as exc:
        return Unreadable(message, PermanentError("invalid_message", exc.reason))
    except Exception as exc:
        logger.exception("unexpected error reading a message", extra={"message_id": message.message_id})
        return Unreadable(message, unexpected_error(exc))


def validate_message(read: Read) -> Item | Unreadable:
    """The message's zkb block and ESI document, validated."""
    message, package = read.message, read.package
    try:
        zkb = parse_zkb(package.zkb)
        killmail = None if package.esi is None else parse_killmail(package.esi, package.esi_json)
    except KillmailValidationError as exc:
        return Unreadable(message, PermanentError("validation_error", str(exc)), package)
    except Exception as exc:
        # A flaw in the validator, not in the message: the message waits for a fix, the batch goes on.
        logger.exception("unexpected error reading a message", extra={"message_id": message.message_id})
        return Unreadable(message, unexpected_error(exc), package)
    if killmail is not None and killmail.killmail_id != package.killmail_id:
        error = PermanentError(
            "esi_mismatch", f"message is for killmail {package.killmail_id}, its esi is {killmail.killmail_id}"
        )
        return Unreadable(message, error, package)
    stage: Stage = Wanted() if killmail is None else Found(killmail)
    return Item(message, ParsedMessage(package, zkb, killmail), stage)


def unexpected_error(exc: Exception) -> TransientError:
    """An exception nobody planned for, as the one message's transient failure."""
    return TransientError("unexpected_error", f"{type(exc).__name__}: {exc}".strip()[:ERROR_MESSAGE_CHARS])


class Disposition(StrEnum):
    """What became of a message: the queue's word (the store's is `Outcome`), and the `outcome`
    of the fetcher's per-killmail log line."""

    SAVED = "saved"  # stored now
    SKIPPED = "skipped"  # already stored, nothing changed
    UPDATED = "updated"  # already stored, newer zKillboard values applied
    DEAD_LETTERED = "dead_lettered"  # permanent failure, on the DLQ with its reason
    RETRY = "retry"  # transient failure (or the DLQ refused it): back to the queue


# The one place the store's word becomes the queue's.
DISPOSITION_OF = {
    Outcome.INSERTED: Disposition.SAVED,
    Outcome.DUPLICATE: Disposition.SKIPPED,
    Outcome.ZKB_UPDATED: Disposition.UPDATED,
}


@dataclass(frozen=True)
class MessageResult:
    disposition: Disposition
    killmail_id: int | None = None
    error: FetchError | None = None

    @property
    def retry(self) -> bool:
        return self.disposition is Disposition.RETRY
