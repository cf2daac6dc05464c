r"""The math's own SymPy nodes: every layer may use them, and they import no layer.

Vector-level expressions use plain symbols for arrays of shape ``(..., n)`` and
applied undefined functions (``F(x2)``) for callables evaluated once. Two shapes of
result need nodes of their own: a sum over the component axis (:class:`ComponentSum`),
and a block matrix whose blocks are sums of ``diag(coefficient) @ M`` terms
(:class:`BlockMatrixSpec`). Two functions the floating-point arrangement of derive
introduces have nodes too, :class:`softplus` and :class:`sigmoid`: each printer knows
them (``_print_softplus``, ``_print_sigmoid``), and SymPy proves them equal to their
definitions through ``rewrite(exp)``. Nodes whose meaning only a concrete model decides
(``E_q[...]``, ``det(dy/dx)``) are marked :class:`Opaque`.

Example:
    >>> import sympy as sp
    >>> ComponentSum(sp.Symbol("G"))
    ComponentSum(G)
    >>> u = sp.Symbol("u", real=True)
    >>> softplus(u).rewrite(sp.exp), sigmoid(u).rewrite(sp.exp)
    (log(exp(u) + 1), 1/(1 + exp(-u)))
    >>> softplus(u).diff(u)
    sigmoid(u)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

__all__ = ["ComponentSum", "Term", "BlockSpec", "BlockMatrixSpec", "IDENTITY", "softplus",
           "sigmoid", "cbrt", "Opaque", "is_opaque", "simplify", "identity", "plain"]


def simplify(expr: sp.Basic) -> sp.Basic:
    """``sympy.simplify(expr)``, remembered for the process: the same expression (SymPy's
    structural equality, which tells ``1.0`` from ``1`` and a positive symbol from a real
    one) is simplified once.

    A parameterization's derivations ask for the same simplifications many times (the log
    of ``sigma``'s derivative by 2.3c, 2.3np and 2.4; 203 calls on 85 expressions in the
    softplus pair module, 2 of its 5.4 s of simplify). The result is the one the first
    call returned, so what is derived is unchanged.

    Example:
        >>> x = sp.Symbol("x", positive=True)
        >>> simplify(sp.log(x**2) - 2 * sp.log(x))
        0
        >>> simplify(sp.sin(x)**2 + sp.cos(x)**2) is simplify(sp.sin(x)**2 + sp.cos(x)**2)
        True
    """
    if not isinstance(expr, sp.Basic):
        return sp.simplify(expr)
    return _simplify(expr)


def plain(expr: sp.Basic) -> sp.Basic:
    """``expr`` without the groupings kept for floating point (:class:`~sympy.UnevaluatedExpr`
    and its subclasses): the value a check compares, and SymPy differentiates.

    Example:
        >>> x = sp.Symbol("x", real=True)
        >>> plain(sp.UnevaluatedExpr(x + 1) - 1)
        x
    """
    return expr.replace(lambda a: isinstance(a, sp.UnevaluatedExpr), lambda a: a.args[0])


def identity(lhs: sp.Basic, rhs: sp.Basic, evaluate: bool = False) -> sp.Basic:
    """``lhs = rhs`` as a rewrite rule's note, left unevaluated: an evaluated ``Eq`` asks
    SymPy to decide it, which took about 1 s of every process's import for the rules'
    identities (each is checked with the step that shows it, not here).

    Example:
        >>> u = sp.Symbol("u", real=True)
        >>> identity(sp.exp(u) - 1, sp.exp(u) - 1)
        Eq(exp(u) - 1, exp(u) - 1)
    """
    return sp.Eq(lhs, rhs, evaluate=evaluate)


@lru_cache(maxsize=4096)
def _simplify(expr: sp.Basic) -> sp.Basic:
    return sp.simplify(expr)


class Opaque:
    """Marker for nodes whose meaning only a concrete model can decide (``E_q[...]``, a
    determinant left unevaluated): a step holding one is checked in the derivation's
    models only, never by simplifying it as it stands (which cannot succeed, and took
    simplify seconds to give up on).

    Example:
        >>> class Det(Opaque, sp.Function):
        ...     nargs = 1
        >>> is_opaque(Det(sp.Symbol("z")) - 1), isinstance(Det(sp.Symbol("z")), Opaque)
        (True, True)
    """


def is_opaque(expr: sp.Basic) -> bool:
    """Whether ``expr`` holds derivatives or :class:`Opaque` nodes.

    Example:
        >>> x = sp.Symbol("x")
        >>> is_opaque(sp.Derivative(sp.Function("f")(x), x)), is_opaque(x + 1)
        (True, False)
    """
    return expr.has(sp.Derivative) or any(
        isinstance(e, Opaque) for e in sp.preorder_traversal(expr))


class ComponentSum(sp.Function):
    """``sum_i v_i``: the sum over the last (component) axis of a vector expression."""

    nargs = 1
    is_real = True


class BroadcastSum(sp.Function):
    """``sum_i v_i`` kept as an axis of length 1 (``keepdims``), so that it broadcasts
    against the vectors it is combined with: ``u * tanh(sum_i w_i z_i + b)``. Code generation
    writes it for a :class:`ComponentSum` inside a vector expression."""

    nargs = 1
    is_real = True


class softplus(sp.Function):  # noqa: N801 - SymPy function names are lower case
    """``softplus(u) = log(1 + exp(u))``, positive for real ``u``; never forms ``exp(u)``
    when printed (NumPy: ``logaddexp(0, u)``)."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sigmoid(self.args[0])

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real

    def _eval_is_positive(self) -> bool | None:
        return self.args[0].is_real

    def _eval_rewrite_as_exp(self, arg: sp.Expr, **kwargs: object) -> sp.Expr:
        return sp.log(1 + sp.exp(arg))

    def _eval_evalf(self, prec: int) -> sp.Expr:
        return self.rewrite(sp.exp)._eval_evalf(prec)

    _eval_rewrite_as_log = _eval_rewrite_as_exp


