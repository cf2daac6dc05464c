r"""The Gaussian KL's arrangements (2.3n, 2.3np, 2.4) as rules of the arrangement stage.

The rules are the engine's (:mod:`derive.arrangement`, through :mod:`derive.api`), so any
material gets them: :data:`~derive.arrangement.SCALED_SQUARES`,
:func:`~derive.arrangement.vanishing_factors_apart` (which takes the scale and where it
reaches the optimum) and :func:`~derive.arrangement.expm1_as_sinh` (which takes the
standard deviation). Here they are given the parameterization's data; the derivations that
use them state each result as a step, which the derivation checks.

Example:
    >>> from derive.coursework.gaussian_kl.parameterizations import PARAMETERIZATIONS, sigma
    >>> _stabilize(sigma**2 - 1, PARAMETERIZATIONS["sigma"])
    (sigma - 1)*(sigma + 1)
"""

from __future__ import annotations

import sympy as sp

from derive.api import SCALED_SQUARES, expm1_as_sinh, vanishing_factors_apart

from .parameterizations import STANDARD_NORMAL, Parameterization, Prior

__all__ = ["scaled_squares"]


def _stabilize(expr: sp.Expr, p: Parameterization,
               prior: Prior = STANDARD_NORMAL) -> sp.Expr:
    """``expr`` arranged so that nothing cancels near the optimum (where ``p``'s sigma is
    the prior's) and nothing overflows early (:func:`derive.api.vanishing_factors_apart`)."""
    at = sp.solve(sp.Eq(p.sigma, prior.sigma), p.scale) if expr.has(p.scale) else []
    return vanishing_factors_apart(p.scale, at)(expr)


def _sinh_form(expr: sp.Expr, p: Parameterization) -> sp.Expr:
    """``expm1(a)`` as ``2 exp(a/2) sinh(a/2)`` where ``exp(a/2)`` is sigma
    (:func:`derive.api.expm1_as_sinh`)."""
    return expm1_as_sinh(p.sigma)(expr)


def _common_factor(terms: list[sp.Expr]) -> sp.Expr:
    """The product of the symbolic factors every term shares, each to its least power."""
    powers = [sp.Mul(*[f for f in sp.Mul.make_args(t) if f.free_symbols]).as_powers_dict()
              for t in terms]
    shared = set.intersection(*(set(d) for d in powers))
    return sp.Mul(*(b ** min(d[b] for d in powers) for b in sorted(shared, key=sp.default_sort_key)
                    if all(d[b].is_positive for d in powers)))


def scaled_squares(expr: sp.Expr) -> sp.Expr:
    """``expr`` with every term ``c a**2`` written ``4c (a/2)**2``
    (:data:`derive.api.SCALED_SQUARES`).

    Example:
        >>> a = sp.Symbol("a", real=True)
        >>> scaled_squares(a**2 / 2 - a)
        -a + 2*(a/2)**2
    """
    return SCALED_SQUARES(expr)
