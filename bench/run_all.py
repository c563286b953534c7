"""make bench: every benchmark, each in a fresh interpreter, then their figure lines together.

make bench                       # all
make bench ARGS="fetcher memory" # some: store, pipeline, fetcher, coldstart, memory, summary, events"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "store": "bench_store.py",
    "pipeline": "bench_pipeline.py",
    "fetcher": "bench_fetcher.py",
    "coldstart": "bench_coldstart.py",
    "memory": "bench_memory.py",
    "summary": "bench_summary.py",
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
    for name in chosen:
        print(f"\n== {name}", flush=True)
        result = subprocess.run([sys.executable, str(HERE / BENCHES[name])], capture_output=True, text=True)
        lines = [line for line in result.stdout.splitlines() if not line.startswith("{")]
        print("\n".join(lines))
        if result.returncode != 0:
            print(result.stderr[-3000:], file=sys.stderr)
            return result.returncode
        figures.append(lines[-1])
    print("\n== figures")
    print("\n".join(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
