r"""The array-API target: the project's printer with an ``xp`` module, and its lowering.

:class:`XpPrinter` is :class:`~codegen.numpy_backend.KernelPrinter` with the module
name ``xp`` (the caller's array namespace) and the 2023.12 standard's function names;
comparisons and logic print as operators, since scalar arguments to the function forms
only arrived in the 2024.12 standard. Every rule of the NumPy printer that prints
``self._module + ".name"`` carries over unchanged.

:func:`lower_xp` prints a plan without in-place writes (JAX and Dask arrays are
immutable): a block matrix is concatenated from its blocks, and a piecewise value is
handed to ``kernel_runtime.select`` as data -- its conditions, and each piece as a
function of its arrays with a safe point for each (chosen and checked by
:func:`derive.pieces.safe_point`). How the pieces are selected (gathered where they hold,
``torch.where`` with no device sync at small sizes, or the traced "double where") is
decided there, per call, in one place (:mod:`kernel_runtime.pieces`).

Example:
    >>> import sympy as sp
    >>> from sympy.codegen.cfunctions import expm1, log1p
    >>> x = sp.Symbol("x", real=True)
    >>> p = XpPrinter()
    >>> p.doprint(expm1(x) - log1p(x)), p.doprint(sp.And(x >= 2, x < 3))
    ('xp.expm1(x) - xp.log1p(x)', '(x >= 2) & (x < 3)')
"""

from __future__ import annotations

from typing import Any

import sympy as sp
from sympy.printing.numpy import _known_constants_numpy, _known_functions_numpy

from .numpy_backend import KernelPrinter, lower_blocks, lower_piecewise, lower_statements
from .plan import KernelPlan, Statement

__all__ = ["XpPrinter", "lower_xp"]

#: NumPy's name -> the array API's name, where they differ.
_RENAMED = {"arccos": "acos", "arcsin": "asin", "arctan": "atan", "arctan2": "atan2",
            "arccosh": "acosh", "arcsinh": "asinh", "arctanh": "atanh", "power": "pow",
            "amin": "min", "amax": "max"}


class XpPrinter(KernelPrinter):
    """:class:`~codegen.numpy_backend.KernelPrinter` printing for an array namespace ``xp``.

    Example:
        >>> import sympy as sp
        >>> a = sp.Symbol("a", real=True)
        >>> XpPrinter().doprint(sp.Piecewise((a, a > 0), (0, True)).args[0].cond)
        '(a > 0)'
        >>> XpPrinter().doprint(sp.And(a > 0, sp.Or(a < -1, a > 1), evaluate=False))
        '(a > 0) & ((a > 1) | (a < -1))'
    """

    _module = "xp"
    _kf = {k: "xp." + _RENAMED.get(v, v) for k, v in _known_functions_numpy.items()}
    _kc = {k: "xp." + v for k, v in _known_constants_numpy.items()}

    def _print(self, expr: Any, **kwargs: Any) -> str:
        # A function of a number (log(2)) is that number: the array API's functions take
        # arrays only (torch.log(2) raises), and a Python float keeps the arrays' dtype.
        if isinstance(expr, sp.Function) and expr.is_number and expr.is_real:
            value = expr.evalf(17)
            if value.is_Float:
                return repr(float(value))
        return super()._print(expr, **kwargs)

    def _print_Relational(self, expr: sp.Basic) -> str:
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        return f"({self._print(expr.lhs)} {op} {self._print(expr.rhs)})"

    def _print_And(self, expr: sp.Basic) -> str:
        return " & ".join(self._operand(a) for a in expr.args)

    def _print_Or(self, expr: sp.Basic) -> str:
        return " | ".join(self._operand(a) for a in expr.args)

    def _operand(self, arg: sp.Basic) -> str:
        """An operand of ``&``/``|``: a nested ``&``/``|`` in parentheses."""
        printed = self._print(arg)
        return f"({printed})" if isinstance(arg, sp.And | sp.Or) else printed

    def _print_Not(self, expr: sp.Basic) -> str:
        return f"~({self._print(expr.args[0])})"

    # 2023.12 has no Python scalars as arguments of element-wise functions: the 0 of
    # softplus(u) = logaddexp(0, u) is the kernel's 0-d ``_zero`` (see :func:`lower_xp`).
    uses_zero = False

    def _print_softplus(self, expr: sp.Basic) -> str:
        self.uses_zero = True
        return f"xp.logaddexp(_zero, {self._print(expr.args[0])})"

    def _print_sigmoid(self, expr: sp.Basic) -> str:
        self.uses_zero = True
        return f"xp.exp(-xp.logaddexp(_zero, {self._print(-expr.args[0])}))"


    def _print_cbrt(self, expr: sp.Basic) -> str:
        # The 2023.12 standard has no cbrt (JAX has one; PyTorch does not): where the
        # namespace lacks it, |u|**(1/3) (its exponent rounded: an error near |log u| 2**-54)
        # and one Newton step, which brings it to about an ulp; the sign put back.
        u = self._print(expr.args[0])
        r = f"xp.abs({u})**(1/3)"
        newton = f"xp.where({r} > 0, {r} - ({r} - xp.abs({u})/({r}*{r}))/3, {r})"
        return f"(xp.cbrt({u}) if hasattr(xp, 'cbrt') else xp.sign({u})*{newton})"


