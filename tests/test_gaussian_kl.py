"""Generated Gaussian-KL kernels against quadrature, mpmath, finite differences, Monte Carlo."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import sympy as sp

from derive.gaussian_kl import PARAMETERIZATIONS, derive_gradient_estimators
from generated import gaussian_kl as ks
from generated import gaussian_kl_logvar as kl_lv

from . import reference as ref

SIGMAS = [1e-200, 1e-100, 1e-10, 0.3, 1 - 1e-4, 1 + 1e-8, 1 + 1e-4, 1.05, 2.0, 1e10, 1e100]
MUS = [0.0, 1e-3, 1.0, 100.0]


def rel_err(value, exact) -> float:
    with mpmath.workdps(50):
        exact = mpmath.mpf(exact)
        return float(abs((mpmath.mpf(float(value)) - exact) / exact))


@pytest.mark.parametrize("mu, sigma", [(0.0, 1.0), (0.3, 0.7), (-1.2, 2.5), (2.0, 0.1)])
def test_kl_matches_quadrature(mu, sigma):
    np.testing.assert_allclose(ks.kl(mu, sigma), ref.kl_quadrature(mu, sigma),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("mu", MUS)
def test_kl_float64_relative_error_against_mpmath(mu, sigma):
    value = ks.kl(mu, sigma)
    assert np.isfinite(value)
    assert rel_err(value, ref.kl_mpmath(mu, sigma)) < 4e-15
    # the log-variance module at logvar = log sigma^2, evaluated in high precision
    logvar = float(mpmath.log(mpmath.mpf(sigma) ** 2))
    assert rel_err(kl_lv.kl(mu, logvar), ref.kl_mpmath_logvar(mu, logvar)) < 4e-15


# Each piece of derivation 2.3n over its range of x = log sigma^2, with the largest
# relative error it may show, in units of the dtype's eps (measured: about 0.9, 6.5, 1.9,
# 6.9, 1.0 eps in float64). The ends of every range are included: a piece moved to where it
# is less accurate (say the direct piece's boundary from 2 to 8) shows up here. (x = +-1/10
# belongs to the middle piece.)
PIECES = [((-12, -2), 2, 3), ((-2, -0.1), 9, 12), ((-0.0999, 0.0999), 3, 5), ((0.1, 2), 9, 14),
          ((2, 12), 1.5, 1.5)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("piece", PIECES, ids=[f"{lo}..{hi}" for (lo, hi), *_ in PIECES])
def test_kl_relative_error_piece_by_piece(piece, dtype):
    (lo, hi), bound64, bound32 = piece
    eps = np.finfo(dtype).eps
    bound = (bound64 if dtype == np.float64 else bound32) * eps
    xs = np.linspace(lo, hi, 301).astype(dtype)
    sigmas = np.exp(xs.astype(np.float64) / 2).astype(dtype)
    keep = (xs != 0) & (sigmas != 1)  # the KL is exactly 0 there: no relative error
    xs, sigmas = xs[keep], sigmas[keep]
    by_sigma = ks.kl(np.zeros((), dtype), sigmas)
    by_logvar = kl_lv.kl(np.zeros((), dtype), xs)
    assert by_sigma.dtype == by_logvar.dtype == dtype
    errors = []
    for x, sigma, a, b in zip(xs, sigmas, by_sigma, by_logvar, strict=True):
        errors.append(rel_err(a, ref.kl_mpmath(0, float(sigma), dps=40)))
        assert errors[-1] < bound, (x, "sigma")
        assert rel_err(b, ref.kl_mpmath_logvar(0, float(x), dps=40)) < bound, (x, "logvar")
    if lo == 2:
        # sigma**2 taken directly is correctly rounded on average (mean 0.25 eps measured);
        # exp(2 log sigma) there would average 0.35-0.37 eps (the boundary moved to 8).
        assert np.mean(errors) < 0.31 * eps


def test_kl_does_not_overflow_before_the_true_value_does():
    # 0.5 * (mu^2 + sigma^2 - ...) summed before halving would overflow float32 here.
    value = ks.kl(np.float32([1.8e19]), np.float32([5e18]))
    assert np.isfinite(value).all() and abs(value[0] / 1.745e38 - 1) < 1e-3


def test_non_native_byte_order_gives_native_output():
    out = ks.kl(np.array([0.5], ">f8"), np.array([3.0], ">f8"))
    assert out.dtype == np.float64 and out.dtype.isnative


def test_non_contiguous_inputs_are_checked_and_computed_alike():
    base = np.linspace(-2, 2, 60).reshape(6, 10)
    mu, sigma = base.T, np.exp(base)[:, ::2]
    np.testing.assert_array_equal(ks.kl_grad(mu[:5], sigma.T)[1], ks.kl_grad(
        np.ascontiguousarray(mu[:5]), np.ascontiguousarray(sigma.T))[1])
    # ... and both equal the hand-written gradient
    expected = ref.kl_grad_hand(mu[:5], sigma.T)
    for got, want in zip(ks.kl_grad(mu[:5], sigma.T), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    bad = base.copy()
    bad[3, 4] = np.inf
    with pytest.raises(ValueError, match=r"mu: expected finite values"):
        ks.kl(bad.T, 1.0)
    with pytest.raises(ValueError, match=r"mu: expected finite values"):
        ks.kl(bad[:, ::2], 1.0)


def test_kl_is_exactly_zero_at_the_optimum():
    assert ks.kl(0.0, 1.0) == 0.0 and kl_lv.kl(0.0, 0.0) == 0.0


@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-6), (np.float64, 4e-15)])
@pytest.mark.parametrize("offset", [1e-4, -1e-4, 3e-3, 0.2])
def test_near_the_optimum_both_dtypes_keep_relative_accuracy(dtype, tol, offset):
    sigma = np.asarray(1 + offset, dtype=dtype)
    value = ks.kl(np.zeros((), dtype), sigma)
    assert value.dtype == dtype
    assert rel_err(value, ref.kl_mpmath(0, float(sigma))) < tol
    logvar = np.asarray(2 * offset, dtype=dtype)
    exact = ref.kl_mpmath_logvar(0, float(logvar))
    assert rel_err(kl_lv.kl(np.zeros((), dtype), logvar), exact) < tol
    d_sigma = ks.kl_grad(np.zeros((), dtype), sigma)[1]
    with mpmath.workdps(50):
        s = mpmath.mpf(float(sigma))
        assert rel_err(d_sigma, s - 1 / s) < tol


def test_the_naive_formula_would_cancel_in_float32():
    """Why the arrangement matters: typed in naively, float32 loses every digit."""
    sigma = np.float32(1 + 1e-4)
    naive = np.float32(0.5) * (sigma**2 - np.log(sigma**2) - np.float32(1))
    exact = ref.kl_mpmath(0, float(sigma))
    assert rel_err(naive, exact) > 0.01
    assert rel_err(ks.kl(np.float32(0), sigma), exact) < 2e-6


@pytest.mark.parametrize("mu, sigma", [(0.3, 0.7), (-1.2, 2.5), (0.0, 1.0 + 1e-3)])
def test_kl_grad_matches_central_differences(mu, sigma):
    h = 1e-6
    d_mu, d_sigma = ks.kl_grad(mu, sigma)
    fd_mu = (ref.kl_mpmath(mu + h, sigma) - ref.kl_mpmath(mu - h, sigma)) / (2 * h)
    fd_sigma = (ref.kl_mpmath(mu, sigma + h) - ref.kl_mpmath(mu, sigma - h)) / (2 * h)
    assert abs(d_mu - float(fd_mu)) < 1e-9 and abs(d_sigma - float(fd_sigma)) < 1e-9
    np.testing.assert_allclose((d_mu, d_sigma), ref.kl_grad_hand(mu, sigma), rtol=1e-12)


@pytest.mark.parametrize("mu, logvar", [(0.3, -0.7), (-1.2, 1.8), (0.0, 2e-3)])
def test_logvar_grad_matches_central_differences(mu, logvar):
    h = 1e-6
    d_mu, d_logvar = kl_lv.kl_grad(mu, logvar)
    fd_mu = (ref.kl_mpmath_logvar(mu + h, logvar) - ref.kl_mpmath_logvar(mu - h, logvar)) / (2 * h)
    fd_lv = (ref.kl_mpmath_logvar(mu, logvar + h) - ref.kl_mpmath_logvar(mu, logvar - h)) / (2 * h)
    assert abs(d_mu - float(fd_mu)) < 1e-9 and abs(d_logvar - float(fd_lv)) < 1e-9


def test_parameterizations_agree_through_logvar_is_two_log_sigma(rng):
    mu = rng.normal(size=50)
    sigma = np.exp(rng.normal(size=50))
    logvar = 2 * np.log(sigma)
    np.testing.assert_allclose(kl_lv.kl(mu, logvar), ks.kl(mu, sigma), rtol=1e-13)
    d_mu_s, d_sigma = ks.kl_grad(mu, sigma)
    d_mu_l, d_logvar = kl_lv.kl_grad(mu, logvar)
    np.testing.assert_allclose(d_mu_l, d_mu_s, rtol=1e-15)
    np.testing.assert_allclose(d_logvar, d_sigma * sigma / 2, rtol=1e-13)  # chain rule
    eps = rng.normal(size=(7, 50))
    for f_s, f_l in ((ks.kl_grad_reparam, kl_lv.kl_grad_reparam),
                     (ks.kl_grad_stl, kl_lv.kl_grad_stl)):
        a_mu, a_sigma = f_s(mu, sigma, eps)
        b_mu, b_logvar = f_l(mu, logvar, eps)
        np.testing.assert_allclose(b_mu, a_mu, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(b_logvar, a_sigma * sigma / 2, rtol=1e-11, atol=1e-12)


def test_reparam_matches_the_hand_written_backward_pass(rng):
    mu, sigma, eps = rng.normal(size=10), np.exp(rng.normal(size=10)), rng.normal(size=(3, 10))
    for got, want in zip(ks.kl_grad_reparam(mu, sigma, eps),
                         ref.reparam_hand(mu, sigma, eps), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-13)


def _derived_variance(param: str, name: str):
    p = PARAMETERIZATIONS[param]
    expr = derive_gradient_estimators(p).result(name)
    return sp.lambdify((sp.Symbol("mu", real=True), p.scale), expr, "numpy")


@pytest.mark.parametrize("module, param, scale", [(ks, "sigma", 0.8), (kl_lv, "logvar", -0.4)])
@pytest.mark.parametrize("estimator, prefix", [("kl_grad_reparam", ""), ("kl_grad_stl", "stl_")])
def test_estimators_are_unbiased_with_the_derived_variances(module, param, scale, estimator,
                                                            prefix):
    mu, n = 0.7, 400_000
    eps = np.random.default_rng(2024).standard_normal(n)
    grads = getattr(module, estimator)(mu, scale, eps)
    exact = module.kl_grad(mu, scale)
    for g, e, name in zip(grads, exact, ("mu", param), strict=True):
        var = float(_derived_variance(param, f"var_{prefix}{name}")(mu, scale))
        se = np.sqrt(var / n)
        assert abs(g.mean() - e) < 5 * se, (name, g.mean(), e, se)
        # sample variance against the derived one (its own standard error ~ sqrt(2/n) var)
        assert abs(g.var() - var) < 0.02 * var + 1e-12, (name, g.var(), var)


def test_stl_is_exactly_zero_at_the_optimum(rng):
    eps = rng.normal(size=1000)
    for arr in ks.kl_grad_stl(0.0, 1.0, eps) + kl_lv.kl_grad_stl(0.0, 0.0, eps):
        assert np.all(arr == 0.0)


def test_eps_broadcasts_with_a_sample_axis(rng):
    mu, sigma = rng.normal(size=(4, 3)), np.exp(rng.normal(size=(4, 3)))
    d_mu, d_sigma = ks.kl_grad_reparam(mu, sigma, rng.normal(size=(8, 4, 3)))
    assert d_mu.shape == d_sigma.shape == (8, 4, 3)
    g_mu, g_sigma = ks.kl_grad(mu, 1.5)
    assert g_mu.shape == g_sigma.shape == (4, 3)


@pytest.mark.parametrize("module", [ks, kl_lv])
def test_float32_stays_float32(module):
    mu = np.zeros(3, np.float32)
    scale = np.full(3, 1.0 if module is ks else 0.0, np.float32)
    eps = np.ones((2, 3), np.float32)
    outs = [module.kl(mu, scale), *module.kl_grad(mu, scale),
            *module.kl_grad_reparam(mu, scale, eps), *module.kl_grad_stl(mu, scale, eps)]
    assert all(o.dtype == np.float32 for o in outs)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"sigma: expected every entry > 0, got a minimum of 0"):
        ks.kl(0.0, np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"sigma: expected every entry > 0"):
        ks.kl_grad(0.0, -1.0)
    with pytest.raises(ValueError, match=r"mu: expected finite values"):
        ks.kl(np.nan, 1.0)
    with pytest.raises(ValueError, match=r"sigma: expected finite values"):
        ks.kl(0.0, np.inf)
    with pytest.raises(ValueError, match=r"logvar: expected finite values"):
        kl_lv.kl(0.0, -np.inf)
    with pytest.raises(ValueError, match=r"eps: expected finite values"):
        ks.kl_grad_stl(0.0, 1.0, [0.0, np.nan])
    with pytest.raises(ValueError, match=r"mu, sigma, eps: shapes do not broadcast"):
        ks.kl_grad_reparam(np.zeros(3), 1.0, np.zeros(4))
    with pytest.raises(TypeError, match=r"mu: expected a real numeric array"):
        ks.kl(np.array(["a"]), 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finiteness_check_is_exact_where_a_sum_of_squares_overflows(dtype):
    # The check's fast path is one dot product; huge finite entries overflow it and must
    # still pass, and an inf or NaN among huge entries must still be caught.
    big = np.finfo(dtype).max / 4
    mu = np.array([big, -big, 1.0], dtype)
    d_mu, _ = ks.kl_grad(mu, np.ones(3, dtype))
    assert np.array_equal(d_mu, mu)
    for bad in (np.inf, -np.inf, np.nan):
        with pytest.raises(ValueError, match=r"mu: expected finite values"):
            ks.kl_grad(np.array([big, bad, -big], dtype), np.ones(3, dtype))
    with pytest.raises(ValueError, match=r"sigma: expected finite values"):
        ks.kl_grad(mu, np.array([big, np.inf, 1.0], dtype))
    # integers are finite by construction: no check, no error
    assert ks.kl_grad(np.arange(3), np.arange(1, 4))[0].dtype == np.float64


def test_a_new_parameterization_costs_two_lines(rng):
    from codegen.numpy_backend import render_numpy
    from derive.gaussian_kl import Parameterization
    from derive.kernels import gaussian_kl_module

    rho = sp.Symbol("log_sigma", real=True)
    p = Parameterization("log_sigma", "gaussian_kl_logsigma", rho, sp.exp(rho), "log sigma")
    namespace: dict = {}
    exec(render_numpy(gaussian_kl_module(p), "test"), namespace)  # noqa: S102
    mu, log_sigma = rng.normal(size=20), rng.normal(size=20)
    sigma = np.exp(log_sigma)
    np.testing.assert_allclose(namespace["kl"](mu, log_sigma), ks.kl(mu, sigma), rtol=1e-13)
    d_mu, d_rho = namespace["kl_grad"](mu, log_sigma)
    np.testing.assert_allclose(d_rho, ref.kl_grad_hand(mu, sigma)[1] * sigma, rtol=1e-12)


def _estimates_mp(mu, sigma, eps):
    """Both estimators in 50 digits, straight from PROBLEM.md's backward pass."""
    with mpmath.workdps(50):
        m, s, e = (mpmath.mpf(float(v)) for v in (mu, sigma, eps))
        return {"reparam": (m + s * e, m * e + s * e**2 - 1 / s),
                "stl": (m + (s - 1 / s) * e, m * e + (s - 1 / s) * e**2)}


@pytest.mark.parametrize("dtype, tol", [(np.float32, 3e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("offset", [1e-7, 1e-4, -1e-3])
def test_estimators_keep_relative_accuracy_near_the_optimum(dtype, tol, offset):
    mu, eps = dtype(0.25), dtype(0.8)
    sigma = dtype(1 + offset)
    logvar = dtype(2 * offset)
    sigma_of_logvar = mpmath.exp(mpmath.mpf(float(logvar)) / 2)
    for module, scale, s_exact, chain in ((ks, sigma, float(sigma), 1),
                                          (kl_lv, logvar, sigma_of_logvar, None)):
        exact = _estimates_mp(mu, s_exact, eps)
        for name, fn in (("reparam", module.kl_grad_reparam), ("stl", module.kl_grad_stl)):
            d_mu, d_scale = fn(mu, scale, eps)
            assert d_mu.dtype == dtype
            want_mu, want_sigma = exact[name]
            want_scale = want_sigma if chain else want_sigma * mpmath.mpf(s_exact) / 2
            assert rel_err(d_mu, want_mu) < tol, (module.__name__, name, "mu")
            assert rel_err(d_scale, want_scale) < tol, (module.__name__, name, "scale")
