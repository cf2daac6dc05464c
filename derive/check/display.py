r"""How ``derive check`` echoes an answer: the course's plain notation, vectors by name.

An ``i``-th component prints as its vector (``x1``, ``F(x2)``), as in the engine's vector
forms; a component under a sum prints with its index (``s_k``, ``G_k(x2)``), and a sum or
product over the components as ``Σ_k`` or ``Π_k``.

Example:
    >>> import sympy as sp
    >>> from derive.vocabulary import X1, FB, GB, S, i, n
    >>> show((X1[i] - FB[i]) * sp.exp(-GB[i]))
    '(-F(x2) + x1)*exp(-G(x2))'
    >>> k = sp.Symbol("k", integer=True)
    >>> show(sp.Sum(S[k], (k, 1, n)))
    'Σ_k s_k'
    >>> show(sp.exp(sp.Sum(GB[i] + S[i], (i, 0, n - 1))))
    'exp(Σ_i (G_i(x2) + s_i))'
"""

from __future__ import annotations

import sympy as sp
from sympy.core.function import AppliedUndef
from sympy.printing.str import StrPrinter

from ..vocabulary import FB, GB, JFB, JGB, i, n

__all__ = ["show"]

_CALLS = {FB: "F(x2)", GB: "G(x2)"}


def _name(expr: sp.Indexed, bound: tuple[sp.Symbol, ...] = ()) -> str:
    base = expr.base
    indices = [k.args[0] if isinstance(k, sp.Mod) else k for k in expr.indices]
    if base in (JFB, JGB):
        return f"{_CALLS.get(base, str(base.label))}[{', '.join(str(k) for k in indices)}]"
    if indices == [i] and i not in bound:
        return _CALLS.get(base, str(base.label))
    sub = "_".join(str(k) for k in indices)
    if base in _CALLS:  # G_k(x2), as the course writes a component of G(x2)
        return f"{str(base.label)[0]}_{sub}(x2)"
    return f"{base.label}_{sub}"


class _Course(StrPrinter):
    """SymPy's plain printer, with sums and products as the course writes them:
    ``Σ_i (G_i(x2) + s_i)``, not ``Sum(G[i] + s[i], (i, 0, n - 1))``."""

    def _big(self, sign: str, e: sp.Basic) -> str:
        (k, lo, hi), *more = e.limits
        if more:
            return super()._print_Basic(e)
        body = self._print(e.function)
        if (lo, hi) in ((0, n - 1), (1, n)):
            sub = f"_{k}"
        else:
            sub = f"_{{{k}={lo}..{hi}}}".replace(" ", "")
        if isinstance(e.function, sp.Add):
            body = f"({body})"
        return f"{sign}{sub} {body}"

    def _print_Sum(self, e: sp.Sum) -> str:
        return self._big("Σ", e)

    def _print_Product(self, e: sp.Product) -> str:
        return self._big("Π", e)

    def parenthesize(self, item, level, strict=False):  # noqa: ANN001, ANN201
        if isinstance(item, (sp.Sum, sp.Product)) and level > 40:
            return f"({self._print(item)})"
        return super().parenthesize(item, level, strict)


def show(expr: sp.Basic) -> str:
    """``expr`` in the course's plain notation."""
    if isinstance(expr, (tuple, list)):
        return "(" + ", ".join(show(e) for e in expr) + ")"
    named = {}
    for app in expr.atoms(AppliedUndef):  # F at another argument: F(arg)
        if str(app.func) in ("F_at", "G_at", "F_unsure", "G_unsure"):
            index = "" if app.args[1] == i else f"_{app.args[1]}"
            named[app] = sp.Symbol(f"{str(app.func)[0]}({show(app.args[0])}){index}")
    return _Course().doprint(_rename(expr.xreplace(named) if named else expr, ()))


def _rename(e: sp.Basic, bound: tuple[sp.Symbol, ...]) -> sp.Basic:
    """Components as named symbols: ``x1`` for the free index, ``s_k`` under a sum."""
    if isinstance(e, sp.Indexed):
        return sp.Symbol(_name(e, bound))
    if isinstance(e, (sp.Sum, sp.Product)):
        inner = (*bound, *(lim[0] for lim in e.limits))
        return type(e)(_rename(e.function, inner), *e.limits)
    if not e.args:
        return e
    return e.func(*[_rename(a, bound) for a in e.args])
