"""The import contracts of ``pyproject.toml`` ([tool.importlinter]): the rooms of docs/development.md import only
the rooms below them, ``core/`` imports nothing of opencsbs but ``core/``, and no package has an import circle.

``lint-imports`` passes on the tree; a copy of the tree with deliberate violations fails each contract, so these
tests can fail. A new top-level room must be added to the contracts (checked here too).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def lint_imports(project: Path, src: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with ``project``'s pyproject.toml on the ``opencsbs`` package found under ``src``."""
    env = dict(os.environ, PYTHONPATH=str(src))
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(project / "pyproject.toml")],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)


def contract(contract_id: str) -> dict:
    return next(c for c in CONTRACTS if c["id"] == contract_id)


def test_the_tree_keeps_every_import_contract():
    run = lint_imports(ROOT, SRC)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 kept, 0 broken" in run.stdout, run.stdout


def test_every_room_is_in_the_contracts():
    """A new top-level module or package of opencsbs is placed in the layers and forbidden to ``core/``."""
    graph = grimp.build_graph("opencsbs", cache_dir=None)
    rooms = {m for m in graph.find_children("opencsbs") if m != "opencsbs.__main__"}
    layered = {name.strip() for layer in contract("layers")["layers"] for name in layer.split("|")}
    assert rooms == layered
    assert set(contract("core-is-pure")["forbidden_modules"]) == rooms - {"opencsbs.core"}


def test_a_violation_breaks_the_contracts(tmp_path: Path):
    """In a copy of the tree: ``core/`` importing a service, the engine importing the wiring, and two engine
    modules importing each other. Each contract then reports BROKEN and ``lint-imports`` exits 1."""
    src = tmp_path / "src"
    shutil.copytree(SRC / "opencsbs", src / "opencsbs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    pkg = src / "opencsbs"
    (pkg / "core" / "_violation.py").write_text("from opencsbs.service import backups  # noqa: F401\n")
    (pkg / "engine" / "_violation.py").write_text("from opencsbs import bootstrap  # noqa: F401\n"
                                                  "from opencsbs.engine import _violation_too  # noqa: F401\n")
    (pkg / "engine" / "_violation_too.py").write_text("from opencsbs.engine import _violation  # noqa: F401\n")

    run = lint_imports(tmp_path, src)
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert "0 kept, 3 broken" in out, out
    for c in CONTRACTS:
        assert f"{c['name']} BROKEN" in out, out
    assert "opencsbs.core._violation -> opencsbs.service.backups" in out, out
    assert "opencsbs.engine._violation -> opencsbs.bootstrap" in out, out

    # the same copy without the violations keeps them all again
    for path in (pkg / "core" / "_violation.py", pkg / "engine" / "_violation.py",
                 pkg / "engine" / "_violation_too.py"):
        path.unlink()
    assert lint_imports(tmp_path, src).returncode == 0
