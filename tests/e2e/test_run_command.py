"""`killstream run` in this process, where a test can reach inside: Ctrl+C during start-up stops
whatever had started and says so in one line; the run's end leaves nothing running."""

import threading

import pytest

from killstream_workstation.cli.main import main
from killstream_workstation.local import pipeline as pipeline_module
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


def test_a_replay_run_again_resumes_and_is_complete_at_once(run_env, tmp_path, capsys):
    argv = ["run", "--replay", "--rate", "50", "--pacing-ms", "5", "--duration"]
    assert main([*argv, "20"]) == 0  # a first empty poll may hold the first tick back a few seconds
    first = capsys.readouterr().out
    assert "🆕 Starting afresh" in first and "🏁 Replay complete: all 106 killmails" in first
    assert main([*argv, "5"]) == 0
    second = capsys.readouterr().out
    # the same feed into the same database: at the saved cursor, nothing read again, and done
    assert "↩️  Resuming the last run of this feed at cursor 106" in second
    assert "🏁 Replay complete: all 106 killmails" in second and "   Received: 0" in second


def test_ctrl_c_while_setting_up_leaves_the_saved_run_as_it_was(run_env, tmp_path, monkeypatch, capsys):
    assert main(["run", "--replay", "--rate", "50", "--pacing-ms", "5", "--duration", "4"]) == 0
    saved = (tmp_path / ".local" / "run-state.json").read_text()
    capsys.readouterr()

    def interrupted(name):
        raise KeyboardInterrupt  # the local AWS is up and the cursor set; the messages not restored yet

    monkeypatch.setattr(pipeline_module, "load_handler_module", interrupted)
    assert main(["run", "--replay", "--duration", "30"]) == 130
    assert (tmp_path / ".local" / "run-state.json").read_text() == saved
