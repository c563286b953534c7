"""`make sam-local` as CI runs it: `sam build`'s output, run by `sam local invoke` in a
Lambda-like container on the events/ files, stores the events' killmails in PostgreSQL.

Where no container engine can be started, or the Python 3.13 base image cannot be built (no
Docker, no podman to install, no Debian mirror or PyPI), the test is skipped and says why. It
prepares what is missing itself: on a clean machine of this project's kind that is about a minute
(Debian's podman, runc and qemu-user-static, then the base image); the three invocations take a
minute more, under arm64 emulation on x86_64."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "scripts" / "sam-local" / "sam_local.py"
EM_AARCH64 = 183  # ELF e_machine


def _driver(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DRIVER), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=1500,
    )


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")


@pytest.mark.timeout(1800)
def test_sam_local_invoke_runs_the_built_stack_and_stores_the_killmails(fresh_database_url):
    prepared = _driver("--prepare-only")
    if prepared.returncode == 2:
        reason = [line for line in prepared.stderr.splitlines() if line.strip()][-1:]
        pytest.skip(f"no container engine or base image for `make sam-local` here: {' '.join(reason)}")
    assert prepared.returncode == 0, prepared.stdout[-4000:] + prepared.stderr[-4000:]

    result = _driver("--database-url", fresh_database_url)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["sam_local"] == "ok" and summary["architecture"] == "arm64", summary
    assert '"enqueued": 5' in result.stdout  # the poller's response: the local R2Z2's 5 killmails reached SQS
    assert result.stdout.count('"batchItemFailures": []') == 2  # the fetcher, on each SQS event
    for killmail_id in (131873461, 131873502):  # events/sqs-inline-esi.json, events/sqs-metadata-only.json
        assert f"{killmail_id}: stored" in result.stdout

    # What ran was the arm64 layer: its compiled code is aarch64 (under emulation on another CPU).
    shared = list((ROOT / ".aws-sam" / "build" / "DependenciesLayer" / "python").rglob("*.so*"))
    assert any(p.name.startswith("_psycopg.cpython-313-aarch64") for p in shared)
    assert {_elf_machine(p) for p in shared if p.is_file()} == {EM_AARCH64}
