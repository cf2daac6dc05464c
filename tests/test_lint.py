"""The hand-written code passes ruff, as configured in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(ROOT / ".venv" / "bin")) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it is in the test extra)")
    folders = [p for p in ("derive", "codegen", "kernel_runtime", "tests", "bench", "examples")
               if (ROOT / p).is_dir()]
    run = subprocess.run([ruff, "check", *folders], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sys.version_info >= (3, 10)
