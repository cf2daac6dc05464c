r"""How ``derive check`` echoes an answer: the engine's plain notation, vectors by name.

An ``i``-th component prints as its vector (``x1``, ``F(x2)``), as in the engine's vector
forms; a component under a sum prints with its index (``s_k``).

Example:
    >>> import sympy as sp
    >>> from derive.vocabulary import X1, FB, GB, S, i, n
    >>> show((X1[i] - FB[i]) * sp.exp(-GB[i]))
    '(-F(x2) + x1)*exp(-G(x2))'
    >>> k = sp.Symbol("k", integer=True)
    >>> show(sp.Sum(S[k], (k, 1, n)))
    'Sum(s_k, (k, 1, n))'
"""

from __future__ import annotations

import sympy as sp
from sympy.core.function import AppliedUndef
from sympy.printing.str import StrPrinter

from ..vocabulary import FB, GB, JFB, JGB, i

__all__ = ["show"]

_CALLS = {FB: "F(x2)", GB: "G(x2)"}


def _name(expr: sp.Indexed) -> str:
    name = _CALLS.get(expr.base, str(expr.base.label))
    indices = [k.args[0] if isinstance(k, sp.Mod) else k for k in expr.indices]
    if expr.base in (JFB, JGB):
        return f"{name}[{', '.join(str(k) for k in indices)}]"
    if indices == [i]:
        return name
    return f"{name}_{'_'.join(str(k) for k in indices)}"


def show(expr: sp.Basic) -> str:
    """``expr`` in the engine's plain notation."""
    if isinstance(expr, (tuple, list)):
        return "(" + ", ".join(show(e) for e in expr) + ")"
    # Indexed prints itself (``_sympystr``); named symbols stand in for components.
    named = {e: sp.Symbol(_name(e)) for e in expr.atoms(sp.Indexed)}
    for app in expr.atoms(AppliedUndef):  # F at another argument: F(arg)
        if str(app.func) in ("F_at", "G_at", "F_unsure", "G_unsure"):
            index = "" if app.args[1] == i else f"_{app.args[1]}"
            named[app] = sp.Symbol(f"{str(app.func)[0]}({show(app.args[0])}){index}")
    return StrPrinter().doprint(expr.xreplace(named))
