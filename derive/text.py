r"""Derivations as readable terminal text (``derive show``).

Example:
    >>> from derive.loader import build
    >>> print(render_text(build("1.1")).splitlines()[0])
    1.1  Inverting the question's affine coupling block  [coupling]
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

import sympy as sp
from sympy.printing.str import StrPrinter

from .derivation import fill, register_view

if TYPE_CHECKING:
    from .derivation import Derivation

__all__ = ["TextPrinter", "render_text", "text"]


class TextPrinter(StrPrinter):
    """SymPy's string printer with index notation written compactly (``x1_i``, ``dy1_i/dx2_j``)."""

    printmethod = "_derive_text"

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        idx = "".join(self._print(k) for k in expr.indices)
        name = str(expr.base.label)
        if name in ("F", "G", "dF", "dG"):
            return f"{name}_{idx}(x2)"
        if name in ("JF", "JG"):
            return f"{name}(x2)_{idx}"
        return f"{name}_{idx}"

    def _print_KroneckerDelta(self, expr: sp.KroneckerDelta) -> str:
        return "delta_" + "".join(self._print(a) for a in expr.args)

    def _print_Derivative(self, expr: sp.Derivative) -> str:
        (var, _), = expr.variable_count
        return f"d{self._print(expr.expr)}/d{self._print(var)}"

    def _print_Sum(self, expr: sp.Sum) -> str:
        return f"sum_{self._print(expr.limits[0][0])}({self._print(expr.function)})"

    def _print_Product(self, expr: sp.Product) -> str:
        return f"prod_{self._print(expr.limits[0][0])}({self._print(expr.function)})"

    def _print_DetJacobian(self, expr: Any) -> str:
        return "det(dy/dx)"

    def _print_DetBlock(self, expr: Any) -> str:
        return f"det(d{expr.args[2]}/d{expr.args[1]})"

    def _print_Equality(self, expr: sp.Eq) -> str:
        return f"{self._print(expr.lhs)} = {self._print(expr.rhs)}"

    def _print_log(self, expr: sp.log) -> str:
        if isinstance(expr.args[0], sp.Abs):
            return f"log|{self._print(expr.args[0].args[0])}|"
        return f"log({self._print(expr.args[0])})"

    def _print_Abs(self, expr: sp.Abs) -> str:
        return f"|{self._print(expr.args[0])}|"

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        *pieces, (last, _) = expr.args
        out = "; ".join(f"{self._print(e)} where {self._print(c)}" for e, c in pieces)
        return f"{{{out}; {self._print(last)} otherwise}}"

    def _print_ComponentSum(self, expr: Any) -> str:
        return f"sum_i({self._print(expr.args[0])})"


def text(expr: Any) -> str:
    """One expression as compact text."""
    return TextPrinter().doprint(expr)


def _result_text(d: Derivation, name: str) -> str:
    r = next(r for r in d.results if r.name == name)
    return (f"{text(r.lhs)} = " if r.lhs is not None else "") + text(r.expr)


def render_text(d: Derivation, width: int = 100) -> str:
    """A derivation as plain text: the question, the checked chain, the results."""
    wrap = textwrap.TextWrapper(width=width, initial_indent="    ", subsequent_indent="    ")
    lines = [f"{d.qid}  {d.title}" + (f"  [{d.variant}]" if d.variant else ""), ""]
    lines += wrap.wrap(fill(d.statement, lambda key: text(d.notes[int(key)]))) + [""]
    for (k, step, continues), check in zip(d.chain(), d.checks, strict=True):
        lhs = "" if continues else text(step.lhs)
        how = check.method + (f", {check.detail}" if check.detail else "")
        reason = fill(step.reason, lambda key, notes=step.notes: text(notes[int(key)]))
        lines += wrap.wrap(f"({k}) {reason}")
        rhs = text(step.rhs)
        lines.append(f"        {lhs} = {rhs}" if lhs else f"          = {rhs}")
        lines.append(f"        [checked: {how}]")
    lines += ["", "  Results:"]
    for r in d.results:
        lhs = f"{text(r.lhs)} = " if r.lhs is not None else ""
        lines.append(f"    {r.name}: {lhs}{text(r.expr)}")
        if r.description:
            lines.append(f"        ({r.description})")
    if d.conclusion:
        answer = fill(d.conclusion, lambda key: text(d.notes[int(key)]) if key.isdigit()
                      else _result_text(d, key))
        lines += [""] + wrap.wrap("Answer: " + answer)
    return "\n".join(lines) + "\n"


register_view("text/plain", render_text)
