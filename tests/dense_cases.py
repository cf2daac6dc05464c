"""The dense measure the bound tests share (:mod:`bench.dense`, against a long-double
reference checked on a subsample against mpmath): the KL cases, and one case measured at a
tenth of the benchmark's density and held to its stated bound. ``tests/test_dense_bounds.py``
runs it on the NumPy kernels, ``tests/test_fused.py`` on the fused ones and
``tests/test_eager_fused.py`` on eager PyTorch's route."""

from __future__ import annotations

import numpy as np

from bench import dense

#: Points per piece (the benchmark takes 1e5) and rounds of refinement at the boundaries.
POINTS, ROUNDS = 10_000, 3


def kl_cases(estimators: bool = True) -> list[dense.Case]:
    """The cases of the KL modules: value and gradient, float64 and float32, and with
    ``estimators`` the sticking-the-landing estimators."""
    cases = dense._cases() + dense._float32_cases() + (
        dense._estimator_cases() if estimators else [])
    return [c for c in cases if c.module.startswith("gaussian_kl")]


def case_id(case: dense.Case) -> str:
    return f"{case.module}.{case.output}.{np.dtype(case.dtype).name}"


def assert_within_bound(case: dense.Case) -> dict:
    """Measure ``case`` over every piece and boundary; assert that the reference stands for
    the true value and that the kernel is within the stated bound; the row measured."""
    row = dense.measure_case(case, POINTS, ROUNDS, np.random.default_rng(0))
    assert row["ld_vs_mp_eps"] < 0.01, row  # the reference stands for the true value
    assert row["max_eps"] <= case.bound, row
    return row
