"""The small HTTP server every local simulator is built on: quiet, threaded, keep-alive, on an
ephemeral port of 127.0.0.1; every request recorded, and each one open to the fault injector
(faults.py), which may replace, delay or cut its answer."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from killstream_workstation.simulators.faults import Fault, FaultInjector, FaultRates


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
    body: bytes = b""


def fault_answer(fault: Fault) -> Response:
    """The answer a fault serves instead of the simulator's own."""
    status = fault.status or 200
    if fault.body is None:
        return json_response({"error": f"simulated {status}"}, status)
    return Response(status, fault.body, {"Content-Type": "application/json"})


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

    def do_POST(self) -> None:
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

    def handle_error(self, request: Any, client_address: Any) -> None:
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
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"{type(self).__name__}:{self._httpd.server_port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._thread is not None:
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
        # The body is read whatever comes next, so a kept-alive connection stays usable.
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        request = Request(time.monotonic(), handler.command, url.path, query, handler.headers, body=body)  # type: ignore[arg-type]  # an HTTPMessage at run time; typeshed says Message
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
        response = fault_answer(fault) if fault is not None and fault.replaces_answer() else self.respond(request)
        if fault is not None:
            response.headers.update(fault.headers)
        self.observe(request, response)
        request.status = response.status
        handler.send_response(response.status)
        for name, value in response.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(response.body)))
        handler.end_headers()
        if fault is None or not fault.drip:
            handler.wfile.write(response.body)
            return
        handler.wfile.flush()
        for index in range(len(response.body)):
            if not self.pause(fault.drip):
                handler.close_connection = True
                return
            handler.wfile.write(response.body[index : index + 1])
            handler.wfile.flush()
