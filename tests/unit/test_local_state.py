"""What a local run leaves for the next: taken up only by a run of the same feed, written whole,
and the running stack found only while its process lives."""

from __future__ import annotations

import subprocess
import sys

from killstream_workstation.local.state import RunState, SavedRun


def test_a_saved_run_is_taken_up_by_the_same_feed_only(tmp_path):
    state = RunState(tmp_path / "local")
    assert state.load("replay:106:abc") is None
    message = {"body": '{"killmail_id": 1}', "attributes": {"source": {"DataType": "String", "StringValue": "r2z2"}}}
    state.save(SavedRun(feed="replay:106:abc", cursor="41", published=60, queue=[message], dlq=[]))
    assert state.load("replay:106:abc") == SavedRun("replay:106:abc", "41", 60, [message], [])
    assert state.load("live:r2z2:https://r2z2.zkillboard.com/ephemeral") is None
    assert not list((tmp_path / "local").glob("*.tmp"))


def test_an_unreadable_state_file_starts_afresh(tmp_path):
    (tmp_path / "run-state.json").write_text("{not json")
    assert RunState(tmp_path).load("replay:1:x") is None


def test_the_stack_is_found_while_its_process_runs(tmp_path):
    state = RunState(tmp_path)
    assert state.running_stack() is None
    state.publish_stack({"queue_url": "http://127.0.0.1:1/q"})
    assert state.running_stack() == {"queue_url": "http://127.0.0.1:1/q"}
    assert oct((tmp_path / "stack.json").stat().st_mode & 0o777) == "0o600"
    # a stack left behind by a process that is gone is not used
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "stack.json").write_text(f'{{"pid": {gone.stdout.strip()}, "queue_url": "x"}}')
    assert state.running_stack() is None
    state.withdraw_stack()
    state.withdraw_stack()
    assert not (tmp_path / "stack.json").exists()
