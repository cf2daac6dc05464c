"""The floating-point arrangement: each rewrite is a checked step, and a wrong one fails."""

from __future__ import annotations

import pytest
import sympy as sp
from sympy.codegen.cfunctions import log1p

from derive.arrangement import (
    KERNEL_REWRITES,
    LOG_REWRITES,
    SCALED_SQUARES,
    Rewrite,
    arrange,
    expm1_as_sinh,
    vanishing_factors_apart,
)
from derive.derivation import Derivation, StepCheckError, check_step
from derive.nodes import sigmoid, softplus
from derive.vocabulary import G, x1

u = sp.Symbol("u", real=True)


def test_each_rewrite_is_a_step_that_checks():
    expr = sp.log(1 + sp.exp(G)) * x1 + sp.exp(G) - 1
    arranged, steps = arrange(expr, KERNEL_REWRITES)
    # the product with the softplus in two pieces: through exp(G) where the softplus is
    # subnormal (its product with x1 need not be), as derived elsewhere
    (pieces,) = arranged.atoms(sp.Piecewise)
    assert arranged == pieces + sp.codegen.cfunctions.expm1(G)
    assert pieces.args[-1] == (softplus(G) * x1, True)
    assert pieces.args[0][1] == (G < -708)
    Derivation("t", "t", "t", steps, [])  # builds: every step checked


def test_a_wrong_rewrite_fails_its_check():
    wrong = Rewrite("wrong softplus", "{0}", (sp.Eq(sp.log(1 + sp.exp(u)), softplus(-u)),),
                    lambda e: isinstance(e, sp.log), lambda e: softplus(-e.args[0].args[1]))
    _, steps = arrange(sp.log(1 + sp.exp(G)), [wrong])
    with pytest.raises(StepCheckError):
        Derivation("t", "t", "t", steps, [])


def test_a_wrong_piece_fails_its_check():
    wrong = Rewrite("wrong pieces", "pieces", (), lambda e: isinstance(e, softplus),
                    lambda e: sp.Piecewise((e.args[0], e.args[0] > 0), (e, True)))
    _, steps = arrange(softplus(G), [wrong])
    with pytest.raises(StepCheckError):
        Derivation("t", "t", "t", steps, [])


_SIGMA = sp.Symbol("sigma", positive=True)
_LOGVAR = sp.Symbol("logvar", real=True)


@pytest.mark.parametrize("rule, expr", [
    (SCALED_SQUARES, _SIGMA**2 / 2 - _LOGVAR / 2 + sp.exp(_LOGVAR) / 2),
    (vanishing_factors_apart(_SIGMA, [1]), _SIGMA - 1 / _SIGMA),
    (vanishing_factors_apart(_LOGVAR, [0]), (sp.exp(_LOGVAR) - 1) * (sp.exp(_LOGVAR) + 2)),
    (expm1_as_sinh(sp.exp(_LOGVAR / 2)), sp.codegen.cfunctions.expm1(_LOGVAR) * _LOGVAR),
], ids=["scaled squares", "vanishing factors (sigma)", "vanishing factors (logvar)",
        "expm1 as sinh"])
def test_the_rules_that_take_data_are_checked_steps(rule, expr):
    """The Gaussian KL's former hand-written rewrites, as rules any material applies: each
    changes its example, and the step it gives (with its identity) checks."""
    arranged, steps = arrange(expr, [rule])
    assert arranged != expr and len(steps) == 1
    Derivation("t", "t", "t", steps, [])


@pytest.mark.parametrize("wrong", [
    # halve, then square, but forget the factor 4
    Rewrite("wrong squares", "{0}", SCALED_SQUARES.notes,
            whole=lambda e: SCALED_SQUARES(e) / 4),
    # the sinh form without its factor 2 (the identity it shows is right; the step is not)
    Rewrite("wrong sinh", "{0} {1}", expm1_as_sinh(sp.exp(_LOGVAR / 2)).notes,
            lambda e: isinstance(e, sp.codegen.cfunctions.expm1),
            lambda e: sp.exp(e.args[0] / 2) * sp.sinh(e.args[0] / 2)),
], ids=["squares", "sinh"])
def test_a_wrong_rule_that_takes_data_fails_its_check(wrong):
    expr = sp.codegen.cfunctions.expm1(_LOGVAR) + _SIGMA**2
    _, steps = arrange(expr, [wrong])
    assert steps
    with pytest.raises(StepCheckError):
        Derivation("t", "t", "t", steps, [])


def test_the_new_nodes_print_in_every_printer():
    from codegen.latex import latex
    from codegen.numpy_backend import KernelPrinter
    from derive.nodes import sigmoid
    from derive.text import text

    expr = softplus(-u) + sigmoid(u)
    printed = KernelPrinter().doprint(expr)
    assert "numpy.logaddexp(0, -u)" in printed and "numpy.exp(-numpy.logaddexp(0, -u))" in printed

    class XpPrinter(KernelPrinter):  # another array module inherits the methods
        _module = "xp"

    assert "xp.logaddexp(0, -u)" in XpPrinter().doprint(expr)
    assert r"\operatorname{softplus}\left(- u\right)" in latex(expr)
    assert r"\operatorname{sigmoid}\left(u\right)" in latex(expr)
    assert text(expr) == "sigmoid(u) + softplus(-u)"


def test_sigmoid_printed_alone_does_not_overflow():
    import numpy as np

    from codegen.numpy_backend import KernelPrinter
    from derive.nodes import sigmoid

    code = KernelPrinter().doprint(sigmoid(u))
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = eval(code, {"numpy": np, "u": np.array([-800.0, 0.0, 800.0])})  # noqa: S307
    np.testing.assert_allclose(value, [0.0, 0.5, 1.0], atol=1e-300)