def _array_code(code: str, expr: sp.Basic) -> str:
    """``code`` as an array: a constant piece is added to the 0-d ``_zero``."""
    return code if expr.free_symbols else f"_zero + {code}"


def _piecewise_xp(st: Statement, printer: XpPrinter) -> dict[str, Any]:
    """Pieces as data, with their safe points (numbers: ``kernel_runtime`` makes one an
    array only where it is used); constant pieces as 0-d arrays (``_zero + c``)."""
    return lower_piecewise(st, printer, _array_code, namespace="xp", like="_like")


def _term_code(coef: str, matrix: str) -> str:
    """``diag(coef) @ matrix`` for any array-API library, without forming ``diag(coef)``."""
    eye = "_rt.eye_xp(xp, _n, _dtype, _like)"
    if coef:
        return f"_rt.scale_rows_xp(xp, {coef}, {matrix or eye})"
    return matrix or eye


def _held_arguments(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Before the first call on each distinct argument, its holder (``_rt.callee_arg``),
    which chooses once how the callables on that argument receive it (each its own copy
    where arrays are mutable; :class:`kernel_runtime.CalleeArg`)."""
    out: list[dict[str, Any]] = []
    held: dict[str, str] = {}
    for st in statements:
        if st["kind"] == "call":
            arg = st["arg"]
            if arg not in held:
                held[arg] = f"_arg_{arg}"
                out.append({"kind": "callee", "target": held[arg], "arg": arg})
            st = {**st, "arg": held[arg]}
        out.append(st)
    return out


def lower_xp(plan: KernelPlan, printer: XpPrinter) -> dict[str, Any]:
    """The plan printed for the array-API body: no in-place writes, pieces as data.

    Example:
        >>> import sympy as sp
        >>> from codegen.plan import plan_kernel
        >>> from derive.spec import Arg, Kernel, Output
        >>> x = sp.Symbol("x", real=True)
        >>> k = Kernel("f", (Arg("x", "elementwise", "x"),),
        ...            (Output("y", sp.Piecewise((sp.log(x), x > 1), (0, True)), "y"),), "")
        >>> st = lower_xp(plan_kernel(k), XpPrinter())["statements"][0]
        >>> st["conds"]
        ('(x > 1)',)
        >>> st["pieces"]
        (('lambda x: xp.log(x)', 'x,', '2,'), ('lambda: _zero + 0', '', ''))
    """
    printer.uses_zero = False
    statements = _held_arguments(lower_statements(plan, printer, _piecewise_xp))
    blocks = lower_blocks(plan, _term_code, "None")
    # A 0-d zero in the working dtype on the inputs' device: constants in xp.where become
    # arrays with it (2023.12 has no scalar arguments to where).
    pieces = any(st["kind"] == "piecewise" for st in statements)
    zero = printer.uses_zero or pieces
    prologue = [("_zero", "_rt.zero(xp, _dtype, _like)")] if zero else []
    return {"statements": statements, "blocks": blocks, "prologue": prologue}
