r"""Plan a kernel's body, target-free: the order of calls and assignments, as SymPy values.

Planning knows no target library. It orders the callable arguments' calls (each evaluated
once), runs common-subexpression elimination stage by stage, lifts each piecewise
subexpression into a named value, and chooses, for each piece, a *safe point*: argument
values where SymPy confirms the piece and its derivatives are finite, so that a backend
evaluating every piece (the array-API "double where") never forms a NaN gradient from an
untaken piece. A backend (:mod:`codegen.backends`) prints the plan with its own printer.

Example:
    >>> import sympy as sp
    >>> from derive.spec import Arg, Kernel, Output
    >>> x = sp.Symbol("x", real=True)
    >>> e = sp.exp(x)
    >>> k = Kernel("f", (Arg("x", "batch", "input"),),
    ...            (Output("y", e * (x + 1), "y"), Output("z", e * (x - 1), "z")), "")
    >>> [(s.target, s.expr) for s in plan_kernel(k).statements]
    [('_tmp0', exp(x)), ('y', _tmp0*(x + 1)), ('z', _tmp0*(x - 1))]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import sympy as sp
from sympy.core.function import AppliedUndef

from derive.nodes import IDENTITY, BlockMatrixSpec, BroadcastSum, ComponentSum
from derive.pieces import safe_point
from derive.spec import Kernel, Module

__all__ = ["Piece", "Statement", "BlockPlan", "KernelPlan", "plan_kernel",
           "CallArg", "RuntimeCall", "OutputEntry", "ArgEntry", "EntryPlan", "plan_entry"]


@dataclass(frozen=True)
class Piece:
    """One piece of a piecewise value: its expression, where it holds, and a safe point.

    ``cond`` is ``sympy.true`` for the final ("otherwise") piece. ``safe`` maps each free
    symbol of ``expr`` to a value where ``expr`` and its first derivatives are finite.
    """

    expr: sp.Expr
    cond: sp.Basic
    safe: tuple[tuple[sp.Symbol, sp.Expr], ...]


@dataclass(frozen=True)
class Statement:
    """One line of a kernel body: a call, an assignment, or a piecewise assignment."""

    kind: str  # "call" | "assign" | "piecewise"
    target: str
    expr: sp.Basic = sp.S.Zero
    callee: str = ""
    arg: str = ""
    shape: str = ""  # for calls: "vector" or "matrix"
    pieces: tuple[Piece, ...] = ()
    #: the last piece may overflow only where an earlier one holds (a NumPy body that
    #: evaluates it everywhere need not warn): :func:`overflow_is_overwritten` decides it
    overwritten_overflow: bool = False

    @property
    def arrays(self) -> tuple[str, ...]:
        """The names a piecewise value is computed from, sorted."""
        return tuple(sorted({s.name for p in self.pieces for s in p.expr.free_symbols}
                            | {s.name for p in self.pieces for s in p.cond.free_symbols}))


@dataclass(frozen=True)
class BlockPlan:
    """One block of a block-matrix output: its terms ``diag(coef) @ matrix``.

    Each term is ``(coef, matrix)``: ``coef`` names an assigned coefficient ("" for 1),
    ``matrix`` names a call's result ("" for the identity). No terms: a zero block.
    """

    row: str
    col: str
    terms: tuple[tuple[str, str], ...]
    description: str


@dataclass
class KernelPlan:
    """The statements of a kernel body, as SymPy values, ready for a backend.

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
    #: the outputs the kernel returns, in order
    returns: list[str] = field(default_factory=list)


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


def _pieces(name: str, pw: sp.Piecewise) -> tuple[Piece, ...]:
    """The pieces of ``pw`` in order, each with its safe point."""
    if pw.args[-1][1] is not sp.true:
        raise ValueError(f"{name}: a piecewise value needs a final 'otherwise' piece: {pw}")
    pieces = []
    earlier: list[sp.Basic] = []
    for expr, cond in pw.args:
        # A piece is taken where its condition holds and no earlier one does.
        region = sp.And(cond, *[sp.Not(c) for c in earlier])
        point = safe_point(expr, region)
        pieces.append(Piece(expr, cond, tuple(point.items())))
        earlier.append(cond)
    return tuple(pieces)


