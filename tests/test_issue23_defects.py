"""Regression tests for the shipped-kernel defects of issue 23 (item 4), each against the
true value from mpmath: every one of these failed (NaN or infinity where the true value is
finite) before its fix.

Example:
    >>> from generated import coupling
    >>> import numpy as np
    >>> one = np.ones(1)
    >>> coupling.forward(0 * one, one, one, np.ones_like, lambda x: 710 + 0 * x)[0]
    array([1.])
"""

from __future__ import annotations

import warnings

import mpmath
import numpy as np
import pytest

from generated import coupling, coupling_affine

mpmath.mp.prec = 200


def _const(value: float):
    return lambda x: np.full_like(x, value)


def _ulps(got: float, true: mpmath.mpf, dtype=np.float64) -> float:
    """``|got - true|`` in units of ``eps * |true|`` (0 where both are 0)."""
    if true == 0:
        return 0.0 if got == 0 else float("inf")
    return float(abs((mpmath.mpf(float(got)) - true) / true)) / float(np.finfo(dtype).eps)


def _one(v, dtype=np.float64):
    return np.array([v], dtype=dtype)


@pytest.fixture(autouse=True)
def _no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --- coupling blocks: x1 * exp(G) as (x1 * exp(G/2)) * exp(G/2) (derivation 1.3n) -------

@pytest.mark.parametrize("module", [coupling, coupling_affine])
@pytest.mark.parametrize("x1, g", [(0.0, 710.0), (-0.0, 800.0), (0.0, 1419.0),
                                   (1e-100, 710.0), (-3e-300, 1390.0), (1e-300, -700.0)])
def test_forward_y1_finite_where_true_value_is(module, x1, g):
    y1, _ = module.forward(_one(x1), _one(0.0), _one(0.0), _const(1.0), _const(g))
    true = 1 + mpmath.mpf(x1) * mpmath.exp(g)
    assert _ulps(y1[0], true) <= 4


def test_forward_y2_zero_times_large_scale():
    _, y2 = coupling.forward(_one(1.0), _one(0.0), _one(800.0), _const(1.0), _const(0.0))
    assert y2[0] == 0.0
    _, y2 = coupling.forward(_one(1.0), _one(1e-300), _one(1000.0), _const(1.0), _const(0.0))
    assert _ulps(y2[0], mpmath.mpf(1e-300) * mpmath.exp(1000)) <= 4


@pytest.mark.parametrize("module", [coupling, coupling_affine])
@pytest.mark.parametrize("g", [-710.0, -800.0, -1400.0])
def test_inverse_x1_zero_where_y1_is_F(module, g):
    x1, _ = module.inverse(_one(1.0), _one(0.0), _one(0.0), _const(1.0), _const(g))
    assert x1[0] == 0.0


def test_inverse_x2_zero_times_large_scale():
    _, x2 = coupling.inverse(_one(1.0), _one(0.0), _one(-800.0), _const(1.0), _const(0.0))
    assert x2[0] == 0.0


@pytest.mark.parametrize("module", [coupling, coupling_affine])
def test_jacobian_finite_at_x1_zero_large_g(module):
    with np.errstate(over="ignore"):  # d y1 / d x1 = exp(800) overflows: its true value
        jac = module.jacobian(_one(0.0), _one(0.5), _one(0.0), _const(1.0), _const(800.0),
                              lambda x: np.ones(x.shape + x.shape[-1:]),
                              lambda x: np.ones(x.shape + x.shape[-1:]))
    assert not np.isnan(jac).any()
    # d y1 / d x2 = JF + x1 exp(G) JG = 1 at x1 = 0; d y1 / d x1 = exp(800) overflows (true)
    assert jac[0, 1] == 1.0 and jac[0, 0] == np.inf


@pytest.mark.parametrize("x1, g", [(0.0, 89.0), (0.0, 177.0), (1e-20, 100.0)])
def test_forward_float32(x1, g):
    y1, _ = coupling.forward(_one(x1, np.float32), _one(0.0, np.float32),
                             _one(0.0, np.float32), _const(1.0), _const(g))
    assert y1.dtype == np.float32
    true = 1 + mpmath.mpf(float(np.float32(x1))) * mpmath.exp(float(np.float32(g)))
    assert _ulps(y1[0], true, np.float32) <= 4


def test_forward_common_case_accuracy():
    """The halving costs at most a few ulp where nothing overflows (measured: 2.0)."""
    rng = np.random.default_rng(23)
    x1 = rng.standard_normal(2000) * 10.0 ** rng.uniform(-5, 5, 2000)
    g = rng.uniform(-700, 700, 2000)
    y1, _ = coupling.forward(x1, np.zeros(2000), np.zeros(2000), np.zeros_like,
                             lambda _x: g.copy())
    worst = max(_ulps(y, mpmath.mpf(a) * mpmath.exp(b)) for y, a, b in zip(y1, x1, g, strict=True))
    assert worst <= 4, worst
