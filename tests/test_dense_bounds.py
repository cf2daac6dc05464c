"""The bounds docs/numerics.md states for the KL kernels (float64 and float32), their
sticking-the-landing estimators and the coupling kernels, checked over every piece and
every boundary between pieces (+-64 ulp), at a tenth of the density of the benchmark
(``python -m bench.dense``: 1e5 points per piece), against a long-double reference that
is itself checked against mpmath on a subsample."""

from __future__ import annotations

import numpy as np
import pytest

from bench import dense
from tests.dense_cases import assert_within_bound, case_id

pytestmark = pytest.mark.skipif(
    np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps / 100,
    reason="long double is float64 on this platform")


@pytest.mark.parametrize("case", dense.all_cases(), ids=case_id)
def test_kernel_within_its_stated_bound_over_every_piece_and_boundary(case):
    assert_within_bound(case)


@pytest.mark.parametrize(("kernel", "g", "given"), [
    ("forward", -800.0, 1e100),  # sigmoid(G + 2) = 1e-347 underflows; y1 = 1e-247
    ("forward", -1400.0, 1e300),  # y1 = 1.6e-308, a normal number
    ("forward", -1e4, 1e300),  # y1 below the smallest subnormal: 0
    ("inverse", -800.0, 1e-300),  # exp(-G - 2) = 1e346 overflows; x1 = 1e46
    ("inverse", -1400.0, 1e-300),  # x1 = 1.6e308, finite
    ("inverse", -800.0, -3e-300),
])
def test_glow_keeps_the_product_where_the_sigmoid_over_or_underflows(kernel, g, given):
    """Glow's y1 = sigmoid(G + 2) x1 + F (and its inverse) where sigmoid(G + 2) or its
    reciprocal is beyond the floats but the product is not (were 0 and inf): within 3 eps
    of mpmath, or the correctly rounded 0."""
    import mpmath

    from generated import coupling_glow

    mpmath.mp.dps = 50
    sig = 1 / (1 + mpmath.exp(-(mpmath.mpf(g) + 2)))
    true = mpmath.mpf(given) * (sig if kernel == "forward" else 1 / sig)
    one = np.array([given])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = getattr(coupling_glow, kernel)(one, np.zeros(1), np.zeros(1),
                                             lambda x: x * 0, lambda x: x * 0 + g)[0][0]
    if abs(true) < mpmath.mpf(float(np.finfo(np.float64).smallest_subnormal)) / 2:
        assert got == 0
    else:
        assert abs(got - true) <= 3 * np.finfo(np.float64).eps * abs(true), (got, true)


def test_the_measure_can_fail():
    """A kernel one ulp off everywhere in the series piece exceeds a bound of 0.5 eps."""
    case = dense._cases()[0]
    off = dense.Case(case.module, case.output,
                     lambda s, p: np.nextafter(case.call(s, p), np.inf) * (1 + 2e-16),
                     case.inputs, case.ld, case.mp, case.priors, case.ranges[2:3], (),
                     0.5)
    row = dense.measure_case(off, 1000, 1, np.random.default_rng(0))
    assert row["max_eps"] > off.bound
