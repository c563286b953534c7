"""A server that accepts connections and never answers: an AWS endpoint (or any upstream) that
hangs. Point a client at `url`; everything it sends is read and dropped, nothing comes back."""

from __future__ import annotations

import socket
import threading
from typing import Self


class HungServer:
    def __init__(self) -> None:
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.accepted = 0

    @property
    def url(self) -> str:
        if self._listener is None:
            raise RuntimeError("HungServer is not started")
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def start(self) -> Self:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._listener.settimeout(0.1)
        threading.Thread(target=self._accept, name="hung-server", daemon=True).start()
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._connections.append(connection)
                self.accepted += 1
            threading.Thread(target=self._swallow, args=(connection,), daemon=True).start()

    def _swallow(self, connection: socket.socket) -> None:
        # Read what the client sends, so its writes never block; answer nothing.
        connection.settimeout(0.2)
        while not self._stopping.is_set():
            try:
                if not connection.recv(65536):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
