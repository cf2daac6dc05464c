r"""Derivation 2.3n: the KL and its exact gradient arranged for floating point.

Each rewrite is proved equal by SymPy (``expm1``, factoring, and a Taylor series where
``expm1(x) - x`` would cancel: :class:`expm1mx`).

Example:
    >>> expm1mx(x).rewrite(sp.exp)
    -x + exp(x) - 1
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from mpmath.libmp import prec_to_dps
from sympy.codegen.cfunctions import expm1
from sympy.codegen.rewriting import expm1_opt, optimize

from derive.api import Derivation, Result, Step

from .chain import (
    _chain_given,
    _through_sigma,
    derive_chain_factors,
    dlogsigma,
    dsigma,
    is_log_linear,
)
from .closed_form import derive_kl
from .parameterizations import (
    _PER_DIMENSION,
    PARAMETERIZATIONS,
    KL_i,
    Parameterization,
    _a,
    mu,
    sigma,
    x,
    x_extended,
)
from .rewrites import _stabilize, scaled_squares

__all__ = ["expm1mx", "derive_stable_kl", "SERIES_RADIUS", "SERIES_ORDER", "DIRECT_RADIUS",
           "OVERFLOW_RADIUS", "NO_CANCELLATION"]

#: Where the Taylor series of expm1(x) - x replaces the cancelling difference, and its order.
SERIES_RADIUS = sp.Rational(1, 2)
SERIES_ORDER = 16
#: From this x up, exp(x) is taken from sigma (halved, then squared), not from
#: exp(log sigma**2), whose relative error grows like x * eps, and expm1(x), which overflows
#: where the KL is still finite (tests/test_gaussian_kl.py measures each piece).
DIRECT_RADIUS = 2
#: Where x is the user's parameter itself (logvar), exp(x) is as accurate as it gets: the
#: direct piece serves only from here, just below where float32's expm1 overflows (88.7).
OVERFLOW_RADIUS = 88
#: Below -NO_CANCELLATION, expm1(x) is within 0.14 of -1 and -x >= 2: nothing cancels.
NO_CANCELLATION = 2


class expm1mx(sp.Function):  # noqa: N801 - SymPy function names are lower case
    """``expm1mx(x) = exp(x) - 1 - x``, the part of ``exp(x)`` after its tangent at 0."""

    nargs = 1
    is_real = True

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sp.exp(self.args[0]) - 1

    def _eval_rewrite_as_exp(self, arg: sp.Expr, **kwargs: object) -> sp.Expr:
        return sp.exp(arg) - 1 - arg

    def _eval_evalf(self, prec: int) -> sp.Expr:
        """A number at a number (so that a step check can refuse a wrong step numerically)."""
        arg = self.args[0]
        if not arg.is_number:
            return None
        return (sp.exp(arg) - 1 - arg).evalf(prec_to_dps(prec) + 10)

    def _eval_rewrite_as_Piecewise(self, arg: sp.Expr, **kwargs: object) -> sp.Expr:
        """The evaluable form: a Taylor polynomial near 0, ``expm1(x) - x`` elsewhere."""
        return sp.Piecewise((sp.horner(_taylor(arg)), sp.Abs(arg) < SERIES_RADIUS),
                            (optimize(sp.exp(arg) - 1 - arg, [expm1_opt]), True))


def _taylor(arg: sp.Expr) -> sp.Expr:
    """The Taylor polynomial of ``exp(x) - 1 - x`` at 0, up to ``x**(SERIES_ORDER - 1)``."""
    return sp.series(sp.exp(x) - 1 - x, x, 0, SERIES_ORDER).removeO().xreplace({x: arg})


@cache
def derive_stable_kl(p: Parameterization) -> Derivation:
    """2.3n: the KL and its exact gradient arranged for floating point, proved equal."""
    kl = derive_kl(p).result("kl")
    s = p.scale
    log_var = sp.simplify(sp.expand_log(sp.log(p.sigma**2), force=True))  # x = log sigma^2
    # the part of the KL that is not a function of x (mu**2/2): no need to solve for s
    quadratic = sp.simplify(kl - (p.sigma**2 - 1 - log_var) / 2)
    stable = (quadratic + expm1mx(x) / 2).xreplace({x: log_var})
    grad = {name: sp.diff(kl, var) for name, var in (("mu", mu), (p.name, s))}
    log_linear = is_log_linear(p)
    sigma_value, x_value = p.sigma, log_var
    if not log_linear:  # sigma, x and the chain factors as 2.3c arranges them
        chain = derive_chain_factors(p)
        # sigma by name: the kernel computes it once, as 2.3c arranges it (a piecewise
        # value of its own, not one nested in a piece)
        sigma_value, x_value = sigma, chain.result("x")
    stable_grad = {name: _stabilize(g, p) for name, g in grad.items()}
    if not log_linear:
        d_kl_d_sigma = sp.diff(derive_kl(PARAMETERIZATIONS["sigma"]).result("kl"), sigma)
        stable_grad[p.name] = _through_sigma(d_kl_d_sigma)
    in_exp = quadratic + (sp.exp(x) - 1 - x) / 2
    # The pieces the kernel evaluates, each by x, each halved before it is formed.
    series = _taylor(x)
    middle = optimize(sp.exp(x) - 1 - x, [expm1_opt])
    # Where sigma is at hand (not the logvar module, where x is the input itself), exp(x) - 1
    # is (sigma - 1)(sigma + 1), so the piece is (t - x/2) + t**2/2 halved, t = sigma - 1: no
    # transcendental call beyond x's log. Where it cancels (1/2 <= sigma <= 2) t is exact and
    # so is t - x/2 (Sterbenz); the sum adds two nonnegative terms.
    # The square is halved before it is formed (scaled squares), so the piece overflows only
    # where the KL does: it serves every x from the series' interval up, and the kernel
    # has no direct piece to select (fewer conditions, counts and gathers per call).
    from_sigma = log_var != s
    if from_sigma:
        t = sp.UnevaluatedExpr(sigma_value - 1)
        middle = 2 * (sp.UnevaluatedExpr(t - x / 2) + scaled_squares(t**2 / 2))
    outer = sigma_value**2 - 1 - x  # exp(x) taken from sigma itself, squared after halving
    outer_half = scaled_squares(outer / 2)
    direct_from = OVERFLOW_RADIUS if log_var == s else DIRECT_RADIUS
    middle_region = (sp.Abs(x) >= SERIES_RADIUS if from_sigma
                     else sp.And(SERIES_RADIUS <= sp.Abs(x), x < direct_from))
    quadratic_half = scaled_squares(quadratic)
    steps = [
        Step(KL_i, kl, "the closed form of 2.3", given={KL_i: kl}),
        Step(kl, in_exp, "write {0} with {1}, so that tiny and huge scales stay in range",
             given={x: log_var}, notes=(sp.Eq(p.sigma**2, sp.exp(x)), sp.Eq(x, log_var))),
        Step(in_exp, quadratic + expm1mx(x) / 2,
             "name the part that cancels where {0} is near zero: {1}",
             notes=(x, sp.Eq(expm1mx(x), sp.exp(x) - 1 - x))),
        Step(expm1mx(x), series + sp.O(x**SERIES_ORDER),
             "where {0}, its Taylor series: no subtraction at all", notes=(
                 sp.Abs(x) < SERIES_RADIUS,)),
        Step(expm1mx(x), middle,
             "where {0}, the subtraction loses a few bits at most (none where {1})"
             + ("; from the standard deviation, {2}: no transcendental call beyond the "
                "logarithm, and where it cancels ({3}) {4} and its difference from {5} are "
                "exact; the square halved before it is formed, so that it overflows only "
                "where the KL does, and the piece serves every larger {6} (no piece of its "
                "own for large scales)" if from_sigma else ""),
             given={x: log_var, sigma: p.sigma} if from_sigma else (),
             notes=(middle_region, x <= -NO_CANCELLATION)
             + ((sp.Eq(sp.exp(x) - 1, sp.Mul(sigma - 1, sigma + 1, evaluate=False)),
                 sp.And(sp.Rational(1, 2) <= sigma, sigma <= 2), sigma - 1, x / 2, x)
                if from_sigma else ())),
    ] + ([] if from_sigma else [
        Step(expm1mx(x) / 2, outer_half,
             "where {0}, take the exponential from the standard deviation, halved before it "
             "is squared: computed from {1}, its relative error would grow with {1}, and "
             "squared first it would overflow where the KL is still finite",
             given={x: log_var, sigma: p.sigma}, notes=(x >= direct_from, x)),
    ]) + [
        Step(quadratic, quadratic_half,
             "halve before squaring: exact in binary floating point, and no overflow where "
             "the KL is finite"),
        Step(sp.Limit(1 / expm1mx(x), x, sp.oo), 0,
             "{0} grows without bound: where {1} is infinite (the finiteness check off), the "
             "value is infinite, not a difference of infinities", notes=(expm1mx(x), x)),
    ]
    for name, g in grad.items():
        var = mu if name == "mu" else s
        steps.append(Step(sp.Derivative(KL_i, var), g, "differentiate with respect to {0}",
                          given={KL_i: kl}, notes=(var,)))
        if name == p.name and not log_linear:
            steps.append(Step(
                g, stable_grad[name],
                "the chain rule through {0}: its derivative with respect to {0} times {1}; "
                "where {2}, written with {3} instead, so that nothing is an infinity times "
                "0 where {0} underflows (each factor as 2.3c arranges it)",
                given=_chain_given(p), notes=(sigma, dsigma, sigma < 1,
                                              sp.Eq(dsigma, sigma * dlogsigma))))
        elif stable_grad[name] != g:
            uses_expm1 = stable_grad[name].has(expm1)
            steps.append(Step(
                g, stable_grad[name],
                "factor; keep the factor that vanishes at the optimum apart, computed exactly"
                + (", with {0}" if uses_expm1 else ""),
                notes=(sp.Eq(sp.exp(_a) - 1, optimize(sp.exp(_a) - 1, [expm1_opt])),)
                if uses_expm1 else ()))
    for name, g in stable_grad.items():
        shifted = _shifted_expm1(g, s)
        if shifted != g:
            steps.append(Step(
                g, shifted,
                "where {0}, {1} is formed from {2} shifted, {3}: {4} overflows from {5} "
                "(float32: {6}) where the gradient is finite up to {7} (float32: {8}); below "
                "{9}, {4} keeps every digit near the optimum, so it is evaluated in two pieces",
                notes=(s >= OVERFLOW_RADIUS, sp.exp(s), s,
                       sp.Eq(sp.exp(s), sp.UnevaluatedExpr(expm1(s - OVERFLOW_RADIUS) + 1)
                             * sp.exp(OVERFLOW_RADIUS), evaluate=False),
                       expm1(s), s > sp.Float("709.78", 5), s > sp.Float("88.72", 4),
                       sp.Float("710.47", 5), sp.Float("89.41", 4), OVERFLOW_RADIUS)))
            stable_grad[name] = shifted
    # The expm1 piece comes last: the NumPy kernel evaluates the last piece everywhere and
    # each other piece only where it holds, and the expm1 piece holds for most scales. Where
    # the direct or the infinite piece holds, expm1 may overflow (or form inf - inf); those
    # entries are overwritten (code generation finds so, by a check, and does not warn).
    pieces = [(sp.oo, sp.Eq(x_extended, sp.oo)),
              (sp.horner(series / 2), sp.Abs(x) < SERIES_RADIUS)]
    if not from_sigma:
        pieces.append((outer_half, x >= direct_from))
    evaluable = quadratic_half + sp.Piecewise(*pieces, (middle / 2, True))
    bound = _series_error()
    results = [
        Result("kl_stable", stable, "the KL arranged for floating point", KL_i),
        Result("x", x_value, "the log-variance the arrangement uses", x),
        Result("kl_evaluable", evaluable,
               "the same, written out piece by piece for evaluation in floating point",
               typeset=False),
        Result("series_relative_error", bound,
               "the relative truncation error of the series at the ends of its interval, "
               "where it is largest, evaluated by SymPy"),
    ] + [Result(f"grad_{name}", g, "the gradient arranged for floating point",
                sp.Derivative(KL_i, mu if name == "mu" else s))
         for name, g in stable_grad.items()]
    return Derivation(
        "2.3n", "The KL term and its gradient in floating point",
        "Arrange the KL divergence and its gradient so that float32 and float64 keep their "
        "relative accuracy for every positive scale, near the optimum included.",
        steps, results,
        conclusion="Each rewrite is an identity SymPy proves; only the series is an "
                   "approximation, with relative error at most {series_relative_error}.",
        variant=p.name, latex_names=_PER_DIMENSION,
    )


def _shifted_expm1(expr: sp.Expr, s: sp.Symbol) -> sp.Expr:
    """``c expm1(s)`` (``s`` the parameter itself) in two pieces: as it is below
    :data:`OVERFLOW_RADIUS` (88), as ``(c exp(s - 88)) exp(88) - c`` from there up, where
    ``expm1(s)`` overflows before ``c expm1(s)`` does (``exp(s - 88)`` written
    ``expm1(s - 88) + 1``: the kernels take every ``exp(s/2)`` from sigma, computed once,
    which ``kl_grad`` does not otherwise need); any other ``expr`` as it is.

    Example:
        >>> logvar = sp.Symbol("logvar", real=True)
        >>> [piece for piece, _ in _shifted_expm1(expm1(logvar) / 2, logvar).args]
        [expm1(logvar)/2, -1/2 + exp(88)*(expm1(logvar - 88)/2 + 1/2)]
    """
    c = sp.simplify(expr / expm1(s))
    if not expr.has(expm1(s)) or c.free_symbols or not c.is_number:
        return expr
    shift = OVERFLOW_RADIUS  # s - shift is exact for s >= shift (Sterbenz, then integers)
    large = sp.UnevaluatedExpr(c * (expm1(s - shift) + 1)) * sp.exp(shift) - c
    return sp.Piecewise((expr, s < OVERFLOW_RADIUS), (large, True))


def _series_error() -> sp.Float:
    """The relative error of the truncated series at x = +-radius, to 30 digits.

    The remainder's terms grow with |x| faster than expm1mx does, so the ends are the worst.
    """
    exact = sp.exp(x) - 1 - x
    rel = sp.Abs((exact - _taylor(x)) / exact)
    worst = max(rel.xreplace({x: v}).evalf(30) for v in (-SERIES_RADIUS, SERIES_RADIUS))
    return sp.Float(worst, 3)


