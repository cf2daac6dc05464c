r"""A new question: the log-determinant of a planar flow by the matrix determinant lemma.

The planar flow (Rezende and Mohamed, 2015) maps ``z`` in R^n to
``f(z) = z + u tanh(w . z + b)``, with parameter vectors ``u``, ``w`` and a scalar ``b``.
Its Jacobian is the identity plus a rank-one matrix, so its determinant is one number,
``1 + (1 - tanh(a)^2) w . u`` with ``a = w . z + b`` (the matrix determinant lemma,
``det(I + c v^T) = 1 + v^T c``). Each step below is checked: SymPy first, then with
explicit ``n x n`` matrices at ``n = 1, 2, 3`` (:func:`_explicit_model`, this package's
own model: the determinant there is computed, not looked up).

Example:
    >>> d = derive_planar()
    >>> d.result("det")
    (1 - tanh(b + Sum(w[i]*z[i], (i, 0, n - 1)))**2)*Sum(u[i]*w[i], (i, 0, n - 1)) + 1
    >>> [k.name for k in planar_module().kernels]
    ['forward', 'log_det_jacobian']
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import sympy as sp

from derive.api import (
    KERNEL_REWRITES,
    Arg,
    Derivation,
    Kernel,
    Module,
    Opaque,
    Output,
    Result,
    Step,
    apply_rewrites,
    i,
    j,
    n,
    param_scalar,
    param_vector,
    to_vector,
)

__all__ = ["derive_planar", "planar_module", "PlanarDet", "Z", "FZ", "U", "W", "b"]

#: The input z, the output f(z), and the flow's parameters: u, w of shape (n,), b scalar.
Z = sp.IndexedBase("z", real=True)
FZ = sp.IndexedBase("f", real=True)
U, W = param_vector("u").base, param_vector("w").base
b = param_scalar("b")

#: The pre-activation ``a = w . z + b`` and the flow's i-th output component.
A = sp.Sum(W[i] * Z[i], (i, 0, n - 1)) + b
OUTPUT = Z[i] + U[i] * sp.tanh(A)
#: Names for the two sums the log-determinant needs: ``a = w . z + b`` and ``q = w . u``.
_A, _Q = sp.Symbol("a", real=True), sp.Symbol("q", real=True)


class PlanarDet(Opaque, sp.Function):
    r"""``det(df/dz)`` of the map whose ``i``-th component is the argument (unevaluated:
    :class:`~derive.api.Opaque`, so a step holding it is checked in the model only)."""

    nargs = 1
    is_real = True

    def _latex(self, printer: object) -> str:
        return r"\det \frac{\partial \mathbf{f}}{\partial \mathbf{z}}"

    def _sympystr(self, printer: object) -> str:
        return "det(df/dz)"


def _explicit(expr: sp.Basic, size: int, a: int, c: int) -> sp.Basic:
    """``expr`` at ``n = size``, ``i = a``, ``j = c``: sums written out, determinants of
    ``n x n`` Jacobians computed from the components."""
    def det(component: sp.Expr) -> sp.Expr:
        rows = [sp.sympify(component).subs(n, size).subs(i, r).doit() for r in range(size)]
        return sp.Matrix(rows).jacobian([Z[k] for k in range(size)]).det(method="berkowitz")

    expr = sp.sympify(expr).replace(PlanarDet, det)
    return expr.subs(n, size).subs({i: a, j: c}).doit()


def _explicit_model(lhs: sp.Basic, rhs: sp.Basic) -> Iterator[tuple[sp.Basic, sp.Basic]]:
    """Both sides at ``n = 1, 2, 3`` and every value of the free indices."""
    for size in (1, 2, 3):
        for a in range(size) if (lhs.has(i) or rhs.has(i)) else (0,):
            for c in range(size) if (lhs.has(j) or rhs.has(j)) else (0,):
                yield _explicit(lhs, size, a, c), _explicit(rhs, size, a, c)


@cache
def derive_planar() -> Derivation:
    """P.1: the Jacobian of the planar flow, its determinant and log-determinant, and the
    log-determinant arranged for floating point (each rewrite a checked step)."""
    slope = 1 - sp.tanh(A) ** 2
    dot_wu = sp.Sum(W[i] * U[i], (i, 0, n - 1))
    entry = sp.KroneckerDelta(i, j) + U[i] * slope * W[j]
    det = 1 + slope * dot_wu
    # the log-determinant in two numbers per sample, a = w . z + b and q = w . u: arranged
    # for floating point in them (each rewrite checked for every real a, q)
    log_det = sp.log(sp.Abs(1 + (1 - sp.tanh(_A) ** 2) * _Q))
    arranged, rewrites = apply_rewrites(log_det, KERNEL_REWRITES)
    d_f = sp.Derivative(FZ[i], Z[j])
    steps = [
        Step(d_f, entry, "the chain rule: {0}, and {1}",
             notes=(sp.Eq(sp.Derivative(sp.tanh(sp.Symbol("a")), sp.Symbol("a")),
                          1 - sp.tanh(sp.Symbol("a")) ** 2),
                    sp.Eq(sp.Derivative(A, Z[j]), W[j])),
             given={FZ[i]: OUTPUT}),
        Step(PlanarDet(OUTPUT), det,
             "the Jacobian is the identity plus the rank-one matrix {0}: by the matrix "
             "determinant lemma, {1}",
             notes=(sp.Symbol(r"(1 - \tanh^2 a) \, u w^T"),
                    sp.Symbol(r"\det(I + c v^T) = 1 + v^T c"))),
        Step(sp.log(sp.Abs(PlanarDet(OUTPUT))), log_det,
             "the log of its absolute value, with {0} and {1}",
             notes=(sp.Eq(_A, A), sp.Eq(_Q, dot_wu)), given={_A: A, _Q: dot_wu}),
    ] + list(rewrites)
    return Derivation(
        "P.1", "The log-determinant of a planar flow",
        "For the planar flow whose i-th component is given below, find the Jacobian, its "
        "determinant in closed form, and the log-determinant a flow's training needs.",
        steps,
        [Result("jacobian", entry, "the Jacobian entry", d_f),
         Result("det", det, "the determinant, by the matrix determinant lemma",
                PlanarDet(OUTPUT)),
         Result("log_abs_det", arranged.xreplace({_A: A, _Q: dot_wu}),
                "the log-determinant, as the kernel evaluates it",
                sp.log(sp.Abs(PlanarDet(OUTPUT))), typeset=False)],
        models=(_explicit_model,))


def planar_module() -> Module:
    """The planar flow's kernels, ``forward`` and ``log_det_jacobian``, from P.1."""
    d = derive_planar()
    args = (Arg("z", "batch", "the input, shape (..., n)."),
            Arg("u", "param", "the parameter vector u, shape (n,)."),
            Arg("w", "param", "the parameter vector w, shape (n,)."),
            Arg("b", "scalar", "the scalar parameter b, shape ()."))
    return Module(
        "planar_flow", "Generated kernels for a planar flow.",
        "f(z) = z + u tanh(w . z + b) and log|det(df/dz)| by the matrix determinant lemma.",
        (Kernel("forward", args, (Output("f", to_vector(OUTPUT), "f(z), shape (..., n)."),),
                "Apply the planar flow."),
         Kernel("log_det_jacobian", args,
                (Output("a", to_vector(A), "the pre-activation w . z + b", reduced=True,
                        internal=True),
                 Output("log_det", to_vector(d.result("log_abs_det").xreplace({A: _A})),
                        "log|det(df/dz)|, shape (...,).", reduced=True)),
                "log|det(df/dz)| of the planar flow, in O(n).")),
        "examples.material.planar.derive_planar (P.1)", "coupling")
