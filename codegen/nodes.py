r"""SymPy nodes that the printers know and the derivations hand to them.

Vector-level expressions use plain symbols for arrays of shape ``(..., n)`` and
applied undefined functions (``F(x2)``) for callables evaluated once. Two shapes of
result need nodes of their own: a sum over the component axis (:class:`ComponentSum`),
and a block matrix whose blocks are sums of ``diag(coefficient) @ M`` terms
(:class:`BlockMatrixSpec`).

Example:
    >>> import sympy as sp
    >>> ComponentSum(sp.Symbol("G"))
    ComponentSum(G)
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

__all__ = ["ComponentSum", "Term", "BlockSpec", "BlockMatrixSpec", "IDENTITY"]


class ComponentSum(sp.Function):
    """``sum_i v_i``: the sum over the last (component) axis of a vector expression."""

    nargs = 1
    is_real = True


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
