"""A whole HTTP request bounded by its caller's deadline: connecting, the headers and every byte
of the body (docs/protocols.md, "ESI": Deadlines). requests' read timeout bounds each socket read
only, so an answer that drips in a byte at a time keeps a request going for as long as it drips.
Here the body is streamed in chunks, each read allowed only what is left before the deadline,
and an answer still incomplete at the deadline is closed and raised as a timeout. The feed's
client (killstream.http.client) and ESI's (killstream.esi.client) both read through this."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3.exceptions

CHUNK_BYTES = 64 * 1024


class DeadlineExceeded(requests.exceptions.Timeout):
    """The answer was not complete by the request's deadline."""


@dataclass(frozen=True)
class Answer:
    """An answer read in full."""

    status: int
    headers: Mapping[str, str]
    content: bytes
    url: str
    reason: str
    encoding: str | None

    @property
    def text(self) -> str:
        return self.content.decode(self.encoding or "utf-8", errors="replace")


def get(
    session: requests.Session,
    url: str,
    *,
    deadline: float,
    timeout: tuple[float, float],
    clock: Callable[[], float] = time.monotonic,
    params: Mapping[str, Any] | None = None,
    allow_redirects: bool = False,
) -> Answer:
    """GET `url`: `request` with method GET."""
    return request(
        session,
        "GET",
        url,
        deadline=deadline,
        timeout=timeout,
        clock=clock,
        params=params,
        allow_redirects=allow_redirects,
    )


def request(
    session: requests.Session,
    method: str,
    url: str,
    *,
    deadline: float,
    timeout: tuple[float, float],
    clock: Callable[[], float] = time.monotonic,
    params: Mapping[str, Any] | None = None,
    json: Any = None,
    allow_redirects: bool = False,
) -> Answer:
    """`method` `url` (`json` sent as its body when given) and read the whole answer by
    `deadline` (a time on `clock`), or raise a requests exception (DeadlineExceeded when time ran
    out). `timeout` is (connect, read), each cut to what is left."""
    connect_timeout, read_timeout = timeout
    left = _left(deadline, clock, url)
    response = session.request(
        method,
        url,
        params=params,
        json=json,
        timeout=(min(connect_timeout, left), min(read_timeout, left)),
        allow_redirects=allow_redirects,
        stream=True,
    )
    try:
        chunks = []
        while True:
            _limit_next_read(response.raw, min(read_timeout, _left(deadline, clock, url)))
            chunk = response.raw.read1(CHUNK_BYTES, decode_content=True)
            if not chunk:
                break
            chunks.append(chunk)
    except BaseException as error:
        response.close()  # an answer read in part: its connection is of no further use
        if isinstance(error, urllib3.exceptions.ReadTimeoutError):
            raise requests.exceptions.ReadTimeout(f"{url}: {error}") from error
        if isinstance(error, urllib3.exceptions.HTTPError | OSError):
            # what requests itself raises when a body breaks off (it reads through urllib3 too)
            raise requests.exceptions.ChunkedEncodingError(f"{url}: {error}") from error
        raise
    response.raw.release_conn()  # read to its end: the connection goes back to the pool, kept alive
    return Answer(
        response.status_code, response.headers, b"".join(chunks), response.url, response.reason, response.encoding
    )


def _left(deadline: float, clock: Callable[[], float], url: str) -> float:
    left = deadline - clock()
    if left <= 0:
        raise DeadlineExceeded(f"{url}: the answer was not complete by the deadline")
    return left


def _limit_next_read(raw: Any, seconds: float) -> None:
    """The socket's timeout for the next read: at most what is left (urllib3 set it to the read
    timeout when the request went out, and sets it again for the next request on this connection)."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(seconds)