def _is_reciprocal(expr: sp.Basic) -> bool:
    """Whether ``expr`` is ``1/b`` (or ``1/b**k``) for a single array ``b``."""
    return (expr.is_Pow and expr.exp.is_negative and expr.exp.is_Integer
            and isinstance(expr.base, sp.Symbol))


def _cse_keeping_quotients(exprs: list[sp.Basic], symbols: Iterator[sp.Symbol],
                           ) -> tuple[list[tuple[sp.Symbol, sp.Basic]], list[sp.Basic]]:
    """SymPy's CSE, with a shared reciprocal ``1/b`` put back where it is used.

    ``a * (1/b)`` rounds twice where ``a / b`` rounds once, and ``1/b`` overflows where
    ``b`` is subnormal although ``a / b`` is finite (``0 / 1e-310`` is 0, ``0 * inf`` NaN).

    Example:
        >>> a, b, s = sp.symbols("a b s")
        >>> _cse_keeping_quotients([a / s, b / s], sp.numbered_symbols("_tmp"))
        ([], [a/s, b/s])
    """
    replacements, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("_cse"),
                                   order="canonical")
    inline = {sym: expr for sym, expr in replacements if _is_reciprocal(expr)}
    kept = [(sym, expr.xreplace(inline)) for sym, expr in replacements if sym not in inline]
    # the temporaries that stay are named in order from the kernel's own sequence
    names = {sym: next(symbols) for sym, _ in kept}
    return ([(names[sym], expr.xreplace(names)) for sym, expr in kept],
            [e.xreplace(inline).xreplace(names) for e in reduced])


def broadcast_sums(expr: sp.Basic, reduced: bool) -> sp.Basic:
    """``expr`` with every :class:`~derive.nodes.ComponentSum` whose value is combined with
    vectors written as a :class:`~derive.nodes.BroadcastSum` (its summed axis kept): all of
    them in a vector output, those nested in another sum in a reduced one (``reduced``).

    Example:
        >>> w, z, b = sp.symbols("w z b", real=True)
        >>> broadcast_sums(w * sp.tanh(ComponentSum(w * z) + b), reduced=False)
        w*tanh(b + BroadcastSum(w*z))
        >>> broadcast_sums(sp.log(1 + ComponentSum(w * z)), reduced=True)
        log(ComponentSum(w*z) + 1)
    """
    def walk(e: sp.Basic, inside: bool) -> sp.Basic:
        if isinstance(e, ComponentSum):
            inner = walk(e.args[0], True)
            return BroadcastSum(inner) if inside else ComponentSum(inner)
        if not e.args or isinstance(e, sp.Symbol):
            return e
        return e.func(*[walk(a, inside) for a in e.args])

    if not expr.has(ComponentSum):
        return expr
    return walk(expr, not reduced)


#: The values each input takes when :func:`overflow_is_overwritten` samples a piece: zero,
#: subnormal, tiny, moderate and huge magnitudes of both signs, up to the largest double.
_SAMPLES = (0.0, 1e-310, 1e-200, 1e-30, 0.5, 1.0, 1.5, 3.0, 100.0, 800.0, 1e30, 1e200,
            1e308)
#: The project's own functions, as NumPy evaluates them without overflow.
_NUMPY_NODES = {"softplus": lambda u: np.logaddexp(0, u),
                "sigmoid": lambda u: np.exp(-np.logaddexp(0, -u))}


def _numeric(names: list[sp.Symbol], expr: sp.Basic) -> Any:
    return sp.lambdify(names, expr, modules=[_NUMPY_NODES, "numpy"])


