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


def test_a_callable_writing_its_argument_is_named_and_other_errors_pass_through():
    x = np.ones((2, 3))

    def G(v):
        v += 1
        return v

    def bad(v):
        raise ValueError("the user's own error")

    with pytest.raises(ValueError, match="^G: expected G to leave its argument unchanged"):
        rt.call("G", G, x, "vector", x.dtype)
    np.testing.assert_array_equal(x, np.ones((2, 3)))
    with pytest.raises(ValueError, match="^the user's own error$"):
        rt.call("F", bad, x, "vector", x.dtype)


# --- the NumPy fast path (numpy_elementwise / numpy_coupling, built once per kernel) ----

KL = rt.numpy_elementwise(NAMES, ("sigma",), NAMES)
PAIR_NAMES = ("mu_q", "logvar_q", "mu_p", "logvar_p", "eps")
PAIR = rt.numpy_elementwise(PAIR_NAMES, (), PAIR_NAMES)
COUPLING = rt.numpy_coupling(("x1", "x2"), ("s",), ("x1", "x2", "s"))


def test_fast_path_takes_numpy_floats_of_one_dtype_only():
    a = np.ones((3, 2))
    assert KL((a, a), None) == ((3, 2), np.float64)
    assert KL((a, np.ones(2)), None) == ((3, 2), np.float64)  # broadcasting
    f = np.ones(2, np.float32)
    assert KL((f, f), None) == ((2,), np.float32)
    # anything else is left to prepare_elementwise, which converts or names the error
    for other in ((a, 1.0), (a, f), (np.arange(3), a), (a, np.ones((4, 1, 3))), (a, a.tolist())):
        assert KL(other, None) is None
    assert COUPLING((a, a, np.ones(2)), None) == ((3,), 2, np.float64)
    for other in ((a, a, np.ones(3)), (a, a[:2], np.ones(2)), (a, a, 1.0),
                  (np.ones(0), np.ones(0), np.ones(0)), (np.float64(1), a, a)):
        assert COUPLING(other, None) is None


@pytest.mark.parametrize("where", [0, 5, -1])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fast_path_names_the_first_non_finite_argument(where, bad):
    """Read arrays are tested two at a time (one dot product): a bad entry in either is
    found, also where the other array is 0 there (inf * 0 is NaN), and named exactly."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((4, 3)) for _ in PAIR_NAMES]
    for k, name in enumerate(PAIR_NAMES):
        given = [a.copy() for a in arrays]
        given[k].flat[where] = bad
        if k < 4:
            given[k ^ 1].flat[where] = 0.0  # its partner in the dot product
        with pytest.raises(ValueError, match=f"^{name}: expected finite values"):
            PAIR(tuple(given), None)
        later = [a.copy() for a in given]
        later[-1].flat[0] = np.nan  # a later bad argument: the first one is named
        with pytest.raises(ValueError, match=f"^{name}: expected finite values"):
            PAIR(tuple(later), None)
        assert PAIR(tuple(given), False) == ((4, 3), np.float64)


def test_fast_path_positivity_comes_first_and_reports_the_minimum():
    mu = np.array([np.nan, 0.0, 1.0])
    for sigma, message in [(np.array([1.0, -2.0, 0.5]), "sigma: expected every entry > 0, "
                            "got a minimum of -2.0"),
                           (np.array([1.0, -0.0, 3.0]), "sigma: expected every entry > 0"),
                           (np.array([1.0, np.nan, -1.0]), "sigma: expected finite values"),
                           (np.array([1.0, np.inf, 2.0]), "mu: expected finite values")]:
        with pytest.raises(ValueError, match=message):
            KL((mu, sigma), None)
        for layout in (np.asfortranarray, lambda a: np.repeat(a, 2)[::2]):
            with pytest.raises(ValueError, match=message):
                KL((layout(mu), layout(sigma)), None)
    with pytest.raises(ValueError, match="sigma: expected finite values"):
        KL((np.zeros(3), np.array([1.0, np.inf, 2.0])), None)
    with pytest.raises(ValueError, match="got a minimum of -0.5$"):
        KL((np.zeros(2, np.float32), np.array([1, -0.5], np.float32)), None)
    assert KL((np.zeros(0), np.zeros(0)), None) == ((0,), np.float64)


def test_fast_path_huge_products_and_layouts_pass_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in (np.float64, np.float32):
            big = np.full((3, 4), np.finfo(dtype).max / 2, dtype)
            assert KL((big, big), None) == ((3, 4), dtype)
            assert COUPLING((big, -big, big[0]), None) == ((3,), 4, dtype)
            assert KL((np.asfortranarray(big), big[::-1]), None) == ((3, 4), dtype)
    base = np.ones((6, 4))
    base[3, 1] = np.inf
    for a in (np.asfortranarray(base), base[:, ::-1], base[1::2]):
        with pytest.raises(ValueError, match="x2: expected finite values"):
            COUPLING((np.ones(a.shape), a, np.ones(4)), None)
