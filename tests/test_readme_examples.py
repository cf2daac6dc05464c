"""The documentation's Python examples run: the README's tour, and the "From PyTorch and
JAX" examples of ``docs/kernels.md``, each page's blocks in order, in one namespace."""

from __future__ import annotations

import os
import re
import warnings

import pytest

from .conftest import ROOT


def _blocks(page: str, title: str | None = None) -> list[str]:
    """The ``python`` blocks of ``page`` (of its section ``## title`` when given)."""
    text = (ROOT / page).read_text(encoding="utf-8")
    if title is not None:
        text = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", text, re.S)


def _run(page: str, blocks: list[str]) -> dict:
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for block in blocks:
            exec(compile(block, page, "exec"), namespace)  # noqa: S102
    return namespace


def test_the_readme_tour_runs():
    blocks = _blocks("README.md")
    assert len(blocks) == 3  # a derived result, two kernels, a block's specification
    namespace = _run("README.md", blocks)
    assert namespace["log_det"].shape == (128,)
    assert namespace["block"].name == "coupling_scaled"


def test_from_pytorch_and_jax_examples_run():
    for module in ("torch", "jax", "dask.array"):
        pytest.importorskip(module, reason=f"{module} is not installed (test extra)")
    os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    blocks = _blocks("docs/kernels.md", "From PyTorch and JAX")
    assert len(blocks) == 4  # a flow step's loss, log-det's gradient, jax.jit, Dask
    _run("docs/kernels.md", blocks)


def test_the_numpy_example_of_the_kernels_page_runs():
    blocks = [b for b in _blocks("docs/kernels.md", "Coupling blocks") if "import" in b]
    assert len(blocks) == 1
    assert _run("docs/kernels.md", blocks)["log_det"].shape == (128,)
