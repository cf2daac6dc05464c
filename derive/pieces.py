r"""Where a piecewise value's pieces are defined: a safe point for each.

A piece of a piecewise value is evaluated only where it is taken, but a vectorized
kernel evaluates it everywhere; the planner (:mod:`codegen.plan`) replaces its arguments
by a point where it is finite wherever it is not taken, and a derivation checks each piece
at a point inside its region. Both take the point from :func:`safe_point`.
"""

from __future__ import annotations

import itertools

import sympy as sp

from .nodes import plain

__all__ = ["safe_point", "SAFE_CANDIDATES"]

#: The values :func:`safe_point` tries, in order, for every argument of a piece.
SAFE_CANDIDATES = (sp.Integer(0), sp.Integer(1), sp.Integer(-1), sp.Integer(2), sp.Integer(-2),
                   sp.Rational(1, 2), sp.Integer(10), sp.Integer(-10))


def safe_point(expr: sp.Expr, cond: sp.Basic = sp.true) -> dict[sp.Symbol, sp.Expr]:
    """Values of ``expr``'s symbols where ``expr`` and its first derivatives are finite.

    The first of :data:`SAFE_CANDIDATES` (every symbol the same value) at which SymPy
    confirms that ``expr`` and each ``d expr / d symbol`` are finite, and at which ``cond``
    holds where ``cond`` depends only on those symbols; failing that (for up to three
    symbols), the first such combination of distinct candidates. Raises ValueError where
    none is.

    Example:
        >>> import sympy as sp
        >>> x = sp.Symbol("x", real=True)
        >>> safe_point(sp.log(x) + 1 / (x - 1))
        {x: 2}
        >>> safe_point(sp.exp(x) - x, x >= 2)
        {x: 2}
    """
    syms = sorted(expr.free_symbols, key=sp.default_sort_key)
    if not syms:
        return {}  # a constant piece (e.g. an infinite value): no argument to replace
    # the value without the grouping kept for floating point (UnevaluatedExpr), which
    # SymPy cannot differentiate through
    exact = plain(expr)
    check_cond = cond is not sp.true and cond.free_symbols <= set(syms)
    exact_cond = plain(cond)
    # besides the fixed candidates, values beyond each threshold the condition names
    # (``u < -20`` needs a point below -20)
    thresholds = sorted({t for t in cond.atoms(sp.Number) if t.is_finite} if check_cond
                        else set(), key=sp.default_sort_key)
    beyond = [v for t in thresholds for v in (t - 1, t + 1, 2 * t, t / 2)]
    values_tried = (*SAFE_CANDIDATES, *beyond)
    points = [{s: value for s in syms} for value in values_tried]
    if len(syms) <= 3:  # then distinct values (a ratio of two symbols below a threshold)
        points += [dict(zip(syms, combo, strict=True))
                   for combo in itertools.product(values_tried, repeat=len(syms))
                   if len(set(combo)) > 1]
    # then the mirrored values (``|u| >= 20`` with ``u <= 0`` needs a point below -20),
    # after every point tried before, so that no piece found one finds another
    mirrored = [v for t in thresholds for v in (-t - 1, -2 * t) if v not in values_tried]
    points += [{s: value for s in syms} for value in mirrored]
    if mirrored and len(syms) <= 3:
        points += [dict(zip(syms, combo, strict=True))
                   for combo in itertools.product((*values_tried, *mirrored), repeat=len(syms))
                   if len(set(combo)) > 1 and set(combo) & set(mirrored)]
    for point in points:
        try:
            holds = not check_cond or exact_cond.subs(point) is sp.true
        except TypeError:  # the condition is undefined there (a ratio 0/0)
            holds = False
        if not holds:
            continue
        values = [exact.subs(point)] + [sp.diff(exact, s).subs(point) for s in syms]
        if all(v.is_finite and v.is_real for v in values):
            return point
    raise ValueError(f"no safe point among {SAFE_CANDIDATES} for the piece {expr} "
                     f"(where {cond}): add a candidate")
