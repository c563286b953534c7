"""`killstream alerts test`: the stored killmails a pattern would have matched, by a matcher that
is not ours — a private local endpoint's routing (moto's matcher, what `make run` alerts on), or
EventBridge's TestEventPattern, one call per killmail's event."""

from __future__ import annotations

import json
from contextlib import closing

import pytest
from botocore.exceptions import ClientError
from moto.events.models import EventPattern as MotoPattern

from killstream.storage.connection import connect
from killstream_workstation import corpus
from killstream_workstation.alerts.patterns import PatternError
from killstream_workstation.alerts.tester import match_with_eventbridge, stored_events
from killstream_workstation.cli.main import main
from tests.support.names import store_killmails


@pytest.fixture
def stored(database_url, sample_killmails):
    docs = sample_killmails[:40]
    with closing(connect(database_url)) as conn:
        store_killmails(conn, docs)
    return docs


def pattern_file(tmp_path, pattern: dict | str):
    path = tmp_path / "rule.json"
    path.write_text(pattern if isinstance(pattern, str) else json.dumps(pattern))
    return str(path)


def over(docs: list[dict], billions: float) -> set[int]:
    return {doc["killmail_id"] for doc in docs if corpus.zkb_for(doc)["totalValue"] >= billions * 1e9}


def test_local_shows_the_killmails_the_pattern_matches(stored, database_url, tmp_path, capsys, restore_environ):
    expected = over(stored, 2.0)
    assert 0 < len(expected) < len(stored)
    path = pattern_file(
        tmp_path, {"source": ["killstream"], "detail": {"total_value_millions": [{"numeric": [">=", 2000]}]}}
    )
    status = main(["alerts", "test", "--local", "--pattern", path, "--database-url", database_url, "--show", "100"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert f"{len(expected)} of {len(stored)} killmails stored in the last 24h match (moto's matcher" in out
    listed = {int(line.split()[0]) for line in out.splitlines()[1:] if line.startswith("   ")}
    assert listed == expected


def test_only_killmails_stored_in_the_window_are_tested(stored, database_url, tmp_path, capsys, restore_environ):
    with closing(connect(database_url)) as conn, conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE killmails SET stored_at = now() - interval '3 days' WHERE killmail_id = ANY(%s)",
            ([doc["killmail_id"] for doc in stored[:30]],),
        )
    path = pattern_file(tmp_path, {"source": ["killstream"]})
    assert main(["alerts", "test", "--local", "--pattern", path, "--database-url", database_url]) == 0
    assert "10 of 10 killmails stored in the last 24h match" in capsys.readouterr().out
    assert main(["alerts", "test", "--local", "--pattern", path, "--database-url", database_url, "--last", "4d"]) == 0
    assert "40 of 40 killmails stored in the last 4d match" in capsys.readouterr().out


@pytest.mark.parametrize(
    "pattern", ['{"detail": {"zkb": {"totalValue": [{"numric": [">", 1]}]}}}', '{"detail": [', '{"detail": {"x": 1}}']
)
def test_an_invalid_pattern_is_refused_in_one_line_before_anything_runs(
    stored, database_url, tmp_path, capsys, pattern
):
    status = main(["alerts", "test", "--pattern", pattern_file(tmp_path, pattern), "--database-url", database_url])
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    assert captured.err.startswith("killstream alerts: ") and captured.err.count("\n") == 1


class EventBridgeLike:
    """TestEventPattern answered by moto's matcher (moto's own server does not implement it),
    refusing what EventBridge refuses with its error, recording what it was asked."""

    def __init__(self):
        self.asked: list[dict] = []

    def test_event_pattern(self, EventPattern: str, Event: str) -> dict:
        if "numric" in EventPattern:
            raise ClientError(
                {"Error": {"Code": "InvalidEventPatternException", "Message": "Unrecognized match type numric"}},
                "TestEventPattern",
            )
        event = json.loads(Event)
        self.asked.append(event)
        return {"Result": MotoPattern.load(EventPattern).matches_event(event)}


def test_eventbridge_is_asked_once_per_killmail_with_a_whole_event(stored, database_url):
    from datetime import timedelta

    from killstream.storage.publication import PublicationStore

    with closing(connect(database_url)) as conn:
        events = stored_events(PublicationStore(conn).stored_since(timedelta(days=1), 100))
    client = EventBridgeLike()
    pattern = json.dumps({"detail": {"total_value_millions": [{"numeric": [">=", 2000]}]}})
    verdicts = match_with_eventbridge(pattern, events, client, region="eu-west-1", parallelism=4)
    assert {v.event.killmail_id for v in verdicts if v.matched} == over(stored, 2.0)
    assert len(client.asked) == len(stored)
    assert all(
        {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"} <= set(e)
        for e in client.asked
    )
    assert {e["region"] for e in client.asked} == {"eu-west-1"} and {e["source"] for e in client.asked} == {
        "killstream"
    }
    with pytest.raises(PatternError, match="EventBridge refuses the pattern: Unrecognized match type numric"):
        match_with_eventbridge('{"x": [{"numric": [1]}]}', events, client, region="eu-west-1")
    with pytest.raises(PatternError):  # refused even when no killmail is in the window
        match_with_eventbridge('{"x": [{"numric": [1]}]}', [], client, region="eu-west-1")


def test_against_moto_without_local_the_missing_test_event_pattern_is_one_line(
    aws, stored, database_url, tmp_path, capsys
):
    path = pattern_file(tmp_path, {"source": ["killstream"]})
    status = main(["alerts", "test", "--pattern", path, "--database-url", database_url])
    err = capsys.readouterr().err
    assert status == 1 and "does not implement it): use --local" in err and err.count("\n") == 1
