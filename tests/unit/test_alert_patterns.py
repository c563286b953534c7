"""Alert patterns before anything is sent: the cookbook's and the default pass, and what
EventBridge refuses at deploy — and moto would take silently — is refused with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from killstream_workstation.alerts.patterns import DEFAULT_PATTERN, PatternError, check_pattern_text, load_pattern

COOKBOOK = sorted((Path(__file__).resolve().parents[2] / "alerts" / "patterns").glob("*.json"))


def test_the_cookbook_and_the_default_are_patterns():
    assert len(COOKBOOK) >= 6
    for path in COOKBOOK:
        assert json.loads(load_pattern(path)) == json.loads(path.read_text()), path.name
    assert json.loads(check_pattern_text(json.dumps(DEFAULT_PATTERN))) == DEFAULT_PATTERN
    assert json.loads((COOKBOOK[0].parent / "worth-10b.json").read_text()) == DEFAULT_PATTERN


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ('{"detail": {"zkb": {"totalValue": [{"numric": [">", 1]}]}}}', "unknown operator 'numric'"),
        ('{"detail": {"region_id": []}}', "an empty list matches nothing"),
        ('{"detail": {"region_id": 10000002}}', "must be a list of values or an object"),
        ('{"detail": {"x": [{"numeric": [">", "10"]}]}}', "numeric takes"),
        ('{"detail": {"x": [{"numeric": ["~", 10]}]}}', "numeric takes"),
        ('{"detail": {"x": [{"exists": "yes"}]}}', "exists takes true or false"),
        ('{"detail": {"x": [{"prefix": 1}]}}', "prefix takes a string"),
        ('{"detail": {"x": [{"prefix": "a", "suffix": "b"}]}}', "one operator"),
        ('{"detail": {"$or": [{"x": [1]}]}}', "at least two objects"),
        ('{"detail": {"x": [{"anything-but": {"numeric": [">", 1]}}]}}', "anything-but takes"),
        ("[1, 2]", "must be a JSON object"),
        ("{}", "the pattern is empty"),
        ('{"detail": ', "is not JSON"),
    ],
)
def test_what_eventbridge_refuses_is_refused_in_one_line(pattern, reason):
    with pytest.raises(PatternError) as raised:
        check_pattern_text(pattern, "rule.json")
    assert reason in str(raised.value) and "\n" not in str(raised.value)


def test_an_unreadable_file_is_one_line(tmp_path):
    with pytest.raises(PatternError, match="cannot read the pattern"):
        load_pattern(tmp_path / "missing.json")
