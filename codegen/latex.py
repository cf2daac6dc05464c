r"""LaTeX for derivations: a SymPy printer with coursework notation, and the renderers.

:class:`CourseworkLatexPrinter` prints index notation as coursework writes it
(``x_{1,i}``, ``\mathcal{F}_i(x_2)``, ``\frac{\partial y_{1,i}}{\partial x_{2,j}}``), the
probability nodes of question 2 (``\mathbb{E}_{q}``, ``D_{\mathrm{KL}}``), and, in vector
mode, element-wise products with ``\circ`` (or ``\odot``). Every project-specific rule is a
``_print_<Node>`` method or an entry of :data:`LATEX_NAMES`; a derivation may override
names through its typed attribute ``latex_names``. The renderers lay derivations out
through jinja2 templates that hold no formulas; what a derivation shows besides its steps
(a block matrix, a computation graph, backward tables) are its typed attributes too.

Example:
    >>> import sympy as sp
    >>> from derive.vocabulary import x1, F, G
    >>> latex(sp.exp(G) * x1 + F)
    '\\exp\\left(\\mathcal{G}_{i}(x_2)\\right) x_{1,i} + \\mathcal{F}_{i}(x_2)'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sympy as sp
from sympy.core.function import AppliedUndef
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE

from derive.derivation import Derivation, Result, Step, fill, register_view
from derive.nodes import IDENTITY, BlockMatrixSpec

from .environment import environment, tex_escape

__all__ = ["CourseworkLatexPrinter", "latex", "render_derivation", "render_fragment",
           "PARTS", "shown_steps", "shown_results", "result_latex",
           "render_document", "render_graph", "render_notebook", "LATEX_NAMES", "LatexOptions",
           "render_search", "render_search_markdown", "markdown_escape"]

#: How each name prints: vectors, opaque functions, Jacobians, densities, Greek letters.
LATEX_NAMES: dict[str, str] = {
    # question 1
    "x1": "x_1", "x2": "x_2", "y1": "y_1", "y2": "y_2", "s": "s",
    "F": r"\mathcal{F}", "G": r"\mathcal{G}",
    "JF": r"J_{\mathcal{F}}", "JG": r"J_{\mathcal{G}}",
    "dF": r"\mathcal{F}'", "dG": r"\mathcal{G}'",
    # question 2
    "mu": r"\mu", "sigma": r"\sigma", "eps": r"\epsilon", "epsilon": r"\epsilon",
    "logvar": r"\lambda", "tau": r"\tau",
    "F_q": r"\mathcal{F}(q)",
    "log_p_x_given_z": r"\log p(x \mid z)", "log_p_z": r"\log p(z)", "log_q_z": r"\log q(z)",
    "log_p_z_given_x": r"\log p(z \mid x)", "log_p_x": r"\log p(x)",
    "q_z": "q(z)", "p_z": "p(z)",
    "log_q_i": r"\log q_i(z_i)", "log_p_i": r"\log p_i(z_i)",
    "KL_i": r"D_{\mathrm{KL}}\left(q_i \,\middle\|\, p_i\right)",
}

#: Which opaque functions take which argument (printed ``\mathcal{F}_i(x_2)``).
FUNCTION_ARGS: dict[str, str] = {"F": "x2", "G": "x2", "JF": "x2", "JG": "x2",
                                 "dF": "x2", "dG": "x2"}
#: Indexed densities of question 2.2, printed ``q_i(z_i)``.
DENSITIES = ("q", "p")


@dataclass(frozen=True)
class LatexOptions:
    """Document options: the element-wise product symbol (``\\circ`` or ``\\odot``)."""

    hadamard: str = r"\circ"


def _subscripted(name: str) -> tuple[str, str]:
    r"""A LaTeX name from :data:`LATEX_NAMES` split into its letter and its subscript
    (``\mu_i`` to ``(\mu, i)``, ``\mu_{p,i}`` to ``(\mu, p,i)``); ``(name, "")`` without one.

    Example:
        >>> _subscripted(r"\mu_{p,i}"), _subscripted("t_i"), _subscripted(r"\sigma")
        (('\\mu', 'p,i'), ('t', 'i'), ('\\sigma', ''))
    """
    depth = 0
    for k, c in enumerate(name):
        depth += {"{": 1, "}": -1}.get(c, 0)
        if c == "_" and depth == 0:
            head, sub = name[:k], name[k + 1:]
            if sub.startswith("{") and sub.endswith("}"):
                sub = sub[1:-1]
            return head, sub
    return name, ""


def _human_key(term: sp.Expr) -> int:
    """Where a term goes in a sum as coursework writes it: positive terms first, then the
    constants (positive, then negative), then the negative terms (``y_1 - F``, not
    ``-F + y_1``; ``mu^2 + sigma^2 - 1 - log sigma^2``)."""
    negative = term.could_extract_minus_sign()
    if term.is_number:
        return 2 if negative else 1
    return 3 if negative else 0


class CourseworkLatexPrinter(LatexPrinter):
    """SymPy's LaTeX printer with coursework notation.

    Arguments:
        vector: print products of several factors as element-wise (Hadamard) products.
        options: document options.
        names: overrides of :data:`LATEX_NAMES` (e.g. ``{"mu": r"\\mu_i"}``).
    """

    def __init__(self, vector: bool = False, options: LatexOptions | None = None,
                 names: Mapping[str, str] | None = None, inline: bool = False) -> None:
        super().__init__({"mul_symbol": None, "fold_short_frac": False})
        self._vector = vector
        self._inline = inline
        self._options = options or LatexOptions()
        self._names = {**LATEX_NAMES, **(names or {})}

    # -- names -------------------------------------------------------------------
    def _name(self, name: str) -> str:
        if name in self._names:
            return self._names[name]
        for suffix, accent in (("_bar", ""), ("_stl", "^{\\mathrm{STL}}")):
            if name.endswith(suffix):
                # the bar over the letter, not its subscript: \bar{t}_{i}^{STL}
                head, sub = _subscripted(self._name(name[: -len(suffix)]))
                return rf"\bar{{{head}}}" + (f"_{{{sub}}}" if sub else "") + accent
        return super()._print_Symbol(sp.Symbol(name))

    def _print_Symbol(self, expr: sp.Symbol, style: str = "plain") -> str:
        return self._name(expr.name)

    def _print_Dummy(self, expr: sp.Dummy, style: str = "plain") -> str:
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
                return rf"\left({base}({arg})\right)_{{{idx}}}"
            return rf"{base}_{{{idx}}}({arg})"
        if name in DENSITIES:
            return rf"{base}_{{{idx}}}(z_{{{idx}}})"
        if "_" in base:  # x_1 -> x_{1,i}
            head, sub = base.split("_", 1)
            return rf"{head}_{{{sub.strip('{}')},{idx}}}"
        return rf"{base}_{{{idx}}}"

    def _label(self, label: sp.Basic) -> str:
        if isinstance(label, sp.Indexed):
            return rf"{self._name(str(label.base.label))}_{{{self._print(label.indices[0])}}}"
        return self._print(label)

    def _print_Function(self, expr: sp.Function, exp: str | None = None) -> str:
        if isinstance(expr, AppliedUndef):
            name = expr.func.__name__
            args = ", ".join(self._print(a) for a in expr.args)
            out = rf"{self._name(name)}({args})"
            return rf"{out}^{{{exp}}}" if exp else out
        if type(expr).__name__ in ("expm1", "expm1mx", "log1p"):
            arg = self._print(expr.args[0])
            out = rf"\operatorname{{{type(expr).__name__}}}\left({arg}\right)"
            return rf"{out}^{{{exp}}}" if exp else out
        return super()._print_Function(expr, exp)

    def _operator(self, name: str, expr: sp.Function, exp: str | None) -> str:
        out = rf"\operatorname{{{name}}}\left({self._print(expr.args[0])}\right)"
        return rf"{out}^{{{exp}}}" if exp else out

    def _print_softplus(self, expr: sp.Function, exp: str | None = None) -> str:
        return self._operator("softplus", expr, exp)

    def _print_sigmoid(self, expr: sp.Function, exp: str | None = None) -> str:
        return self._operator("sigmoid", expr, exp)

    def _print_cbrt(self, expr: sp.Function, exp: str | None = None) -> str:
        out = rf"\sqrt[3]{{{self._print(expr.args[0])}}}"
        return rf"{out}^{{{exp}}}" if exp else out

    # -- operators -----------------------------------------------------------------
    def _print_exp(self, expr: sp.exp, exp: str | None = None) -> str:
        out = rf"\exp\left({self._print(expr.args[0])}\right)"
        return rf"{out}^{{{exp}}}" if exp else out

    def _print_log(self, expr: sp.log, exp: str | None = None) -> str:
        arg = expr.args[0]
        if isinstance(arg, sp.Abs):
            out = rf"\log\left|{self._print(arg.args[0])}\right|"
        elif isinstance(arg, (sp.Symbol, sp.Indexed)) or (
                arg.is_Pow and isinstance(arg.base, (sp.Symbol, sp.Indexed))
                and arg.exp.is_Integer and arg.exp > 0):
            out = rf"\log {self._print(arg)}"  # log sigma, log sigma^2
        else:
            out = rf"\log\left({self._print(arg)}\right)"
        return rf"\left({out}\right)^{{{exp}}}" if exp else out

    def _print_KroneckerDelta(self, expr: sp.KroneckerDelta, exp: str | None = None) -> str:
        a, b = (self._print(k) for k in expr.args)
        out = rf"\delta_{{{a}{b}}}"
        return rf"{out}^{{{exp}}}" if exp else out

    def _print_Derivative(self, expr: sp.Derivative) -> str:
        (var, _count), = expr.variable_count
        if isinstance(expr.expr, (sp.Add, sp.Mul, sp.Sum, sp.Product)):
            # the derivative of a sum (or product) applies to all of it: parenthesized
            return (rf"\frac{{\partial}}{{\partial {self._print(var)}}}"
                    rf"\left({self._print(expr.expr)}\right)")
        return rf"\frac{{\partial {self._print(expr.expr)}}}{{\partial {self._print(var)}}}"

    def _as_ordered_terms(self, expr: sp.Basic, order: str | None = None) -> list[sp.Basic]:
        """SymPy's order of a sum's terms, then stably into the order coursework writes."""
        return sorted(super()._as_ordered_terms(expr, order=order), key=_human_key)

    def _limits(self, expr: sp.Expr) -> tuple[str, str, str]:
        var, lo, hi = expr.limits[0]
        # Components are numbered from 0 in the engine and from 1 in coursework: both
        # bounds move up by one (a sum from 0 to n - 1 prints from 1 to n, from n to 2n - 1
        # prints from n + 1 to 2n).
        return self._print(var), self._print(lo + 1), self._print(hi + 1)

    def _print_Sum(self, expr: sp.Sum) -> str:
        var, low, top = self._limits(expr)
        body = self._print(expr.function)
        if isinstance(expr.function, sp.Add):
            body = rf"\left({body}\right)"
        return rf"\sum_{{{var}={low}}}^{{{top}}} {body}"

    def _print_Product(self, expr: sp.Product) -> str:
        var, low, top = self._limits(expr)
        body = self._print(expr.function)
        if isinstance(expr.function, (sp.Add, sp.Mul)):
            body = rf"\left({body}\right)"
        return rf"\prod_{{{var}={low}}}^{{{top}}} {body}"

    def _print_ComponentSum(self, expr: Any) -> str:
        body = self._print(expr.args[0])
        if isinstance(expr.args[0], sp.Add):
            body = rf"\left({body}\right)"
        return rf"\sum_{{i}} {body}"

    def _print_DetJacobian(self, expr: Any) -> str:
        return r"\det\left(\frac{\partial y}{\partial x}\right)"

    def _print_DetBlock(self, expr: Any) -> str:
        _, inp, out = expr.args
        return (rf"\det\left(\frac{{\partial {self._print(out)}}}"
                rf"{{\partial {self._print(inp)}}}\right)")

    def _print_Expectation(self, expr: Any) -> str:
        return rf"\mathbb{{E}}_{{{self._label(expr.label)}}}\left[{self._print(expr.f)}\right]"

    def _print_Variance(self, expr: Any) -> str:
        f, label = expr.args
        return rf"\operatorname{{Var}}_{{{self._label(label)}}}\left[{self._print(f)}\right]"

    def _density(self, log_density: sp.Basic) -> str:
        if isinstance(log_density, sp.log):
            return self._print(log_density.args[0])
        printed = self._print(log_density)
        return printed[len(r"\log "):] if printed.startswith(r"\log ") else printed

    def _print_KL(self, expr: Any) -> str:
        log_q, log_p, _ = expr.args
        return (rf"D_{{\mathrm{{KL}}}}\left({self._density(log_q)} \,\middle\|\, "
                rf"{self._density(log_p)}\right)")

    def _print_Mul(self, expr: sp.Mul) -> str:
        head, *rest = expr.args
        if (len(rest) == 1 and isinstance(rest[0], sp.Add) and head.is_Rational
                and head.p == 1 and head.q > 1):
            # a sum halved, as coursework writes it: 1/2 (mu^2 + sigma^2 - 1 - log sigma^2)
            return rf"\frac{{1}}{{{head.q}}} \left({self._print(rest[0])}\right)"
        if not self._vector:
            return super()._print_Mul(expr)
        coeff, factors = expr.as_coeff_mul()
        if len(factors) < 2 or any(f.is_number for f in factors):
            return super()._print_Mul(expr)
        num = [f for f in factors if not (f.is_Pow and f.exp.is_negative)]
        den = [1 / f for f in factors if f.is_Pow and f.exp.is_negative]
        circ = f" {self._options.hadamard} "
        parts = [self.parenthesize(f, 45) if isinstance(f, sp.Add) else self._print(f)
                 for f in sorted(num, key=sp.default_sort_key)]
        out = circ.join(parts) if parts else "1"
        if den:  # an element-wise quotient: numerator and denominator each whole
            out = rf"\frac{{{out}}}{{{self._print(sp.Mul(*den))}}}"
        if coeff == -1:
            return "- " + out
        if coeff != 1:
            return rf"{self._print(coeff)} {out}"
        return out

    def _print_Relational(self, expr: sp.core.relational.Relational) -> str:
        out = super()._print_Relational(expr)
        if not self._inline or not expr.rhs.is_Atom:
            return out
        # in a sentence, a relation and its short right-hand side stay on one line ("= 0")
        op = {"==": "=", "!=": r"\neq", "<": "<", ">": ">", "<=": r"\leq",
              ">=": r"\geq"}.get(expr.rel_op, expr.rel_op)
        return rf"{self._print(expr.lhs)} {op}\nobreak {self._print(expr.rhs)}"

    def _print_BooleanTrue(self, expr: Any) -> str:
        return r"\text{always}"


def latex(expr: Any, vector: bool = False, options: LatexOptions | None = None,
          names: Mapping[str, str] | None = None) -> str:
    """LaTeX for an expression, a block matrix or a relation, in coursework notation."""
    printer = CourseworkLatexPrinter(vector=vector, options=options, names=names)
    if isinstance(expr, BlockMatrixSpec):
        return block_matrix_latex(expr, printer)
    return printer.doprint(expr)


def block_matrix_latex(matrix: BlockMatrixSpec, printer: CourseworkLatexPrinter) -> str:
    """``\\begin{bmatrix} ... \\end{bmatrix}`` of ``diag(c) M`` terms, block by block, each
    labelled with the derivative it is (``\\underbrace{...}_{\\partial y_1 / \\partial x_1}``)."""
    vec = CourseworkLatexPrinter(vector=True, options=printer._options, names=printer._names)
    rows = []
    for row in matrix.blocks:
        cells = []
        for block in row:
            parts = []
            for term in block.terms:
                diag = rf"\operatorname{{diag}}\left({vec.doprint(term.coef)}\right)"
                if term.matrix == IDENTITY:
                    parts.append("I" if term.coef == 1 else diag)
                elif term.coef == 1:
                    parts.append(vec.doprint(term.matrix))
                else:
                    parts.append(rf"{diag} {vec.doprint(term.matrix)}")
            # each block says which derivative it is, inside the matrix
            name = (rf"\partial {printer._name(block.row)} / "
                    rf"\partial {printer._name(block.col)}")
            cells.append(rf"\underbrace{{{' + '.join(parts) if parts else '0'}}}_{{{name}}}")
        rows.append(" & ".join(cells))
    return r"\begin{bmatrix} " + r" \\ ".join(rows) + r" \end{bmatrix}"


# --- derivations ------------------------------------------------------------------


def _printers(d: Derivation, options: LatexOptions) -> tuple[CourseworkLatexPrinter,
                                                             CourseworkLatexPrinter]:
    names = d.latex_names
    return (CourseworkLatexPrinter(options=options, names=names),
            CourseworkLatexPrinter(vector=True, options=options, names=names))


#: Displayed sums longer than this many characters of LaTeX are broken across lines.
BREAK_WIDTH = 120
#: A result longer than this many characters of LaTeX is displayed, not set in a sentence.
INLINE_WIDTH = 150


def _pieces(printer: CourseworkLatexPrinter, expr: sp.Basic, width: int,
            expand: bool) -> list[str]:
    """The printed pieces a long expression is broken between: a sum's terms (a term too
    long itself expanded, with ``expand``, into its own terms), or a long product's
    factors, each piece with its ``+``/``-`` or its parentheses."""
    if isinstance(expr, sp.Add):
        pieces = []
        for term in printer._as_ordered_terms(expr):
            printed = printer.doprint(term)
            if len(printed) > width and expand:
                expanded = sp.expand(term)
                if isinstance(expanded, sp.Add) and not expanded.has(sp.Piecewise):
                    sub = _pieces(printer, expanded, width, False)
                    pieces += [p if p.startswith(("-", "+")) else f"+ {p}" for p in sub]
                    continue
            if len(printed) > width and isinstance(term, sp.Mul) and term.has(sp.Piecewise):
                sub = _pieces(printer, term, width, False)  # its factors
                pieces += [sub[0] if sub[0].startswith("-") else f"+ {sub[0]}", *sub[1:]]
                continue
            pieces.append(printed if printed.startswith("-") else f"+ {printed}")
        pieces[0] = pieces[0].removeprefix("+ ")
        return pieces
    if expand and not expr.has(sp.Piecewise):
        expanded = sp.expand(expr)
        if isinstance(expanded, sp.Add):
            return _pieces(printer, expanded, width, False)
    if isinstance(expr, sp.Mul) and expr.has(sp.Piecewise):
        # a product with a case distinction: one factor to a line
        coeff, factors = expr.as_coeff_mul()
        printed = [printer.parenthesize(f, PRECEDENCE["Mul"]) for f in factors]
        if coeff == -1:
            printed[0] = "- " + printed[0]
        elif coeff != 1:
            printed.insert(0, printer.doprint(coeff))
        return printed
    return [printer.doprint(expr)]


def _broken(printer: CourseworkLatexPrinter, expr: sp.Basic, width: int = BREAK_WIDTH,
            joint: str = r" \\ &\quad ", expand: bool = False) -> str:
    """``expr`` printed, a long sum (or product) broken into lines of about ``width``
    characters; with ``expand``, a term too long for a line is expanded into its terms."""
    printed = printer.doprint(expr)
    if len(printed) <= width:
        return printed
    lines, current = [], ""
    for piece in _pieces(printer, expr, width, expand):
        if current and len(current) + len(piece) > width:
            lines.append(current)
            current = piece
        else:
            current = f"{current} {piece}".strip()
    lines.append(current)
    return joint.join(lines)


def _inline(printer: CourseworkLatexPrinter, expr: sp.Basic) -> str:
    return f"${printer.doprint(expr)}$"


#: Which of a derivation's steps and results a rendering shows: ``"full"`` every one,
#: ``"answer"`` the answer a student reads (no asides), ``"aside"`` the asides alone.
PARTS = ("full", "answer", "aside")


def _shown(aside: bool, part: str) -> bool:
    return part == "full" or aside == (part == "aside")


def _chain(d: Derivation, printer: CourseworkLatexPrinter,
           part: str = "full") -> list[dict[str, str]]:
    lines = []
    previous = None
    for k, step, _ in d.chain():
        if not _shown(step.aside, part):
            continue
        continues = previous is not None and step.lhs == previous
        previous = step.rhs
        lhs = "" if continues else printer.doprint(step.lhs)
        if len(lhs) > BREAK_WIDTH:
            lhs = _broken(printer, step.lhs, expand=True) + r" \\ "
        reason = fill(step.reason, lambda key, s=step: _inline(printer, s.notes[int(key)]),
                      tex_escape)
        # the lines of the right-hand side start after the left-hand side's width
        width = max(BREAK_WIDTH // 2, BREAK_WIDTH - len(lhs) // 2)
        lines.append({"lhs": lhs, "rhs": _broken(printer, step.rhs, width, expand=True),
                      "reason": reason,
                      "number": str(k)})
    return lines


def shown_steps(d: Derivation, part: str = "answer") -> list[tuple[int, Step]]:
    """``(number, step)`` of the steps a rendering of ``part`` shows (the marking scheme
    gives points to those of the answer)."""
    return [(k, step) for k, step, _ in d.chain() if _shown(step.aside, part)]


def shown_results(d: Derivation, part: str = "answer") -> list[Result]:
    """The typeset results a rendering of ``part`` shows."""
    return [r for r in d.results if r.typeset and _shown(r.aside, part)]


def result_latex(r: Result, printer: CourseworkLatexPrinter) -> str:
    """A result as displayed math, in its displayed (the course's) form, broken over
    aligned lines where long."""
    body = _broken(printer, r.display if r.display is not None else r.expr, expand=True)
    lhs = printer.doprint(r.lhs) if r.lhs is not None else ""
    if r" \\ " in body:  # broken over lines: align inside the box
        return (r"\begin{aligned}" + (f"{lhs} &= {body}" if lhs else f"&{body}")
                + r"\end{aligned}")
    return f"{lhs} = {body}" if lhs else body


def _results(d: Derivation, printer: CourseworkLatexPrinter,
             vec: CourseworkLatexPrinter, part: str = "full") -> list[dict[str, str]]:
    results = []
    for r in shown_results(d, part):
        vector_form = ""
        if r.vector is not None:
            vec_lhs, vec_expr = r.vector
            vector_form = vec.doprint(vec_expr)
            if vec_lhs is not None:
                vector_form = f"{vec.doprint(vec_lhs)} = {vector_form}"
        results.append({"name": r.name, "latex": result_latex(r, printer),
                        "vector": vector_form, "description": tex_escape(r.description)})
    return results


def _conclusion(d: Derivation, printer: CourseworkLatexPrinter) -> str:
    inline = CourseworkLatexPrinter(options=printer._options, names=printer._names,
                                    inline=True)

    def math(name: str) -> str:
        if name.isdigit():
            return f"${inline.doprint(d.notes[int(name)])}$"
        r = next(r for r in d.results if r.name == name)
        expr = r.display if r.display is not None else r.expr
        if r.lhs is not None:
            expr = sp.Eq(r.lhs, expr, evaluate=False)
        printed = inline.doprint(expr)
        # a formula too long for a sentence is displayed
        return rf"\[{printed}\]" if len(printed) > INLINE_WIDTH else f"${printed}$"

    return fill(d.conclusion, math, tex_escape)


def _statement(d: Derivation, printer: CourseworkLatexPrinter) -> str:
    """The question's statement, its ``{0}``-style notes typeset inline."""
    inline = CourseworkLatexPrinter(options=printer._options, names=printer._names,
                                    inline=True)
    return fill(d.statement, lambda key: f"${inline.doprint(d.notes[int(key)])}$", tex_escape)


def render_graph(graph: Any, printer: CourseworkLatexPrinter) -> str:
    """A TikZ picture of a computation graph, laid out in layers by depth."""
    depth: dict[str, int] = {}
    for node in graph.nodes:
        parents = graph.parents(node)
        depth[node.name] = 1 + max((depth[p.name] for p in parents), default=-1)
    layers: dict[int, list[Any]] = {}
    for node in graph.nodes:
        layers.setdefault(depth[node.name], []).append(node)
    placed = []
    for level, nodes in sorted(layers.items()):
        for k, node in enumerate(nodes):
            y = (len(nodes) - 1) / 2 - k
            placed.append({"id": node.name, "x": f"{2.6 * level:.2f}", "y": f"{1.3 * y:.2f}",
                           "label": printer.doprint(node.symbol), "role": node.role})
    ys = {n["id"]: float(n["y"]) for n in placed}
    edges = []
    for a, b in graph.edges:
        # an edge that skips a layer bends around the nodes between, away from the middle
        skip = depth[b] - depth[a] > 1
        bend = "" if not skip else ("bend left=30" if ys[a] >= 0 else "bend right=30")
        edges.append({"src": a, "dst": b, "bend": bend})
    return environment().get_template("graph.tex.jinja").render(nodes=placed, edges=edges)


def _backward(d: Derivation, printer: CourseworkLatexPrinter) -> list[dict[str, Any]]:
    tables = []
    for table in d.backward:
        if not table.rows:
            continue
        printed = [(printer.doprint(a), printer.doprint(acc), printer.doprint(v))
                   for a, acc, v in table.rows]
        # a row on one line where it is short, else its value on a line of its own
        tables.append({"title": table.title, "rows": [
            {"adjoint": a, "accumulation": acc, "value": v,
             "short": len(a) + len(acc) + len(v) <= BREAK_WIDTH} for a, acc, v in printed]})
    return tables


def render_derivation(derivation: Derivation, standalone: bool = False,
                      options: LatexOptions | None = None, command: str = "",
                      part: str = "full", heading: str | None = None,
                      show_variant: bool = True, problem: bool = False) -> str:
    """One derivation as a LaTeX fragment (or a compiling document with ``standalone``).

    ``part`` (:data:`PARTS`) chooses the steps and results shown; ``heading`` replaces the
    subsection's title; ``show_variant`` writes which variant it is under the title;
    ``problem`` writes the question alone (its statement and figure), no answer.
    """
    if part not in PARTS:
        raise ValueError(f"part {part!r}: one of {', '.join(PARTS)}")
    options = options or LatexOptions()
    printer, vec = _printers(derivation, options)
    shown = derivation.block_matrix
    matrix = None
    if shown is not None and part != "aside" and not problem:
        matrix = {"caption": shown.caption, "lhs": printer.doprint(shown.lhs),
                  "body": block_matrix_latex(shown.matrix, printer),
                  "rows": printer.doprint(sp.Tuple(*shown.matrix.rows)),
                  "cols": printer.doprint(sp.Tuple(*shown.matrix.cols))}
    graph = derivation.graph
    answer = not problem
    body = environment().get_template("derivation.tex.jinja").render(
        d=derivation,
        heading=heading or f"Question {derivation.qid}: {tex_escape(derivation.title)}",
        show_variant=show_variant and bool(derivation.variant),
        statement=_statement(derivation, printer) if part != "aside" else "",
        chain=_chain(derivation, printer, part) if answer else [],
        results=_results(derivation, printer, vec, part) if answer else [],
        conclusion=_conclusion(derivation, printer) if answer and part != "aside" else "",
        matrix=matrix,
        graph=render_graph(graph, printer) if graph is not None and part != "aside" else "",
        tables=_backward(derivation, printer) if answer and part != "aside" else [],
    )
    if not standalone:
        return body
    return render_document([body], title=f"Question {derivation.qid}", options=options,
                           command=command)


def render_fragment(derivation: Derivation, options: LatexOptions | None = None,
                    command: str = "") -> str:
    r"""One derivation as a fragment to ``\input``; its header names the packages it needs.

    ``command`` (optional) is the command that regenerates it, for the header.
    """
    body = render_derivation(derivation, options=options)
    return environment().get_template("fragment.tex.jinja").render(
        d=derivation, body=body, command=command)


def render_document(parts: list[str], title: str, options: LatexOptions | None = None,
                    command: str = "", source: str = "the derivations it typesets") -> str:
    """A complete LaTeX document around rendered fragments.

    ``command`` (optional) is the command that regenerates it, and ``source`` what it is
    derived from, for the header.
    """
    return environment().get_template("document.tex.jinja").render(
        parts=parts, title=title, options=options or LatexOptions(), command=command,
        source=source)


def render_notebook(d: Derivation, options: LatexOptions | None = None) -> str:
    """One derivation as a single MathJax display, for Jupyter's ``_repr_latex_``.

    Each step is a line ``lhs = rhs`` with its numbered reason beside it; the results
    follow, boxed.
    """
    printer, _ = _printers(d, options or LatexOptions())

    def text(template: str, notes: tuple[sp.Basic, ...] = ()) -> str:
        body = fill(template, lambda key: rf"}}{printer.doprint(notes[int(key)])}\text{{",
                    tex_escape)
        return rf"\text{{{body}}}"

    lines = [rf"&\textbf{{{tex_escape(d.qid + '  ' + d.title)}}}"]
    for k, step, continues in d.chain():
        lhs = "" if continues else printer.doprint(step.lhs)
        lines.append(rf"{lhs} &= {printer.doprint(step.rhs)} && "
                     + text(f"({k}) " + step.reason, step.notes))
    for r in d.results:
        if r.typeset:
            lhs = f"{printer.doprint(r.lhs)} = " if r.lhs is not None else ""
            expr = r.display if r.display is not None else r.expr
            lines.append(rf"&\boxed{{{lhs}{printer.doprint(expr)}}} && "
                         + text(r.description))
    return "$$\\begin{aligned}" + " \\\\\n".join(lines) + "\\end{aligned}$$"


register_view("text/latex", render_notebook)


def _ulp(x: float) -> str:
    """An error in ulp as the verdicts print it (NaN counts 2**64 ulp)."""
    if x >= 2.0 ** 64:
        return r"NaN (counted as $2^{64}$)"
    return f"{x:.3g}"


def _bound(x: float) -> str:
    if abs(x) >= 1.7e308:
        return r"-\max" if x < 0 else r"\max"
    return f"{x:.3g}".replace("e-", r"\cdot 10^{-").replace("e+", r"\cdot 10^{") + (
        "}" if "e" in f"{x:.3g}" else "")


def _variable(name: str) -> sp.Basic:
    """A verdict's variable as SymPy prints it: ``x1``, or a callable's value ``F(x2)``."""
    func, _, arg = name.partition("(")
    if not arg:
        return sp.Symbol(name)
    return sp.Function(func)(*[sp.Symbol(a.strip()) for a in arg.rstrip(")").split(",")])


def _search_rows(verdicts: Any, printer: Any, escape: Callable[[str], str]) -> list[dict]:
    """Per verdict (read as a typed value): where (the kernel's and output's names, raw),
    the domain and the verdict as text with inline math, and the steps kept (``lhs``,
    ``rhs`` as LaTeX, the reason as text with inline math); ``escape`` escapes plain text
    for the format (LaTeX or Markdown)."""
    rows = []
    for v in verdicts:
        where = f"{v.kernel}.{v.output}" + (f", term {v.term}" if v.term else "") + (
            f", piece {v.piece}" if v.piece else "")
        domain = ", ".join(
            f"${printer.doprint(_variable(name))}"
            + (r" \in (0, \max]$" if lo > 0 and hi >= 1.7e308 else
               r" \in [-\max, \max]$" if lo <= -1.7e308 and hi >= 1.7e308 else
               f" \\in [{_bound(lo)}, {_bound(hi)}]$") for name, lo, hi in v.domain)
        m0, m1 = v.before, v.after
        if v.note:
            verdict = escape(v.note)
        elif not m0.points:
            verdict = "no sample falls in this piece"
        elif v.steps:
            verdict = (f"max {_ulp(m0.max_ulp)} ulp as derived, {_ulp(m1.max_ulp)} ulp after "
                       f"the steps kept ({m0.points} points)")
        else:
            verdict = (f"max {_ulp(m0.max_ulp)} ulp over {m0.points} points, "
                       + ("no rewrite lowers it" if v.searched else
                          "measured only (a piecewise value inside it, or a long expression)"))
        if m0.nonfinite and not v.steps:
            verdict += f"; {m0.nonfinite} not finite where the true value is"

        def note(key: str, step: Any) -> str:
            return f"${printer.doprint(step.notes[int(key)])}$"

        steps = [{"lhs": printer.doprint(s.lhs), "rhs": printer.doprint(s.rhs),
                  "reason": fill(s.reason, lambda key, st=s: note(key, st), escape)}
                 for s in v.steps]
        rows.append({"where": where, "domain": "over " + domain if domain else "not measured",
                     "verdict": verdict, "steps": steps})
    return rows


#: What opens the search's verdicts, in the document and the notebook alike (``{module}``:
#: the module's name, as each format sets code).
_SEARCH_INTRO = ("Each output of each kernel measured against mpmath over its arguments' domain "
                 "(positive arguments over $(0, \\max]$, the others over both signs), and "
                 "searched for rewrites that lower the maximum error in ulp ({module}).")


def render_search(verdicts: Any, heading: str, options: LatexOptions | None = None,
                  names: Mapping[str, str] | None = None) -> str:
    """The accuracy search's verdicts on one module's kernel outputs
    (:class:`derive.kernel_search.Verdict`, read as typed values), as a LaTeX fragment:
    per output, the domain, the maximum error in ulp before and after, and the steps kept."""
    options = options or LatexOptions()
    printer = CourseworkLatexPrinter(options=options, names=names)
    rows = _search_rows(verdicts, printer, tex_escape)
    for row in rows:
        row["where"] = tex_escape(row["where"])
    return environment().get_template("search.tex.jinja").render(
        heading=heading, intro=_SEARCH_INTRO.format(module=r"\texttt{derive.kernel\_search}"),
        verdicts=rows)


def markdown_escape(text: str) -> str:
    """Plain text for a Markdown cell: the characters Markdown or its math would read
    escaped (a backslash, emphasis, code, math).

    Example:
        >>> print(markdown_escape("a_b * $c$"))
        a\\_b \\* \\$c\\$
    """
    return re.sub(r"([\\`*_$])", r"\\\1", text)


def render_search_markdown(verdicts: Any, heading: str, options: LatexOptions | None = None,
                           names: Mapping[str, str] | None = None) -> str:
    """The accuracy search's verdicts (as :func:`render_search`) as a Markdown cell of a
    Jupyter notebook, its math for MathJax: the notebook shows the steps the search kept
    on every kernel, user material's as the coursework's."""
    options = options or LatexOptions()
    printer = CourseworkLatexPrinter(options=options, names=names)
    rows = _search_rows(verdicts, printer, markdown_escape)
    return environment().get_template("search.md.jinja").render(
        heading=markdown_escape(heading), intro=_SEARCH_INTRO.format(
            module="`derive.kernel_search`"), verdicts=rows)
