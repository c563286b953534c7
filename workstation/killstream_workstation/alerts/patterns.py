"""Event patterns for alert rules: the default the templates deploy, reading a pattern file, and
a check of its grammar before anything is sent.

The check is no matcher — matching is EventBridge's (TestEventPattern) or, locally, moto's. It
refuses what EventBridge refuses at deploy and moto would take without a word: moto's matcher
lets an unknown operator match every event, so a typo (`"numric"`) would alert on every kill
locally while CloudFormation refuses the rule. Operators: docs/protocols.md, "AWS limits"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEFAULT_PATTERN: dict[str, Any] = {
    "source": ["killstream"],
    "detail-type": ["Killmail Stored"],
    "detail": {"total_value_millions": [{"numeric": [">=", 10000]}]},
}
"""Kills worth 10 B ISK or more, as first stored: alerts/template.yaml's default EventPattern."""

OPERATORS = (
    "prefix",
    "suffix",
    "equals-ignore-case",
    "anything-but",
    "numeric",
    "exists",
    "wildcard",
    "cidr",
)
NUMERIC_OPERATORS = ("<", "<=", "=", ">=", ">")


class PatternError(ValueError):
    """A pattern that cannot be used, in one line."""


def load_pattern(path: str | Path) -> str:
    """The pattern in a file, checked, as the JSON text rules and TestEventPattern take."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PatternError(f"cannot read the pattern {path}: {exc.strerror or exc}") from None
    return check_pattern_text(text, str(path))


def check_pattern_text(text: str, name: str = "the pattern") -> str:
    try:
        pattern = json.loads(text)
    except ValueError as exc:
        raise PatternError(f"{name} is not JSON: {exc}") from None
    problems = pattern_problems(pattern)
    if problems:
        raise PatternError(f"{name} is not an EventBridge event pattern: {'; '.join(problems[:5])}")
    return json.dumps(pattern, separators=(",", ":"))


def pattern_problems(pattern: Any, path: str = "") -> list[str]:
    """What EventBridge's grammar does not allow in `pattern` (empty: nothing found)."""
    if not isinstance(pattern, dict):
        return [f"{path or 'the pattern'} must be a JSON object"]
    if not pattern and not path:
        return ["the pattern is empty (it would match every event)"]
    problems = []
    for key, value in pattern.items():
        where = f"{path}.{key}" if path else key
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, dict) for v in value):
                problems.append(f"{where} must be a list of at least two objects")
            else:
                for n, option in enumerate(value):
                    problems += pattern_problems(option, f"{where}[{n}]")
        elif isinstance(value, dict):
            problems += pattern_problems(value, where)
        elif isinstance(value, list):
            if not value:
                problems.append(f"{where}: an empty list matches nothing")
            for item in value:
                problems += _filter_problems(item, where)
        else:
            problems.append(f"{where} must be a list of values or an object, got {json.dumps(value)}")
    return problems


def _filter_problems(item: Any, where: str) -> list[str]:
    if item is None or isinstance(item, str | int | float | bool):
        return []
    if not isinstance(item, dict) or len(item) != 1:
        return [f"{where}: a filter must be a value or an object with one operator, got {json.dumps(item)}"]
    ((operator, argument),) = item.items()
    if operator not in OPERATORS:
        return [f"{where}: unknown operator {operator!r} (EventBridge knows {', '.join(OPERATORS)})"]
    if operator == "numeric":
        ok = (
            isinstance(argument, list)
            and len(argument) in (2, 4)
            and all(op in NUMERIC_OPERATORS for op in argument[::2])
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in argument[1::2])
        )
        return [] if ok else [f"{where}: numeric takes [op, number] or [op, number, op, number], got {argument}"]
    if operator == "exists":
        return [] if isinstance(argument, bool) else [f"{where}: exists takes true or false"]
    if operator == "anything-but":
        if isinstance(argument, dict):
            return (
                _filter_problems(argument, where)
                if set(argument) <= {"prefix", "suffix", "equals-ignore-case", "wildcard"}
                else [f"{where}: anything-but takes a value, a list, or prefix/suffix/equals-ignore-case/wildcard"]
            )
        values = argument if isinstance(argument, list) else [argument]
        ok = bool(values) and all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values)
        return [] if ok else [f"{where}: anything-but takes strings or numbers"]
    if operator in ("prefix", "suffix") and isinstance(argument, dict):
        ok = set(argument) == {"equals-ignore-case"} and isinstance(argument["equals-ignore-case"], str)
        return [] if ok else [f'{where}: {operator} takes a string or {{"equals-ignore-case": string}}']
    return [] if isinstance(argument, str) else [f"{where}: {operator} takes a string"]
