"""The hand-written code passes ruff, as configured in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT


def _ruff() -> str | None:
    """ruff beside the interpreter running the tests (its venv, wherever the tree is), in
    the tree's own .venv, or on PATH."""
    for folder in (Path(sys.executable).parent, ROOT / ".venv" / "bin"):
        found = shutil.which("ruff", path=str(folder))
        if found:
            return found
    return shutil.which("ruff")


def test_ruff_is_clean():
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (it is in the test extra)")
    folders = [p for p in ("derive", "codegen", "kernel_runtime", "tests", "bench", "examples")
               if (ROOT / p).is_dir()]
    run = subprocess.run([ruff, "check", *folders], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_package_is_installed():
    """pyproject.toml lists every package of the project (a moved or new package that it
    leaves out is missing from a non-editable install, and breaks `pip install -e .`)."""
    from .conftest import ROOT

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for top in ("derive", "codegen", "kernel_runtime", "generated")
             for p in (ROOT / top).rglob("__init__.py")}
    assert listed == found, f"pyproject.toml lists {sorted(listed)}; there are {sorted(found)}"
