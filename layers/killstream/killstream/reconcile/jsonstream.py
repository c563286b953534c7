"""One large JSON object read entry by entry as its bytes arrive, never held whole: zKillboard's
day lists (`{"id": "hash", …}`) and raw day files (`{"id": {…ESI killmail…}, …}`, tens of MB for a
2026 day; docs/protocols.md, "R2Z2 history"). Memory stays near one chunk plus one entry whatever
the file's size.

Each value is parsed by the standard library's `json.JSONDecoder.raw_decode` at its place in a
sliding text buffer; a value cut off at the buffer's end waits for more bytes. A file that is not
such an object, or that ends before its closing brace, raises `MalformedJson` (`TruncatedJson`)
naming how many entries came before the fault: those entries were already yielded and stay good."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from typing import Any

MAX_ENTRY_CHARS = 32 * 1024 * 1024
"""An entry larger than this is refused: ESI caps a killmail at 10,000 items (a few MB)."""
NEAR_END = 16
"""A decode error this close to the buffer's end, with no delimiter after it, may only be a value
cut off there (an escape like \\uD83D\\uDE00 split between two chunks)."""
COMPACT_AT = 1024 * 1024

_WHITESPACE = " \t\n\r"


class MalformedJson(ValueError):
    """Not the JSON object expected. `entries`: how many were read before the fault."""

    def __init__(self, reason: str, entries: int):
        super().__init__(f"{reason} (after {entries:,} entries)")
        self.reason = reason
        self.entries = entries


class TruncatedJson(MalformedJson):
    """The bytes ended before the object did: a cut transfer or a partly written file."""


class _Text:
    """The decoded text not yet consumed, refilled from the byte chunks on demand."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        self.text = ""
        self.pos = 0
        self.eof = False
        self.entries = 0

    def more(self) -> bool:
        """Append the next chunk; False at the end of the bytes."""
        if self.eof:
            return False
        if self.pos > COMPACT_AT and self.pos * 2 > len(self.text):
            self.text, self.pos = self.text[self.pos :], 0
        try:
            chunk = next(self._chunks, None)
            decoded = self._utf8.decode(chunk or b"", final=chunk is None)
        except UnicodeDecodeError as error:
            raise MalformedJson(f"not UTF-8: {error.reason}", self.entries) from None
        if chunk is None:
            self.eof = True
        self.text += decoded
        return True

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end), not consumed."""
        while True:
            text, pos = self.text, self.pos
            while pos < len(text) and text[pos] in _WHITESPACE:
                pos += 1
            self.pos = pos
            if pos < len(text):
                return text[pos]
            if not self.more():
                return ""

    def expect(self, char: str, what: str) -> None:
        found = self.peek()
        if found != char:
            self.fail(f"expected {what}, found {_shown(found)}")
        self.pos += 1

    def fail(self, reason: str) -> None:
        if self.eof and self.pos >= len(self.text):
            where = reason.removeprefix("expected ")
            raise TruncatedJson(f"truncated: the file ends where {where} belongs", self.entries)
        raise MalformedJson(reason, self.entries)

    def value(self, decoder: json.JSONDecoder, max_chars: int) -> Any:
        """The JSON value starting at the current position."""
        wanted = 0
        while True:
            try:
                value, end = decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as error:
                rest = self.text[error.pos :]
                cut_off = error.msg.startswith("Unterminated string") or (
                    len(rest) <= NEAR_END and not any(char in rest for char in ",]}")
                )
                if self.eof or not cut_off:
                    if self.eof and cut_off:
                        raise TruncatedJson("truncated: the file ends inside an entry", self.entries) from None
                    where = f"at character {error.pos - self.pos} of an entry"
                    raise MalformedJson(f"{error.msg} {where}", self.entries) from None
            except RecursionError:
                raise MalformedJson("an entry nested too deeply", self.entries) from None
            else:
                # A number near the end of the text may go on in the next chunk ("1e" of "1e+16").
                room = NEAR_END if isinstance(value, int | float) else 1
                if len(self.text) - end >= room or (self.eof and end < len(self.text)):
                    self.pos = end
                    return value
                if self.eof:  # no closing brace can follow, and a number may have been cut short
                    raise TruncatedJson("truncated: the file ends inside an entry", self.entries)
            pending = len(self.text) - self.pos
            if pending > max_chars:
                raise MalformedJson(f"an entry longer than {max_chars:,} characters", self.entries)
            # Read at least as much again before the next attempt: a large entry costs a few
            # parses, not one per chunk.
            wanted = max(wanted * 2, pending * 2, 1)
            while len(self.text) - self.pos < wanted and self.more():
                pass


def _shown(char: str) -> str:
    return "the end of the file" if not char else repr(char)


def object_entries(chunks: Iterable[bytes], *, max_entry_chars: int = MAX_ENTRY_CHARS) -> Iterator[tuple[str, Any]]:
    """(key, value) for every entry of the JSON object the chunks spell, in file order."""
    text = _Text(chunks)
    decoder = json.JSONDecoder()
    text.expect("{", "a JSON object")
    if text.peek() == "}":
        text.pos += 1
        return
    while True:
        if text.peek() != '"':
            text.fail(f"expected a key, found {_shown(text.peek())}")
        key = text.value(decoder, max_entry_chars)
        text.expect(":", "':' after a key")
        if not text.peek():
            text.fail("expected a value")
        value = text.value(decoder, max_entry_chars)
        following = text.peek()  # checked before the entry goes out: "1e" is no number
        if following not in (",", "}"):
            text.fail(f"expected ',' or '}}' after an entry, found {_shown(following)}")
        text.entries += 1
        yield key, value
        text.pos += 1
        if following == "}":
            break
    if text.peek():
        raise MalformedJson(f"data after the object: {_shown(text.peek())}", text.entries)
