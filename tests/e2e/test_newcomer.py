"""A newcomer's walk-through, as README's Quick start and Local development tell it: the real
`killstream` command (the venv's console script) and the make targets, in subprocesses, each in a
throwaway local directory (KILLSTREAM_LOCAL_DIR).

Every bad input a newcomer is likely to type gets one clear line and its exit code — 2 for a bad
input or setting, 1 for something out of reach or busy — and never a traceback; the settings are
checked before PostgreSQL or the local AWS start. README.md shows the same commands: a test below
checks that it holds them, and that its sample queries return rows on the replayed killmails."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from killstream_workstation import corpus
from killstream_workstation.local.postgres import PostgresUnavailable, find_bin_dir

ROOT = Path(__file__).resolve().parents[2]
KILLSTREAM = Path(sys.executable).parent / "killstream"
README = (ROOT / "README.md").read_text()
AGENT = "newcomer/1.0 (newcomer@example.com)"
# what a newcomer's shell might carry that would change what the commands do
CLEARED = (
    "DATABASE_URL",
    "USER_AGENT",
    "KILLSTREAM_SOURCE",
    "REDISQ_QUEUE_ID",
    "REDISQ_URL",
    "R2Z2_URL",
    "ESI_URL",
    "POLL_PACING_MS",
    "POLL_BUDGET_SECONDS",
    "DLQ_URL",
    "QUEUE_URL",
    "HISTORY_URL",
    "HISTORY_PACING_MS",
    "RECONCILE_DAYS",
    "RECONCILE_RAW_THRESHOLD",
    "ESI_PARALLELISM",
    "AWS_ENDPOINT_URL",
    "KILLSTREAM_DEBUG",
    "MAKEFLAGS",
    "MAKELEVEL",
)

# The Quick start, as README.md gives it (test_readme_holds_the_walk_through checks it does).
REPLAY = 'make run ARGS="--replay --rate 50 --pacing-ms 10 --duration 20"'
PSQL = """make psql ARGS='-c "SELECT count(*) FROM killmails"'"""
HEAD = 'make run ARGS="--replay --duration 60" | head -12'
STOP = "make stop"
WIPE = "make wipe"
DB_URL = ".venv/bin/killstream db url"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def one_line(self) -> str:
        """The one line on stderr: what is wrong and what to do."""
        assert "Traceback" not in self.stdout + self.stderr, self.stdout + self.stderr
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, self.stderr
        return lines[0]


@pytest.fixture
def local_dir():
    """A throwaway local directory the server's user (postgres, when we are root) can enter."""
    root = Path(tempfile.mkdtemp(prefix="killstream-newcomer-"))
    os.chmod(root, 0o755)
    yield root / ".local"
    subprocess.run(["bash", "scripts/local-postgres.sh", "stop"], cwd=ROOT, env=environment(root / ".local"))
    shutil.rmtree(root, ignore_errors=True)


def environment(local: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED and not k.startswith("AWS_")}
    return {**env, "KILLSTREAM_LOCAL_DIR": str(local), **extra}


