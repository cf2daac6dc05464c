r"""Index notation for question 1: the component symbols a coupling block is written in.

A coupling block is specified by the ``i``-th components of its two outputs, written
with the symbols below. ``x1``, ``x2``, ``s``, ``y1``, ``y2`` stand for the ``i``-th
component of the vector of that name; ``F`` and ``G`` for the ``i``-th component of the
vector-valued functions ``F(x2)`` and ``G(x2)`` (each component may depend on every
component of ``x2``); ``JF[i, j]`` and ``JG[i, j]`` for the entries of their Jacobians.

Statements in index notation hold for every size ``n``. :func:`instantiate` turns one
into the explicit statement at a concrete ``n`` and concrete indices, where every
function is an undefined SymPy function of all ``n`` components of ``x2``; the step
checker uses it to verify what SymPy cannot decide in index form.

Example:
    >>> from derive.vocabulary import x1, F, G, instantiate, index_values
    >>> instantiate(x1 * G + F, n=2, values=index_values(1, 0))
    x1_1*G_1(x2_0, x2_1) + F_1(x2_0, x2_1)
"""

from __future__ import annotations

from collections.abc import Mapping

import sympy as sp

from .nodes import ComponentSum, Opaque, is_opaque

__all__ = [
    "i", "j", "n",
    "X1", "X2", "S", "Y1", "Y2", "FB", "GB", "JFB", "JGB",
    "x1", "x2", "s", "y1", "y2", "F", "G", "JF", "JG",
    "FUNCTIONS", "JACOBIANS", "DERIVATIVES", "DFB", "DGB", "VECTORS",
    "DetJacobian", "DetBlock", "VECTOR_SYMBOLS", "VECTOR_FUNCTIONS", "vector_call", "to_vector",
    "instantiate", "index_values", "index_model", "uses_index_notation", "explicit_vector",
    "RESERVED", "param_vector", "param_scalar",
]

i = sp.Symbol("i", integer=True, nonnegative=True)
j = sp.Symbol("j", integer=True, nonnegative=True)
n = sp.Symbol("n", integer=True, positive=True)

X1 = sp.IndexedBase("x1", real=True)
X2 = sp.IndexedBase("x2", real=True)
S = sp.IndexedBase("s", real=True)
Y1 = sp.IndexedBase("y1", real=True)
Y2 = sp.IndexedBase("y2", real=True)
FB = sp.IndexedBase("F", real=True)
GB = sp.IndexedBase("G", real=True)
JFB = sp.IndexedBase("JF", real=True)
JGB = sp.IndexedBase("JG", real=True)
DFB = sp.IndexedBase("dF", real=True)  # F_i'(x2_i) where F acts element-wise
DGB = sp.IndexedBase("dG", real=True)

x1, x2, s, y1, y2 = X1[i], X2[i], S[i], Y1[i], Y2[i]
F, G = FB[i], GB[i]
JF, JG = JFB[i, j], JGB[i, j]

#: Plain vectors of the block, by role: inputs, parameter, outputs.
VECTORS: dict[str, sp.IndexedBase] = {"x1": X1, "x2": X2, "s": S, "y1": Y1, "y2": Y2}
#: The opaque functions, each a function of ``x2``, and their Jacobians.
FUNCTIONS: dict[sp.IndexedBase, sp.IndexedBase] = {FB: X2, GB: X2}
JACOBIANS: dict[sp.IndexedBase, sp.IndexedBase] = {FB: JFB, GB: JGB}
#: The derivatives of the opaque functions where they act element-wise.
DERIVATIVES: dict[sp.IndexedBase, sp.IndexedBase] = {FB: DFB, GB: DGB}

_MODEL_CACHE: dict[tuple[int, bool], dict[str, object]] = {}

#: Names a material's own parameters may not take: the vocabulary's symbols and bases.
RESERVED = frozenset({"i", "j", "n", "x1", "x2", "s", "y1", "y2", "F", "G", "JF", "JG",
                      "dF", "dG"})


def _check_name(name: str) -> None:
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"name: expected a Python identifier, got {name!r}")
    if name in RESERVED:
        raise ValueError(f"name: {name!r} is a name of the vocabulary; expected a new name "
                         f"(not one of {', '.join(sorted(RESERVED))})")


def param_vector(name: str, positive: bool = False) -> sp.Indexed:
    """The ``i``-th component of a new parameter vector of shape ``(n,)``, like ``s``.

    A block that uses it takes it as a kernel argument of that name, checked like ``s``.
    With ``positive``, the derivations assume every component is positive (a width, a
    height or a slope), and the kernels check it (kind ``positive_param``: a value <= 0 is
    a ValueError naming the argument).

    Example:
        >>> t = param_vector("t")
        >>> t, t.base.is_real, to_vector(sp.exp(s) * x2 + t)
        (t[i], True, t + x2*exp(s))
        >>> param_vector("h", positive=True).is_positive
        True
    """
    _check_name(name)
    if positive:
        return sp.IndexedBase(name, positive=True)[i]
    return sp.IndexedBase(name, real=True)[i]


