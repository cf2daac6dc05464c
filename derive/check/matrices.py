r"""Reading a Jacobian block written in matrix notation as an explicit ``n x n`` matrix.

Question 1.2's blocks are matrices. An answer writes them with ``\operatorname{diag}(v)``,
the Jacobians ``J_F(x_2)``, ``J_G(x_2)``, the identity ``I``, vectors and matrix products
in the order written. A vector standing for a block is the diagonal of that block (the
hand-out's convention); a vector times a matrix, ``v \odot M`` or ``v M``, scales its rows
(``diag(v) M``). :func:`matrix_entries` evaluates such an expression at a concrete size,
in the explicit model of :mod:`derive.vocabulary` (``F_k`` a function of all of ``x2``).

Example:
    >>> import sympy as sp
    >>> from derive.vocabulary import X1, GB, i
    >>> from derive.check.quantities import DIAG, JACOBIAN_NAMES
    >>> m = matrix_entries(DIAG(sp.exp(GB[i])) * JACOBIAN_NAMES["G"], 1)
    >>> m[0, 0]
    exp(G_0(x2_0))*Derivative(G_0(x2_0), x2_0)
"""

from __future__ import annotations

import sympy as sp

from ..vocabulary import JFB, JGB, i, index_values, instantiate, j

__all__ = ["is_matrix_expr", "matrix_entries"]


def _markers() -> dict[str, object]:
    from .quantities import DIAG, IDENTITY, JACOBIAN_NAMES

    return {"diag": DIAG, "I": IDENTITY, "J": JACOBIAN_NAMES}


def is_matrix_expr(expr: sp.Basic) -> bool:
    """Whether ``expr`` uses ``diag``, a Jacobian or the identity."""
    if not isinstance(expr, sp.Basic):
        return False
    m = _markers()
    return bool(expr.atoms(m["diag"])) or any(
        expr.has(s) for s in (*m["J"].values(), m["I"]))


def _vector(expr: sp.Expr, size: int) -> list[sp.Expr]:
    return [instantiate(expr, size, index_values(k)) for k in range(size)]


def _value(expr: sp.Basic, size: int) -> tuple[str, object]:
    m = _markers()
    if not is_matrix_expr(expr):
        if expr.has(i):
            return "v", _vector(expr, size)
        return "s", instantiate(expr, size, {})
    if expr == m["I"]:
        return "m", sp.eye(size)
    for name, base in (("F", JFB), ("G", JGB)):
        if expr == m["J"][name]:
            entry = base[i, j]
            return "m", sp.Matrix(size, size, lambda a, b, e=entry: instantiate(
                e, size, index_values(a, b)))
    if isinstance(expr, sp.Function) and expr.func == m["diag"]:
        kind, v = _value(expr.args[0], size)
        if kind == "m":
            raise ValueError("diag of a matrix")
        return "m", sp.diag(*v) if kind == "v" else v * sp.eye(size)
    if isinstance(expr, sp.Add):
        parts = [_as_matrix(_value(a, size), size) for a in expr.args]
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        return "m", total
    if isinstance(expr, sp.Mul):
        acc = _value(expr.args[0], size)
        for arg in expr.args[1:]:
            acc = _times(acc, _value(arg, size), size)
        return acc
    raise ValueError(f"cannot read {type(expr).__name__} of a matrix")


def _as_matrix(value: tuple[str, object], size: int) -> sp.Matrix:
    kind, v = value
    if kind == "m":
        return v  # type: ignore[return-value]
    if kind == "v":
        return sp.diag(*v)  # type: ignore[misc]
    return v * sp.eye(size)  # type: ignore[operator]


def _times(a: tuple[str, object], b: tuple[str, object], size: int) -> tuple[str, object]:
    (ka, va), (kb, vb) = a, b
    if ka == "s" and kb == "s":
        return "s", va * vb  # type: ignore[operator]
    if "m" not in (ka, kb):
        if ka == "s":
            return "v", [va * x for x in vb]  # type: ignore[union-attr,operator]
        if kb == "s":
            return "v", [x * vb for x in va]  # type: ignore[union-attr,operator]
        return "v", [x * y for x, y in zip(va, vb, strict=True)]  # type: ignore[call-overload]
    if ka == "s":
        return "m", va * vb  # type: ignore[operator]
    if kb == "s":
        return "m", va * vb  # type: ignore[operator]
    return "m", _as_matrix(a, size) * _as_matrix(b, size)


def matrix_entries(expr: sp.Basic, size: int) -> sp.Matrix:
    """The explicit ``size x size`` matrix a block expression stands for."""
    return _as_matrix(_value(expr, size), size)
