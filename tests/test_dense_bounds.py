"""The bounds docs/numerics.md states for the KL kernels (float64 and float32), their
sticking-the-landing estimators and the coupling kernels, checked over every piece and
every boundary between pieces (+-64 ulp), at a tenth of the density of the benchmark
(``python -m bench.dense``: 1e5 points per piece), against a long-double reference that
is itself checked against mpmath on a subsample."""

from __future__ import annotations

import numpy as np
import pytest

from bench import dense

pytestmark = pytest.mark.skipif(
    np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps / 100,
    reason="long double is float64 on this platform")


@pytest.mark.parametrize("case", dense.all_cases(),
                         ids=lambda c: f"{c.module}.{c.output}.{np.dtype(c.dtype).name}")
def test_kernel_within_its_stated_bound_over_every_piece_and_boundary(case):
    row = dense.measure_case(case, 10_000, 3, np.random.default_rng(0))
    assert row["ld_vs_mp_eps"] < 0.01, row  # the reference stands for the true value
    if case.bound is None:  # measured, no bound stated (Glow's over- and underflow edges)
        pytest.xfail(f"no bound stated: measured {row['max_eps']:.3g} eps at {row['at']}")
    assert row["max_eps"] <= case.bound, row


def test_the_measure_can_fail():
    """A kernel one ulp off everywhere in the series piece exceeds a bound of 0.5 eps."""
    case = dense._cases()[0]
    off = dense.Case(case.module, case.output,
                     lambda s, p: np.nextafter(case.call(s, p), np.inf) * (1 + 2e-16),
                     case.inputs, case.ld, case.mp, case.priors, case.ranges[2:3], (),
                     0.5)
    row = dense.measure_case(off, 1000, 1, np.random.default_rng(0))
    assert row["max_eps"] > off.bound
