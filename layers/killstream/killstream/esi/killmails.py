"""ESI's killmail route: one validated killmail per call (docs/protocols.md, "ESI").

Every way a fetch can end that is not a killmail is a typed error: `PermanentError` when asking
again can never help (and would burn ESI's budget), `TransientError` when a later delivery may
succeed."""

from __future__ import annotations

from killstream.errors import EsiStatusError, KillmailValidationError, PermanentError, TransientError
from killstream.esi.client import EsiClient, read_json
from killstream.http import bounded
from killstream.killmail import Killmail, parse_killmail

INVALID_KILLMAIL_STATUSES = frozenset({400, 404, 422})


class KillmailClient(EsiClient):
    """Fetches killmails from `{base_url}/killmails/{id}/{hash}/`.

    `fetch` returns a validated `Killmail` whose id is the one asked for, or raises
    `PermanentError` / `TransientError` (the core's limits, retries and deadline apply)."""

    def url(self, killmail_id: int, killmail_hash: str) -> str:
        return f"{self.base_url}{_path(killmail_id, killmail_hash)}"

    def fetch(self, killmail_id: int, killmail_hash: str, deadline: float) -> Killmail:
        try:
            return self.call(
                "GET", _path(killmail_id, killmail_hash), deadline, lambda response: _killmail(response, killmail_id)
            )
        except EsiStatusError as exc:
            if exc.status in INVALID_KILLMAIL_STATUSES:
                raise PermanentError("esi_invalid_killmail", str(exc)) from None
            raise TransientError("esi_error", str(exc)) from None


def _path(killmail_id: int, killmail_hash: str) -> str:
    return f"/killmails/{killmail_id}/{killmail_hash}/"


def _killmail(response: bounded.Answer, killmail_id: int) -> Killmail:
    try:
        doc = read_json(response)
    except RecursionError:
        # Not a cut-off body (those raise ValueError and are retried): nesting this deep is
        # what ESI serves, and asking again would only get the same answer.
        raise PermanentError("validation_error", "ESI's document: JSON nested too deeply") from None
    try:
        killmail = parse_killmail(doc)
    except KillmailValidationError as exc:
        raise PermanentError("validation_error", f"ESI's document: {exc}") from None
    if killmail.killmail_id != killmail_id:
        raise PermanentError("esi_mismatch", f"asked ESI for {killmail_id}, it answered {killmail.killmail_id}")
    return killmail
