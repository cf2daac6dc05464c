r"""The hand-written rewrites of the Gaussian KL's arrangements (2.3n, 2.3np, 2.4).

Each takes an expression (and the parameterization it is in) and returns an equal one that
floating point evaluates better; the derivations that use them state each result as a
step, which the derivation checks. They are not (yet) :class:`~derive.arrangement.Rewrite`
rules: :func:`_stabilize` and :func:`_sinh_form` depend on the parameterization and the
prior, and the derivations word their steps themselves.

Example:
    >>> from derive.coursework.gaussian_kl.parameterizations import PARAMETERIZATIONS, sigma
    >>> _stabilize(sigma**2 - 1, PARAMETERIZATIONS["sigma"])
    (sigma - 1)*(sigma + 1)
"""

from __future__ import annotations

import sympy as sp
from sympy.codegen.cfunctions import expm1
from sympy.codegen.rewriting import expm1_opt, log1p_opt, optimize

from .parameterizations import STANDARD_NORMAL, Parameterization, Prior

__all__ = ["scaled_squares"]


def _stabilize(expr: sp.Expr, p: Parameterization,
               prior: Prior = STANDARD_NORMAL) -> sp.Expr:
    """``expr`` arranged so that nothing cancels near the optimum and nothing overflows early.

    Factor; keep the factors that vanish at the optimum (sigma = 1) apart, where they are
    computed exactly (``sigma - 1``, ``expm1(logvar)``); expand what is left over the
    denominator (``(sigma + 1) / sigma -> 1 + 1/sigma``), so that it cannot overflow.
    """
    if not expr.has(p.scale):
        return optimize(sp.factor(expr), [expm1_opt, log1p_opt])
    at = sp.solve(sp.Eq(p.sigma, prior.sigma), p.scale)  # none where sigma never reaches it
    numer, denom = sp.fraction(sp.factor(expr))
    factors = sp.Mul.make_args(numer)
    vanishing = [f for f in factors if at and f.free_symbols and f.xreplace({p.scale: at[0]})
                 == 0]
    rest = sp.Mul(*[f for f in factors if f not in vanishing]) / denom
    arranged = sp.Mul(*vanishing) * sp.expand(rest) if vanishing else sp.factor(expr)
    return optimize(arranged, [expm1_opt, log1p_opt])


def _sinh_form(expr: sp.Expr, p: Parameterization) -> sp.Expr:
    """``expm1(a)`` as ``2 exp(a/2) sinh(a/2)`` where ``exp(a/2)`` is sigma.

    Both are exact at the optimum (``sinh(0) = 0``), but ``expm1(a)`` overflows before a
    division by sigma brings it back into range, and ``0 * expm1(a)`` is NaN where it
    overflows; ``exp(a/2)`` and ``sinh(a/2)`` stay finite twice as far.
    """
    def rewrite(e: sp.Expr) -> sp.Expr:
        half = sp.exp(e.args[0] / 2)
        return 2 * half * sp.sinh(e.args[0] / 2) if sp.simplify(half - p.sigma) == 0 else e

    return expr.replace(lambda e: isinstance(e, expm1), rewrite)


def _common_factor(terms: list[sp.Expr]) -> sp.Expr:
    """The product of the symbolic factors every term shares, each to its least power."""
    powers = [sp.Mul(*[f for f in sp.Mul.make_args(t) if f.free_symbols]).as_powers_dict()
              for t in terms]
    shared = set.intersection(*(set(d) for d in powers))
    return sp.Mul(*(b ** min(d[b] for d in powers) for b in sorted(shared, key=sp.default_sort_key)
                    if all(d[b].is_positive for d in powers)))


def scaled_squares(expr: sp.Expr) -> sp.Expr:
    """``expr`` with every term ``c a**2`` written ``4c (a/2)**2``: halve, then square.

    Halving and doubling are exact in binary floating point, so the value is the same to
    the last bit, but ``a**2`` overflows from ``|a| ~ 1.3e154`` (float64) where ``a**2/2``
    is still finite. ``exp(2b)`` counts as the square of ``exp(b)``. The halved base is an
    unevaluated expression, so that SymPy keeps the arrangement.

    Example:
        >>> a = sp.Symbol("a", real=True)
        >>> scaled_squares(a**2 / 2 - a)
        -a + 2*(a/2)**2
    """

    def arrange(term: sp.Expr) -> sp.Expr:
        coeff, rest = term.as_coeff_Mul()
        if isinstance(rest, sp.Pow) and rest.exp == 2:
            base = rest.base
        elif isinstance(rest, sp.exp):
            base = sp.exp(rest.args[0] / 2)
        else:
            return term
        return 4 * coeff * sp.UnevaluatedExpr(base / 2) ** 2

    return sp.Add(*(arrange(t) for t in sp.Add.make_args(sp.expand(expr))))
