r"""The one plain value ``derive`` hands to ``codegen``: named inputs, named outputs, docs.

A :class:`Kernel` is one function of a generated module: its arguments (each with a
kind that fixes its shape contract), its output expressions in return order, and its
docstring. A :class:`Module` is a generated file: its kernels, what it was derived
from, and the shape contract its arguments follow.

Example:
    >>> import sympy as sp
    >>> x = sp.Symbol("x", real=True)
    >>> k = Kernel("double", (Arg("x", "batch", "the input"),),
    ...            (Output("y", 2 * x, "twice x"),), "Twice the input.")
    >>> k.arg_names
    ('x',)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import sympy as sp
from sympy.core.function import AppliedUndef

from .nodes import BlockMatrixSpec

__all__ = ["Arg", "Output", "Kernel", "Module", "ArgKind"]

#: ``batch``: an array ``(..., n)``; ``param``: a vector ``(n,)``; ``function``: a callable
#: ``(..., n) -> (..., n)``; ``jacobian``: a callable ``(..., n) -> (..., n, n)``;
#: ``elementwise``: an array of any shape, broadcast against the others; ``positive``: the
#: same, but every entry must be > 0; ``scalar``: a real scalar parameter, shape ``()`` (in a
#: coupling module, after the parameter vectors); ``positive_param`` and ``positive_scalar``:
#: a parameter vector and a scalar that the derivation assumes positive
#: (``param_vector``/``param_scalar`` with ``positive=True``), checked > 0 by the kernels.
ArgKind = Literal["batch", "param", "function", "jacobian", "elementwise", "positive",
                  "scalar", "positive_param", "positive_scalar"]
_ARRAY_KINDS = ("batch", "param", "elementwise", "positive", "scalar", "positive_param",
                "positive_scalar")
_POSITIVE_KINDS = ("positive", "positive_param", "positive_scalar")
_CALLABLE_KINDS = ("function", "jacobian")


@dataclass(frozen=True)
class Arg:
    """One argument of a kernel: its name, kind (see :data:`ArgKind`) and description."""

    name: str
    kind: ArgKind
    doc: str

    @property
    def is_array(self) -> bool:
        return self.kind in _ARRAY_KINDS

    @property
    def is_positive(self) -> bool:
        """Whether every entry must be > 0 (the kernels check it).

        Example:
            >>> Arg("h", "positive_param", "").is_positive, Arg("s", "param", "").is_positive
            (True, False)
        """
        return self.kind in _POSITIVE_KINDS

    @property
    def is_param(self) -> bool:
        """Whether it is a coupling block's parameter vector, shape ``(n,)``."""
        return self.kind in ("param", "positive_param")

    @property
    def is_scalar(self) -> bool:
        """Whether it is a scalar parameter, shape ``()``."""
        return self.kind in ("scalar", "positive_scalar")

    @property
    def symbol(self) -> sp.Symbol:
        return sp.Symbol(self.name, real=True)


@dataclass(frozen=True)
class Output:
    """One output: a vector-level expression or a block matrix, and what it is.

    ``reduced=True`` marks an output that sums over the component axis (shape ``(...,)``);
    ``internal=True`` a named intermediate that later outputs use and that is not returned.
    (Whether the last piece of a piecewise value may overflow only where another piece holds,
    which the NumPy body need not warn about, is decided by code generation, by a check:
    ``codegen.plan.overflow_is_overwritten``.)
    """

    name: str
    value: sp.Expr | BlockMatrixSpec
    doc: str
    reduced: bool = False
    internal: bool = False


@dataclass(frozen=True)
class Kernel:
    """A function of a generated module: arguments, outputs (in return order), docstring.

    ``gradient`` names another kernel of the module, with the same arguments, whose outputs
    are this kernel's exact gradient with respect to each array argument, in order (``kl``
    and ``kl_grad``): eager PyTorch then differentiates through it, not through the pieces
    (``kernel_runtime.differentiable``). Empty: autograd goes through the body.
    """

    name: str
    args: tuple[Arg, ...]
    outputs: tuple[Output, ...]
    summary: str
    details: str = ""
    gradient: str = ""

    def __post_init__(self) -> None:
        names = [a.name for a in self.args]
        known = {a.name for a in self.args if a.is_array} | {o.name for o in self.outputs}
        callables = {a.name for a in self.args if a.kind in _CALLABLE_KINDS}
        for out in self.outputs:
            exprs = _expressions(out.value)
            for e in exprs:
                for sym in e.free_symbols:
                    if sym.name not in known:
                        raise ValueError(
                            f"kernel {self.name}: output {out.name} uses {sym}, which is "
                            f"neither an argument ({', '.join(names)}) nor an output"
                        )
                for app in e.atoms(AppliedUndef):
                    if app.func.__name__ not in callables:
                        raise ValueError(
                            f"kernel {self.name}: output {out.name} calls {app.func}, which "
                            "is not a callable argument"
                        )

    @property
    def arg_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.args)

    @property
    def returns(self) -> tuple[Output, ...]:
        """The outputs the kernel returns, in order."""
        return tuple(o for o in self.outputs if not o.internal)


def _expressions(value: sp.Expr | BlockMatrixSpec) -> list[sp.Expr]:
    if isinstance(value, BlockMatrixSpec):
        out: list[sp.Expr] = []
        for block in value:
            for term in block.terms:
                out.append(term.coef)
                if isinstance(term.matrix, AppliedUndef):
                    out.append(term.matrix)
        return out
    return [value]


@dataclass(frozen=True)
class Module:
    """A generated module: its kernels and where they come from.

    Arguments:
        name: the module name (``generated/<name>.py``).
        title: a one-line description, the module docstring's first line.
        description: a paragraph for the module docstring.
        kernels: the functions, in order.
        source: what the kernels were derived from, for the header.
        contract: ``"coupling"`` (arrays ``(..., n)`` with a parameter ``(n,)``) or
            ``"elementwise"`` (arrays of any broadcastable shape).
        example: doctest lines for the module docstring.
    """

    name: str
    title: str
    description: str
    kernels: tuple[Kernel, ...]
    source: str
    contract: Literal["coupling", "elementwise"]
    example: str = ""

    def __post_init__(self) -> None:
        by_name = {k.name: k for k in self.kernels}
        for k in self.kernels:
            if not k.gradient:
                continue
            g = by_name.get(k.gradient)
            arrays = [a for a in k.args if a.is_array]
            if g is None or g.args != k.args or len(g.returns) != len(arrays) \
                    or len(k.returns) != 1:
                raise ValueError(
                    f"module {self.name}: kernel {k.name}'s gradient {k.gradient!r} must be "
                    f"a kernel of the module with the same arguments and one output per "
                    f"array argument ({len(arrays)}), of a kernel with one output")
