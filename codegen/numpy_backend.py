r"""The NumPy target: its printer, its lowering of a plan, and in-process lambdify.

The rendering follows SymForce: each kernel becomes a target-free plan
(:mod:`codegen.plan`) -- calls of the callable arguments (each evaluated once),
intermediate terms from common-subexpression elimination, and output terms -- which
:func:`lower_numpy` prints with :class:`KernelPrinter` (right-hand sides only), choosing
the NumPy-specific forms (block matrices assembled in place; a piecewise value handed to
``kernel_runtime.select`` as data, :func:`lower_piecewise`); the jinja2 templates lay it
out and hold no formulas.

Example:
    >>> import sympy as sp
    >>> from derive.spec import Arg, Kernel, Output
    >>> x = sp.Symbol("x", real=True)
    >>> e = sp.exp(x)
    >>> k = Kernel("f", (Arg("x", "batch", "input"),),
    ...            (Output("y", e * (x + 1), "y"), Output("z", e * (x - 1), "z")), "")
    >>> [(s["target"], s["code"]) for s in lower_numpy(plan_kernel(k), KernelPrinter())
    ...  ["statements"]]
    [('_tmp0', 'numpy.exp(x)'), ('y', '_tmp0*(x + 1)'), ('z', '_tmp0*(x - 1)')]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import sympy as sp
from sympy.core.function import AppliedUndef
from sympy.printing.numpy import NumPyPrinter

from derive.nodes import IDENTITY, BlockMatrixSpec, BroadcastSum, ComponentSum
from derive.spec import Kernel

from .plan import KernelPlan, Statement, _sorted, plan_kernel

__all__ = ["KernelPrinter", "plan_kernel", "lower_numpy", "lower_piecewise", "lambdify_kernel",
           "horner_chain"]


class KernelPrinter(NumPyPrinter):
    """SymPy's NumPy printer with this project's rules, in one table (:attr:`RULES`).

    Besides the table: sums print their positive terms first and a shared integer factor
    once; ``exp(-u)`` prints as it is (a division by ``exp(u)`` would overflow where
    ``u > 709`` and the quotient does not).

    Example:
        >>> import sympy as sp
        >>> a, b = sp.symbols("a b", real=True)
        >>> p = KernelPrinter()
        >>> p.doprint(2 * a + 2 * b**2 - 2), p.doprint(-a + b * sp.exp(-a))
        ('2*(a + b**2 - 1)', 'b*numpy.exp(-a) - a')
        >>> p.doprint(a / 2 + b / 2), p.doprint(2.0 * a + 2.0 * b)
        ('(1/2)*a + (1/2)*b', '2.0*a + 2.0*b')
    """

    printmethod = "_kernelcode"

    #: Node type -> how it prints (None: as SymPy prints it); every project-specific rule
    #: lives here.
    RULES: dict[type, Callable[[KernelPrinter, sp.Basic], str | None]] = {
        # a reciprocal as a division, not a float power
        sp.Pow: lambda p, e: (f"1/{p.parenthesize(e.base, 60)}" if e.exp == -1 else None),
        # a sum over the component axis; of a constant, n times it (n is the kernel's _n)
        ComponentSum: lambda p, e: (f"{p._module}.sum({p._print(e.args[0])}, axis=-1)"
                                    if e.args[0].free_symbols else
                                    f"_n*{p.parenthesize(e.args[0], 50)}"),
        # the same inside a vector expression: the summed axis kept, to broadcast
        BroadcastSum: lambda p, e: (f"{p._module}.sum({p._print(e.args[0])}, axis=-1, "
                                    "keepdims=True)" if e.args[0].free_symbols else
                                    f"_n*{p.parenthesize(e.args[0], 50)}"),
    }

    def __init__(self) -> None:
        super().__init__({"strict": True, "fully_qualified_modules": True})

    #: A nested product ``x*(x*(c*x + c) + c) + c`` of at least this many coefficients
    #: prints as one ``kernel_runtime.horner`` call (:func:`horner_chain`).
    HORNER_FROM = 5

    def _print_horner(self, x: sp.Basic, coefficients: tuple[sp.Basic, ...]) -> str:
        """A derived polynomial in ``x`` (:func:`horner_chain`), highest coefficient first:
        one ``kernel_runtime.horner`` call."""
        listed = ", ".join(self._print(c) for c in coefficients)
        return f"_rt.horner({self._print(x)}, ({listed}))"

    def _print_Add(self, expr: sp.Add, order: str | None = None) -> str:
        chain = horner_chain(expr)
        if chain is not None and len(chain[1]) >= self.HORNER_FROM:
            return self._print_horner(*chain)
        # Positive terms first: ``y1 - F`` rather than ``-F + y1``, one pass fewer.
        terms = self._as_ordered_terms(expr, order=order)
        # An integer factor > 1 all terms share (up to sign), once: ``2*(a + b - 1)``, passes
        # fewer than ``2*a + 2*b - 2``. Only integers: ``(1/2)*(a + b)`` would overflow
        # where ``a/2 + b/2`` does not.
        coeffs = {abs(t.as_coeff_Mul()[0]) for t in terms}
        if len(coeffs) == 1 and (c := coeffs.pop()).is_Integer and c > 1:
            inner = sp.Add(*[t / c for t in terms], evaluate=False)
            return f"{self._print(c)}*({self._print_Add(inner, order=order)})"
        positive = [t for t in terms if not t.could_extract_minus_sign()]
        negative = [-t for t in terms if t.could_extract_minus_sign()]
        if not positive:
            return super()._print_Add(expr, order=order)
        out = " + ".join(self.parenthesize(t, 40) for t in positive)
        return out + "".join(f" - {self.parenthesize(t, 45)}" for t in negative)

    # Nodes of the floating-point arrangement (derive.nodes), printed as SymPy's NumPyPrinter
    # prints logaddexp, through ``self._module``, so a printer for another array module
    # inherits them.
    def _print_And(self, expr: sp.Basic) -> str:
        # nested binary calls: SymPy's ``logical_and.reduce((a, b, c))`` stacks its operands
        # into one array first, which fails where they broadcast (a scalar and an array)
        return self._binary_fold("logical_and", expr)

    def _print_Or(self, expr: sp.Basic) -> str:
        return self._binary_fold("logical_or", expr)

    def _print_Max(self, expr: sp.Basic) -> str:
        # nested binary calls, element-wise (SymPy's ``functools.reduce`` needs an import
        # the kernels do not have)
        return self._binary_fold("maximum", expr)

    def _print_Min(self, expr: sp.Basic) -> str:
        return self._binary_fold("minimum", expr)

    def _binary_fold(self, name: str, expr: sp.Basic) -> str:
        func = self._module_format(f"{self._module}.{name}")
        printed = [self._print(a) for a in expr.args]
        code = printed[-1]
        for operand in reversed(printed[:-1]):
            code = f"{func}({operand}, {code})"
        return code

    def _print_softplus(self, expr: sp.Basic) -> str:
        # log(1 + exp(u)) without forming exp(u): finite for every finite u
        logaddexp = self._module_format(self._module + ".logaddexp")
        return f"{logaddexp}(0, {self._print(expr.args[0])})"

    def _print_sigmoid(self, expr: sp.Basic) -> str:
        # exp(-softplus(-u)): never overflows; relative error about |u| eps for u < 0 (the
        # arrangement of derive writes it piecewise where that matters)
        logaddexp = self._module_format(self._module + ".logaddexp")
        exp = self._module_format(self._module + ".exp")
        return f"{exp}(-{logaddexp}(0, {self._print(-expr.args[0])}))"

    def _print_cbrt(self, expr: sp.Basic) -> str:
        # the real cube root: no power with a rounded exponent 1/3
        return f"{self._module_format(self._module + '.cbrt')}({self._print(expr.args[0])})"

    def _print(self, expr: Any, **kwargs: Any) -> str:
        for cls in type(expr).__mro__:
            rule = self.RULES.get(cls)
            if rule is not None:
                printed = rule(self, expr)
                if printed is not None:
                    return printed
                break
        if isinstance(expr, AppliedUndef):
            raise TypeError(
                f"cannot print the call {expr}: a callable's result must be computed once and "
                "substituted before printing"
            )
        return super()._print(expr, **kwargs)


def horner_chain(expr: sp.Basic) -> tuple[sp.Symbol, tuple[sp.Number, ...]] | None:
    """``(x, (c_n, ..., c_0))`` where ``expr`` is Horner's rule written out,
    ``x*(...(x*(c_n*x + c_{n-1}) + ...) + c_1) + c_0`` with number coefficients, else None.

    Printed as ``kernel_runtime.horner(x, (c_n, ..., c_0))``: the same multiplications and
    additions in the same order (so the same rounding), with one temporary instead of one per
    operation. Only the evaluation is changed, not the expression the derivation checked.

    Example:
        >>> x = sp.Symbol("x", real=True)
        >>> e = sp.Add(sp.Mul(x, sp.Add(sp.Mul(sp.Rational(1, 3), x), 2, evaluate=False),
        ...                   evaluate=False), 5, evaluate=False)
        >>> horner_chain(e)
        (x, (1/3, 2, 5))
        >>> horner_chain(x + 1) is None
        True
    """
    constants: list[sp.Basic] = []
    x = None
    while isinstance(expr, sp.Add) and len(expr.args) == 2:
        numbers = [a for a in expr.args if a.is_Number]
        if len(numbers) != 1:
            return None
        rest = expr.args[1] if expr.args[0] is numbers[0] else expr.args[0]
        if not (isinstance(rest, sp.Mul) and len(rest.args) == 2):
            return None
        symbols = [a for a in rest.args if a.is_Symbol]
        if len(symbols) != 1 or (x is not None and symbols[0] != x):
            return None
        x = symbols[0]
        inner = rest.args[1] if rest.args[0] is x else rest.args[0]
        constants.append(numbers[0])
        if inner.is_Number:
            return x, (inner, *reversed(constants))
        expr = inner
    return None


def _term_code(coef: str, matrix: str) -> str:
    """``diag(coef) @ matrix`` as NumPy, without forming ``diag(coef)``."""
    eye = "numpy.eye(_n, dtype=_dtype)"
    if coef and matrix:
        return f"_scale_rows({coef}, {matrix})"
    if coef:
        return f"_scale_rows({coef}, {eye})"
    return matrix or eye


def lower_piecewise(st: Statement, printer: KernelPrinter,
                    array_code: Callable[[str, sp.Basic], str] | None = None,
                    safe_points: bool = True, namespace: str = "numpy",
                    like: str = "None") -> dict[str, Any]:
    """A piecewise value printed as data for ``kernel_runtime.select``, which decides how
    its pieces are selected (:mod:`kernel_runtime.pieces`): no target's choice is here.

    ``conds`` are the pieces' conditions but the last's (the first that holds wins);
    ``pieces`` are ``(function, arguments, safe points)`` as source, each piece a ``lambda``
    of the arrays it reads, with a safe point per array (where ``safe_points``);
    ``array_code`` prints a constant piece as the target needs it (None: as it is; safe
    points are numbers, made arrays by ``kernel_runtime`` only where used); ``quiet`` is
    the output's ``overwritten_overflow`` (see :class:`derive.spec.Output`); ``namespace``
    and ``like`` name the body's array namespace and an array on the working device.

    Example:
        >>> import sympy as sp
        >>> from codegen.plan import Piece
        >>> x = sp.Symbol("x", real=True)
        >>> st = Statement("piecewise", "_pw0", pieces=(
        ...     Piece(sp.log(x), x > 1, ((x, sp.Integer(2)),)), Piece(sp.S.Zero, sp.true, ())))
        >>> low = lower_piecewise(st, KernelPrinter(), safe_points=False)
        >>> low["conds"], low["pieces"]
        (('numpy.greater(x, 1)',), (('lambda x: numpy.log(x)', 'x,', ''), ('lambda: 0', '', '')))
    """
    def code(expr: sp.Basic) -> str:
        printed = printer.doprint(expr)
        return array_code(printed, expr) if array_code else printed

    pieces = []
    for piece in st.pieces:
        used = sorted(piece.expr.free_symbols, key=sp.default_sort_key)
        params = ", ".join(s.name for s in used)
        safe = dict(piece.safe)
        pieces.append((f"lambda {params}: {code(piece.expr)}" if params else
                       f"lambda: {code(piece.expr)}",
                       "".join(f"{s.name}, " for s in used).rstrip(" "),
                       "".join(f"{printer.doprint(safe[s])}, " for s in used).rstrip(" ")
                       if safe_points else ""))
    return {"kind": "piecewise", "target": st.target, "namespace": namespace, "like": like,
            "arrays": ", ".join(st.arrays),
            "conds": tuple(printer.doprint(p.cond) for p in st.pieces[:-1]),
            "pieces": tuple(pieces), "quiet": st.overwritten_overflow}


def _piecewise_numpy(st: Statement, printer: KernelPrinter) -> dict[str, Any]:
    """NumPy needs no safe points: it records no gradient, and ``select`` silences the
    floating-point warnings of a piece evaluated outside its region."""
    return lower_piecewise(st, printer, safe_points=False)


def lower_numpy(plan: KernelPlan, printer: KernelPrinter) -> dict[str, Any]:
    """The plan printed for the NumPy body: in-place block assembly, pieces as data.

    Example:
        >>> import sympy as sp
        >>> from derive.spec import Arg, Kernel, Output
        >>> x = sp.Symbol("x", real=True)
        >>> k = Kernel("f", (Arg("x", "batch", "input"),), (Output("y", sp.exp(x), "y"),), "")
        >>> lower_numpy(plan_kernel(k), KernelPrinter())["statements"][0]["code"]
        'numpy.exp(x)'
    """
    return {"statements": lower_statements(plan, printer, _piecewise_numpy),
            "blocks": lower_blocks(plan, _term_code, "")}


def lower_statements(plan: KernelPlan, printer: KernelPrinter,
                     piecewise: Callable[[Statement, Any], dict[str, Any]]
                     ) -> list[dict[str, Any]]:
    """The plan's statements printed for a template; ``piecewise`` is the target's lowering
    of a piecewise value (the one thing targets do differently)."""
    statements: list[dict[str, Any]] = []
    for st in plan.statements:
        if st.kind == "call":
            statements.append({"kind": "call", "target": st.target, "callee": st.callee,
                               "arg": st.arg, "shape": st.shape})
        elif st.kind == "piecewise":
            statements.append(piecewise(st, printer))
        else:
            statements.append({"kind": "assign", "target": st.target,
                               "code": printer.doprint(st.expr)})
    return statements


def lower_blocks(plan: KernelPlan, term_code: Callable[[str, str], str],
                 empty: str) -> dict[str, tuple[dict[str, str], ...]]:
    """The plan's block matrices, each block's terms joined by the target's ``term_code``
    (``empty`` where a block has no term)."""
    return {name: tuple({"row": b.row, "col": b.col, "description": b.description,
                         "code": " + ".join(term_code(c, m) for c, m in b.terms) or empty}
                        for b in bs)
            for name, bs in plan.blocks.items()}


# --- in-process evaluation -----------------------------------------------------------


def _block_value(value: BlockMatrixSpec, fns: dict[str, Callable[..., Any]],
                 env: dict[str, Any]) -> np.ndarray:
    """Assemble a block matrix numerically from its terms (in-process path)."""
    blocks = []
    for block in value:
        acc = None
        for term in block.terms:
            coef = np.asarray(_lambdify_expr(term.coef, env, fns))
            rows = coef[..., :, None] if coef.ndim else coef
            if term.matrix == IDENTITY:
                part = rows * np.eye(env["_n"])
            else:
                part = rows * _lambdify_expr(term.matrix, env, fns)
            acc = part if acc is None else acc + part
        if acc is None:
            acc = np.zeros(env["_batch"] + (env["_n"], env["_n"]))
        blocks.append(np.broadcast_to(acc, env["_batch"] + (env["_n"], env["_n"])))
    top = np.concatenate(blocks[:2], axis=-1)
    bottom = np.concatenate(blocks[2:], axis=-1)
    return np.concatenate([top, bottom], axis=-2)


def _lambdify_expr(expr: sp.Basic, env: dict[str, Any], fns: dict[str, Callable[..., Any]]) -> Any:
    syms = _sorted(expr.free_symbols)
    funcs = sorted({a.func for a in expr.atoms(AppliedUndef)}, key=lambda f: f.__name__)
    modules = [{"ComponentSum": lambda v: np.sum(v, axis=-1),
                "BroadcastSum": lambda v: np.sum(v, axis=-1, keepdims=True),
                "softplus": lambda v: np.logaddexp(0, v),
                "sigmoid": lambda v: np.exp(-np.logaddexp(0, -v))}, "numpy"]
    fn = sp.lambdify(syms + funcs, expr, modules=modules)
    return fn(*[env[s.name] for s in syms], *[fns[f.__name__] for f in funcs])


def lambdify_kernel(kernel: Kernel) -> Callable[..., Any]:
    """An in-process NumPy function for ``kernel`` built with :func:`sympy.lambdify`.

    It takes the same positional arguments as the generated kernel but does no input
    validation and no CSE: it serves in-process use, and the tests cross-check the generated
    kernels against it.
    """
    callables = [a.name for a in kernel.args if not a.is_array]

    def run(*args: Any) -> Any:
        env = dict(zip(kernel.arg_names, args, strict=True))
        fns = {name: env.pop(name) for name in callables}
        if any(a.kind == "batch" for a in kernel.args):
            shapes = [np.shape(env[a.name]) for a in kernel.args if a.kind == "batch"]
            env["_batch"] = np.broadcast_shapes(*[sh[:-1] for sh in shapes])
            env["_n"] = shapes[0][-1]
        results = {}
        for out in _dependency_order(kernel):
            if isinstance(out.value, BlockMatrixSpec):
                value = _block_value(out.value, fns, env)
            else:
                value = _lambdify_expr(out.value, env, fns)
            env[out.name] = value
            results[out.name] = value
        values = tuple(results[o.name] for o in kernel.returns)
        return values[0] if len(values) == 1 else values

    run.__name__ = kernel.name
    run.__doc__ = kernel.summary
    return run


def _dependency_order(kernel: Kernel) -> Iterator[Any]:
    names = {o.name for o in kernel.outputs}
    done: set[str] = set()
    pending = list(kernel.outputs)
    while pending:
        for out in pending:
            exprs = ([t.coef for b in out.value for t in b.terms]
                     if isinstance(out.value, BlockMatrixSpec) else [out.value])
            deps = {s.name for e in exprs for s in e.free_symbols} & names
            if deps <= done:
                done.add(out.name)
                pending.remove(out)
                yield out
                break
        else:
            raise ValueError(f"kernel {kernel.name}: outputs depend on each other in a cycle")