def overflow_is_overwritten(statements: list[Statement], target: Statement,
                            positive: set[str] = frozenset()) -> bool:
    """Whether the last piece of the piecewise value ``target`` overflows (or forms inf - inf,
    NaN) only where an earlier piece holds: then a body that evaluates it everywhere and
    overwrites those entries may ignore the floating-point warnings it raises there.

    The check the plan runs for every piecewise value: it samples every input the value
    depends on over :data:`_SAMPLES` (both signs; the ``positive`` inputs positive only),
    computes the earlier statements from them, and evaluates the last piece in float64 where
    it is taken and where it is not, with overflow and invalid operations raised. True when
    it warns only where it is not taken; False when it warns where it is taken (an overflow
    of its own, which is not silenced) or nowhere, or when it cannot be evaluated.

    Example:
        >>> x = sp.Symbol("x", real=True)
        >>> def piecewise(pw):
        ...     return Statement("piecewise", "_pw0", pieces=_pieces("_pw0", pw))
        >>> expm1 = sp.Piecewise((x, x > 700), (sp.exp(x) - 1, True))
        >>> overflow_is_overwritten([], piecewise(expm1))
        True
        >>> overflow_is_overwritten([], piecewise(sp.Piecewise((x, x > 1e5), (sp.exp(x), True))))
        False
    """
    by_name = {st.target: st for st in statements}
    leaves: list[str] = []
    needed: list[Statement] = []

    def visit(names: set[str]) -> None:
        for name in sorted(names):
            st = by_name.get(name)
            if st is None or st.kind == "call":
                if name not in leaves:
                    leaves.append(name)
            elif st not in needed:
                visit({sym.name for sym in st.expr.free_symbols} | set(st.arrays))
                needed.append(st)

    visit(set(target.arrays))
    samples = np.array(_SAMPLES)
    grid = [samples[1:] if name in positive else np.concatenate([-samples[:0:-1], samples])
            for name in leaves]
    env: dict[str, Any] = dict(zip(leaves, (a.ravel() for a in np.meshgrid(*grid)),
                                   strict=True)) if leaves else {}

    def evaluate(expr: sp.Basic) -> Any:
        syms = sorted(expr.free_symbols, key=lambda sym: sym.name)
        return _numeric(syms, expr)(*(env[sym.name] for sym in syms))

    def masks(st: Statement) -> list[Any]:
        taken = np.zeros(_size(env), bool)
        out = []
        for piece in st.pieces[:-1]:
            cond = np.broadcast_to(evaluate(piece.cond), taken.shape)
            out.append(cond & ~taken)
            taken = taken | cond
        return out + [~taken]

    try:
        with np.errstate(all="ignore"):
            for st in statements:
                if st not in needed:
                    continue
                if st.kind == "piecewise":
                    value = np.zeros(_size(env))
                    for piece, mask in zip(st.pieces, masks(st), strict=True):
                        value = np.where(mask, evaluate(piece.expr), value)
                    env[st.target] = value
                else:
                    env[st.target] = np.broadcast_to(evaluate(st.expr), (_size(env),))
            own = masks(target)[-1]
        last = target.pieces[-1].expr
        warns = []
        for where in (own, ~own):
            part = {k: v[where] for k, v in env.items()}
            syms = sorted(last.free_symbols, key=lambda sym: sym.name)
            try:
                with np.errstate(over="raise", invalid="raise", divide="ignore",
                                 under="ignore"):
                    _numeric(syms, last)(*(part[sym.name] for sym in syms))
                warns.append(False)
            except FloatingPointError:
                warns.append(True)
    except (KeyError, NameError, TypeError, ValueError):
        return False
    inside, outside = warns
    return outside and not inside


def _size(env: dict[str, Any]) -> int:
    return next((len(v) for v in env.values()), 1)


