"""The import structure, read from the source: the shipped package never reaches for the
workstation package, and no module of either imports itself through others."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.imports import cycles, import_graph, imported_names, package_modules

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = package_modules(ROOT / "layers/killstream", "killstream")
WORKSTATION = package_modules(ROOT / "workstation", "killstream_workstation")


def test_the_shipped_package_never_imports_the_workstation_package():
    reaching = {
        module: sorted(name for name in imported_names(path, module) if name.split(".")[0] == "killstream_workstation")
        for module, path in SHIPPED.items()
    }
    assert {module: names for module, names in reaching.items() if names} == {}


def test_the_handlers_import_only_the_shipped_package_and_the_runtime():
    apps = sorted(ROOT.glob("functions/*/app.py"))
    assert [app.parent.name for app in apps] == ["backfill", "enricher", "fetcher", "notifier", "poller", "reconciler"]
    for app in apps:
        first_party = {name.split(".")[0] for name in imported_names(app, "app")} - {
            *sys.stdlib_module_names,
            "aws_lambda_powertools",
        }
        assert first_party == {"killstream"}, app


def test_no_import_cycles():
    assert cycles(import_graph(SHIPPED | WORKSTATION)) == []


def test_the_cycle_check_finds_a_cycle(tmp_path):
    package = tmp_path / "looped"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from looped import b\n")
    (package / "b.py").write_text("def f():\n    from looped.a import g\n")
    assert cycles(import_graph(package_modules(tmp_path, "looped"))) == [["looped.a", "looped.b"]]


def test_the_fetchers_cold_start_imports_only_what_every_invocation_needs():
    """requests and the ESI client (only metadata-only packages need ESI), boto3 (only a dead
    letter or a database secret needs it) are imported when first needed, psycopg2 at the first
    batch: not at `import app`."""
    import subprocess
    import sys

    code = (
        "import sys; import app; "
        "print(sorted(m for m in ('boto3', 'requests', 'psycopg2', 'killstream.esi.client') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT / "functions/fetcher", capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
