r"""LaTeX for derivations: a SymPy printer with coursework notation, and the renderers.

:class:`CourseworkLatexPrinter` prints index notation as coursework writes it
(``x_{1,i}``, ``\mathcal{F}_i(x_2)``, ``\frac{\partial y_{1,i}}{\partial x_{2,j}}``) and, in
vector mode, element-wise products with ``\circ``. Every project-specific rule is a
``_print_<Node>`` method or an entry of :data:`LATEX_NAMES`. The renderers lay derivations
out through jinja2 templates that hold no formulas.

Example:
    >>> import sympy as sp
    >>> from derive.vocabulary import x1, F, G
    >>> latex(sp.exp(G) * x1 + F)
    '\\exp\\left(\\mathcal{G}_{i}(x_2)\\right) x_{1,i} + \\mathcal{F}_{i}(x_2)'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sympy as sp
from sympy.core.function import AppliedUndef
from sympy.printing.latex import LatexPrinter

from .environment import environment
from .nodes import IDENTITY, BlockMatrixSpec, ComponentSum

if TYPE_CHECKING:
    from derive.derivation import Derivation

__all__ = ["CourseworkLatexPrinter", "latex", "render_derivation", "render_document",
           "LATEX_NAMES", "LatexOptions"]

#: How each name prints: vectors, opaque functions, Jacobians, densities, Greek letters.
LATEX_NAMES: dict[str, str] = {
    "x1": "x_1", "x2": "x_2", "y1": "y_1", "y2": "y_2", "s": "s",
    "F": r"\mathcal{F}", "G": r"\mathcal{G}",
    "JF": r"J_{\mathcal{F}}", "JG": r"J_{\mathcal{G}}",
    "dF": r"\mathcal{F}'", "dG": r"\mathcal{G}'",
    "mu": r"\mu", "sigma": r"\sigma", "eps": r"\epsilon", "epsilon": r"\epsilon",
    "logvar": r"\lambda", "tau": r"\tau", "theta": r"\theta",
}

#: Which opaque functions take which argument (printed ``\mathcal{F}_i(x_2)``).
FUNCTION_ARGS: dict[str, str] = {"F": "x2", "G": "x2", "JF": "x2", "JG": "x2",
                                 "dF": "x2", "dG": "x2"}


@dataclass(frozen=True)
class LatexOptions:
    """Document options: the element-wise product symbol (``\\circ`` or ``\\odot``)."""

    hadamard: str = r"\circ"


class CourseworkLatexPrinter(LatexPrinter):
    """SymPy's LaTeX printer with coursework notation.

    Arguments:
        vector: print products of several factors as element-wise (Hadamard) products.
        options: document options.
    """

    printmethod = "_coursework_latex"

    def __init__(self, vector: bool = False, options: LatexOptions | None = None) -> None:
        super().__init__({"mul_symbol": None, "fold_short_frac": False})
        self._vector = vector
        self._options = options or LatexOptions()

    # -- names -------------------------------------------------------------------
    def _name(self, name: str) -> str:
        if name in LATEX_NAMES:
            return LATEX_NAMES[name]
        return super()._print_Symbol(sp.Symbol(name))

    def _print_Symbol(self, expr: sp.Symbol, style: str = "plain") -> str:
        return self._name(expr.name)

    def _print_IndexedBase(self, expr: sp.IndexedBase) -> str:
        return self._name(str(expr.label))

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        name = str(expr.base.label)
        idx = "".join(self._print(k) for k in expr.indices)
        base = self._name(name)
        if name in FUNCTION_ARGS:
            arg = self._name(FUNCTION_ARGS[name])
            if name.startswith("J"):
                return rf"\left({base}(x_2)\right)_{{{idx}}}".replace("(x_2)", f"({arg})")
            return rf"{base}_{{{idx}}}({arg})"
        if "_" in base:  # x_1 -> x_{1,i}
            head, sub = base.split("_", 1)
            return rf"{head}_{{{sub.strip('{}')},{idx}}}"
        return rf"{base}_{{{idx}}}"

    def _print_Function(self, expr: sp.Function, exp: str | None = None) -> str:
        if isinstance(expr, AppliedUndef):
            name = expr.func.__name__
            args = ", ".join(self._print(a) for a in expr.args)
            out = rf"{self._name(name)}({args})"
            return rf"{out}^{{{exp}}}" if exp else out
        return super()._print_Function(expr, exp)

    # -- operators -----------------------------------------------------------------
    def _print_exp(self, expr: sp.exp, exp: str | None = None) -> str:
        out = rf"\exp\left({self._print(expr.args[0])}\right)"
        return rf"{out}^{{{exp}}}" if exp else out

    def _print_KroneckerDelta(self, expr: sp.KroneckerDelta, exp: str | None = None) -> str:
        a, b = (self._print(k) for k in expr.args)
        out = rf"\delta_{{{a}{b}}}"
        return rf"{out}^{{{exp}}}" if exp else out

    def _print_Derivative(self, expr: sp.Derivative) -> str:
        (var, count), = expr.variable_count
        return rf"\frac{{\partial {self._print(expr.expr)}}}{{\partial {self._print(var)}}}"

    def _print_Sum(self, expr: sp.Sum) -> str:
        var = self._print(expr.limits[0][0])
        return rf"\sum_{{{var}}} {self.parenthesize(expr.function, 1000)}" if isinstance(
            expr.function, sp.Add) else rf"\sum_{{{var}}} {self._print(expr.function)}"

    def _print_Product(self, expr: sp.Product) -> str:
        var = self._print(expr.limits[0][0])
        body = self._print(expr.function)
        if isinstance(expr.function, (sp.Add, sp.Mul)):
            body = rf"\left({body}\right)"
        return rf"\prod_{{{var}}} {body}"

    def _print_ComponentSum(self, expr: ComponentSum) -> str:
        body = self._print(expr.args[0])
        if isinstance(expr.args[0], sp.Add):
            body = rf"\left({body}\right)"
        return rf"\sum_{{i}} {body}"

    def _print_DetJacobian(self, expr: Any) -> str:
        return r"\det\left(\frac{\partial y}{\partial x}\right)"

    def _print_DetBlock(self, expr: Any) -> str:
        _, inp, out = expr.args
        return rf"\det\left(\frac{{\partial {self._print(out)}}}{{\partial {self._print(inp)}}}\right)"

    def _print_Mul(self, expr: sp.Mul) -> str:
        if not self._vector:
            return super()._print_Mul(expr)
        coeff, factors = expr.as_coeff_mul()
        factors = [f for f in factors]
        if len(factors) < 2 or any(f.is_number for f in factors):
            return super()._print_Mul(expr)
        num = [f for f in factors if not (f.is_Pow and f.exp.is_negative)]
        den = [1 / f for f in factors if f.is_Pow and f.exp.is_negative]
        circ = f" {self._options.hadamard} "
        parts = [self.parenthesize(f, 45) if isinstance(f, sp.Add) else self._print(f)
                 for f in sorted(num, key=sp.default_sort_key)]
        out = circ.join(parts)
        if den:
            out = rf"{out} / {self._print(sp.Mul(*den))}"
        if coeff == -1:
            return "- " + out
        if coeff != 1:
            return rf"{self._print(coeff)} {out}"
        return out

    def _print_log(self, expr: sp.log, exp: str | None = None) -> str:
        arg = expr.args[0]
        if isinstance(arg, sp.Abs):
            out = rf"\log\left|{self._print(arg.args[0])}\right|"
        else:
            out = rf"\log\left({self._print(arg)}\right)"
        return rf"\left({out}\right)^{{{exp}}}" if exp else out

    def _print_BooleanTrue(self, expr: Any) -> str:
        return r"\text{always}"


def latex(expr: Any, vector: bool = False, options: LatexOptions | None = None) -> str:
    """LaTeX for an expression, a block matrix or a relation, in coursework notation."""
    printer = CourseworkLatexPrinter(vector=vector, options=options)
    if isinstance(expr, BlockMatrixSpec):
        return block_matrix_latex(expr, printer)
    return printer.doprint(expr)


def block_matrix_latex(matrix: BlockMatrixSpec, printer: CourseworkLatexPrinter) -> str:
    """``\\begin{bmatrix} ... \\end{bmatrix}`` of ``diag(c) M`` terms, block by block."""
    vec = CourseworkLatexPrinter(vector=True, options=printer._options)
    rows = []
    for row in matrix.blocks:
        cells = []
        for block in row:
            parts = []
            for term in block.terms:
                coef = vec.doprint(term.coef)
                diag = rf"\operatorname{{diag}}\left({coef}\right)"
                if term.matrix == IDENTITY:
                    parts.append(diag)
                elif term.coef == 1:
                    parts.append(vec.doprint(term.matrix))
                else:
                    parts.append(rf"{diag} {vec.doprint(term.matrix)}")
            cells.append(" + ".join(parts) if parts else "0")
        rows.append(" & ".join(cells))
    return r"\begin{bmatrix} " + r" \\ ".join(rows) + r" \end{bmatrix}"


def _chain(derivation: Derivation, printer: CourseworkLatexPrinter) -> list[dict[str, str]]:
    lines = []
    previous = None
    for k, step in enumerate(derivation.steps, start=1):
        lhs = "" if previous is not None and step.lhs == previous else printer.doprint(step.lhs)
        lines.append({"lhs": lhs, "rhs": printer.doprint(step.rhs), "reason": step.reason,
                      "number": str(k)})
        previous = step.rhs
    return lines


def render_derivation(derivation: Derivation, standalone: bool = False,
                      options: LatexOptions | None = None,
                      extras: Mapping[str, str] | None = None) -> str:
    """One derivation as a LaTeX fragment (or a compiling document with ``standalone``)."""
    options = options or LatexOptions()
    printer = CourseworkLatexPrinter(options=options)
    vec = CourseworkLatexPrinter(vector=True, options=options)
    from derive.vocabulary import to_vector, uses_index_notation

    results = []
    for r in derivation.results:
        index_form = printer.doprint(r.expr)
        if r.lhs is not None:
            index_form = f"{printer.doprint(r.lhs)} = {index_form}"
        vector_form = ""
        if (uses_index_notation(r.expr) and not isinstance(r.expr, sp.Eq)
                and not r.expr.has(sp.Sum, sp.Product)):
            try:
                vector_form = vec.doprint(to_vector(r.expr))
                if r.lhs is not None:
                    vector_form = f"{vec.doprint(to_vector(r.lhs))} = {vector_form}"
            except ValueError:
                vector_form = ""
        results.append({"name": r.name, "latex": index_form, "vector": vector_form,
                        "description": r.description})
    matrix = derivation.data.get("block_matrix")
    body = environment().get_template("derivation.tex.jinja").render(
        d=derivation, chain=_chain(derivation, printer), results=results,
        matrix=latex(matrix, options=options) if matrix is not None else "",
        extras=extras or {},
    )
    if not standalone:
        return body
    return render_document([body], title=f"Question {derivation.qid}", options=options)


def render_document(parts: list[str], title: str, options: LatexOptions | None = None,
                    command: str = "") -> str:
    """A complete LaTeX document around rendered fragments.

    ``command`` (optional) is the command that regenerates it, for the header.
    """
    return environment().get_template("document.tex.jinja").render(
        parts=parts, title=title, options=options or LatexOptions(), command=command)