def param_scalar(name: str, positive: bool = False) -> sp.Symbol:
    """A new real scalar parameter (shape ``()``), a kernel argument of that name; with
    ``positive``, assumed positive by the derivations and checked > 0 by the kernels.

    Example:
        >>> c = param_scalar("c")
        >>> c.is_real, to_vector(c * x1 + F)
        (True, c*x1 + F(x2))
    """
    _check_name(name)
    return sp.Symbol(name, positive=True) if positive else sp.Symbol(name, real=True)


def _extra_vector(label: str, size: int, positive: bool = False) -> tuple[sp.Symbol, ...]:
    """The explicit components of a material's own parameter vector ``label``."""
    if positive:
        return sp.symbols(f"{label}_0:{size}", positive=True)
    return sp.symbols(f"{label}_0:{size}", real=True)


class DetJacobian(Opaque, sp.Expr):
    """``det(dy/dx)`` of the whole ``2n x 2n`` Jacobian of the block given as ``(y1, y2)``."""

    is_commutative = True

    def __new__(cls, y1_expr: sp.Expr, y2_expr: sp.Expr) -> DetJacobian:
        return sp.Expr.__new__(cls, y1_expr, y2_expr)


class DetBlock(Opaque, sp.Expr):
    """``det(d out_expr / d inp)``: the determinant of one ``n x n`` block."""

    is_commutative = False  # keeps det(A) det(D) in the order written

    def __new__(cls, out_expr: sp.Expr, inp: sp.IndexedBase, label: sp.IndexedBase) -> DetBlock:
        return sp.Expr.__new__(cls, out_expr, inp, label)


def uses_index_notation(expr: sp.Basic) -> bool:
    """Whether ``expr`` mentions component symbols, index sums or block objects."""
    return bool(expr.atoms(sp.Indexed) or expr.has(sp.Sum, sp.Product)) or is_opaque(expr)


def index_values(a: int, b: int = 0) -> dict[sp.Symbol, int]:
    """The substitution for the free indices ``i = a``, ``j = b``."""
    return {i: a, j: b}


def _model(size: int, elementwise: bool = False) -> dict[str, object]:
    """Explicit symbols and undefined functions for vectors of length ``size``.

    Each ``F_k`` is a function of all of ``x2``, or of ``x2_k`` alone when ``elementwise``.
    """
    if (size, elementwise) not in _MODEL_CACHE:
        vectors = {
            name: sp.symbols(f"{name}_0:{size}", real=True) for name in VECTORS
        }
        args = vectors["x2"]
        functions = {
            base: [sp.Function(f"{base.label}_{k}", real=True)(
                *((args[k],) if elementwise else args)) for k in range(size)]
            for base in FUNCTIONS
        }
        _MODEL_CACHE[(size, elementwise)] = {"vectors": vectors, "functions": functions}
    return _MODEL_CACHE[(size, elementwise)]


def explicit_vector(expr: sp.Expr, size: int) -> list[sp.Expr]:
    """All ``size`` components of the component-``i`` expression ``expr``."""
    return [instantiate(expr, size, index_values(k)) for k in range(size)]