def plan_kernel(kernel: Kernel) -> KernelPlan:
    """Order the kernel's calls and assignments, CSE each stage; no printing.

    A stage is every output whose inputs are available; callables run as soon as their
    argument is available, once each.
    """
    kinds = {a.name: a.kind for a in kernel.args}
    positive = {a.name for a in kernel.args if a.is_positive}
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
            pending.append((out.name, broadcast_sums(out.value, out.reduced)))

    used = {s.name for _, e in pending for s in e.free_symbols}
    used |= {str(a) for m in matrix_calls for a in m.args}
    plan_checked = [a.name for a in kernel.args
                    if a.is_array and (a.kind == "batch" or a.name in used)]

    # Each piecewise subexpression becomes a named value (a backend decides how to select
    # between its pieces).
    # A piecewise value inside a piece of another (or inside a function's argument in one)
    # is named first, innermost first, and the outer one reads its name: the printers have
    # no element form for a Piecewise inside an expression (NumPy's select is no array-API
    # function).
    piecewise: dict[str, sp.Piecewise] = {}
    for k, (name, expr) in enumerate(pending):
        while True:
            innermost = [pw for pw in expr.atoms(sp.Piecewise)
                         if not any(isinstance(a, sp.Piecewise) for arg in pw.args
                                    for a in sp.preorder_traversal(arg))]
            if not innermost:
                break
            for pw in _sorted(innermost):
                # the same piecewise value in several outputs is computed once
                pw_name = next((k for k, v in piecewise.items() if v == pw),
                               f"_pw{len(piecewise)}")
                piecewise[pw_name] = pw
                expr = expr.xreplace({pw: sp.Symbol(pw_name, real=True)})
        pending[k] = (name, expr)
    pending = list(piecewise.items()) + pending

    plan = KernelPlan(checked=plan_checked, used=[a for a in plan_checked if a in used],
                      returns=[o.name for o in kernel.returns])
    calls: dict[AppliedUndef, sp.Symbol] = {}
    tmp = sp.numbered_symbols("_tmp")

    def emit_calls(apps: list[AppliedUndef]) -> None:
        for app in _sorted(apps):
            if app in calls or not {str(a) for a in app.args} <= available:
                continue
            name = _call_name(app)
            callee = app.func.__name__
            shape = "matrix" if kinds.get(callee) == "jacobian" else "vector"
            plan.statements.append(
                Statement("call", name, callee=callee, arg=str(app.args[0]), shape=shape))
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
            st = Statement("piecewise", name, pieces=_pieces(name, expr))
            # the NumPy lowering's flag, decided by a check, not by the material
            quiet = overflow_is_overwritten(plan.statements, st, positive)
            plan.statements.append(replace(st, overwritten_overflow=quiet))
            available.add(name)
        ready = [(n, e) for n, e in ready if n not in piecewise]
        replacements, reduced = _cse_keeping_quotients([e for _, e in ready], tmp)
        for sym, expr in replacements:
            plan.statements.append(Statement("assign", str(sym), expr))
        for (name, _), expr in zip(ready, reduced, strict=True):
            plan.statements.append(Statement("assign", name, expr))
            available.add(name)
        pending = [(n, e) for n, e in pending if n not in done]
    emit_calls(all_apps)

    for out_name, rows in block_terms.items():
        out = next(o for o in kernel.outputs if o.name == out_name)
        assert isinstance(out.value, BlockMatrixSpec)
        blocks = []
        for block, terms in zip(out.value, rows, strict=True):
            named = tuple((coef, "" if m == IDENTITY else str(calls[m])) for coef, m in terms)
            blocks.append(BlockPlan(block.row, block.col, named, block.description))
        plan.blocks[out_name] = tuple(blocks)
    return plan


# --- the public function's entry: argument checks and output shapes ------------------


