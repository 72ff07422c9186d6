"""The layering is a checked contract: ``lint-imports`` (import-linter) over the contracts in pyproject.toml.

Layers from interfaces (``cli``) down to models, data and config; the library never imports Dagster or the
Dagster project; nothing in the library imports its test support; no import cycle between sibling modules or
packages. docs/architecture.md says which layer each kind of change goes to.
"""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout, out.stdout[-3000:]


def test_every_module_says_what_it_is_for():
    import ast

    missing = []
    for root in ("ppm_platform", "dagster_project", "feature_repo"):
        for path in sorted((REPO / root).rglob("*.py")):
            tree = ast.parse(path.read_text())
            if not ast.get_docstring(tree):
                missing.append(str(path.relative_to(REPO)))
    assert missing == [], f"modules without an opening docstring: {missing}"
