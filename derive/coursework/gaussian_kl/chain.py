r"""Derivation 2.3c: any scale parameterization, through ``sigma`` and ``log sigma``.

``sigma``, ``log sigma^2``, ``sigma'`` and ``(log sigma)'`` arranged for floating point,
and the chain rule that takes a gradient of the ``sigma`` parameterization to any other
(:func:`times_scale_derivative`).

Example:
    >>> is_log_linear(PARAMETERIZATIONS["sigma"])
    True
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from derive.api import (
    KERNEL_REWRITES,
    LOG_REWRITES,
    Derivation,
    Result,
    Step,
    apply_rewrites,
    safe_point,
    simplify,
)

from .parameterizations import PARAMETERIZATIONS, Parameterization, eps, sigma
from .rewrites import _stabilize

__all__ = ["dsigma", "dlogsigma", "log_dlogsigma", "is_log_linear", "derive_chain_factors",
           "times_scale_derivative"]

#: sigma'(scale) and (log sigma)'(scale) = sigma'/sigma, each computed once by the kernels.
dsigma = sp.Symbol("dsigma", real=True)
dlogsigma = sp.Symbol("dlogsigma", real=True)
#: log|(log sigma)'(scale)|: finite where (log sigma)' underflows (a sigmoid's far right).
log_dlogsigma = sp.Symbol("log_dlogsigma", real=True)


def is_log_linear(p: Parameterization) -> bool:
    """Whether ``sigma`` is the scale itself or ``log sigma`` is linear in it (``sigma = c
    exp(k scale)``, as for ``logvar``): then every gradient is a function of the scale that
    :func:`_stabilize` arranges exactly (``expm1`` of the scale at the optimum). Any other
    parameterization (softplus, ``exp(rho) + c``, ``rho**2``, ``1/rho``, ...) goes through
    ``sigma`` and ``log sigma`` (derivation 2.3c): its powers would overflow or underflow
    where the gradient is finite.

    Example:
        >>> is_log_linear(PARAMETERIZATIONS["logvar"])
        True
    """
    if p.sigma == p.scale:
        return True
    log_derivative = simplify(sp.diff(sp.log(p.sigma), p.scale))
    return bool(log_derivative.is_number and log_derivative != 0)


def _in_each_piece(lhs: sp.Basic, rhs: sp.Basic) -> list[tuple[sp.Basic, sp.Basic]]:
    """A check model: both sides at a point inside each piece's region of ``rhs``, as a
    ratio (the random points of the numeric check may all fall in one piece, and a series
    piece is exact nowhere, so each is compared where it is used, to 1e-12 relative)."""
    if not isinstance(rhs, sp.Piecewise):
        return [(lhs, rhs)]
    pairs, earlier = [], []
    for piece, cond in rhs.args:
        region = sp.And(cond, *(sp.Not(c) for c in earlier))
        earlier.append(cond)
        point = safe_point(piece, region)
        # symbols the region does not constrain take distinct values (mu != mu_p), so that
        # no factor vanishes at the point by accident
        free = sorted(set(point) - region.free_symbols, key=sp.default_sort_key)
        point.update({sym: sp.Rational(k + 2, 3) for k, sym in enumerate(free)})
        # as numbers: SymPy's simplification of such constants can divide by a 0 it rounded
        a, b = lhs.xreplace(point).doit().evalf(50), piece.xreplace(point).doit().evalf(50)
        # relative: a series piece is within 1e-17 of the value, whatever its size
        pairs.append((sp.Integer(1), b / a) if a.is_nonzero else (a, b))
    return pairs


def _refine_pieces(expr: sp.Expr) -> sp.Expr:
    """A piecewise value folded into one, each piece simplified where it is taken (its
    condition, and no earlier one): ``|u| = -u`` where ``u < 0``, and ``exp(u) exp(-|u|)``
    is 1 where ``u >= 0`` (never ``inf * 0``)."""
    folded = sp.piecewise_fold(expr)
    if not isinstance(folded, sp.Piecewise):
        return folded
    pieces, earlier = [], []
    for e, c in folded.args:
        region = sp.And(c, *(sp.Not(k) for k in earlier))
        earlier.append(c)
        try:
            pieces.append((sp.refine(e, region) if region is not sp.true else e, c))
        except ValueError:  # the region is empty (folded conditions contradict): never taken
            continue
    return sp.Piecewise(*pieces)


@cache
def derive_chain_factors(p: Parameterization) -> Derivation:
    """2.3c: ``sigma``, ``log sigma^2``, ``sigma'`` and ``(log sigma)'`` of a scale
    parameterization, arranged for floating point (each rewrite a checked step).

    ``(log sigma)'`` is the derivative of the arranged ``log sigma``, piece by piece: where
    ``sigma`` underflows (softplus far left), ``sigma'/sigma`` would be ``0/0``, while the
    log, and so its derivative, stays in range.

    Example:
        >>> rho = sp.Symbol("rho", real=True)
        >>> d = derive_chain_factors(Parameterization("rho", "m", rho, sp.exp(rho), "e"))
        >>> d.result("dlogsigma_evaluable"), d.result("dsigma_evaluable")
        (1, exp(rho))
    """
    s = p.scale
    log_var = simplify(sp.expand_log(sp.log(p.sigma**2), force=True))
    steps = [Step(sp.log(p.sigma**2), log_var, "the log of the variance, expanded")]
    x_arranged, more = apply_rewrites(log_var, KERNEL_REWRITES)
    steps += more
    sigma_arranged, more = apply_rewrites(p.sigma, KERNEL_REWRITES)
    steps += more
    derivative = sp.diff(p.sigma, s)
    dsigma_arranged, more = apply_rewrites(derivative, KERNEL_REWRITES)
    x_arranged, sigma_arranged, dsigma_arranged = (
        _refine_pieces(e) for e in (x_arranged, sigma_arranged, dsigma_arranged))
    steps = [Step(sp.Derivative(p.sigma, s), derivative, "differentiate")] + steps + more
    log_derivative = simplify(sp.diff(log_var / 2, s))
    steps.append(Step(sp.Derivative(sp.log(p.sigma), s), log_derivative,
                      "differentiate the log of the standard deviation"))
    from_log, more = apply_rewrites(_refine_pieces(sp.diff(x_arranged / 2, s)), KERNEL_REWRITES)
    from_log = _refine_pieces(from_log)
    steps.append(Step(log_derivative, from_log,
                      "the derivative of the arranged {0}, piece by piece: where {1} "
                      "underflows its log does not, so {2} is never {3}",
                      notes=(sp.log(sigma), sigma, dsigma / sigma, sp.nan),
                      models=(_in_each_piece,)))
    log_abs = sp.log(sp.Abs(log_derivative))
    log_from, more = apply_rewrites(log_abs, LOG_REWRITES)
    log_from, even_more = apply_rewrites(log_from, KERNEL_REWRITES)
    log_from = _refine_pieces(log_from)
    if (more or even_more) and not is_log_linear(p):  # used by the pair's d scale_q
        steps.append(Step(log_abs, log_from,
                          "the log of its absolute value, arranged: finite where {0} "
                          "underflows", notes=(dsigma / sigma,)))
    results = [
        Result("x", x_arranged, "the log-variance, arranged", typeset=False),
        Result("sigma_evaluable", sigma_arranged, "the standard deviation, arranged",
               typeset=False),
        Result("dsigma_evaluable", dsigma_arranged, "its derivative, arranged", typeset=False),
        Result("dlogsigma_evaluable", from_log, "the derivative of its log, arranged",
               typeset=False),
        Result("log_dlogsigma_evaluable", log_from,
               "the log of the absolute value of the derivative of its log, arranged",
               typeset=False),
    ]
    return Derivation(
        "2.3c", "The standard deviation and its derivatives in floating point",
        "Arrange {0}, {1} and the derivatives of {0} and {2} with respect to {3} so that "
        "each is finite wherever its true value is.", steps, results, variant=p.name,
        notes=(sigma, sp.log(sigma**2), sp.log(sigma), s))


def times_scale_derivative(c: sp.Expr) -> sp.Expr:
    """``c sigma'``, ``c`` a coefficient of the ``sigma`` parameterization (in ``sigma``):
    where ``c`` has a pole at ``sigma = 0``, ``c sigma' = (c sigma) (log sigma)'``, used
    where ``sigma < 1`` (``c sigma`` is finite as sigma underflows, ``c`` is not); each
    form arranged by :func:`_stabilize` for the ``sigma`` parameterization.

    Example:
        >>> times_scale_derivative(sigma - 1 / sigma).args[1]
        (dlogsigma*(sigma - 1)*(sigma + 1), True)
    """
    sigma_param = PARAMETERIZATIONS["sigma"]
    if not sp.denom(sp.together(c)).has(sigma):
        return _stabilize(c, sigma_param) * dsigma
    times = sp.expand(c * sigma)
    if not times.has(sigma):
        return times * dlogsigma
    # the sigma < 1 form last: a kernel may evaluate it everywhere (it only overflows,
    # where sigma**2 does), while 1/sigma in the other divides by zero where sigma underflows
    return sp.Piecewise((_stabilize(c, sigma_param) * dsigma, sigma >= 1),
                        (_stabilize(times, sigma_param) * dlogsigma, True))


def _through_sigma(expr_sigma: sp.Expr) -> sp.Expr:
    """An expression of the ``sigma`` parameterization (a gradient or an estimator in
    ``sigma``, ``mu``, ``eps``) times ``sigma'``, by powers of the noise, each coefficient
    through :func:`times_scale_derivative`; the pieces folded into one piecewise value."""
    by_power = sp.collect(sp.expand(expr_sigma), eps, evaluate=False)
    total = sp.Add(*(k * times_scale_derivative(sp.factor(v))
                     for k, v in sorted(by_power.items(), key=lambda kv: sp.default_sort_key(
                         kv[0]))))
    return sp.piecewise_fold(total)


def _chain_given(p: Parameterization) -> dict[sp.Symbol, sp.Expr]:
    return {sigma: p.sigma, dsigma: sp.diff(p.sigma, p.scale),
            dlogsigma: sp.diff(p.sigma, p.scale) / p.sigma}

