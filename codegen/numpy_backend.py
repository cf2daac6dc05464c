r"""Render a :class:`~codegen.spec.Module` as NumPy source, and lambdify kernels in-process.

The rendering follows SymForce: each kernel becomes a plan of statements -- calls of the
callable arguments (each evaluated once), intermediate terms from common-subexpression
elimination, and output terms -- printed by :class:`KernelPrinter` (right-hand sides
only) and laid out by the jinja2 templates, which hold no formulas.

Example:
    >>> import sympy as sp
    >>> from codegen.spec import Arg, Kernel, Output
    >>> x = sp.Symbol("x", real=True)
    >>> e = sp.exp(x)
    >>> k = Kernel("f", (Arg("x", "batch", "input"),),
    ...            (Output("y", e * (x + 1), "y"), Output("z", e * (x - 1), "z")), "")
    >>> [(s.target, s.code) for s in plan_kernel(k).statements]
    [('_tmp0', 'numpy.exp(x)'), ('y', '_tmp0*(x + 1)'), ('z', '_tmp0*(x - 1)')]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp
from sympy.core.function import AppliedUndef
from sympy.printing.numpy import NumPyPrinter

from .environment import environment
from .nodes import IDENTITY, BlockMatrixSpec, ComponentSum
from .spec import Kernel, Module

__all__ = ["KernelPrinter", "plan_kernel", "render_numpy", "lambdify_kernel"]


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
        ComponentSum: lambda p, e: (f"numpy.sum({p._print(e.args[0])}, axis=-1)"
                                    if e.args[0].free_symbols else
                                    f"_n*{p.parenthesize(e.args[0], 50)}"),
    }

    def __init__(self) -> None:
        super().__init__({"strict": True, "fully_qualified_modules": True})

    def _print_Add(self, expr: sp.Add, order: str | None = None) -> str:
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

    # Nodes of the floating-point arrangement (codegen.nodes), printed as SymPy's NumPyPrinter
    # prints logaddexp, through ``self._module``, so a printer for another array module
    # inherits them.
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


@dataclass(frozen=True)
class Branch:
    """One non-default piece of a piecewise assignment, evaluated only where it holds."""

    mask: str
    condition: str
    locals: tuple[tuple[str, str], ...]  # (masked name, array it is taken from)
    code: str


@dataclass(frozen=True)
class Statement:
    """One line of a kernel body: a call, an assignment, or a piecewise assignment."""

    kind: str  # "call" | "assign" | "piecewise"
    target: str
    code: str
    callee: str = ""
    arg: str = ""
    shape: str = ""  # for calls: "vector" or "matrix"; for piecewise: the arrays it spans
    branches: tuple[Branch, ...] = ()


@dataclass(frozen=True)
class BlockPlan:
    """One block of a block-matrix output: where it goes and the code of its value."""

    row: str
    col: str
    code: str  # "" for a zero block
    description: str


@dataclass
class KernelPlan:
    """The statements of a kernel body, ready for the template.

    ``checked`` lists the array arguments the kernel validates: every ``batch`` argument
    (they fix the shapes) and every other array an output uses; an unused parameter is
    accepted and ignored. ``used`` lists those whose values an output reads: only they
    are checked for NaN and infinity (in element-wise kernels ``checked`` and ``used``
    coincide).
    """

    statements: list[Statement] = field(default_factory=list)
    blocks: dict[str, tuple[BlockPlan, ...]] = field(default_factory=dict)
    checked: list[str] = field(default_factory=list)
    #: the checked arrays whose values an output reads (the others lend only their shape,
    #: so their values are not checked either)
    used: list[str] = field(default_factory=list)


def _term_code(coef: str, matrix: str) -> str:
    """``diag(coef) @ matrix`` as NumPy, without forming ``diag(coef)``."""
    eye = "numpy.eye(_n, dtype=_dtype)"
    if coef and matrix:
        return f"_scale_rows({coef}, {matrix})"
    if coef:
        return f"_scale_rows({coef}, {eye})"
    return matrix or eye


def _needed_outputs(kernel: Kernel) -> list[Any]:
    """The returned outputs and the internal ones they use, directly or not."""
    needed = {o.name for o in kernel.returns}
    changed = True
    while changed:
        changed = False
        for out in kernel.outputs:
            if out.name in needed and not isinstance(out.value, BlockMatrixSpec):
                for sym in out.value.free_symbols:
                    if sym.name not in needed and any(o.name == sym.name for o in kernel.outputs):
                        needed.add(sym.name)
                        changed = True
    return [o for o in kernel.outputs if o.name in needed]


def _call_name(app: AppliedUndef) -> str:
    return "_".join([app.func.__name__] + [str(a) for a in app.args])


def _sorted(items: Any) -> list[Any]:
    return sorted(items, key=sp.default_sort_key)


def plan_kernel(kernel: Kernel, printer: KernelPrinter | None = None) -> KernelPlan:
    """Order the kernel's calls and assignments, CSE each stage, and print right-hand sides.

    A stage is every output whose inputs are available; callables run as soon as their
    argument is available, once each.
    """
    printer = printer or KernelPrinter()
    kinds = {a.name: a.kind for a in kernel.args}
    available = {a.name for a in kernel.args if a.is_array}
    pending: list[tuple[str, sp.Expr]] = []
    block_terms: dict[str, list[list[tuple[str, sp.Basic]]]] = {}
    matrix_calls: list[AppliedUndef] = []
    for out in _needed_outputs(kernel):
        if isinstance(out.value, BlockMatrixSpec):
            rows = []
            for b, block in enumerate(out.value):
                terms = []
                for t, term in enumerate(block.terms):
                    coef_name = f"_{out.name}{b}{t}"
                    if term.coef != 1:
                        pending.append((coef_name, term.coef))
                    else:
                        coef_name = ""
                    terms.append((coef_name, term.matrix))
                    if term.matrix != IDENTITY:
                        matrix_calls.append(term.matrix)
                rows.append(terms)
            block_terms[out.name] = rows
        else:
            pending.append((out.name, out.value))

    used = {s.name for _, e in pending for s in e.free_symbols}
    used |= {str(a) for m in matrix_calls for a in m.args}
    plan_checked = [a.name for a in kernel.args
                    if a.is_array and (a.kind == "batch" or a.name in used)]

    # Each piecewise subexpression becomes a named value assigned piece by piece: the last
    # ("otherwise") piece everywhere, every other piece only where its condition holds
    # (numpy.select would evaluate every piece everywhere).
    piecewise: dict[str, sp.Piecewise] = {}
    for k, (name, expr) in enumerate(pending):
        for pw in _sorted(expr.atoms(sp.Piecewise)):
            # the same piecewise value in several outputs is computed once
            pw_name = next((k for k, v in piecewise.items() if v == pw), f"_pw{len(piecewise)}")
            piecewise[pw_name] = pw
            expr = expr.xreplace({pw: sp.Symbol(pw_name, real=True)})
        pending[k] = (name, expr)
    pending = list(piecewise.items()) + pending

    plan = KernelPlan(checked=plan_checked, used=[a for a in plan_checked if a in used])
    calls: dict[AppliedUndef, sp.Symbol] = {}
    tmp = sp.numbered_symbols("_tmp")

    def emit_calls(apps: list[AppliedUndef]) -> None:
        for app in _sorted(apps):
            if app in calls or not {str(a) for a in app.args} <= available:
                continue
            name = _call_name(app)
            callee = app.func.__name__
            shape = "matrix" if kinds.get(callee) == "jacobian" else "vector"
            plan.statements.append(Statement("call", name, "", callee, str(app.args[0]), shape))
            calls[app] = sp.Symbol(name, real=True)
            available.add(name)

    all_apps = [a for _, e in pending for a in e.atoms(AppliedUndef)] + matrix_calls
    while pending:
        emit_calls(all_apps)
        ready = [(name, e.xreplace(calls)) for name, e in pending
                 if not (e.atoms(AppliedUndef) - set(calls))
                 and {s.name for s in e.xreplace(calls).free_symbols} <= available]
        if not ready:
            missing = ", ".join(name for name, _ in pending)
            raise ValueError(f"kernel {kernel.name}: cannot order the computation of {missing}")
        done = {name for name, _ in ready}
        for name, expr in [(n, e) for n, e in ready if n in piecewise]:
            plan.statements.append(_piecewise_statement(name, expr, printer))
            available.add(name)
        ready = [(n, e) for n, e in ready if n not in piecewise]
        replacements, reduced = sp.cse([e for _, e in ready], symbols=tmp, order="canonical")
        for sym, expr in replacements:
            plan.statements.append(Statement("assign", str(sym), printer.doprint(expr)))
        for (name, _), expr in zip(ready, reduced, strict=True):
            plan.statements.append(Statement("assign", name, printer.doprint(expr)))
            available.add(name)
        pending = [(n, e) for n, e in pending if n not in done]
    emit_calls(all_apps)

    for out_name, rows in block_terms.items():
        out = next(o for o in kernel.outputs if o.name == out_name)
        assert isinstance(out.value, BlockMatrixSpec)
        blocks = []
        for block, terms in zip(out.value, rows, strict=True):
            code = " + ".join(_term_code(coef, "" if m == IDENTITY else str(calls[m]))
                              for coef, m in terms)
            blocks.append(BlockPlan(block.row, block.col, code, block.description))
        plan.blocks[out_name] = tuple(blocks)
    return plan


def _piecewise_statement(name: str, pw: sp.Piecewise, printer: KernelPrinter) -> Statement:
    """Assign the default piece everywhere, then each other piece where it holds."""
    *pieces, (default, last) = pw.args
    if last is not sp.true:
        raise ValueError(f"{name}: a piecewise value needs a final 'otherwise' piece: {pw}")
    arrays = sorted({s.name for s in pw.free_symbols})
    branches = []
    # Later assignments win, and the first true condition must: assign in reverse order.
    for k, (expr, cond) in reversed(list(enumerate(pieces))):
        mask = f"{name}_m{k}"
        used = sorted(expr.free_symbols, key=sp.default_sort_key)
        local = {s: sp.Symbol(f"{s.name}_{mask}", real=True) for s in used}
        branches.append(Branch(mask, printer.doprint(cond),
                               tuple((local[s].name, s.name) for s in used),
                               printer.doprint(expr.xreplace(local))))
    return Statement("piecewise", name, printer.doprint(default), shape=", ".join(arrays),
                     branches=tuple(branches))


def render_numpy(module: Module, command: str) -> str:
    """The source of ``generated/<module.name>.py``.

    Arguments:
        module: the module specification.
        command: the command that regenerates the file, for its header.
    """
    printer = KernelPrinter()
    plans = {k.name: plan_kernel(k, printer) for k in module.kernels}
    template = environment().get_template("module.py.jinja")
    return template.render(module=module, plans=plans, command=command)


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
