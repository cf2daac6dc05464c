"""The rewrites of derive/rules_extra.py: each rewrites a sample into a checked identity,
and the same rewrite made wrong is refused by the step check."""

from __future__ import annotations

import pytest
import sympy as sp

from derive import search
from derive.derivation import StepCheckError
from derive.nodes import cbrt
from derive.rules_extra import EXTRA_RULES

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
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_rule_rewrites_into_a_checked_identity_and_a_wrong_one_is_refused(name):
    (fn, reason, notes), = [(f, r, n) for n_, f, r, n in EXTRA_RULES if n_ == name]
    before = SAMPLES[name]
    after = fn(before)
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
