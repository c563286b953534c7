"""Cold start and size: import time of each handler module in a fresh interpreter that sees
only what Lambda would give it — the two layers' packages and the runtime's boto3 — beside a
Powertools hello-world handler measured the same way in the same run; and the layers' size.

    .venv/bin/python bench/bench_coldstart.py [--runs 9]

The layers are built with their own Makefiles, as `sam build` does (the dependencies for
manylinux aarch64 / CPython 3.13, for the size), and once more for this machine's interpreter,
to import them here. Built trees are cached under .local/bench/. Last line:
    coldstart: poller_ms=<n> fetcher_ms=<n> hello_ms=<n> ratio_max=<n> … layers_mb=<n> notifier_ms=<n> …"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".local" / "bench"
HELLO = """
from aws_lambda_powertools import Logger, Metrics
logger = Logger(service="hello")
metrics = Metrics(namespace="hello")

@metrics.log_metrics
@logger.inject_lambda_context
def handler(event, context):
    return {"hello": "world"}
"""


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


def without_bytecode(tree: Path) -> Path:
    """Layers ship no bytecode unless built with a Python 3.13 at hand (see the layer Makefiles)."""
    for cache in tree.rglob("__pycache__"):
        shutil.rmtree(cache)
    return tree


def with_bytecode(tree: Path) -> Path:
    """A copy compiled for this interpreter: what a layer with bytecode gives its own Python."""
    compiled = CACHE / f"{tree.parent.name}-{tree.name}-pyc"
    if not compiled.exists():
        shutil.copytree(tree, compiled)
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash", str(compiled)],
            check=True,
        )
    return compiled


def build_layer(layer: str, target: Path) -> None:
    """What `sam build` runs for a `BuildMethod: makefile` layer."""
    subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(ROOT / "layers" / layer),
            f"build-{layer.capitalize()}Layer",
            f"ARTIFACTS_DIR={target}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def pip_target(target: Path, *requirements: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(target), *requirements], check=True)


def import_ms(paths: list[Path], module: str, runs: int) -> float:
    code = (
        f"import sys, time; sys.path[:0] = {[str(p) for p in paths]!r}; t = time.perf_counter(); import {module}; "
        "print((time.perf_counter() - t) * 1000)"
    )
    env = {"PATH": os.environ.get("PATH", ""), "AWS_DEFAULT_REGION": "us-east-1"}
    times = []
    for _ in range(runs):
        # -S: no site-packages, only the paths given; -E: no PYTHON* variables; -B: write no
        # bytecode, so every run compiles what it imports, as Lambda does with a layer that ships
        # none (/opt is read-only)
        out = subprocess.run(
            [sys.executable, "-S", "-E", "-B", "-c", code], capture_output=True, text=True, env=env, cwd="/", check=True
        )
        times.append(float(out.stdout.strip()))
    return statistics.median(times)


def main() -> None:
    import argparse as _argparse

    parser = _argparse.ArgumentParser(description=__doc__, formatter_class=_argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    requirements = ROOT / "layers" / "dependencies" / "requirements.txt"
    print("building the layers as Lambda gets them (cached after the first run)…", flush=True)
    deps_lambda = _cached_build(
        "deps-aarch64", [requirements, ROOT / "layers/dependencies/Makefile"], lambda t: build_layer("dependencies", t)
    )
    core = _cached_build(
        "killstream",
        sorted((ROOT / "layers/killstream").rglob("*.py")) + [ROOT / "layers/killstream/Makefile"],
        lambda t: build_layer("killstream", t),
    )
    deps_here = _cached_build("deps-local", [requirements], lambda t: pip_target(t, "-r", str(requirements)))
    boto_pin = next(
        line for line in (ROOT / "requirements-dev.txt").read_text().splitlines() if line.startswith("boto3==")
    )
    runtime = _cached_build("runtime-boto3", [ROOT / "requirements-dev.txt"], lambda t: pip_target(t, boto_pin))
    hello_dir = CACHE / "hello"
    hello_dir.mkdir(parents=True, exist_ok=True)
    (hello_dir / "hello_app.py").write_text(HELLO)
    (hello_dir / "hello_boto3_app.py").write_text("import boto3\n" + HELLO)

    deps_mb = _tree_size(without_bytecode(deps_lambda)) / 1e6
    core_mb = _tree_size(without_bytecode(core)) / 1e6
    runtime = with_bytecode(runtime)  # the Lambda runtime's own boto3 comes compiled
    core_src, deps_src = without_bytecode(core / "python"), without_bytecode(deps_here)
    hello_dir = without_bytecode(hello_dir)
    timings = {}
    print(
        f"timing the handlers' imports, {args.runs} fresh interpreters each, layers as shipped and with bytecode…",
        flush=True,
    )
    for label, core_tree, deps_tree in (
        ("as shipped", core_src, deps_src),
        ("with bytecode", with_bytecode(core_src), with_bytecode(deps_src)),
    ):
        paths = [core_tree, deps_tree, runtime]
        timings[label] = {
            "hello": import_ms([hello_dir, deps_tree, runtime], "hello_app", args.runs),
            "hello_boto3": import_ms([hello_dir, deps_tree, runtime], "hello_boto3_app", args.runs),
            "poller": import_ms([ROOT / "functions/poller", *paths], "app", args.runs),
            "fetcher": import_ms([ROOT / "functions/fetcher", *paths], "app", args.runs),
            "notifier": import_ms([ROOT / "functions/notifier", *paths], "app", args.runs),
        }
    for label, t in timings.items():
        worst = max(t["poller"], t["fetcher"])
        print(
            f"import time, layers {label}, median of {args.runs} fresh interpreters: poller {t['poller']:.0f} ms, "
            f"fetcher {t['fetcher']:.0f} ms, notifier {t['notifier']:.0f} ms; "
            f"Powertools hello-world {t['hello']:.0f} ms ({worst / t['hello']:.2f}×); "
            f"hello-world + boto3, as any handler calling AWS: "
            f"{t['hello_boto3']:.0f} ms ({worst / t['hello_boto3']:.2f}×)"
        )
    print(
        f"layers unzipped: dependencies {deps_mb:.1f} MB (manylinux aarch64, cp313), "
        f"killstream {core_mb * 1000:.0f} KB (limit for all layers and code: 250 MB)"
    )
    shipped, compiled = timings["as shipped"], timings["with bytecode"]
    print(
        f"coldstart: poller_ms={shipped['poller']:.0f} fetcher_ms={shipped['fetcher']:.0f} "
        f"hello_ms={shipped['hello']:.0f} "
        f"ratio_max={max(shipped['poller'], shipped['fetcher']) / shipped['hello']:.2f} "
        f"compiled_poller_ms={compiled['poller']:.0f} compiled_fetcher_ms={compiled['fetcher']:.0f} "
        f"compiled_hello_ms={compiled['hello']:.0f} layers_mb={deps_mb + core_mb:.1f} "
        f"notifier_ms={shipped['notifier']:.0f} compiled_notifier_ms={compiled['notifier']:.0f}"
    )


if __name__ == "__main__":
    main()