@dataclass(frozen=True)
class CallArg:
    """One argument of a call into ``kernel_runtime``.

    ``kind``: ``"names"`` (a tuple of the arguments' names, as strings), ``"values"`` (a
    tuple of the arguments themselves) or ``"name"`` (one variable, ``items[0]``).
    """

    kind: Literal["names", "values", "name"]
    items: tuple[str, ...]

    @property
    def source(self) -> str:
        """The argument as Python source.

        Example:
            >>> CallArg("names", ("a", "b")).source, CallArg("values", ("a",)).source
            ('("a", "b",)', '(a,)')
        """
        if self.kind == "name":
            return self.items[0]
        quote = '"' if self.kind == "names" else ""
        return "(" + " ".join(f"{quote}{item}{quote}," for item in self.items) + ")"


@dataclass(frozen=True)
class RuntimeCall:
    """A call into ``kernel_runtime``: the function's name, its arguments, and what it
    returns (``doc``, for a comment)."""

    function: str
    args: tuple[CallArg, ...]
    doc: str = ""


@dataclass(frozen=True)
class OutputEntry:
    """How one returned output is shaped: ``shape`` is the expression of its full shape
    (from the names :attr:`EntryPlan.shape` binds). A block matrix also has ``layout`` (its
    blocks' names, row by row) and ``slices`` (each block's rows and columns, in the
    order of its blocks)."""

    name: str
    shape: str
    layout: str = ""
    slices: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ArgEntry:
    """One argument of a kernel's public function: its annotation, and its documentation
    with what the function does with it (unused, shape only, a callable's own copy)."""

    name: str
    annotation: str
    doc: str


#: What a callable argument receives, for its documentation.
_CALLABLE_NOTE = (" Where arrays are mutable it receives its own copy (read-only in NumPy and "
                  "array_api_strict), never the caller's array, and must not modify it: "
                  "NumPy, eager PyTorch and array_api_strict raise ValueError.")


def _arg_entries(kernel: Kernel, plan: KernelPlan) -> tuple[ArgEntry, ...]:
    entries = []
    for a in kernel.args:
        if not a.is_array:
            note = _CALLABLE_NOTE
        elif a.name not in plan.checked:
            note = " Unused here: accepted and ignored."
        elif a.name not in plan.used:
            note = " Its values are not read here (only its shape and dtype)."
        else:
            note = ""
        entries.append(ArgEntry(a.name, "Any" if a.is_array else "Callable[..., Any] | None",
                                a.doc + note))
    return tuple(entries)


def _returns(kernel: Kernel) -> str:
    n = len(kernel.returns)
    return "Any" if n == 1 else "tuple[" + ", ".join(["Any"] * n) + "]"


@dataclass(frozen=True)
class EntryPlan:
    """How a kernel's public function checks its arguments, from the module's contract.

    ``fast_path`` builds the NumPy fast path's checker (called with the checked arrays and
    ``check_finite``); ``prepare`` checks and converts the arrays for any library and
    returns the namespace, the arrays, then the names in ``shape``, which every body takes
    after its arrays; ``outputs`` gives each output's shape.
    """

    fast_path: RuntimeCall
    prepare: RuntimeCall
    shape: tuple[str, ...]
    outputs: dict[str, OutputEntry]
    #: the public function's arguments, its return annotation, and what its value checks
    #: cover beyond NaN and infinity
    args: tuple[ArgEntry, ...] = ()
    returns: str = "Any"
    checks: str = ""
    #: what every body takes before the shape names: the checked arrays, then the callables
    params: tuple[str, ...] = ()


def _names(kind: str, items: Any) -> CallArg:
    return CallArg(kind, tuple(items))  # type: ignore[arg-type]


