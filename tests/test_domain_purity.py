"""domain/ is pure: no Temporal, no database, importable on its own."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import domain

FORBIDDEN = (
    "temporalio",
    "sqlmodel",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "models",
    "activities",
    "workflows",
)
MODULES = sorted(f"domain.{m.name}" for m in pkgutil.iter_modules(domain.__path__))
ROOT = Path(__file__).resolve().parent.parent


def test_there_are_domain_modules() -> None:
    assert {"domain.money", "domain.ledger", "domain.planner", "domain.policy"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES, ids=MODULES)
def test_importing_domain_loads_no_temporal_and_no_database(module: str) -> None:
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(done.stdout)
    bad = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert bad == []


@pytest.mark.parametrize("path", sorted((ROOT / "domain").glob("*.py")), ids=lambda p: p.name)
def test_domain_source_imports_nothing_forbidden(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module)
    assert [m for m in imported if m.split(".")[0] in FORBIDDEN] == []
