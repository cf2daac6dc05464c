"""kernel_runtime, directly: the NumPy value checks' exact fallbacks and what finish returns."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kernel_runtime as rt

NAMES = ("mu", "sigma")


def prepare(mu, sigma, check_finite=None):
    return rt.prepare_elementwise(NAMES, (mu, sigma), ("sigma",), NAMES, check_finite)


def test_huge_finite_entries_pass_without_warnings():
    """The sum of squares overflows beyond ~1e154: the exact test then decides, silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in (np.float64, np.float32):
            big = np.full(4, np.finfo(dtype).max / 2, dtype)
            xp, (mu, sigma), shape, out = prepare(big, big)
            assert xp is np and out == dtype and shape == (4,)


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_non_finite_entries_are_found_in_any_layout(layout):
    base = np.ones((6, 4))
    base[3, 1] = np.inf
    a = {"C": base, "F": np.asfortranarray(base), "strided": base[::1, ::1][:, ::-1]}[layout]
    with pytest.raises(ValueError, match="mu: expected finite values"):
        prepare(a, np.ones((6, 4)))
    prepare(a, np.ones((6, 4)), check_finite=False)  # skipped on request


def test_positivity_reports_nan_and_the_minimum():
    with pytest.raises(ValueError, match="sigma: expected finite values"):
        prepare(0.0, np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="sigma: expected every entry > 0, got a minimum of 0.0"):
        prepare(0.0, np.array([1.0, 0.0]))


def test_integers_compute_in_float64_and_python_scalars_stay_weak():
    assert prepare(np.arange(3), 2)[3] == np.float64
    assert prepare(np.ones(3, np.float32), 0.5)[3] == np.float32


def test_finish_returns_a_new_writeable_array():
    a = np.ones(3)
    view = a.view()
    view.flags.writeable = False
    for value in (a, view):
        out = rt.finish(value, (3,), a.dtype, (a,))
        assert out is not a and out.flags.writeable
    assert rt.finish(2.0, (2, 2), a.dtype, (a,)).shape == (2, 2)


def test_callables_get_a_read_only_view():
    x = np.ones((2, 3))
    seen = []

    def F(v):
        seen.append(v.flags.writeable)
        return v * 2

    np.testing.assert_array_equal(rt.call("F", F, x, "vector", x.dtype), 2 * x)
    assert seen == [False] and x.flags.writeable
