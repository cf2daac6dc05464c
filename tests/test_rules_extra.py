"""The rewrites of derive/rules_extra.py: each rewrites a sample into a checked identity,
and the same rewrite made wrong is refused by the step check."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from sympy.codegen.cfunctions import expm1

from derive import search
from derive.derivation import StepCheckError
from derive.nodes import cbrt
from derive.rules_extra import EXTRA_RULES, _two_product, _two_sum

x = sp.Symbol("x", positive=True)
u = sp.Symbol("u", real=True)
N = sp.Symbol("N", positive=True)

#: rule name -> an expression it rewrites
SAMPLES = {
    "cube root": 1 / (x ** sp.Rational(2, 3) + x ** sp.Rational(1, 3) + 1),
    "x log x difference": (N + 1) * sp.log(N + 1) - N * sp.log(N) - 1,
    "log of a ratio": sp.log((1 - u) / (1 + u)),
    "power difference": (x + 1) ** sp.Rational(1, 3) - x ** sp.Rational(1, 3),
    "root of exp": sp.sqrt(sp.exp(u) + 1),
    "difference of squares": x**2 / 2 - sp.log(x) - sp.Rational(1, 2),
    "pair first": x**2 / 2 - sp.log(x) + x,
    "exp of an exact product": expm1(u * x) + sp.exp(N * (u + x)),
    "expm1 ratio": u * expm1((x + N) * u) / (expm1(x * u) * expm1(N * u)),
    "over expm1 of a product": u / expm1(x * u),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_rule_rewrites_into_a_checked_identity_and_a_wrong_one_is_refused(name):
    (fn, reason, notes), = [(f, r, n) for n_, f, r, n in EXTRA_RULES if n_ == name]
    before = SAMPLES[name]
    after = fn(before)
    if isinstance(after, tuple):  # one alternative per place: the last is checked here
        after = after[-1]
    assert after != before
    search._check(before, search.Candidate(after, reason, notes))
    wrong = after * (1 + sp.Rational(1, 1000))
    with pytest.raises(StepCheckError):
        search._check(before, search.Candidate(wrong, reason, notes))


def test_cbrt_is_the_real_cube_root_and_prints_as_cbrt():
    from codegen.numpy_backend import KernelPrinter

    assert float(cbrt(-8).evalf(20)) == -2.0
    assert KernelPrinter().doprint(cbrt(x)) == "numpy.cbrt(x)"
    found = search.arrange("cbrt(x) - 2", ["x in [-10, 10]"], samples=100)
    assert found.after.max_ulp <= 4


def test_two_product_and_two_sum_are_exact_in_float64():
    """Dekker's TwoProduct and Knuth's TwoSum, printed and evaluated in float64: the parts
    add up to the exact product and sum (checked in rationals); and, made wrong (the
    splitter 2**40 + 1 in place of 2**27 + 1), the product's parts are not exact."""
    from fractions import Fraction

    a, b = sp.symbols("a b", real=True)
    rng = np.random.default_rng(7)
    av = rng.uniform(-1, 1, 200) * 10.0 ** rng.integers(-100, 100, 200)
    bv = rng.uniform(-1, 1, 200) * 10.0 ** rng.integers(-100, 100, 200)
    p, q = sp.lambdify([a, b], list(_two_product(a, b)))(av, bv)
    s, r = sp.lambdify([a, b], list(_two_sum(a, b)))(av, bv)
    for k in range(200):
        assert Fraction(p[k]) + Fraction(q[k]) == Fraction(av[k]) * Fraction(bv[k])
        assert Fraction(s[k]) + Fraction(r[k]) == Fraction(av[k]) + Fraction(bv[k])
    import derive.rules_extra as rx

    old = rx._SPLITTER
    try:
        rx._SPLITTER = sp.Integer(2**40 + 1)
        p, q = sp.lambdify([a, b], list(_two_product(a, b)))(av, bv)
    finally:
        rx._SPLITTER = old
    assert any(Fraction(p[k]) + Fraction(q[k]) != Fraction(av[k]) * Fraction(bv[k])
               for k in range(200))


def test_a_series_around_the_point_the_worst_errors_crowd_at():
    """x**2/2 - log(x) - 1/2 cancels near x = 1: the search's series candidate is in powers
    of x - 1 (not of x), brings the points near 1 within 2 ulp, and is checked as a series; the
    same series with one coefficient wrong is refused."""
    xs = sp.Symbol("x", positive=True)
    expr = xs**2 / 2 - sp.log(xs) - sp.Rational(1, 2)
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(0.5, 2, 60), 1 + rng.uniform(-1e-3, 1e-3, 60)])[:, None]
    scorer = search._Scorer([xs], pts, search.reference(expr, [xs], pts))
    m, err = scorer.measure(expr)
    assert m.max_ulp > 100
    cands = list(search._series_candidates(expr, err, scorer))
    assert cands and all(c.notes[1] == xs - 1 for c in cands)
    best = min(cands, key=lambda c: scorer.measure(c.expr)[0].max_ulp)
    got, best_err = scorer.measure(best.expr)
    # within 2 ulp where it cancels (the piece beyond, as typed, is for later rounds)
    assert best_err[np.abs(scorer.columns[0] - 1) < 1e-3].max() <= 2 < m.max_ulp / 50
    search._check(expr, best)
    wrong = search.Candidate(best.expr, best.reason, best.notes,
                             series=best.series + (xs - 1) ** 5 / 1000)
    with pytest.raises(StepCheckError):
        search._check(expr, wrong)
