"""The array libraries the kernels are tested on, as one parametrized pytest fixture.

Each :class:`Lib` converts NumPy test data into its arrays and back; ``xp`` is its
array-API namespace (through ``array_api_compat``), for writing F and G. A library that
is not installed is skipped, saying which package provides it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from . import reference as ref

os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX2")  # torch's CPU LU on this machine

LIBS = ("numpy", "torch", "jax", "array_api_strict", "dask")


@dataclass(frozen=True)
class Lib:
    """One array library: conversion to and from NumPy, its namespace, its array type."""

    name: str
    asarray: Callable[[Any], Any]
    xp: Any
    array_type: type

    def numpy(self, value: Any) -> np.ndarray:
        if self.name == "torch":
            return value.detach().cpu().numpy()
        if self.name == "dask":
            return np.asarray(value.compute())
        if self.name == "array_api_strict":
            return np.from_dlpack(value)
        return np.asarray(value)

    def dense(self, layers: ref.DenseLayers) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
        """The reference's dense F and G, written with this library's operations."""
        xp = self.xp
        W, b, V, c = (self.asarray(a) for a in (layers.W, layers.b, layers.V, layers.c))

        def F(x: Any) -> Any:
            assert isinstance(x, self.array_type), type(x)
            return xp.tanh(x @ xp.matrix_transpose(W) + b)

        def G(x: Any) -> Any:
            assert isinstance(x, self.array_type), type(x)
            return layers.g_scale * xp.sin(x @ xp.matrix_transpose(V) + c)

        return F, G


def make(name: str) -> Lib:
    """The library ``name``; skips the test where it is not installed."""
    if name == "numpy":
        import array_api_compat.numpy as xp

        return Lib("numpy", np.asarray, xp, np.ndarray)
    if name == "torch":
        torch = pytest.importorskip("torch", reason="torch is not installed (test extra)")
        import array_api_compat.torch as xp

        return Lib("torch", torch.asarray, xp, torch.Tensor)
    if name == "jax":
        jax = pytest.importorskip("jax", reason="jax is not installed (test extra)")
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        return Lib("jax", jnp.asarray, jnp, jax.Array)
    if name == "array_api_strict":
        strict = pytest.importorskip("array_api_strict",
                                     reason="array_api_strict is not installed (test extra)")
        strict.set_array_api_strict_flags(api_version="2023.12")
        return Lib("array_api_strict", strict.asarray, strict, type(strict.asarray(0.0)))
    if name == "dask":
        da = pytest.importorskip("dask.array", reason="dask[array] is not installed (test extra)")
        import array_api_compat.dask.array as xp

        return Lib("dask", lambda a: da.from_array(np.asarray(a), chunks=2), xp, da.Array)
    raise KeyError(name)
