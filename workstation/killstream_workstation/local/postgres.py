"""A private PostgreSQL server for tests and `make run`: initdb + pg_ctl, bound to
127.0.0.1 on a free port, its socket inside the data directory.

PostgreSQL refuses to run as root, so as root the data directory belongs to the `postgres`
user (or `nobody`) and the server binaries run as that user."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found. Install them: "
    "Debian/Ubuntu `apt-get install postgresql`, Fedora `dnf install postgresql-server`, "
    "macOS `brew install postgresql@15` — or set DATABASE_URL to a server you have."
)


class PostgresUnavailable(RuntimeError):
    pass


def find_bin_dir() -> Path:
    """The folder holding initdb and pg_ctl: PATH first, then Debian's versioned folders."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(candidate, "initdb"), os.X_OK):
            return Path(candidate)
    raise PostgresUnavailable(INSTALL_HINT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and neither a 'postgres' nor a 'nobody' user exists")


class EmbeddedPostgres:
    def __init__(self, data_dir: str | os.PathLike, *, durable: bool = True, port: int | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.durable = durable
        self.port = port
        self.bin_dir = find_bin_dir()
        self.user = _server_user()
        self.log_file = self.data_dir.parent / f"{self.data_dir.name}.log"
        # TCP logins need this password (scram): any local user can reach 127.0.0.1, and the
        # server's superuser can run programs. Kept beside the data directory, readable by us only.
        self.password_file = self.data_dir.parent / f"{self.data_dir.name}.password"

    @property
    def url(self) -> str:
        password = self.password_file.read_text().strip() if self.password_file.exists() else ""
        credentials = f"postgres:{password}" if password else "postgres"
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        kwargs: dict[str, Any] = {}
        if self.user:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        return subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]], capture_output=True, text=True, check=check, cwd="/", **kwargs
        )

    def _running_port(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return None
        if self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode != 0:
            return None
        lines = pid_file.read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 else None

    def start(self) -> EmbeddedPostgres:
        """Start the server (initializing the data directory first if empty); reuse it if it runs."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user:
            self.log_file.touch(exist_ok=True)
            for path in (self.data_dir, self.log_file):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
            os.chmod(self.data_dir, 0o700)
        running = self._running_port()
        if running:
            self.port = running
            return self
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self.port = self.port or _free_port()
        options = [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.data_dir}"]
        if not self.durable:  # throwaway test servers: durability buys nothing
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        result = self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            " ".join(options),
            check=False,
        )
        if result.returncode != 0:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed: {result.stderr.strip()}\n{log}")
        return self

    def _initdb(self) -> None:
        password = secrets.token_urlsafe(24)
        self.password_file.write_text(password + "\n")
        os.chmod(self.password_file, 0o600)
        # initdb reads the password from a file its (unprivileged) user can open: a private copy
        with tempfile.NamedTemporaryFile("w", dir=self.data_dir.parent, delete=False) as pwfile:
            pwfile.write(password + "\n")
        try:
            if self.user:
                os.chown(pwfile.name, self.user.pw_uid, self.user.pw_gid)
            result = self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile.name}",
                "--encoding=UTF8",
                "--locale=C",
                check=False,
            )
        finally:
            os.unlink(pwfile.name)
        if result.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", check=False)

    def restart(self, downtime: float = 0.1) -> None:
        """Stop, stay down for `downtime` seconds, start on the same port (fault injection)."""
        self.stop()
        time.sleep(downtime)
        self.start()

    def create_database(self, name: str) -> str:
        """A fresh empty database on this server; returns its URL."""
        import psycopg2

        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return f"{self.url.rsplit('/', 1)[0]}/{name}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
