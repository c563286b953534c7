"""`killstream run` in this process, where a test can reach inside: Ctrl+C during start-up stops
whatever had started and says so in one line; the run's end leaves nothing running."""

import threading

import pytest

from killstream_workstation.cli.main import main
from killstream_workstation.local.pipeline import LocalPipeline


@pytest.fixture
def run_env(database_url, restore_environ, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("KILLSTREAM_LOCAL_DIR", str(tmp_path / ".local"))
    for name in ("USER_AGENT", "KILLSTREAM_SOURCE", "REDISQ_QUEUE_ID", "POLL_PACING_MS", "POLL_BUDGET_SECONDS"):
        monkeypatch.delenv(name, raising=False)


def running_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.is_alive() and not t.daemon}


def test_ctrl_c_during_start_up_stops_what_had_started_and_says_so(run_env, monkeypatch, capsys):
    started: list[LocalPipeline] = []
    before = running_threads()

    def interrupted_start(self):
        started.append(self)
        raise KeyboardInterrupt  # after setup(): the local AWS endpoint and the replay servers are up

    monkeypatch.setattr(LocalPipeline, "start", interrupted_start)
    assert main(["run", "--replay", "--duration", "30"]) == 130

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("killstream run: interrupted (Ctrl+C) before the pipeline was up")
    assert "Traceback" not in err
    (pipeline,) = started
    assert pipeline.stopped and pipeline.aws.server is None  # moto stopped
    assert running_threads() <= before


def test_a_run_that_ends_leaves_nothing_running(run_env, capsys):
    before = running_threads()
    assert main(["run", "--replay", "--rate", "50", "--pacing-ms", "5", "--duration", "4"]) == 0
    out = capsys.readouterr().out
    assert "📊 Final Statistics:" in out
    assert running_threads() <= before
