"""Failures a workstation command reports as one line — what is wrong and what to do — instead of
a traceback. The `killstream` command's error boundary (cli/main.py) prints them and exits with
`exit_code`: 2 for a bad input or setting (the user's to fix in the command line or environment),
1 for the environment (something unreachable, busy or missing)."""

from __future__ import annotations


class Problem(Exception):
    """Something in the environment stops the command: unreachable, busy or missing."""

    exit_code = 1


class UsageProblem(Problem):
    """A bad input or setting: the command line or the environment must change."""

    exit_code = 2
