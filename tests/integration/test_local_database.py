"""The local tools' database: one stable address (a fixed default port, moved only when taken,
remembered), failures to connect as one line, and one run per local directory."""

import os
import shutil
import socket
import tempfile
from pathlib import Path

import psycopg2
import pytest

from killstream_workstation.local.database import (
    DEFAULT_LOCAL_PORT,
    DatabaseProblem,
    local_server,
    open_connection,
)
from killstream_workstation.local.lock import RunLock, RunLocked
from killstream_workstation.local.postgres import port_is_free
from killstream_workstation.problems import UsageProblem


@pytest.fixture
def local_root():
    """A local directory the server's user (postgres, when we are root) can enter."""
    root = tempfile.mkdtemp(prefix="killstream-local-")
    os.chmod(root, 0o755)
    servers = []
    yield Path(root), servers
    for server in servers:
        server.stop()
    shutil.rmtree(root, ignore_errors=True)


def start(root: Path, servers: list):
    server = local_server(root).start()
    servers.append(server)
    return server


def listening_on(port: int) -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    return holder


def test_the_server_keeps_its_address_across_restarts(local_root):
    root, servers = local_root
    wanted = DEFAULT_LOCAL_PORT if port_is_free(DEFAULT_LOCAL_PORT) else None
    server = start(root, servers)
    first = server.port
    if wanted is not None:  # another local server (a developer's own) may hold the default here
        assert first == DEFAULT_LOCAL_PORT and server.moved_from is None
    assert server.remembered_port() == first
    url = server.url
    server.stop()

    again = start(root, servers)
    assert again.port == first and again.url == url
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_a_taken_port_moves_the_server_and_the_new_port_is_remembered(local_root):
    root, servers = local_root
    server = start(root, servers)
    port = server.port
    server.stop()
    holder = listening_on(port)
    try:
        moved = start(root, servers)
        assert moved.port != port and moved.moved_from == port
        assert moved.remembered_port() == moved.port
        new_port = moved.port
        moved.stop()
    finally:
        holder.close()
    # the old port is free again, but the address is the remembered one
    assert start(root, servers).port == new_port


def test_a_database_out_of_reach_is_one_line_naming_where_and_what_to_check():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(DatabaseProblem) as raised:
        open_connection(f"postgresql://u:secret@127.0.0.1:{closed}/db", "DATABASE_URL")
    message = str(raised.value)
    assert f"127.0.0.1:{closed}/db" in message and "connection refused" in message and "DATABASE_URL" in message
    assert "secret" not in message and "\n" not in message and raised.value.exit_code == 1


@pytest.mark.parametrize(
    "url",
    ["nonsense", "postgresql://u:p@127.0.0.1:notaport/db", "postgresql://127.0.0.1/db?sslmode=bogus"],
)
def test_a_malformed_database_url_is_a_usage_problem(url):
    with pytest.raises(UsageProblem) as raised:
        open_connection(url, "--database-url")
    message = str(raised.value)
    assert "--database-url is not one" in message and "postgresql://USER:PASSWORD@HOST:PORT/DBNAME" in message
    assert raised.value.exit_code == 2


def test_one_run_per_local_directory(tmp_path):
    first = RunLock(tmp_path / "a").acquire()
    try:
        with pytest.raises(RunLocked) as raised:
            RunLock(tmp_path / "a").acquire()
        message = str(raised.value)
        assert f"pid {os.getpid()}" in message and "KILLSTREAM_LOCAL_DIR" in message
        with RunLock(tmp_path / "b"):  # a directory of its own
            pass
    finally:
        first.release()
    RunLock(tmp_path / "a").acquire().release()  # released with its holder
