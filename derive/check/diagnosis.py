r"""Naming the mistake in an answer already decided wrong.

Each rule changes the answer the way a typical slip would have (or compares it with the
reference in one way) and tests, numerically, whether that explains the difference:
a constant offset, a constant factor, one term's sign, a forgotten term, ``exp(u)`` for
``exp(-u)``, ``log(u)`` for ``log(u^2)``, a sum where a product is needed, a component
where a sum over components is needed. The first rules that fit are reported.

Example:
    >>> import sympy as sp
    >>> mu, sigma = sp.Symbol("mu", real=True), sp.Symbol("sigma", positive=True)
    >>> ref = mu**2 / 2 + sigma**2 / 2 - sp.log(sigma) - sp.Rational(1, 2)
    >>> name_mistake(ref + 1, ref, index_form=False)
    ['off by the constant +1']
    >>> name_mistake(2 * ref, ref, index_form=False)
    ['a factor 1/2 is missing']
"""

from __future__ import annotations

import sympy as sp
from sympy.core.function import AppliedUndef

from ..vocabulary import i
from .display import show
from .equivalence import numeric_verdict, same
from .quantities import is_applied_at

__all__ = ["name_mistake"]


def _constant(expr: sp.Basic, index_form: bool) -> sp.Rational | None:
    """The rational constant ``expr`` equals everywhere, if it is one."""
    from .equivalence import instances

    try:
        pairs = instances(expr, sp.Integer(0), index_form)
        a = pairs[0][0]
        symbols = sorted(a.free_symbols, key=sp.default_sort_key)
        guess = a.xreplace({s: sp.Rational(7, 10) for s in symbols})
        guess = sp.nsimplify(sp.N(guess.doit() if guess.has(sp.Derivative) else guess, 30),
                             rational=True, tolerance=1e-20)
    except (ValueError, TypeError, IndexError, ZeroDivisionError):
        return None
    if not isinstance(guess, sp.Rational) or abs(guess.q) > 100:
        return None
    return guess if same(expr, guess, index_form) else None


def _fmt(c: sp.Rational) -> str:
    return ("+" if c > 0 else "") + str(c)


def _flip_exps(answer: sp.Basic) -> list[tuple[sp.Basic, sp.Basic, sp.Basic]]:
    out = []
    for node in sorted(answer.atoms(sp.exp), key=sp.default_sort_key):
        flipped = answer.xreplace({node: sp.exp(-node.args[0])})
        out.append((node, sp.exp(-node.args[0]), flipped))
    return out


def name_mistake(answer: sp.Basic, reference: sp.Basic, index_form: bool,
                 matrix: bool = False) -> list[str]:
    """Sentences naming the mistake where a rule explains it (empty where none does)."""
    if matrix:
        found = [f"{show(node)} where {show(wanted)} is needed"
                 for node, wanted, flipped in _flip_exps(answer)
                 if same(flipped, reference, True, matrix=True)]
        return found or _matrix_mistakes(answer, reference)
    misplaced = sorted({f"{str(app.func)[0]} is applied to {show(app.args[0])}, but the "
                        f"block applies {str(app.func)[0]} to x2"
                        for app in answer.atoms(AppliedUndef) if is_applied_at(app)})
    if misplaced:
        return misplaced
    if index_form and i in answer.free_symbols and i not in reference.free_symbols:
        return ["the answer still depends on the component i, but the result is one "
                "number: a sum or product over i = 1..n is missing"]
    diff = answer - reference
    c = _constant(diff, index_form)
    if c is not None and c != 0:
        return [f"off by the constant {_fmt(c)}"]
    try:
        ratio = _constant(answer / reference, index_form) if reference != 0 else None
    except (ZeroDivisionError, TypeError):
        ratio = None
    if ratio is not None:
        if ratio == 2:
            return ["a factor 1/2 is missing"]
        if ratio == sp.Rational(1, 2):
            return ["a factor 1/2 too many: the result is twice this"]
        if ratio == -1:
            return ["the sign is wrong: this is minus the result"]
        return [f"off by the factor {ratio}"]
    found = []
    for node, wanted, flipped in _flip_exps(answer):
        if same(flipped, reference, index_form):
            found.append(f"{show(node)} where {show(wanted)} is needed")
    if found:
        return found
    for node in sorted(answer.atoms(sp.log), key=sp.default_sort_key):
        u = node.args[0]
        for wanted in (sp.log(u**2, evaluate=False), sp.log(sp.sqrt(u), evaluate=False)):
            if same(answer.xreplace({node: wanted}), reference, index_form):
                return [f"{show(node)} where {show(wanted)} is needed"]
    swapped = answer.replace(lambda e: isinstance(e, sp.Sum), lambda e: sp.Product(*e.args))
    if swapped != answer and same(swapped, reference, index_form):
        return ["a sum where a product is needed"]
    swapped = answer.replace(lambda e: isinstance(e, sp.Product), lambda e: sp.Sum(*e.args))
    if swapped != answer and same(swapped, reference, index_form):
        return ["a product where a sum is needed"]
    if isinstance(answer, sp.Add) and same(sp.Mul(*answer.args), reference, index_form):
        return ["a sum where a product is needed"]
    for node, t in _terms(answer):
        if same(answer.xreplace({node: node - 2 * t}), reference, index_form):
            return [f"the sign of the term {show(t)} is wrong"]
    for node, t in _terms(reference):
        if same(answer, reference.xreplace({node: node - t}), index_form):
            return [f"the term {show(t)} is missing"]
    for node, t in _terms(answer):
        if same(answer.xreplace({node: node - t}), reference, index_form):
            return [f"the term {show(t)} should not be there"]
    bracket = _misplaced_bracket(answer, reference, index_form)
    if bracket:
        return [bracket]
    factor = _factor(answer, reference, index_form)
    if factor is not None:
        return [f"the answer is {show(factor)} times the result: a factor {show(1 / factor)} "
                "is missing"]
    return []


