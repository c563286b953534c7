"""Fault injection shared by the local R2Z2, RedisQ and ESI servers, and the small HTTP server
they are built on: a fault has to be able to replace, delay or cut any answer, so the request
loop and the injector live together.

Two ways to make a server misbehave:

- scripted faults, consumed in order by the next request they match (`when`: a substring of the
  path, or a predicate on it; `times=None` keeps a fault until `clear()`):
  `server.faults.script(status=429, headers={"Retry-After": "2"})`, `script(stall=5.0)`,
  `script(body=b"{garbage")`, `script(disconnect=True)`, `script(status=503, when="/listen.php")`;
- seeded random rates, one roll per request: `server.faults.rates = FaultRates(rate_5xx=0.02)`.

Every fault served is appended to `server.faults.injected`.
"""

from __future__ import annotations

import json
import random
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlsplit

PathMatch = str | Callable[[str], bool] | None
GARBAGE_BODY = b'{"killmail_id": 1, "zkb": {"hash": "trunc'
SERVER_ERRORS = (500, 502, 503, 504)


def _path_matches(when: PathMatch, path: str) -> bool:
    if when is None:
        return True
    return when in path if isinstance(when, str) else when(path)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


@dataclass
class Request:
    """One request as received; `status` is filled in once answered (None: connection dropped)."""
    started: float
    method: str
    path: str
    query: dict[str, str]
    headers: HTTPMessage
    status: int | None = None
    fault: str | None = None


@dataclass
class Fault:
    """One misbehaviour. Without `status` or `body` the normal answer is still served, after
    `stall` seconds and with `headers` added."""
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    stall: float = 0.0
    disconnect: bool = False
    when: PathMatch = None
    times: int | None = 1

    @property
    def kind(self) -> str:
        if self.disconnect:
            return "disconnect"
        if self.status is not None:
            return "status"
        if self.body is not None:
            return "garbage"
        return "stall" if self.stall else "headers"

    def replaces_answer(self) -> bool:
        return self.status is not None or self.body is not None

    def answer(self) -> Response:
        status = self.status or 200
        if self.body is None:
            return json_response({"error": f"simulated {status}"}, status)
        return Response(status, self.body, {"Content-Type": "application/json"})


@dataclass(frozen=True)
class FaultRates:
    """Per-request chances, rolled on the injector's seeded generator (at most one fault a request)."""
    rate_429: float = 0.0
    rate_5xx: float = 0.0
    rate_stall: float = 0.0
    rate_garbage: float = 0.0
    rate_disconnect: float = 0.0
    stall_seconds: float = 2.0
    retry_after: str = "1"
    when: PathMatch = None

    def roll(self, rng: random.Random) -> Fault | None:
        roll = rng.random()
        # Drawn on every roll so that the sequence of draws, hence the run, depends only on the seed.
        server_error = rng.choice(SERVER_ERRORS)
        for rate, make in (
            (self.rate_429, lambda: Fault(status=429, headers={"Retry-After": self.retry_after})),
            (self.rate_5xx, lambda: Fault(status=server_error)),
            (self.rate_stall, lambda: Fault(stall=self.stall_seconds)),
            (self.rate_garbage, lambda: Fault(body=GARBAGE_BODY)),
            (self.rate_disconnect, lambda: Fault(disconnect=True)),
        ):
            if roll < rate:
                return make()
            roll -= rate
        return None


@dataclass(frozen=True)
class InjectedFault:
    at: float
    path: str
    kind: str
    status: int | None
    scripted: bool


class FaultInjector:
    def __init__(self, seed: int = 0, rates: FaultRates | None = None):
        self.rates = rates or FaultRates()
        self.injected: list[InjectedFault] = []
        self._rng = random.Random(seed)
        self._scripted: list[Fault] = []
        self._lock = threading.Lock()

    def script(self, status: int | None = None, *, headers: dict[str, str] | None = None, body: bytes | None = None,
               stall: float = 0.0, disconnect: bool = False, when: PathMatch = None, times: int | None = 1) -> Fault:
        fault = Fault(status, dict(headers or {}), body, stall, disconnect, when, times)
        with self._lock:
            self._scripted.append(fault)
        return fault

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._scripted)

    def clear(self) -> None:
        with self._lock:
            self._scripted.clear()
            self.rates = FaultRates()

    def draw(self, path: str) -> Fault | None:
        with self._lock:
            fault = self._take_scripted(path)
            scripted = fault is not None
            if fault is None and _path_matches(self.rates.when, path):
                fault = self.rates.roll(self._rng)
            if fault is not None:
                self.injected.append(InjectedFault(time.monotonic(), path, fault.kind, fault.status, scripted))
            return fault

    def _take_scripted(self, path: str) -> Fault | None:
        for index, fault in enumerate(self._scripted):
            if _path_matches(fault.when, path):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        del self._scripted[index]
                return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive: the chaos suite makes thousands of requests, new connections would dominate.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, each answer waits ~40 ms for an ACK.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self.server.simulator._serve(self)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops connections when a suite opens many at once.
    request_queue_size = 128

    def __init__(self, simulator: SimulatorServer):
        self.simulator = simulator
        self.connections: set[socket.socket] = set()
        super().__init__(("127.0.0.1", 0), _Handler)

    def close_connections(self) -> None:
        # Idle keep-alive connections would otherwise keep being served after stop().
        for connection in list(self.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that time out or give up are part of every fault scenario: not worth a traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class SimulatorServer:
    """Base of the local servers: a quiet threaded HTTP server on an ephemeral port, faults
    applied to every request, every request recorded in `requests`."""

    def __init__(self, *, seed: int = 0, fault_rates: FaultRates | None = None, latency: float = 0.0):
        self.faults = FaultInjector(seed, fault_rates)
        self.latency = latency
        self.requests: list[Request] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def respond(self, request: Request) -> Response:
        raise NotImplementedError

    def received(self, request: Request) -> None:
        """Sees every request as it arrives, even one a fault will drop."""

    def observe(self, request: Request, response: Response) -> None:
        """Sees every answer, faults included, before it is sent (ESI charges tokens here)."""

    def start(self) -> Self:
        if self._httpd is None:
            self._stopping.clear()
            self._httpd = _HTTPServer(self)
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"{type(self).__name__}:{self._httpd.server_port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self._httpd.server_port}"

    def pause(self, seconds: float) -> bool:
        """Sleep, cut short by stop(); True when the whole time passed."""
        return seconds <= 0 or not self._stopping.wait(seconds)

    def _serve(self, handler: _Handler) -> None:
        url = urlsplit(handler.path)
        query = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        request = Request(time.monotonic(), handler.command, url.path, query, handler.headers)
        with self._lock:
            self.requests.append(request)
        self.received(request)
        if not self.pause(self.latency):
            handler.close_connection = True
            return
        fault = self.faults.draw(url.path)
        if fault is not None:
            request.fault = fault.kind
            if not self.pause(fault.stall) or fault.disconnect:
                handler.close_connection = True
                return
        response = fault.answer() if fault is not None and fault.replaces_answer() else self.respond(request)
        if fault is not None:
            response.headers.update(fault.headers)
        self.observe(request, response)
        request.status = response.status
        handler.send_response(response.status)
        for name, value in response.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(response.body)))
        handler.end_headers()
        handler.wfile.write(response.body)