def _coupling_entry(kernel: Kernel, plan: KernelPlan) -> EntryPlan:
    """Arrays ``(..., n)``, parameter vectors ``(n,)`` and scalars ``()``."""
    checked = set(plan.checked)
    batch = [a.name for a in kernel.args if a.kind == "batch"]
    params = [a.name for a in kernel.args if a.is_param and a.name in checked]
    scalars = [a.name for a in kernel.args if a.is_scalar and a.name in checked]
    positive = [a.name for a in kernel.args if a.is_positive and a.name in checked]
    # a kernel with a scalar argument passes its scalars (one without passes none), and one
    # with a parameter that must be positive passes those too
    has_positive = any(a.is_positive for a in kernel.args)
    has_scalars = has_positive or any(a.is_scalar for a in kernel.args)
    fast = (_names("names", batch), _names("names", params), _names("names", plan.used))
    fast += (_names("names", scalars),) if has_scalars else ()
    fast += (_names("names", positive),) if has_positive else ()
    prepare = (_names("names", batch), _names("values", batch), _names("names", params),
               _names("values", params), _names("names", plan.used),
               CallArg("name", ("check_finite",)))
    prepare += ((_names("names", scalars), _names("values", scalars))
                if has_scalars else ())
    prepare += (_names("names", positive),) if has_positive else ()
    outputs = {}
    for out in kernel.outputs:
        if isinstance(out.value, BlockMatrixSpec):
            rows = out.value.blocks
            layout = "[" + ", ".join(
                "[" + ", ".join(f"d{b.row}/d{b.col}" for b in row) + "]" for row in rows) + "]"
            halves = (":_n", "_n:")
            slices = tuple((halves[i], halves[j]) for i, row in enumerate(rows)
                           for j, _ in enumerate(row))
            outputs[out.name] = OutputEntry(out.name, "_batch + (2 * _n, 2 * _n)",
                                            layout, slices)
        else:
            outputs[out.name] = OutputEntry(
                out.name, "_batch" if out.reduced else "_batch + (_n,)")
    return EntryPlan(
        RuntimeCall("numpy_coupling", fast,
                    "checks and shapes of NumPy float arrays, or None"),
        RuntimeCall("prepare_coupling", prepare), ("_batch", "_n", "_dtype"), outputs)


def _elementwise_entry(kernel: Kernel, plan: KernelPlan) -> EntryPlan:
    """Arrays of any broadcastable shape, some of them positive."""
    positive = [a.name for a in kernel.args if a.kind == "positive" and a.name in plan.checked]
    return EntryPlan(
        RuntimeCall("numpy_elementwise",
                    (_names("names", plan.checked), _names("names", positive),
                     _names("names", plan.used)),
                    "checks and shape of NumPy float arrays, or None"),
        RuntimeCall("prepare_elementwise",
                    (_names("names", plan.checked), _names("values", plan.checked),
                     _names("names", positive), _names("names", plan.used),
                     CallArg("name", ("check_finite",)))),
        ("_batch", "_dtype"),
        {o.name: OutputEntry(o.name, "_batch") for o in kernel.outputs})


#: The entry of each shape contract (:attr:`derive.spec.Module.contract`).
_ENTRIES = {"coupling": _coupling_entry, "elementwise": _elementwise_entry}


def plan_entry(module: Module, kernel: Kernel, plan: KernelPlan) -> EntryPlan:
    """How ``kernel``'s public function checks its arguments and shapes its outputs, under
    ``module``'s shape contract: the one place that contract is decided for a template.

    Example:
        >>> import sympy as sp
        >>> from derive.spec import Arg, Kernel, Module, Output
        >>> x = sp.Symbol("x", real=True)
        >>> k = Kernel("f", (Arg("x", "positive", "x"),), (Output("y", sp.log(x), "y"),), "")
        >>> m = Module("m", "", "", (k,), "", "elementwise")
        >>> entry = plan_entry(m, k, plan_kernel(k))
        >>> entry.prepare.function, entry.shape, entry.outputs["y"].shape
        ('prepare_elementwise', ('_batch', '_dtype'), '_batch')
    """
    positive = any(a.is_positive for a in kernel.args)
    return replace(_ENTRIES[module.contract](kernel, plan), args=_arg_entries(kernel, plan),
                   returns=_returns(kernel),
                   params=tuple(plan.checked) + tuple(a.name for a in kernel.args
                                                      if not a.is_array),
                   checks=", and entries <= 0 where they must be > 0" if positive else "")