def killstream(*argv: str, env: dict[str, str], timeout: float = 120) -> Result:
    done = subprocess.run([str(KILLSTREAM), *argv], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return Result(done.returncode, done.stdout, done.stderr)


def shell(command: str, env: dict[str, str], timeout: float = 180) -> Result:
    done = subprocess.run(["bash", "-c", command], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return Result(done.returncode, done.stdout, done.stderr)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_command_is_the_venvs_console_script():
    assert KILLSTREAM.is_file(), f"{KILLSTREAM} is missing: make venv installs it"


# --- bad inputs that never get as far as PostgreSQL -----------------------------------------

NOWHERE = closed_port()
EARLY = [
    # (argv, extra environment, exit code, what the line says)
    (["run"], {}, 2, "the live feed needs a User-Agent with your contact"),
    (["run", "--user-agent", "myapp/1.0"], {}, 2, "USER_AGENT: 'myapp/1.0' has no contact"),
    (["run", "--replay", "--rate", "0"], {}, 2, "argument --rate: must be above 0, got 0"),
    (["run", "--replay", "--rate", "-1"], {}, 2, "argument --rate: must be above 0, got -1"),
    (["run", "--replay", "--inline-ratio", "2"], {}, 2, "argument --inline-ratio: must be between 0 and 1"),
    (["run", "--replay", "--budget", "0"], {}, 2, "argument --budget: must be between 1 and 900, got 0"),
    (["run", "--replay"], {"KILLSTREAM_SOURCE": "foo"}, 2, "KILLSTREAM_SOURCE: must be one of r2z2, redisq"),
    (["run", "--replay"], {"POLL_PACING_MS": "abc"}, 2, "POLL_PACING_MS: must be a whole number"),
    (["run"], {"KILLSTREAM_SOURCE": "redisq", "USER_AGENT": AGENT}, 2, "REDISQ_QUEUE_ID: is required"),
    (["run", "--replay", "does-not-exist"], {}, 2, "--replay: no such folder: does-not-exist"),
    (["run", "--replay", "README.md"], {}, 2, "--replay: README.md is a file, not a folder"),
    (
        ["run", "--user-agent", AGENT],
        {"R2Z2_URL": f"http://127.0.0.1:{NOWHERE}/ephemeral"},
        1,
        f"cannot reach the live feed (R2Z2) at http://127.0.0.1:{NOWHERE}/ephemeral (connection refused)",
    ),
    (
        ["run", "--source", "redisq", "--queue-id", "mine", "--user-agent", AGENT],
        {"REDISQ_URL": f"http://127.0.0.1:{NOWHERE}/listen.php"},
        1,
        "zKillboard shut its RedisQ down on 2026-05-31",
    ),
    (["stats"], {"DATABASE_URL": f"postgresql://127.0.0.1:{NOWHERE}/killstream"}, 1, "cannot connect to the database"),
    (["migrate"], {"DATABASE_URL": "not-a-url"}, 2, "the database URL from DATABASE_URL is not one"),
    (["stats", "--database-url", "postgresql://u:p@127.0.0.1:port/x"], {}, 2, "--database-url is not one"),
    (
        ["run", "--replay"],
        {"DATABASE_URL": f"postgresql://127.0.0.1:{NOWHERE}/killstream"},
        1,
        f"cannot connect to the database at 127.0.0.1:{NOWHERE}/killstream",
    ),
    (["enrich"], {}, 2, "configuration error: USER_AGENT"),
    (["enrich", "--user-agent", AGENT, "--esi-url", "esi.example"], {}, 2, "configuration error: ESI_URL"),
    (
        ["enrich", "--user-agent", AGENT],
        {"DATABASE_URL": f"postgresql://127.0.0.1:{NOWHERE}/killstream"},
        1,
        f"cannot connect to the database at 127.0.0.1:{NOWHERE}/killstream",
    ),
    (["reconcile"], {}, 2, "configuration error: USER_AGENT: is required (set by --user-agent or USER_AGENT)"),
    (
        ["reconcile", "--user-agent", AGENT],
        {"HISTORY_URL": "r2z2.zkillboard.com/history"},
        2,
        "configuration error: HISTORY_URL: must be an http(s) URL",
    ),
    (["reconcile", "--user-agent", AGENT, "--history-url", "ftp://x"], {}, 2, "(set by --history-url or HISTORY_URL)"),
    (["reconcile", "--user-agent", AGENT], {"RECONCILE_DAYS": "90"}, 2, "RECONCILE_DAYS: must be between 1 and 31"),
    (["reconcile", "--user-agent", AGENT], {"HISTORY_PACING_MS": "fast"}, 2, "HISTORY_PACING_MS: must be a whole"),
    (["reconcile", "--user-agent", AGENT], {"QUEUE_URL": "killmails"}, 2, "QUEUE_URL: must be an http(s) URL"),
    (["reconcile", "--raw-threshold", "0"], {}, 2, "argument --raw-threshold: must be at least 1, got 0"),
    (["reconcile", "--days", "many"], {}, 2, "argument --days: must be a whole number, got 'many'"),
    (["reconcile", "--from", "2026-13-01"], {}, 2, "argument --from: not a YYYY-MM-DD day: '2026-13-01'"),
    (["reconcile", "--user-agent", AGENT, "--to", "2026-01-02"], {}, 2, "--to needs --from"),
    (["reconcile", "--user-agent", AGENT, "--days", "3", "--from", "2026-01-02"], {}, 2, "--days or --from/--to"),
    (["reconcile", "--user-agent", AGENT, "--from", "2999-01-01"], {}, 2, "no complete UTC day from 2999-01-01"),
    (
        ["reconcile", "--user-agent", AGENT],
        {"DATABASE_URL": f"postgresql://127.0.0.1:{NOWHERE}/killstream"},
        1,
        f"cannot connect to the database at 127.0.0.1:{NOWHERE}/killstream",
    ),
    (["run", "--replay"], {"RECONCILE_RAW_THRESHOLD": "0"}, 2, "RECONCILE_RAW_THRESHOLD: must be between 1"),
    (["dlq"], {}, 2, "no queue URL: pass --dlq-url or set DLQ_URL"),
    (["invoke", "poller", "--event", "nope.json"], {}, 2, "--event nope.json: cannot be read"),
    (["frob"], {}, 2, "invalid choice: 'frob'"),
]


@pytest.mark.parametrize("argv, extra, code, says", EARLY, ids=[" ".join(e[0]) + " " + " ".join(e[1]) for e in EARLY])
def test_a_bad_input_is_one_clear_line_and_nothing_starts(local_dir, argv, extra, code, says):
    result = killstream(*argv, env=environment(local_dir, **extra))
    line = result.one_line()
    assert says in line and result.returncode == code, (result.returncode, line)
    assert not (local_dir / "postgres").exists(), "the embedded PostgreSQL was started for a run that cannot run"


def test_a_replay_folder_of_bad_files_names_them(local_dir, tmp_path):
    (tmp_path / "corrupt.json").write_text('{"killmail_id": 1,')
    (tmp_path / "no-hash.json").write_text(json.dumps({"killmail_id": 2}))
    result = killstream("run", "--replay", str(tmp_path), env=environment(local_dir))
    line = result.one_line()
    assert (
        result.returncode == 2 and "corrupt.json: not valid JSON" in line and "no-hash.json: no killmail_hash" in line
    )


def test_an_empty_replay_folder_says_what_to_give(local_dir, tmp_path):
    result = killstream("run", "--replay", str(tmp_path), env=environment(local_dir))
    assert result.returncode == 2 and "no *.json files in" in result.one_line()


def test_redrive_without_aws_is_one_line(local_dir):
    env = environment(
        local_dir,
        AWS_ACCESS_KEY_ID="local",
        AWS_SECRET_ACCESS_KEY="local",
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{NOWHERE}",
        AWS_MAX_ATTEMPTS="1",
    )
    url = f"http://127.0.0.1:{NOWHERE}/000000000000/killstream-local-dlq"
    result = killstream("redrive", "--dlq-url", url, "--queue-url", url, "--dry-run", env=env)
    assert result.returncode == 1 and "Could not connect to the endpoint URL" in result.one_line()


# --- runs on the test session's PostgreSQL ------------------------------------------------


def write_folder(folder: Path, docs: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for doc in docs:
        (folder / f"{doc['killmail_id']}.json").write_text(json.dumps(doc))


OUTCOME = re.compile(r"^(✅ Saved|⏭️  Skipped|🔁 Updated|❌ Failed): (\d+)")


def outcome_ids(lines: list[str]) -> list[int]:
    return [int(m[2]) for line in lines if (m := OUTCOME.match(line))]


def test_a_replay_folder_with_a_few_bad_files_replays_the_good_ones(local_dir, tmp_path, database_url):
    good = corpus.generate(6)
    write_folder(tmp_path, good)
    (tmp_path / "corrupt.json").write_text("{")
    (tmp_path / "no-id.json").write_text(json.dumps({"killmail_hash": "ab" * 20}))
    env = environment(local_dir, DATABASE_URL=database_url)
    result = killstream(
        "run", "--replay", str(tmp_path), "--rate", "50", "--pacing-ms", "5", "--duration", "12", env=env
    )
    assert result.returncode == 0 and "Traceback" not in result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        "⚠️  --replay: left out corrupt.json: not valid JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1))",
        "⚠️  --replay: left out no-id.json: no killmail_id",
    ]
    lines = result.stdout.splitlines()
    assert "📡 Source: r2z2 — local replay of 6 killmails from" in result.stdout
    # "Replay complete" comes once every replayed killmail is handled, not before
    done = next(i for i, line in enumerate(lines) if line.startswith("🏁 Replay complete: all 6 killmails"))
    assert sorted(outcome_ids(lines[:done])) == sorted(doc["killmail_id"] for doc in good)
    assert "   Saved: 6" in lines and "   Errors: 0" in lines


def test_a_redisq_replay_is_served_locally(local_dir, tmp_path, database_url):
    write_folder(tmp_path, corpus.generate(5))
    env = environment(local_dir, DATABASE_URL=database_url)
    result = killstream(
        "run", "--source", "redisq", "--replay", str(tmp_path), "--rate", "50", "--pacing-ms", "20", "--duration", "12",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0 and result.stderr == ""
    banner = next(line for line in result.stdout.splitlines() if line.startswith("📡 Source:"))
    assert re.fullmatch(
        r"📡 Source: redisq — local replay of 5 killmails from .* on http://127\.0\.0\.1:\d+/listen\.php", banner
    )
    assert "🏁 Replay complete: all 5 killmails" in result.stdout and "   Saved: 5" in result.stdout


@dataclass
class BackgroundRun:
    """A `killstream run` in a process of its own, read up to a line; stopped with Ctrl+C (SIGINT) at the end."""

    process: subprocess.Popen[str]
    out: str = ""
    err: str = ""


@contextmanager
def background_run(env: dict[str, str], *args: str, until: str) -> Iterator[BackgroundRun]:
    process = subprocess.Popen(
        [str(KILLSTREAM), "run", *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    run = BackgroundRun(process)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(until):
                break
        yield run
    finally:
        process.send_signal(signal.SIGINT)
        run.out, run.err = process.communicate(timeout=60)


def test_two_runs_on_one_local_directory_the_second_refuses(local_dir, database_url, tmp_path):
    env = environment(local_dir, DATABASE_URL=database_url)
    with background_run(env, "--replay", "--duration", "120", until="🎯 Listening") as first:
        second = killstream("run", "--replay", "--duration", "5", env=env)
        line = second.one_line()
        pid = first.process.pid
        assert second.returncode == 1 and f"another killstream run is using {local_dir} (pid {pid})" in line
        assert "KILLSTREAM_LOCAL_DIR" in line
        # pointed at a folder of its own, it runs
        other = killstream(
            "run", "--replay", "--rate", "50", "--pacing-ms", "5", "--duration", "3",
            env={**env, "KILLSTREAM_LOCAL_DIR": str(tmp_path / "other")},
        )  # fmt: skip
        assert other.returncode == 0 and "📊 Final Statistics:" in other.stdout, other.stderr
    assert first.process.returncode == 0 and "📊 Final Statistics:" in first.out and "Traceback" not in first.err


def test_reconcile_in_another_shell_uses_the_running_stack(local_dir, database_url):
    env = environment(local_dir, DATABASE_URL=database_url)
    replay = ("--replay", "--rate", "50", "--pacing-ms", "5", "--duration", "120")
    with background_run(env, *replay, until="🏁 Replay complete") as run:
        # another shell: no AWS settings, no queue, no database named — the run's stack has them
        shell_env = environment(local_dir, USER_AGENT=AGENT)
        result = killstream("reconcile", "--from", "2026-11-01", "--to", "2026-11-03", env=shell_env)
        assert result.stderr == "" and "Traceback" not in result.stdout, result.stderr
        assert "Using the local stack of the running `killstream run`: queue http://127.0.0.1:" in result.stdout
        assert "through the queue http://127.0.0.1:" in result.stdout
        assert "reconcile: days=3 complete=3 " in result.stdout and result.returncode == 0, result.stdout
    assert run.process.returncode == 0 and "Traceback" not in run.err


def test_a_run_whose_reader_goes_away_exits_cleanly(local_dir, database_url):
    env = environment(local_dir, DATABASE_URL=database_url)
    started = time.monotonic()
    child = subprocess.Popen(
        [str(KILLSTREAM), "run", "--replay", "--rate", "20", "--pacing-ms", "20", "--duration", "120"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    lines = [child.stdout.readline() for _ in range(12)]  # what `| head -12` reads
    child.stdout.close()
    status = child.wait(timeout=90)
    err = child.stderr.read()
    assert status == 0 and "Traceback" not in err and err == "", err
    assert any(line.startswith("🎯 Listening") for line in lines)
    # it ended because its reader went away, not at --duration
    assert time.monotonic() - started < 100


# --- the Quick start on the embedded server, with the make targets --------------------------


def have_postgres_binaries() -> bool:
    try:
        find_bin_dir()
    except PostgresUnavailable:
        return False
    return True


def quick_start_sql() -> list[str]:
    """README's ```sql blocks in Quick start and How it works: each must return rows on a replay."""
    sections = re.split(r"^## ", README, flags=re.M)
    chosen = [s for s in sections if s.startswith(("Quick start", "How it works"))]
    return [block.strip() for s in chosen for block in re.findall(r"```sql\n(.*?)```", s, flags=re.S)]


@pytest.mark.skipif(not have_postgres_binaries(), reason="no PostgreSQL server binaries here (DATABASE_URL is used)")
def test_the_quick_start_walk_through(local_dir):
    env = environment(local_dir)

    replay = shell(REPLAY, env)
    assert replay.returncode == 0 and "Traceback" not in replay.stdout + replay.stderr, replay.stderr
    out = replay.stdout
    port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", out)[1])
    assert "🏁 Replay complete: all 106 killmails published and handled" in out
    assert "   Saved: 106" in out and "   Errors: 0" in out

    url = shell(DB_URL, env)
    assert url.returncode == 0 and url.stdout.strip().endswith(f"@127.0.0.1:{port}/postgres")
    assert f"listening on 127.0.0.1:{port}" in url.stderr

    if shutil.which("psql"):
        psql = shell(PSQL, env)
        assert psql.returncode == 0 and re.search(r"^\s+106$", psql.stdout, flags=re.M), psql.stdout + psql.stderr
        for query in quick_start_sql():
            rows = subprocess.run(
                ["psql", url.stdout.strip(), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", query],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert rows.returncode == 0 and rows.stdout.strip(), (
                f"README query returned no rows:\n{query}\n{rows.stderr}"
            )
    else:
        missing = shell(PSQL, env)
        assert missing.returncode != 0 and "psql not found" in missing.one_line()

    head = shell(HEAD, env, timeout=120)
    assert len(head.stdout.splitlines()) == 12 and "Traceback" not in head.stderr, head.stderr
    # the same replay into the same database (the same address): it resumes where the first stopped
    assert "↩️  Resuming the last run of this feed at cursor 106" in head.stdout, head.stdout

    stopped = shell(STOP, env)
    assert stopped.returncode == 0 and stopped.stdout.startswith("embedded PostgreSQL stopped")
    again = shell(STOP, env)
    assert again.returncode == 0 and again.stdout.startswith("embedded PostgreSQL is not running")

    # the same address after a restart
    assert shell(DB_URL, env).stdout.strip() == url.stdout.strip()

    wiped = shell(WIPE, env)
    assert wiped.returncode == 0 and "local database wiped" in wiped.stdout
    assert not (local_dir / "postgres").exists() and not (local_dir / "run-state.json").exists()
    assert shell(WIPE, env).stdout.startswith("nothing to wipe")


def test_readme_holds_the_walk_through():
    for command in (REPLAY, PSQL, HEAD, STOP, WIPE, "make clean", "killstream db url"):
        assert command in README, f"README.md does not show: {command}"
    assert quick_start_sql(), "README's Quick start shows no query"
    assert "now() - interval" not in "\n".join(quick_start_sql())
    for line in ("needs a User-Agent", "has no contact", "cannot reach the live feed", "another killstream run"):
        assert line in README, f"README.md does not explain: {line}"