def _factor(answer: sp.Basic, reference: sp.Basic, index_form: bool) -> sp.Basic | None:
    """A simple non-constant factor the answer is off by (``exp(G)`` for a missing
    ``exp(-G)``), if there is one."""
    from .equivalence import Timeout, budget

    if reference == 0 or answer.has(sp.Sum, sp.Product) or reference.has(sp.Sum, sp.Product):
        return None
    try:
        with budget(2.0):
            ratio = sp.simplify(answer / reference)
    except (Timeout, TypeError, ValueError, ZeroDivisionError):
        return None
    if ratio.is_number or ratio.count_ops() > 4 or not same(answer, ratio * reference,
                                                             index_form):
        return None
    return ratio


def _misplaced_bracket(answer: sp.Basic, reference: sp.Basic, index_form: bool) -> str:
    """``c (a + b)`` written so that ``c`` multiplies ``a`` only: a misplaced bracket."""
    ref = sp.factor_terms(reference)
    if not isinstance(ref, sp.Mul):
        return ""
    sums = [f for f in ref.args if isinstance(f, sp.Add)]
    if len(sums) != 1 or len(sums[0].args) > 6:
        return ""
    (inner,) = sums
    factor = sp.Mul(*[f for f in ref.args if f is not inner])
    for t in inner.args:
        if same(answer, factor * (inner - t) + t, index_form):
            return (f"{show(factor)} multiplies the other terms but not {show(t)}: a misplaced "
                    "bracket?")
    return ""


def _terms(expr: sp.Basic) -> list[tuple[sp.Basic, sp.Basic]]:
    """Every ``(sum, term)``: the terms of each sum in ``expr``, outermost first."""
    out = []
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Add):
            out += [(node, t) for t in node.args]
        if len(out) > 40:
            break
    return out


def _matrix_mistakes(answer: sp.Basic, reference: sp.Basic) -> list[str]:
    from .equivalence import explicit

    size = 2
    a = sp.Matrix(size, size, lambda r, c: explicit(answer, size, r, c, True, True))
    b = sp.Matrix(size, size, lambda r, c: explicit(reference, size, r, c, False, True))
    if a == sp.zeros(size, size) and b != a:
        return ["this block is not zero"]
    if b == sp.zeros(size, size) and a != b:
        return ["this block is zero: y2 does not depend on x1"]
    diagonal = [(a[k, k], b[k, k]) for k in range(size)]
    off = [(a[r, c], b[r, c]) for r in range(size) for c in range(size) if r != c]
    if numeric_verdict(diagonal, seed=5) == "equal" and numeric_verdict(off, seed=5) != "equal":
        return ["the diagonal is right, but the entries off the diagonal are not (F and G "
                "need not act element-wise)"]
    if numeric_verdict(off, seed=5) == "equal" and numeric_verdict(diagonal, seed=5) != "equal":
        return ["the diagonal of this block is wrong"]
    return []
