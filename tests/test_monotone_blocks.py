"""Monotone blocks that are not affine, at the ends of float64's range: the cubic block
``x1 + x1**3/3 + F`` (``USER_BLOCKS["user_cubic"]``), whose inverse is the real root of
a cubic. Cardano's form squares ``y1 - F`` and overflowed for x1 between 8e50 and 7e102
(y1 beyond 1e152); the engine now writes a monotone cubic's root in hyperbolic form,
``-2 sqrt(p/3) sinh(asinh(3q/(2p) sqrt(3/p))/3)``, which forms no square, and the
arrangement evaluates ``sinh(asinh(z)/3)`` through cube roots where ``|z| >= 2``."""

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


#: |y1| log-spaced from 1e-300 to 1e307.
Y_GRID = np.concatenate([np.geomspace(1e-300, 1e307, 400), Y_VALUES])
#: y1 - F where the arrangement's pieces meet, |3(y1 - F)/2| = 2, +- a few ulp.
Y_SPLIT = 4 / 3 + np.arange(-4, 5) * 2.0**-52


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_cubic_inverse_is_finite_and_accurate_over_y(sign):
    """inverse(y1) against mpmath's root for |y1 - F| from 1e-300 up to 1e307: finite, no
    overflow or invalid operation raised, and within 4 ulp. The hyperbolic form
    ``-2 sinh(asinh(z)/3)`` takes a log and an exponential of a number up to 710, so its
    error grew with |y1| (210 ulp at 1e300); where |z| >= 2 the arrangement now evaluates it
    as ``(c - 1/c)/2`` with ``c = cbrt(z) cbrt(1 + sqrt(1 + z**-2))`` (measured: at most
    3.23 ulp over 2,000 points a sign)."""
    m = kernels("user_cubic")
    y1 = np.concatenate([sign * Y_GRID, F_ + sign * Y_SPLIT])[:, None] * np.ones(2)
    with np.errstate(**RAISE):
        x1, x2 = m.inverse(y1, np.zeros_like(y1), np.zeros(2), constant(F_), constant(0.0))
    want = np.array([[float(_root(v)) for v in row] for row in y1])
    assert np.isfinite(x1).all()
    ulps = np.abs(x1 - want) / (np.abs(want) * np.finfo(float).eps)
    assert np.all(ulps <= 4), (ulps.max(), y1[np.unravel_index(ulps.argmax(), ulps.shape)])


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


# --- a block on an interval: one bin of a rational-quadratic spline ---------------------


def _bin(height):
    """One rational-quadratic bin on [xk, xk1] with the given height (Durkan et al.)."""
    from derive.api import F, param_vector, x1

    xk, xk1, yk = param_vector("xk"), param_vector("xk1"), param_vector("yk")
    dk, dk1 = param_vector("dk", positive=True), param_vector("dk1", positive=True)
    xi, slope = (x1 - xk) / (xk1 - xk), height / (xk1 - xk)
    return yk + F + height * (slope * xi**2 + dk * xi * (1 - xi)) / (
        slope + (dk + dk1 - 2 * slope) * xi * (1 - xi)), (xk, xk1)


def test_a_malformed_or_non_monotone_domain_is_refused_in_one_line():
    """Each refusal of a block on an interval is one line saying why: a domain that is
    not a pair, has an infinite end or one in x1, is empty, may be empty, or on which the
    block is not monotone (a knot slope that may be negative)."""
    import sympy as sp

    from derive.api import CouplingBlock, SpecificationError, param_vector, x1, x2

    h = param_vector("h", positive=True)
    y1, (xk, xk1) = _bin(h)
    cases = {
        "not a pair": (xk,),
        "must be finite": (xk, sp.oo),
        "not depend on x1": (xk, x1),
        "is empty": (xk1, xk1 - 1),
        "may be empty": (xk, xk + param_vector("g")),
    }
    for why, domain in cases.items():
        with pytest.raises(SpecificationError, match=why) as error:
            CouplingBlock("bad_bin", "a bin", y1=y1, y2=x2, domain=domain)
        assert "\n" not in str(error.value)
    # a slope at the lower knot of either sign: the bin decreases there for some values
    signed = y1.xreplace({param_vector("dk", positive=True): param_vector("dk")})
    with pytest.raises(SpecificationError, match="not invertible .* on its domain") as error:
        CouplingBlock("bad_bin", "a bin", y1=signed, y2=x2, domain=(xk, xk1))
    assert "\n" not in str(error.value)


def test_the_bin_s_root_is_the_one_in_the_bin_and_the_other_fails_its_check():
    """The inverse of a bin is the root of its quadratic that lies in the bin, written
    2c/(-b - sqrt(b^2 - 4ac)); the step x1 = root is checked at points inside the bin, and
    the same step with the other root, 2c/(-b + sqrt(...)), is refused."""
    import sympy as sp

    from derive.api import CouplingBlock, Step, StepCheckError, param_vector, x2
    from derive.coupling import InDomain, derive_inverse, exact_domain_model
    from derive.derivation import check_step

    y1, domain = _bin(param_vector("h", positive=True))
    block = CouplingBlock("rq_bin", "a bin", y1=y1, y2=x2, domain=domain)
    d = derive_inverse(block)
    step = d.steps[-1]
    root = d.result("x1")
    assert root.has(sp.sqrt(sp.Wild("d")).func) and isinstance(step.lhs, InDomain)
    other = root.replace(lambda e: isinstance(e, sp.Pow) and e.exp == sp.S.Half,
                         lambda e: -e)
    assert other != root
    # (at the lower knot the other root is 0/0: the check cannot even evaluate it)
    with pytest.raises(StepCheckError, match="is false|cannot decide"):
        check_step(Step(step.lhs, other, "the other root", given=step.given,
                        models=(exact_domain_model(domain),)))
