"""make bench: every benchmark, each in a fresh interpreter, then their figure lines together.
Each benchmark's lines are shown as it prints them (a line per phase), with its time at the end.

make bench                       # all
make bench ARGS="fetcher memory" # some: store, pipeline, drain, fetcher, parallelism, coldstart, memory, reconcile,
                                 #       summary, events, backfill

KILLSTREAM_PEER=<a checkout of eve-killmap/process-kills> adds the peer's write path to `fetcher`."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "store": "bench_store.py",
    "pipeline": "bench_pipeline.py",
    "drain": "bench_drain.py",
    "fetcher": "bench_throughput.py",
    "parallelism": "bench_fetcher.py",
    "coldstart": "bench_coldstart.py",
    "memory": "bench_memory.py",
    "reconcile": "bench_reconcile.py",
    "summary": "bench_summary.py",
    "backfill": "bench_backfill.py",
    "events": "bench_events.py",
}


def main() -> int:
    chosen = sys.argv[1:] or list(BENCHES)
    unknown = [name for name in chosen if name not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    print(
        f"machine: {platform.machine()} {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    figures = []
    for number, name in enumerate(chosen, 1):
        print(f"\n== {name} ({number} of {len(chosen)})", flush=True)
        status, last, seconds = run_one(HERE / BENCHES[name])
        if status != 0:
            return status
        print(f"   ({name}: {seconds:.0f} s)", flush=True)
        figures.append(last)
    print("\n== figures")
    print("\n".join(figures))
    return 0


def run_one(script: Path) -> tuple[int, str, float]:
    """Run one benchmark, showing its lines as they come (EMF metric documents left out);
    returns its exit status, its last line (the figure line) and how long it took."""
    started = time.monotonic()
    last = ""
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert child.stdout is not None
        for line in child.stdout:
            if not line.startswith("{"):
                print(line, end="", flush=True)
                last = line.rstrip("\n") or last
        status = child.wait()
        if status != 0:
            errors.seek(0)
            print(errors.read()[-3000:], file=sys.stderr)
    return status, last, time.monotonic() - started


if __name__ == "__main__":
    sys.exit(main())