def instantiate(expr: sp.Basic, n: int, values: Mapping[sp.Symbol, int],
                elementwise: bool = False) -> sp.Basic:
    """The explicit meaning of an index-notation expression at size ``n``.

    Arguments:
        expr: an expression in the component symbols of this module.
        n: the concrete vector length.
        values: concrete values of the free indices (see :func:`index_values`).
        elementwise: make ``F_k`` and ``G_k`` functions of ``x2_k`` alone.
    """
    model = _model(n, elementwise)
    vectors: dict[str, tuple[sp.Symbol, ...]] = model["vectors"]  # type: ignore[assignment]
    functions: dict[sp.IndexedBase, list[sp.Expr]] = model["functions"]  # type: ignore[assignment]
    size_symbol = globals()["n"]

    def walk(e: sp.Basic, env: Mapping[sp.Symbol, int]) -> sp.Basic:
        if isinstance(e, sp.Indexed):
            idx = [int(sp.sympify(k).subs(env)) for k in e.indices]
            if any(k < 0 or k >= n for k in idx):
                raise IndexError(f"index {idx} out of range for n = {n} in {e}")
            base = e.base
            if base in FUNCTIONS:
                return functions[base][idx[0]]
            for fbase, dbase in DERIVATIVES.items():
                if base == dbase:
                    row = functions[fbase][idx[0]]
                    return sp.diff(row, vectors["x2"][idx[0]])
            for fbase, jbase in JACOBIANS.items():
                if base == jbase:
                    row = functions[fbase][idx[0]]
                    return sp.diff(row, vectors[str(FUNCTIONS[fbase].label)][idx[1]])
            label = str(base.label)
            if label in vectors:
                return vectors[label][idx[0]]
            return _extra_vector(label, n, bool(base.is_positive))[idx[0]]
        if isinstance(e, sp.KroneckerDelta):
            a, b = (int(sp.sympify(k).subs(env)) for k in e.args)
            return sp.Integer(int(a == b))
        if isinstance(e, (sp.Sum, sp.Product)):
            (var, lo, hi), = e.limits
            lo_v = int(sp.sympify(lo).subs({size_symbol: n, **env}))
            hi_v = int(sp.sympify(hi).subs({size_symbol: n, **env}))
            terms = [walk(e.function, {**env, var: k}) for k in range(lo_v, hi_v + 1)]
            return sp.Add(*terms) if isinstance(e, sp.Sum) else sp.Mul(*terms)
        if isinstance(e, sp.Derivative):
            body = walk(e.expr, env)
            for var, count in e.variable_count:
                body = sp.diff(body, walk(var, env), count)
            return body
        if isinstance(e, DetJacobian):
            y1_e, y2_e = e.args
            outs = explicit_vector(y1_e, n) + explicit_vector(y2_e, n)
            wrt = list(vectors["x1"]) + list(vectors["x2"])
            return sp.Matrix(outs).jacobian(wrt).det(method="berkowitz")
        if isinstance(e, DetBlock):
            out_e, inp, _label = e.args
            block = sp.Matrix(explicit_vector(out_e, n)).jacobian(list(vectors[str(inp.label)]))
            return block.det(method="berkowitz")
        if e is size_symbol:
            return sp.Integer(n)
        if isinstance(e, sp.Symbol) and e in env:
            return sp.Integer(env[e])
        if not e.args:
            return e
        return e.func(*[walk(a, env) for a in e.args])

    return walk(sp.sympify(expr), dict(values))


def index_model(sizes: tuple[int, ...] = (1, 2, 3), elementwise: bool = False):
    """A step-checking model: both sides expanded at every size and index value.

    With ``elementwise``, F and G act element-wise (the special case of question 1.2).

    Example:
        >>> model = index_model((2,))
        >>> [pair for pair in model(x1, x1)][:1]
        [(x1_0, x1_0)]
    """

    def model(lhs: sp.Basic, rhs: sp.Basic):
        # ``has`` sees indices everywhere, derivative variables included (free_symbols
        # does not list a Derivative's variables).
        uses_i, uses_j = lhs.has(i) or rhs.has(i), lhs.has(j) or rhs.has(j)
        for size in sizes:
            rows = range(size) if uses_i else [0]
            cols = range(size) if uses_j else [0]
            for a in rows:
                for b in cols:
                    vals = index_values(a, b)
                    yield (instantiate(lhs, size, vals, elementwise),
                           instantiate(rhs, size, vals, elementwise))

    return model


#: Vector-level names: the arrays and callables the generated kernels take.
VECTOR_SYMBOLS: dict[sp.IndexedBase, sp.Symbol] = {
    base: sp.Symbol(name, real=True) for name, base in VECTORS.items()
}
VECTOR_FUNCTIONS: dict[sp.IndexedBase, type[sp.Function]] = {
    base: sp.Function(str(base.label), real=True) for base in (FB, GB, JFB, JGB)
}


def vector_call(base: sp.IndexedBase) -> sp.Expr:
    """The applied vector-level function for an opaque base: ``F(x2)`` for ``F``."""
    arg = FUNCTIONS.get(base)
    if arg is None:
        arg = next(FUNCTIONS[f] for f, jb in JACOBIANS.items() if jb == base)
    return VECTOR_FUNCTIONS[base](VECTOR_SYMBOLS[arg])


def to_vector(expr: sp.Basic) -> sp.Basic:
    """The element-wise vector expression whose ``i``-th component is ``expr``.

    Example:
        >>> to_vector(x1 * sp.exp(G) + F)
        x1*exp(G(x2)) + F(x2)
    """
    if j in sp.sympify(expr).free_symbols:
        raise ValueError(f"{expr} is an (i, j) entry of a matrix; it has no vector form")

    def walk(e: sp.Basic) -> sp.Basic:
        if isinstance(e, sp.Indexed):
            if e.indices != (i,):
                raise ValueError(f"{e} is not an i-th component; cannot vectorize it")
            if e.base in VECTOR_SYMBOLS:
                return VECTOR_SYMBOLS[e.base]
            if e.base in VECTOR_FUNCTIONS:
                return vector_call(e.base)
            return sp.Symbol(str(e.base.label), real=True)  # a material's parameter vector
        if isinstance(e, sp.Sum):
            (var, lo, hi), = e.limits
            if var != i or lo != 0 or hi != n - 1:
                raise ValueError(f"only sums over i = 0..n-1 vectorize, not {e.limits}")
            return ComponentSum(walk(e.function))
        if not e.args:
            return e
        return e.func(*[walk(a) for a in e.args])

    return walk(sp.sympify(expr))
