"""The KL references ``derive test`` and the parameterization tests compare kernels with,
against formulas typed by hand.

:func:`derive.selftest.kl_reference` and :func:`derive.selftest.pair_reference` are engine
code (mpmath on the closed form and its chain rule through ``sigma``): the user
parameterization tests and ``derive test --material`` take their true values from them, so
a wrong formula there would pass wrong kernels. Here their values are compared with the KL,
its gradient and the two single-sample estimators written out from PROBLEM.md for
``sigma = softplus(rho)`` and ``sigma = exp(rho)``, in mpmath; and a value typed wrong is
told apart.
"""

from __future__ import annotations

import itertools

import mpmath
import pytest
import sympy as sp

from derive.selftest import kl_reference, pair_reference

RHO = sp.Symbol("rho", real=True)
#: sigma(rho) in SymPy for the references, and sigma, d sigma/d rho typed in mpmath
SCALES = {
    "softplus": (sp.log(1 + sp.exp(RHO)), lambda r: mpmath.log1p(mpmath.exp(r)),
                 lambda r: 1 / (1 + mpmath.exp(-r))),
    "exp": (sp.exp(RHO), mpmath.exp, mpmath.exp),
}


def _close(got: object, want: object) -> bool:
    return abs(mpmath.mpf(got) - want) <= mpmath.mpf(10) ** -30 * (1 + abs(want))


def _by_hand(name: str, rho: float, mu: float, eps: float) -> tuple:
    """KL(N(mu, s^2) || N(0, 1)), its d/d rho, and the reparameterized and
    sticking-the-landing estimates of d/d rho from one noise sample eps (z = mu + s eps)."""
    _, s_of, ds_of = SCALES[name]
    s, ds = s_of(mpmath.mpf(rho)), ds_of(mpmath.mpf(rho))
    kl = mu**2 / 2 + (s**2 - 1) / 2 - mpmath.log(s)
    grad = (s - 1 / s) * ds
    z = mu + s * eps
    reparam = (-1 / s + z * eps) * ds  # d/ds [-log s - eps**2/2 + z**2/2] through z
    stl = (-eps / s + z) * eps * ds  # d log q/dz dz/ds - d log p/dz dz/ds
    return kl, grad, reparam, stl


@pytest.mark.parametrize("name", sorted(SCALES))
def test_kl_reference_against_the_kl_typed_by_hand(name):
    sigma = SCALES[name][0]
    with mpmath.workdps(60):
        for rho, mu, eps in itertools.product((-3.0, 0.5, 4.0), (0.0, 0.3), (0.7, -1.3)):
            got = kl_reference(RHO, sigma, rho, mu, eps)[:4]
            want = _by_hand(name, rho, mpmath.mpf(mu), mpmath.mpf(eps))
            for k, (g, w) in enumerate(zip(got, want, strict=True)):
                assert _close(g, w), (name, rho, mu, eps, k, g, w)


@pytest.mark.parametrize("name", sorted(SCALES))
def test_pair_reference_against_the_pair_kl_typed_by_hand(name):
    """KL(N(mu_q, sq^2) || N(mu_p, sp^2)) = log(sp/sq) + (sq^2 + (mu_q - mu_p)^2)/(2 sp^2)
    - 1/2, and its derivatives in rho_q, rho_p and mu_q."""
    sigma, s_of, ds_of = SCALES[name]
    with mpmath.workdps(60):
        for rq, rp, mu in itertools.product((-2.0, 0.5), (-1.0, 3.0), (0.0, 0.4)):
            m = mpmath.mpf(mu)
            sq, sp_ = s_of(mpmath.mpf(rq)), s_of(mpmath.mpf(rp))
            dq, dp = ds_of(mpmath.mpf(rq)), ds_of(mpmath.mpf(rp))
            kl = mpmath.log(sp_ / sq) + (sq**2 + m**2) / (2 * sp_**2) - mpmath.mpf(1) / 2
            want = (kl, (-1 / sq + sq / sp_**2) * dq,
                    (1 / sp_ - (sq**2 + m**2) / sp_**3) * dp, m / sp_**2)
            got = pair_reference(RHO, sigma, rq, rp, mu)[:4]
            for k, (g, w) in enumerate(zip(got, want, strict=True)):
                assert _close(g, w), (name, rq, rp, mu, k, g, w)


def test_a_wrong_hand_value_is_seen():
    """The comparison can fail: the gradient without its chain factor sigma' is told apart."""
    with mpmath.workdps(60):
        got = kl_reference(RHO, SCALES["softplus"][0], 0.5, 0.3, 0.7)[1]
        _, grad, _, _ = _by_hand("softplus", 0.5, mpmath.mpf("0.3"), mpmath.mpf("0.7"))
        assert not _close(got, grad / SCALES["softplus"][2](mpmath.mpf(0.5)))
