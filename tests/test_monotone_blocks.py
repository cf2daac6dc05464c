"""Monotone blocks that are not affine, at the ends of float64's range: the cubic block
``x1 + x1**3/3 + F`` (``USER_BLOCKS["user_cubic"]``), whose inverse is the real root of
a cubic. Cardano's form squares ``y1 - F`` and overflowed for x1 between 8e50 and 7e102
(y1 beyond 1e152); the engine now writes a monotone cubic's root in hyperbolic form,
``-2 sqrt(p/3) sinh(asinh(3q/(2p) sqrt(3/p))/3)``, which forms no square."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from .test_coupling_blocks import RAISE, constant, kernels

F_ = 0.75
#: y1 - F out to float64's range, both signs, and small.
Y_VALUES = [1e-200, 1e-8, 0.5, 3.0, 1e10, 1e60, 1e154, 1e200, 1e300, 1e307]
#: x1 where y1 = x1 + x1**3/3 + F is finite but Cardano's form overflowed.
X_VALUES = [1e51, 1e80, 1e100, 5e102]


def _root(y: float) -> mpmath.mpf:
    """The real x with x + x**3/3 + F = y, by Newton's method in mpmath (not the
    engine's formula)."""
    with mpmath.workdps(60):
        r = mpmath.mpf(y) - F_
        x = mpmath.sign(r) * mpmath.cbrt(3 * abs(r)) if abs(r) > 1 else r
        for _ in range(200):
            step = (x + x**3 / 3 - r) / (1 + x**2)
            x -= step
            if abs(step) <= abs(x) * mpmath.mpf(10) ** -50:
                return x
        raise AssertionError(f"Newton's method did not converge at y = {y}")


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_cubic_inverse_is_finite_and_accurate_over_y(sign):
    """inverse(y1) against mpmath's root for |y1| up to 1e307: finite, no overflow or
    invalid operation raised, and within (4 + asinh(3|y1 - F|/2)) ulp: the hyperbolic
    form takes a log and an exponential of a number up to 710, so its error grows with
    it (measured: at most 210 ulp, 4.7e-14, at 1e300; a few ulp below |y1| = 1e10)."""
    m = kernels("user_cubic")
    y1 = sign * np.array(Y_VALUES)[:, None] * np.ones(3)
    with np.errstate(**RAISE):
        x1, x2 = m.inverse(y1, np.zeros_like(y1), np.zeros(3), constant(F_), constant(0.0))
    want = np.array([[float(_root(v)) for v in row] for row in y1])
    assert np.isfinite(x1).all()
    ulps = np.abs(x1 - want) / (np.abs(want) * np.finfo(float).eps)
    assert np.all(ulps <= 4 + np.arcsinh(1.5 * np.abs(y1 - F_))), ulps


@pytest.mark.parametrize("x", X_VALUES)
def test_cubic_round_trip_where_cardano_overflowed(x):
    """forward then inverse returns x1 to 1e-13 where y1 is finite, x1 up to 5e102
    (measured: 2e-14 at 5e102; before, the inverse overflowed to nan from 8e50 on)."""
    m = kernels("user_cubic")
    x1 = np.array([[x, -x, 0.5]])
    with np.errstate(**RAISE):
        y1, y2 = m.forward(x1, np.zeros_like(x1), np.zeros(3), constant(F_), constant(0.0))
        back, _ = m.inverse(y1, y2, np.zeros(3), constant(F_), constant(0.0))
    assert np.isfinite(y1).all()
    np.testing.assert_allclose(back, x1, rtol=1e-13, atol=0)