@pytest.mark.parametrize("expr, values", [
    # log1p(x**2) overflowed past |x| = 1.3e154 (the log-determinant of x1 + x1**3/3 + F)
    (sp.log(1 + x1**2), [0.0, 1e-200, 0.5, -1.0, 3.0, -1.3e154, 2e154, 1e300, -1.7e308]),
    # log(cosh(x)) overflowed past |x| = 710 (of sinh(x1)*exp(G) + F), and lost every digit
    # near 0
    (sp.log(sp.cosh(x1)), [0.0, 1e-200, -1e-8, 0.5, -19.9, 20.0, -710.0, 800.0, 1e300]),
    # sqrt(x**2 + 4) + x cancelled where x is large and negative (Cardano's real root)
    (sp.sqrt(x1**2 + 4) + x1, [0.0, 1e-8, -3.0, 5.0, -1e5, -1e10, -1e150]),
    # log(exp(x) + 1/1000) was log1p(1000 exp(x)) - log(1000): inf from x = 702.9 (the
    # log of the variance of sigma = exp(rho) + 1/1000; issue 23)
    # 1 - P/(P + R) cancelled where P/(P + R) is near 1: ((log sigma)' of exp(rho) + 1000
    # from rho = 0 up, 222 eps)
    (1 - 1000 * sp.exp(-x1) / (1 + 1000 * sp.exp(-x1)),
     [0.0, 1e-8, 0.5, 3.0, 6.9, 20.0, 700.0, 1e300]),
    (sp.log(sp.exp(x1) + sp.Rational(1, 1000)),
     [-800.0, -564.0, -20.0, -7.0, 0.0, 1e-8, 0.5, 5.0, 702.0, 703.0, 709.5, 710.0, 800.0,
      1e300]),
])
def test_the_arranged_expression_is_finite_and_accurate_out_to_float64s_range(expr, values):
    """Each rewrite is a checked step, and the kernel it gives is finite where the true value
    is, to a few ulp of mpmath, with no floating-point warning."""
    import mpmath
    import numpy as np

    from codegen.backends import render_numpy
    from derive.spec import Arg, Kernel, Module, Output

    arranged, steps = arrange(expr, KERNEL_REWRITES)
    assert steps
    Derivation("t", "t", "t", steps, [])  # builds: every step checked
    v = sp.Symbol("v", real=True)
    kernel = Kernel("f", (Arg("v", "elementwise", "the input"),),
                    (Output("y", arranged.xreplace({x1: v}), "the value"),), "The value.")
    namespace: dict = {}
    exec(render_numpy(Module("m", "t", "t", (kernel,), "test", "elementwise"), "test"),  # noqa: S102
         namespace)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = namespace["f"](np.array(values))
    exact = sp.lambdify(v, expr.xreplace({x1: v}), "mpmath")
    with mpmath.workdps(700):  # sqrt(x**2 + 4) + x at x = -1e150 cancels 300 digits
        want = [float(exact(mpmath.mpf(x))) for x in values]
    np.testing.assert_allclose(got, want, rtol=4e-16, atol=0)


@pytest.mark.parametrize("rewrite", list(dict.fromkeys(LOG_REWRITES + KERNEL_REWRITES)),
                         ids=lambda r: r.name)
def test_each_rewrite_made_wrong_fails_its_check(rewrite):
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
               sp.exp(entry("g")) * entry("a") + u,
               (sp.exp(-entry("g") - 2) + 1) * entry("a") + u,
               sp.sinh(sp.asinh(u) / 3) + u,
               sp.Piecewise((sp.exp(-sp.Abs(entry("g") + 2)), entry("g") < -2), (1, True))
               * entry("a") + u,
               sp.log(sp.Abs(1 + u * sp.tanh(u), evaluate=False), evaluate=False),
               sp.log(sp.exp(u) + sp.Rational(1, 1000)) + u,
               sigmoid(u) * sigmoid(-u) * (u + 2),
               (1 - 1000 * sp.exp(-u) / (1 + 1000 * sp.exp(-u))) * u,
               sp.exp(entry("g")) * sp.sinh(entry("a")) + u,
               sp.exp(-entry("g")) * sp.cosh(entry("a")) + u,
               softplus(entry("g")) * entry("a") + u, entry("a") / softplus(entry("g")) + u,
               sp.asinh(entry("a") * sp.exp(-entry("g"))) + u]
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


@pytest.mark.parametrize("name", ["product of an exponential and a hyperbolic function",
                                  "product with a softplus that underflows",
                                  "asinh of a product with an exponential"])
def test_a_far_piece_s_identity_made_wrong_fails_its_check(name):
    """The pieces beyond the sampled range (|v| >= 20, u < -708, log|a| + u > 690) are built
    by the same function as the rule's notes, which state them as identities for all
    arguments (or as series): each note checks, and each made wrong (twice its value) fails."""
    from derive.derivation import Step

    rule = next(r for r in KERNEL_REWRITES if r.name == name)
    check_step(Step(sp.Integer(1), sp.Integer(1), rule.reason, notes=rule.notes))
    identities = [k for k, note in enumerate(rule.notes) if isinstance(note, sp.Eq)]
    assert identities
    for k in identities:
        note = rule.notes[k]
        bad = list(rule.notes)
        bad[k] = sp.Eq(note.lhs, 2 * note.rhs.removeO() + (note.rhs.getO() or 0),
                       evaluate=False)
        with pytest.raises(StepCheckError):
            check_step(Step(sp.Integer(1), sp.Integer(1), rule.reason, notes=tuple(bad)))
