"""Cold start and size: import time of each handler module in a fresh interpreter that sees
only what Lambda would give it — the two layers' packages and the runtime's boto3 — beside a
Powertools hello-world handler measured the same way in the same run; and the layers' size.

    .venv/bin/python bench/bench_coldstart.py [--runs 9]

The layers are built with their own Makefiles, as `sam build` does (the dependencies for
manylinux aarch64 / CPython 3.13, for the size), and once more for this machine's interpreter,
to import them here. Built trees are cached under .local/bench/. Last line:
    coldstart: poller_ms=<n> fetcher_ms=<n> hello_ms=<n> ratio_max=<n> layers_mb=<n>"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".local" / "bench"
HELLO = '''
from aws_lambda_powertools import Logger, Metrics
logger = Logger(service="hello")
metrics = Metrics(namespace="hello")

@metrics.log_metrics
@logger.inject_lambda_context
def handler(event, context):
    return {"hello": "world"}
'''


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _cached_build(name: str, key_files: list[Path], build) -> Path:
    key = hashlib.sha256(b"".join(p.read_bytes() for p in key_files)).hexdigest()[:12]
    target = CACHE / f"{name}-{key}"
    if not target.exists():
        tmp = target.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        build(tmp)
        tmp.rename(target)
    return target


def build_layer(layer: str, target: Path) -> None:
    """What `sam build` runs for a `BuildMethod: makefile` layer."""
    subprocess.run(["make", "-s", "-C", str(ROOT / "layers" / layer), f"build-{layer.capitalize()}Layer",
                    f"ARTIFACTS_DIR={target}"], check=True, stdout=subprocess.DEVNULL)


def pip_target(target: Path, *requirements: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(target), *requirements], check=True)


def import_ms(paths: list[Path], module: str, runs: int) -> float:
    code = ("import sys, time; sys.path[:0] = {paths!r}; t = time.perf_counter(); import {module}; "
            "print((time.perf_counter() - t) * 1000)").format(paths=[str(p) for p in paths], module=module)
    env = {"PATH": os.environ.get("PATH", ""), "AWS_DEFAULT_REGION": "us-east-1", "PYTHONDONTWRITEBYTECODE": "1"}
    times = []
    for _ in range(runs):
        # -S: no site-packages, only the paths given; -E: no PYTHON* variables
        out = subprocess.run([sys.executable, "-S", "-E", "-c", code], capture_output=True, text=True, env=env,
                             cwd="/", check=True)
        times.append(float(out.stdout.strip()))
    return statistics.median(times)


def main() -> None:
    import argparse as _argparse

    parser = _argparse.ArgumentParser(description=__doc__, formatter_class=_argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    requirements = ROOT / "layers" / "dependencies" / "requirements.txt"
    deps_lambda = _cached_build("deps-aarch64", [requirements, ROOT / "layers/dependencies/Makefile"],
                                lambda t: build_layer("dependencies", t))
    core = _cached_build("killstream", sorted((ROOT / "layers/killstream").rglob("*.py")) + [ROOT / "layers/killstream/Makefile"],
                         lambda t: build_layer("killstream", t))
    deps_here = _cached_build("deps-local", [requirements], lambda t: pip_target(t, "-r", str(requirements)))
    boto_pin = next(line for line in (ROOT / "requirements-dev.txt").read_text().splitlines() if line.startswith("boto3=="))
    runtime = _cached_build("runtime-boto3", [ROOT / "requirements-dev.txt"], lambda t: pip_target(t, boto_pin))
    hello_dir = CACHE / "hello"
    hello_dir.mkdir(parents=True, exist_ok=True)
    (hello_dir / "hello_app.py").write_text(HELLO)
    (hello_dir / "hello_boto3_app.py").write_text("import boto3\n" + HELLO)

    layer_paths = [core / "python", deps_here, runtime]
    hello = import_ms([hello_dir, deps_here, runtime], "hello_app", args.runs)
    hello_boto3 = import_ms([hello_dir, deps_here, runtime], "hello_boto3_app", args.runs)
    poller = import_ms([ROOT / "functions/poller", *layer_paths], "app", args.runs)
    fetcher = import_ms([ROOT / "functions/fetcher", *layer_paths], "app", args.runs)
    deps_mb = _tree_size(deps_lambda) / 1e6
    core_mb = _tree_size(core) / 1e6
    ratio = max(poller, fetcher) / hello
    print(f"import time, median of {args.runs} fresh interpreters: poller {poller:.0f} ms, fetcher {fetcher:.0f} ms, "
          f"Powertools hello-world {hello:.0f} ms (worst ratio {ratio:.2f}×); the same hello-world importing "
          f"boto3, as any handler that calls AWS must: {hello_boto3:.0f} ms (ratio {max(poller, fetcher) / hello_boto3:.2f}×)")
    print(f"layers unzipped: dependencies {deps_mb:.1f} MB (manylinux aarch64, cp313), killstream {core_mb * 1000:.0f} KB "
          f"(limit for all layers and code: 250 MB)")
    print(f"coldstart: poller_ms={poller:.0f} fetcher_ms={fetcher:.0f} hello_ms={hello:.0f} ratio_max={ratio:.2f} "
          f"hello_boto3_ms={hello_boto3:.0f} layers_mb={deps_mb + core_mb:.1f}")


if __name__ == "__main__":
    main()
