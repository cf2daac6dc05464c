"""Blocks nobody shipped, derived in memory as a user would add them: derivations, text,
rewrites and array-API bodies.

The blocks are ``USER_BLOCKS`` of :mod:`tests.test_coupling_accuracy`, which runs their
kernels on the mpmath grid with the shipped blocks'.
"""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace

import numpy as np
import pytest
import sympy as sp
from sympy.codegen.cfunctions import log1p

from codegen.latex import render_derivation
from derive.arrangement import KERNEL_REWRITES, LOG_REWRITES, Rewrite, arrange
from derive.coupling import (
    derive_arrangement,
    derive_determinant,
    derive_inverse,
    derive_jacobian,
)
from derive.coursework.kernels import coupling_module
from derive.derivation import StepCheckError, check_step
from derive.nodes import sigmoid, softplus
from derive.text import render_text
from derive.vocabulary import G, x1, x2

from .conftest import fingerprint, rendered_once
from .test_coupling_accuracy import USER_BLOCKS, X1, X2, S, block, kernels
from .test_coupling_text import _IDENTIFIER, _prose


@pytest.mark.parametrize("name", list(USER_BLOCKS))
def test_the_engine_derives_and_checks_every_step(name):
    b = block(name)
    for d in (derive_inverse(b), derive_jacobian(b), derive_determinant(b),
              derive_arrangement(b)):
        assert len(d.checks) == len(d.steps) > 0
        assert {c.method for c in d.checks} <= {"symbolic", "numeric", "explicit"}


@pytest.mark.parametrize("name", list(USER_BLOCKS))
def test_the_text_fits_the_block(name):
    b = block(name)
    det = derive_determinant(b)
    text = render_text(det)
    # the diagonal entries dy1/dx1, dy2/dx2 (the scales of an affine block)
    scales = [sp.diff(e, v) for e, v in zip(USER_BLOCKS[name], (x1, x2), strict=True)]
    assert ("product of exponentials" in text) == all(
        isinstance(a, sp.exp) for a in scales if a != 1)
    assert "prod_i(1)" not in text and "log|1|" not in text
    if "same sign" in det.conclusion:  # only where every term of the sum has one sign
        terms = [t.function for t in sp.Add.make_args(det.result("log_abs_det"))]
        assert all(t.is_positive for t in terms) or all(t.is_negative for t in terms)
    for d in (derive_inverse(b), derive_jacobian(b), det, derive_arrangement(b)):
        for line in _prose(render_derivation(d)):
            assert not _IDENTIFIER.search(line.replace(r"\intertext{", "")), line


def test_a_constant_log_det_of_mixed_signs_is_not_said_to_have_one_sign():
    verdict = derive_determinant(block("user_constants")).conclusion
    assert verdict.startswith("Never volume preserving") and "same sign" not in verdict


def test_the_tanh_derivative_is_arranged_without_cancellation():
    """1 - tanh(G)**2 rounds to 0 for |G| > 19; the kernel keeps its digits."""
    text = render_text(derive_arrangement(block("user_tanh")))
    assert "tanh(G_i(x2))**2" in text  # the derived entry is shown, then rewritten
    assert "1 - tanh" not in str(derive_arrangement(block("user_tanh")).result("dy1_dx2"))


@pytest.mark.parametrize("rewrite", list(dict.fromkeys(LOG_REWRITES + KERNEL_REWRITES)),
                         ids=lambda r: r.name)
def test_a_wrong_rewrite_fails_its_check(rewrite):
    """Each rewrite of 1.3 and 1.3n, made wrong (its result off by a factor 2), is caught."""
    u = sp.Symbol("u", real=True)
    k = sp.Symbol("k", integer=True)

    def entry(name: str) -> sp.Indexed:
        return sp.IndexedBase(name, real=True)[k]

    wrong = Rewrite(rewrite.name, rewrite.reason, rewrite.notes, rewrite.query,
                    lambda e: 2 * rewrite(e) if rewrite.whole else 2 * rewrite.value(e))
    samples = [sp.log(1 + sp.exp(u)) + 1, sp.exp(u) - 1 + u, sp.log(1 + u**2) + u,
               1 / (1 + sp.exp(-u)) + u, sp.exp(u) * (1 + sp.exp(-u)) + u,
               sp.log(sp.exp(u) + sp.exp(-u)) + u, (1 - sp.tanh(u)**2) * u,
               sp.log(softplus(u)), sigmoid(u) - sigmoid(u)**2 + u, sp.exp(-u) * sigmoid(u),
               sp.log(sigmoid(u)), sigmoid(u) + u, (sp.exp(u) - sp.exp(-u)) * u,
               (1 + sp.tanh(u)) * u, softplus(u) - u + 1,
               (1 + sp.exp(u)) / (2 + 3 * sp.exp(u)) * u,
               sp.log(sp.Abs(sp.exp(u) * u, evaluate=False), evaluate=False),
               sp.log(sp.Abs(u**3, evaluate=False), evaluate=False),
               sp.log(sp.exp(u), evaluate=False) + 1,
               sp.log(sp.Abs(1 + u**2, evaluate=False), evaluate=False),
               sp.log(sp.cosh(u)) + u, log1p(u**2) + u, sp.sqrt(u**2 + 4) / 2 + u / 2,
               sp.exp(entry("g")) * entry("a") + u]
    hit = False
    for expr in samples:
        _, steps = arrange(expr, [rewrite])
        if not steps:
            continue
        hit = True
        if rewrite.whole:
            _, bad = arrange(expr, [Rewrite(rewrite.name, rewrite.reason, rewrite.notes,
                                            whole=lambda e: 2 * rewrite(e))])
        else:
            _, bad = arrange(expr, [wrong])
        check_step(steps[0])
        with pytest.raises(StepCheckError):
            check_step(bad[0])
    if not hit:
        pytest.skip(f"no sample expression has what {rewrite.name!r} rewrites")


@cache
def array_api_kernels(name: str) -> SimpleNamespace:
    from codegen.backends import render_module

    source = rendered_once("coupling-xp", [name, *map(fingerprint, USER_BLOCKS[name])],
                           lambda: render_module(coupling_module(block(name)), "test"))
    namespace: dict = {}
    exec(source, namespace)  # noqa: S102
    return SimpleNamespace(**namespace)


@pytest.mark.parametrize("name", list(USER_BLOCKS))
def test_the_array_api_bodies_agree_with_numpy(name):
    """Through the array API (array_api_strict, which takes arrays only: a constant such as
    log(2) must not be printed as xp.log(2)), each kernel gives NumPy's values."""
    xp = pytest.importorskip("array_api_strict")
    m, a = kernels(name), array_api_kernels(name)
    for g in (-40.0, 0.0, 1.0, 40.0):
        def fg(x, v=g):
            return x * 0 + v

        def f(x):
            return x * 0 + 0.75

        args = [xp.asarray(v) for v in (X1, X2, S)]
        for kernel in ("forward", "log_det_jacobian"):
            want = getattr(m, kernel)(X1, X2, S, f, fg)
            got = getattr(a, kernel)(*args, f, fg)
            for w, v in zip(want if isinstance(want, tuple) else (want,),
                            got if isinstance(got, tuple) else (got,), strict=True):
                np.testing.assert_allclose(np.asarray(v), w, rtol=1e-13, atol=1e-300)


def test_terms_of_one_sign_vanish_each():
    """log(1 + G_i**2) >= 0: the sum is 0 exactly where every G_i is, and the text says so."""
    det = derive_determinant(block("user_one_plus_square"))
    assert det.result("volume_condition") == sp.Eq(G, 0)
    assert "every component" in det.conclusion
