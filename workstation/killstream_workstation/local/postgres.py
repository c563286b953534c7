"""A private PostgreSQL server for tests and `make run`: initdb + pg_ctl, bound to
127.0.0.1, its socket inside the data directory. Throwaway servers take a free port; the local
one (`remember_port`) keeps one address: the port it asks for, moved only when another program
holds it, and remembered beside the data directory for the next start.

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

from killstream_workstation.problems import Problem

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found. Install them: "
    "Debian/Ubuntu `apt-get install postgresql`, Fedora `dnf install postgresql-server`, "
    "macOS `brew install postgresql@15` — or set DATABASE_URL to a server you have."
)


class PostgresUnavailable(Problem):
    """The embedded server cannot be had here: no binaries, or it would not start (the message
    is one line; the server's log holds the rest)."""


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


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (as PostgreSQL binds: reusing an
    address whose old connections linger in TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port_from(port: int, tries: int = 100) -> int:
    """The first free port after `port` (neighbours keep the address recognisable), else any."""
    return next((p for p in range(port + 1, min(port + 1 + tries, 65536)) if port_is_free(p)), None) or _free_port()


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
    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        durable: bool = True,
        port: int | None = None,
        remember_port: bool = False,
    ):
        """`port`: the one to listen on (None: any free one). With `remember_port`, `port` is the
        one asked for the first time; the port used is kept in `port_file` and asked for at every
        later start, and moved to a free one only when something else holds it (`moved_from`)."""
        self.data_dir = Path(data_dir).resolve()
        self.durable = durable
        self.port = port
        self.remember_port = remember_port
        self.moved_from: int | None = None
        self.bin_dir = find_bin_dir()
        self.user = _server_user()
        self.log_file = self.data_dir.parent / f"{self.data_dir.name}.log"
        # TCP logins need this password (scram): any local user can reach 127.0.0.1, and the
        # server's superuser can run programs. Kept beside the data directory, readable by us only.
        self.password_file = self.data_dir.parent / f"{self.data_dir.name}.password"
        self.port_file = self.data_dir.parent / f"{self.data_dir.name}.port"

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
            if self.port_file.exists():  # a server started before ports were remembered moves at its next start
                self._remember()
            return self
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self.port = self._choose_port()
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
            raise PostgresUnavailable(
                f"the embedded PostgreSQL in {self.data_dir} did not start ({self._why_not_started(result)}); "
                f"its log: {self.log_file}"
            )
        self._remember()
        return self

    def _choose_port(self) -> int:
        if not self.remember_port:
            return self.port or _free_port()
        wanted = self.remembered_port() or self.port or _free_port()
        if port_is_free(wanted):
            return wanted
        self.moved_from = wanted
        return _free_port_from(wanted)

    def remembered_port(self) -> int | None:
        """The port kept from an earlier start (`remember_port`), when there is one."""
        try:
            text = self.port_file.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() and 0 < int(text) < 65536 else None

    def _remember(self) -> None:
        if self.remember_port and self.port and self.remembered_port() != self.port:
            self.port_file.write_text(f"{self.port}\n")

    def _why_not_started(self, result: subprocess.CompletedProcess) -> str:
        """The server log's last complaint, else what pg_ctl said."""
        log = self.log_file.read_text(errors="replace").splitlines()[-50:] if self.log_file.exists() else []
        complaints = [line for line in log if any(level in line for level in ("FATAL", "PANIC", "ERROR"))]
        said = (result.stderr or result.stdout or "").strip().splitlines()
        return (complaints[-1] if complaints else said[0] if said else f"pg_ctl exited {result.returncode}").strip()

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
            said = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise PostgresUnavailable(f"initdb of {self.data_dir} failed: {said[0] if said else result.returncode}")

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
