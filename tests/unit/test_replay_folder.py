"""`--replay DIR`: a folder that cannot be replayed is one clear problem; a folder with a few bad
files replays the good ones and names each bad one."""

import json

import pytest

from killstream_workstation import corpus
from killstream_workstation.local.replay import BUILT_IN_COUNT, ReplayFolderError, replay_documents


def write_killmails(folder, docs):
    for doc in docs:
        (folder / f"{doc['killmail_id']}.json").write_text(json.dumps(doc))


def test_without_a_folder_the_built_in_corpus_is_replayed():
    replay = replay_documents(None)
    assert len(replay.docs) == replay.distinct == BUILT_IN_COUNT
    assert replay.rejected == []


def test_a_folder_of_killmails_is_replayed_in_id_order(tmp_path):
    docs = corpus.generate(4)
    write_killmails(tmp_path, reversed(docs))
    replay = replay_documents(tmp_path)
    assert [d["killmail_id"] for d in replay.docs] == [d["killmail_id"] for d in docs]
    assert replay.rejected == []


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda root: root / "missing", "no such folder"),
        (lambda root: root, "no *.json files"),
        (lambda root: _file(root / "one.json"), "is a file, not a folder"),
    ],
    ids=["missing", "empty", "a file"],
)
def test_a_folder_that_cannot_be_replayed_says_why_and_what_to_give(tmp_path, make, expected):
    with pytest.raises(ReplayFolderError) as raised:
        replay_documents(make(tmp_path))
    message = str(raised.value)
    assert expected in message and "--replay alone" in message and "\n" not in message
    assert raised.value.exit_code == 2


def _file(path):
    path.write_text("{}")
    return path


def test_bad_files_are_named_and_the_good_ones_replayed(tmp_path):
    good = corpus.generate(3)
    write_killmails(tmp_path, good)
    without_hash = {k: v for k, v in corpus.generate(4)[3].items() if k != "killmail_hash"}
    (tmp_path / "corrupt.json").write_text('{"killmail_id": 1,')
    (tmp_path / "no-id.json").write_text(json.dumps({"killmail_hash": "abc"}))
    (tmp_path / "no-hash.json").write_text(json.dumps(without_hash))
    (tmp_path / "a-list.json").write_text("[1, 2]")
    (tmp_path / "latin1.json").write_bytes(b'{"name": "\xe9"}')
    (tmp_path / "notes.txt").write_text("not a killmail, not a *.json file either")

    replay = replay_documents(tmp_path)

    assert [d["killmail_id"] for d in replay.docs] == [d["killmail_id"] for d in good]
    reasons = {r.path.name: r.reason for r in replay.rejected}
    assert set(reasons) == {"corrupt.json", "no-id.json", "no-hash.json", "a-list.json", "latin1.json"}
    assert reasons["corrupt.json"].startswith("not valid JSON")
    assert reasons["no-id.json"] == "no killmail_id"
    assert reasons["no-hash.json"].startswith("no killmail_hash")
    assert "list" in reasons["a-list.json"]
    assert reasons["latin1.json"] == "not UTF-8 text"
    assert all(str(r).startswith(r.path.name + ": ") for r in replay.rejected)


def test_a_folder_of_nothing_but_bad_files_is_refused_naming_them(tmp_path):
    (tmp_path / "corrupt.json").write_text("{")
    (tmp_path / "no-hash.json").write_text(json.dumps({"killmail_id": 5}))
    with pytest.raises(ReplayFolderError) as raised:
        replay_documents(tmp_path)
    message = str(raised.value)
    assert "none of the 2 *.json files" in message and "corrupt.json" in message and "no-hash.json" in message


def test_a_killmail_without_attackers_still_gets_a_zkb_block_so_the_fetcher_can_name_what_is_wrong():
    doc = {k: v for k, v in corpus.generate(1)[0].items() if k != "attackers"}
    zkb = corpus.zkb_for(doc)
    assert zkb["attackerCount"] == 0 and zkb["hash"] == doc["killmail_hash"]