class sigmoid(sp.Function):  # noqa: N801 - SymPy function names are lower case
    """``sigmoid(u) = 1 / (1 + exp(-u))``, in (0, 1) for real ``u``."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        u = self.args[0]
        return sigmoid(u) * sigmoid(-u)

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real

    def _eval_is_positive(self) -> bool | None:
        return self.args[0].is_real

    def _eval_rewrite_as_exp(self, arg: sp.Expr, **kwargs: object) -> sp.Expr:
        return 1 / (1 + sp.exp(-arg))

    def _eval_evalf(self, prec: int) -> sp.Expr:
        return self.rewrite(sp.exp)._eval_evalf(prec)


class cbrt(sp.Function):  # noqa: N801 - SymPy function names are lower case
    """The real cube root, ``sign(u) |u|**(1/3)``: printed as ``cbrt`` (NumPy, JAX), not as a
    power whose exponent 1/3 is rounded (an error that grows with ``|log u|``: 58 ulp near
    1e300).

    Example:
        >>> u = sp.Symbol("u", positive=True)
        >>> cbrt(u).rewrite(sp.exp), cbrt(u).diff(u), cbrt(-8).evalf(5)
        (u**(1/3), 1/(3*cbrt(u)**2), -2.0000)
    """

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return 1 / (3 * cbrt(self.args[0]) ** 2)

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real

    def _eval_is_nonnegative(self) -> bool | None:
        return self.args[0].is_nonnegative

    def _eval_is_positive(self) -> bool | None:
        return self.args[0].is_positive

    def _eval_rewrite_as_exp(self, arg: sp.Expr, **kwargs: object) -> sp.Expr:
        if arg.is_nonnegative:
            return arg ** sp.Rational(1, 3)
        return sp.sign(arg) * sp.Abs(arg) ** sp.Rational(1, 3)

    _eval_rewrite_as_Pow = _eval_rewrite_as_exp

    def _eval_evalf(self, prec: int) -> sp.Expr:
        arg = self.args[0]._eval_evalf(prec)
        if arg is None or not arg.is_Number:
            return None
        return (sp.sign(arg) * sp.Abs(arg) ** sp.Rational(1, 3))._eval_evalf(prec)


#: The matrix of a diagonal term: ``diag(c) @ I``.
IDENTITY = sp.Symbol("I", commutative=False)


@dataclass(frozen=True)
class Term:
    """``diag(coef) @ matrix``; ``matrix`` is :data:`IDENTITY` or an applied function."""

    coef: sp.Expr
    matrix: sp.Basic


@dataclass(frozen=True)
class BlockSpec:
    """One named ``n x n`` block of a block matrix: a sum of :class:`Term` values."""

    row: str
    col: str
    terms: tuple[Term, ...]
    description: str = ""

    @property
    def is_zero(self) -> bool:
        return not self.terms

    @property
    def is_diagonal(self) -> bool:
        return all(t.matrix == IDENTITY for t in self.terms)


@dataclass(frozen=True)
class BlockMatrixSpec:
    """A 2x2 block matrix ``[[A, B], [C, D]]`` given row by row."""

    blocks: tuple[tuple[BlockSpec, BlockSpec], tuple[BlockSpec, BlockSpec]]

    @property
    def rows(self) -> tuple[sp.Symbol, sp.Symbol]:
        """The vectors the block rows belong to (``y1, y2``)."""
        return tuple(sp.Symbol(row[0].row, real=True) for row in self.blocks)

    @property
    def cols(self) -> tuple[sp.Symbol, sp.Symbol]:
        """The vectors the block columns belong to (``x1, x2``)."""
        return tuple(sp.Symbol(block.col, real=True) for block in self.blocks[0])

    def __iter__(self):
        for row in self.blocks:
            yield from row
