"""The KL kernels' accuracy against mpmath on every array library, piece by piece, each
library with its own bound.

Bounds are in units of the dtype's eps, per piece of derivation 2.3n over x = log sigma^2.
NumPy, PyTorch, array_api_strict and Dask (NumPy underneath) share the NumPy bounds:
their ``expm1`` is within about 1 ulp. XLA's ``expm1`` (JAX) is up to 3 ulp off, and the
two pieces that compute ``expm1(x) - x`` for 0.1 <= |x| <= 2 amplify that error by the
cancellation, ``|expm1(x)| / |expm1(x) - x|``, which is at most 21 (at |x| = 0.1). So
JAX's bound for those two pieces is 3 x 21 + 1 = 64 eps, in float64 and float32
(measured on 2 x 10^5 points per piece: at most 37 eps in float64 and 50 in float32,
against NumPy's 8.7 and 10.1). The other pieces do not use ``expm1`` and keep the NumPy
bounds.
"""

from __future__ import annotations

from functools import cache

import mpmath
import numpy as np
import pytest

from generated import gaussian_kl, gaussian_kl_logvar

from . import reference as ref
from .backends import LIBS, make

#: (x range, {library: (float64 bound, float32 bound)}) in eps; "default" for the rest
PIECES = [
    ((-12, -2), {"default": (2, 3)}),
    ((-2, -0.1), {"default": (9, 12), "jax": (64, 64)}),
    ((-0.0999, 0.0999), {"default": (3, 5)}),
    ((0.1, 2), {"default": (9, 14), "jax": (64, 64)}),
    ((2, 12), {"default": (1.5, 1.5), "jax": (2, 1.5)}),
]


@cache
def _exact(which: str, value: float) -> mpmath.mpf:
    return (ref.kl_mpmath(0, value, dps=40) if which == "sigma"
            else ref.kl_mpmath_logvar(0, value, dps=40))


def _rel(value: float, exact: mpmath.mpf) -> float:
    with mpmath.workdps(50):
        return float(abs((mpmath.mpf(float(value)) - exact) / exact))


@pytest.mark.parametrize("name", LIBS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("piece", PIECES, ids=[f"{lo}..{hi}" for (lo, hi), _ in PIECES])
def test_kl_accuracy_on_every_library(name, dtype, piece):
    lib = make(name)
    (lo, hi), bounds = piece
    bound64, bound32 = bounds.get(name, bounds["default"])
    bound = (bound64 if dtype == np.float64 else bound32) * np.finfo(dtype).eps
    xs = np.linspace(lo, hi, 201).astype(dtype)
    sigmas = np.exp(xs.astype(np.float64) / 2).astype(dtype)
    keep = (xs != 0) & (sigmas != 1)  # the KL is exactly 0 there: no relative error
    xs, sigmas = xs[keep], sigmas[keep]
    zero = lib.asarray(np.zeros((), dtype))
    by_sigma = lib.numpy(gaussian_kl.kl(zero, lib.asarray(sigmas)))
    by_logvar = lib.numpy(gaussian_kl_logvar.kl(zero, lib.asarray(xs)))
    assert by_sigma.dtype == by_logvar.dtype == dtype
    worst = max(_rel(v, _exact("sigma", float(s))) for v, s in zip(by_sigma, sigmas, strict=True))
    assert worst < bound, ("sigma", worst / np.finfo(dtype).eps)
    worst = max(_rel(v, _exact("logvar", float(x))) for v, x in zip(by_logvar, xs, strict=True))
    assert worst < bound, ("logvar", worst / np.finfo(dtype).eps)


#: The long double reference below needs more precision than float64 (x86's 80 bits).
_LONG = np.finfo(np.longdouble).eps < 1e-18


@pytest.mark.skipif(not _LONG, reason="numpy.longdouble is float64 on this platform")
@pytest.mark.parametrize("name", [lib for lib in LIBS if lib != "dask"])  # dask: NumPy's
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("piece", [p for p in PIECES if p[1].get("jax")],
                         ids=lambda p: f"{p[0][0]}..{p[0][1]}")
def test_the_expm1_pieces_densely_on_every_library(name, dtype, piece):
    """2 x 10^5 points per piece, against (expm1(x) - x) / 2 in long double."""
    lib = make(name)
    (lo, hi), bounds = piece
    bound64, bound32 = bounds.get(name, bounds["default"])
    eps = np.finfo(dtype).eps
    xs = np.linspace(lo, hi, 200_001).astype(dtype)
    exact = (np.expm1(xs.astype(np.longdouble)) - xs.astype(np.longdouble)) / 2
    got = lib.numpy(gaussian_kl_logvar.kl(lib.asarray(np.zeros((), dtype)), lib.asarray(xs)))
    worst = float(np.max(np.abs((got - exact) / exact))) / eps
    assert worst < (bound64 if dtype == np.float64 else bound32), worst
