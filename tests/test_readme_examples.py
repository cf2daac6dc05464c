"""The README's "From PyTorch and JAX" examples run, in order, in one namespace."""

from __future__ import annotations

import os
import re
import warnings

import pytest

from .conftest import ROOT


def _section_blocks(title: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_from_pytorch_and_jax_examples_run():
    for module in ("torch", "jax", "dask.array"):
        pytest.importorskip(module, reason=f"{module} is not installed (test extra)")
    os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    blocks = _section_blocks("From PyTorch and JAX")
    assert len(blocks) == 4  # a flow step's loss, log-det's gradient, jax.jit, Dask
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
