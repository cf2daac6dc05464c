r"""The fused target: one loop per kernel, compiled by numba (optional).

The NumPy body evaluates a piecewise value piece by piece over whole arrays: each
condition is a pass over memory, each piece is gathered where it holds, and every
operation allocates a temporary. The fused target prints the same plan
(:mod:`codegen.plan`) as ONE loop over the entries whose body handles one entry: its
piecewise values become ``if``/``elif``/``else`` on the pieces' conditions (the first that
holds wins, so an untaken piece is never evaluated: no NaN from it, no work), and every
other statement an assignment of scalars. ``kernel_runtime.fused_loop`` compiles it with
numba on first use (float32 or float64 arrays, flat); without numba the generated module
imports and runs as before. Where no piece calls a function, LLVM turns the branches into
selects and runs several entries per instruction.

One choice is made here, not by the template: the calls of ``exp``, ``expm1`` and
``log`` that are evaluated on every entry (in a statement outside every piece, on the
kernel's own arrays) are *hoisted*: evaluated before the loop by NumPy, whose ``exp``
and ``log`` run several entries per instruction (SIMD), where numba's call the C
library's once per entry (measured on the machine of ``docs/benchmarks.md``: 0.8 ns
against 4.2 ns per float64 ``log``), and a call in the loop keeps it from being
vectorized. The loop reads the hoisted values as arrays (a piece that uses one reads it
too). Only where the value is computed changes, not the expression the derivation
checked.

The same is done for the calls inside a piecewise value, all or none (where each piece
makes its own one call of one function, the slots below instead): where every call
of its pieces is :data:`TOTAL` (``exp``, ``expm1``: defined on every real, at worst an
overflow to inf) on the kernel's arrays, or on values computed from them without a call
(``x = logvar_q - logvar_p``, computed by NumPy first as planned), each is evaluated
everywhere by NumPy before the loop, which then calls nothing and is vectorized (issue
24: the ``logvar`` loops called ``expm1`` once per entry and were slower than the NumPy
body from about 1e5 entries).
Where its piece is not taken such a value is never read; the overflow it may hit there
is computed quietly (``errstate(over="ignore")``, where ``quiet`` says so). ``log`` in a
piece is never evaluated on another piece's argument (NaN and a warning where that is
not positive); instead, where *every* piece of a piecewise value calls one function of
:data:`HOISTED` (``log``; or ``exp``/``expm1``, whose untaken pieces then cost no pass;
at most :data:`CALL_SLOTS` calls a piece, on arguments computed without a call), the
arguments are chosen per entry by a loop without calls (each piece's own; 1 where a
piece has fewer calls), NumPy evaluates the function on every entry in place (between
the two loops), and the pieces are evaluated by a loop without calls that reads the
values (issue 24: the pair's ``x`` called the C library's ``log1p`` or ``log`` once per
entry; ``gaussian_kl_logvar``'s ``kl_grad`` took ``expm1`` twice over every entry, once
for its rare piece beyond 88). ``log1p`` in such a
value is first written with ``log`` by the rule :func:`derive.arrangement.log1p_as_log`,
whose step is checked here (generation fails where it does not hold); its argument
``1 + u`` is printed alike in both loops, and the logarithms' arguments are float64
arrays whatever the inputs' dtype (``wide``: the loops compute float32 entries in
float64), so the
correction reads the very value the log was taken of. Likewise a :data:`HOISTED` call in
a statement outside every piece whose argument reads values an earlier loop computes
(not values the kernel returns: those keep the input's dtype) is evaluated by NumPy
between the loops, from float64 arrays (the pair's ``kl_grad``: ``expm1(x/2)`` and
``expm1(x)`` of its ``x``); calls whose arguments were computed before the same loop
share its NumPy lines.

A kernel with callable arguments, block matrices or sums over an axis has no loop
(:func:`lower_fused` returns None).

Example:
    >>> import sympy as sp
    >>> from derive.spec import Arg, Kernel, Output
    >>> from codegen.plan import plan_kernel
    >>> x = sp.Symbol("x", positive=True)
    >>> k = Kernel("f", (Arg("x", "positive", "x"),),
    ...            (Output("y", sp.Piecewise((sp.log(x), x > 1), (x - 1, True)), "y"),), "")
    >>> low = lower_fused(plan_kernel(k), FusedPrinter())
    >>> [(lp["inputs"], lp["outputs"]) for lp in low["loops"]]
    [(('x',), ('y',))]
    >>> [(b["cond"], b["code"]) for b in low["loops"][0]["statements"][0]["branches"]]
    [('(x > 1)', 'math.log(x)'), ('', 'x - 1')]
"""

from __future__ import annotations

import math
from typing import Any

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p
from sympy.core.function import AppliedUndef
from sympy.printing.pycode import _known_constants_math, _known_functions_math

from derive.arrangement import log1p_as_log
from derive.derivation import check_step
from derive.nodes import BroadcastSum, ComponentSum

from .numpy_backend import KernelPrinter
from .plan import KernelPlan
from .xp_backend import XpPrinter

__all__ = ["FusedPrinter", "lower_fused", "HOISTED", "TOTAL", "CALL_SLOTS"]

#: The functions evaluated by NumPy before the loop where a statement outside
#: every piece applies them to the kernel's own arrays (see the module's docstring).
HOISTED: tuple[type[sp.Function], ...] = (sp.exp, expm1, sp.log)

#: The most calls of one piece that are evaluated for every entry, before the loop that
#: reads them (:func:`_call_slots`): each costs a pass of NumPy over every entry.
CALL_SLOTS = 2

#: The functions defined on every real number, never NaN where their argument is not
#: (at worst an overflow to inf): evaluated where their piece is not taken, they cost a
#: pass but change no value that is taken (see the module's docstring).
TOTAL: tuple[type[sp.Function], ...] = (sp.exp, expm1)


class FusedPrinter(XpPrinter):
    """The project's printer for one entry: Python's ``math`` functions on scalars,
    comparisons as operators and logic as ``and``/``or``/``not``, a derived polynomial as
    the nested products it is (``kernel_runtime.horner`` rounds as they do).

    Example:
        >>> import sympy as sp
        >>> a = sp.Symbol("a", real=True)
        >>> p = FusedPrinter()
        >>> p.doprint(sp.And(a > 0, sp.Or(a < -1, sp.Abs(a) > 3)))
        '(a > 0) and ((a < -1) or (abs(a) > 3))'
        >>> p.doprint(sp.exp(a) + sp.pi), p.doprint(sp.oo)
        ('math.exp(a) + math.pi', 'math.inf')
    """

    _module = "math"
    _kf = {k: "math." + v for k, v in _known_functions_math.items()}
    _kc = {k: "math." + v for k, v in _known_constants_math.items()}

    def _print_horner(self, x: sp.Basic, coefficients: tuple[sp.Basic, ...]) -> str:
        # the nested products themselves, as kernel_runtime.horner rounds them
        name = self._print(x)
        code = f"{self._print(coefficients[0])}*{name}"
        for c in coefficients[1:-1]:
            code = f"({code} + {self._print(c)})*{name}"
        return f"({code} + {self._print(coefficients[-1])})"

    def _module_format(self, fqn: str, register: bool = True) -> str:
        # a NumPy form (logaddexp, sinc, mod...) given the math. prefix names nothing
        # Python's math has: such a kernel keeps its NumPy body (user material included)
        if fqn.startswith("math.") and not hasattr(math, fqn[len("math."):]):
            raise NotImplementedError(f"{fqn[len('math.'):]} has no element form here")
        return super()._module_format(fqn, register)

    def _print(self, expr: sp.Basic, **kwargs: Any) -> str:
        # a function NumPy's printer knows and math's table lacks (logaddexp: the
        # inherited alias looks it up there): no element form
        try:
            return super()._print(expr, **kwargs)
        except KeyError as missing:
            raise NotImplementedError(f"{missing} has no element form here") from None

    def _print_Abs(self, expr: sp.Basic) -> str:
        return f"abs({self._print(expr.args[0])})"

    def _print_And(self, expr: sp.Basic) -> str:
        return " and ".join(self._operand(a) for a in expr.args)

    def _print_Or(self, expr: sp.Basic) -> str:
        return " or ".join(self._operand(a) for a in expr.args)

    def _print_Not(self, expr: sp.Basic) -> str:
        return f"not ({self._print(expr.args[0])})"

    def _unprintable(self, expr: sp.Basic) -> str:
        # NumPy's forms (maximum, select, sign) with a math. prefix name nothing math has:
        # such a kernel keeps its NumPy body only, rather than failing when numba compiles
        raise NotImplementedError(f"{type(expr).__name__} has no element form here")

    _print_Max = _print_Min = _print_Piecewise = _print_Heaviside = _print_sign = _unprintable
    _print_softplus = _print_sigmoid = _print_cbrt = _unprintable


def _hoist(plan: KernelPlan, printer: KernelPrinter,
           ) -> tuple[tuple[tuple[str, str], ...], dict[sp.Basic, sp.Symbol], bool]:
    """:func:`_hoist_pass` twice: the first finds which calls are hoisted, the second
    hoists them in the plan's order, a piecewise statement left to :func:`lower_fused`'s
    slots where it still has one call a piece once the others are put in."""
    _, names, _ = _hoist_pass(plan, printer, None)
    return _hoist_pass(plan, printer, names)


def _hoist_pass(plan: KernelPlan, printer: KernelPrinter,
                final: dict[sp.Basic, sp.Symbol] | None,
                ) -> tuple[tuple[tuple[str, str], ...], dict[sp.Basic, sp.Symbol], bool]:
    """The calls evaluated by NumPy before the loops: ``((name, NumPy code), ...)`` (with
    the call-free statements their arguments read, named ``_h_<target>``), the
    substitution of each call by its name, and whether one of them is in a piece (it is
    then evaluated where its piece is not taken too, and may overflow there).

    Two rules (the module's docstring): a :data:`HOISTED` call on the kernel's arrays in a
    statement outside every piece; and every call of a piecewise statement whose calls are
    all :data:`TOTAL` on arguments computed from the kernel's arrays by call-free
    statements (then its loop calls nothing and is vectorized)."""
    inputs = set(plan.checked)
    found: list[sp.Basic] = []
    defs: dict[str, sp.Basic] = {}  # call-free statements, expanded into the kernel's arrays
    raw: dict[str, sp.Basic] = {}  # the same as planned (each rounds as the loop does)

    def expand(e: sp.Basic) -> sp.Basic:
        return e.xreplace({s: defs[s.name] for s in e.free_symbols if s.name in defs})

    def renamed(e: sp.Basic) -> sp.Basic:
        return e.xreplace({s: sp.Symbol(f"_h_{s.name}", **s.assumptions0)
                           for s in e.free_symbols if s.name in raw})

    lines: list[tuple[str, str]] = []
    names: dict[sp.Basic, sp.Symbol] = {}

    def hoist(app: sp.Basic) -> None:
        # the statements its argument reads first, computed by NumPy as planned (a
        # value expanded into its inputs could round otherwise: 3*(a - b))
        needed: list[str] = []
        todo = [s.name for s in app.free_symbols if s.name in raw]
        while todo:
            n = todo.pop()
            if n not in needed:
                needed.append(n)
                todo += [s.name for s in raw[n].free_symbols if s.name in raw]
        for n in raw:  # in the plan's order
            if n in needed and (f"_h_{n}", printer.doprint(renamed(raw[n]))) not in lines:
                lines.append((f"_h_{n}", printer.doprint(renamed(raw[n]))))
        names[app] = sp.Symbol(f"_v{len(found)}", real=True)
        found.append(app)
        lines.append((names[app].name, printer.doprint(renamed(app))))

    in_piece = False

    def total(st: Any) -> None:  # the second rule
        nonlocal in_piece
        exprs = [e for p in st.pieces for e in (p.expr, p.cond)]
        apps = sorted(set().union(*(e.atoms(sp.Function) for e in exprs)),
                      key=sp.default_sort_key)
        apps = [a for a in apps if _calls(a)]
        if apps and all(isinstance(a, TOTAL) and _on_arrays(expand(a), inputs)
                        for a in apps):
            for a in apps:
                if a not in found:
                    hoist(a)
                    in_piece = True

    deferred = []
    for st in plan.statements:
        if st.kind == "assign":
            for app in sorted(st.expr.atoms(*HOISTED), key=sp.default_sort_key):
                if app not in found and _on_arrays(expand(app), inputs):
                    hoist(app)
            expr = expand(st.expr)
            if not _calls(expr) and {s.name for s in expr.free_symbols} <= inputs:
                defs[st.target] = expr
                raw[st.target] = st.expr
            continue
        if st.kind != "piecewise" or len(st.pieces) == 1:
            continue
        if final is not None:  # the second pass: slots where they still apply
            if _call_slots([(p.cond.xreplace(final), p.expr.xreplace(final))
                            for p in st.pieces]) is None:
                total(st)
            continue
        if _call_slots([(p.cond, p.expr) for p in st.pieces]) is not None:
            deferred.append(st)  # one call a piece: lower_fused's slots, if it still is
            continue
        total(st)
    for st in deferred:  # with another statement's hoisted calls put in: still one a piece?
        if _call_slots([(p.cond.xreplace(names), p.expr.xreplace(names))
                        for p in st.pieces]) is None:
            total(st)
    return tuple(lines), names, in_piece


def _calls(expr: sp.Basic) -> bool:
    """Whether printing ``expr`` calls a function (which keeps a loop from being
    vectorized); a call on constants is printed as its value."""
    return any(not isinstance(f, sp.Abs | sp.Piecewise) and f.free_symbols
               for f in expr.atoms(sp.Function))


def _on_arrays(app: sp.Basic, inputs: set[str]) -> bool:
    """Whether ``app`` (a call) is one on the kernel's arrays, its argument computed
    from them without a call."""
    names = {s.name for s in app.free_symbols}
    return bool(names) and names <= inputs and not any(_calls(a) for a in app.args)


def lower_fused(plan: KernelPlan, printer: FusedPrinter) -> dict[str, Any] | None:
    """The plan printed as loops over the entries, or None where it has none (callables,
    block matrices, sums over an axis, or a function with no element form).

    The statements are split into loops at each change between statements that call a
    function and statements that do not, where the latter hold a piecewise value: LLVM
    vectorizes a loop without calls (several entries per instruction, its branches turned
    into selects), and a call in it would keep it from that; a value one loop computes
    and a later one reads is an array between them.

    Returns ``hoisted`` (``(name, NumPy code)`` computed before the loops) and ``loops``,
    each with ``inputs`` (the arrays it reads: the kernel's, hoisted or an earlier loop's),
    ``outputs`` (the arrays it writes: read by a later loop, or returned) and
    ``statements`` (``assign``: ``target``, ``code``; ``piecewise``: ``target`` and
    ``branches``, each a ``cond`` ("" for the last) and a ``code``).

    Example:
        >>> import sympy as sp
        >>> from derive.spec import Arg, Kernel, Output
        >>> from codegen.plan import plan_kernel
        >>> s = sp.Symbol("s", positive=True)
        >>> k = Kernel("f", (Arg("s", "positive", "s"),), (Output("y", 2*sp.log(s) + s, "y"),), "")
        >>> low = lower_fused(plan_kernel(k), FusedPrinter())
        >>> low["hoisted"], low["loops"][0]["inputs"], low["loops"][0]["statements"][0]["code"]
        ((('_v0', 'numpy.log(s)'),), ('s', '_v0'), '2*_v0 + s')
    """
    if plan.blocks:
        return None
    for st in plan.statements:
        if st.kind != "assign" and st.kind != "piecewise":
            return None
        exprs = [st.expr] + [e for p in st.pieces for e in (p.expr, p.cond)]
        if any(e.atoms(AppliedUndef) or e.has(ComponentSum, BroadcastSum) for e in exprs):
            return None
    hoisted, names, quiet = _hoist(plan, KernelPrinter())
    numpy_printer = KernelPrinter()
    # each statement: its printed form, the names it reads, whether it calls a function
    printed: list[tuple[dict[str, Any], set[str], bool]] = []
    # the NumPy lines computed before the loop that starts at a statement (by its index
    # in printed), and the names they read (one_log's arguments)
    before: dict[int, list[tuple[str, str]]] = {}
    before_reads: dict[int, set[str]] = {}
    slot_names: set[str] = set()  # the logarithms' arguments, computed by a loop
    earlier: set[str] = set()  # the targets of the statements printed so far
    since: set[str] = set()  # ... and of those since the latest split
    n_between = 0  # the calls evaluated between loops so far (_e0, _e1, ...)
    try:
        for st in plan.statements:
            # a hoisted value is read wherever it appears, inside a piece too
            if st.kind == "assign" or len(st.pieces) == 1:
                expr = (st.expr if st.kind == "assign" else st.pieces[0].expr).xreplace(names)
                # a call on every entry of values an earlier loop computes: by NumPy
                # between the loops (a returned value is read in its own dtype: not so)
                apps = sorted((a for a in expr.atoms(*HOISTED) if not _calls(a.args[0])
                               and {n.name for n in a.free_symbols} <= earlier - set(plan.returns)
                               and a.free_symbols), key=sp.default_sort_key)
                if apps:
                    lines = []
                    for app in apps:
                        value = sp.Symbol(f"_e{n_between}", real=True)
                        n_between += 1
                        lines.append((value.name, numpy_printer.doprint(app)))
                        expr = expr.xreplace({app: value})
                    reads = {n.name for a in apps for n in a.free_symbols}
                    # with the lines of the latest split where what they read was computed
                    # before it (one loop fewer); else a split here
                    at = max(before, default=None)
                    if at is None or reads & since:
                        at, since = len(printed), set()
                    before.setdefault(at, []).extend(lines)
                    before_reads.setdefault(at, set()).update(reads)
                    slot_names.update(reads)
                earlier.add(st.target)
                since.add(st.target)
                printed.append(({"kind": "assign", "target": st.target,
                                 "code": printer.doprint(expr)},
                                {s.name for s in expr.free_symbols}, _calls(expr)))
                continue
            last = len(st.pieces) - 1
            pieces = [(p.cond.xreplace(names), p.expr.xreplace(names)) for p in st.pieces]
            arranged = _log1p_as_log(pieces)
            found = _call_slots(arranged)
            if found is not None:  # the arguments by a loop, the calls by NumPy, the pieces
                func, slots = found
                pieces = arranged
                lines, reads, values = [], set(), {}
                for slot in slots:  # the j-th call of each piece (1 where it has fewer)
                    k = sum(len(v) for v in before.values()) + len(lines)
                    arg = f"_w{k}"
                    printed.append(({"kind": "piecewise", "target": arg, "branches": tuple(
                        {"cond": "" if i == last else printer.doprint(cond),
                         "code": printer.doprint(a)} for i, ((cond, _), a) in enumerate(
                            zip(pieces, slot, strict=True)))},
                        {s.name for (c, _), a in zip(pieces, slot, strict=True)
                         for s in (c.free_symbols | a.free_symbols)}, False))
                    value = sp.Symbol(f"_l{k}", real=True)
                    # in place: the argument is read by nothing else (one fresh array
                    # fewer: on the machine of docs/benchmarks.md each large one page-faults)
                    lines.append((value.name, numpy_printer.doprint(
                        func(sp.Symbol(arg, positive=True)))[:-1] + f", out={arg})"))
                    reads.add(arg)
                    if func is sp.log:  # (log1p's correction reads the argument again)
                        slot_names.add(arg)
                    for i, a in enumerate(slot):
                        if a != 1:  # (1: a piece with fewer calls; its value is never read)
                            values.setdefault(i, {})[func(a)] = value
                before[len(printed)] = lines
                before_reads[len(printed)] = reads
                since = set()
                pieces = [(c, e.xreplace(values.get(i, {}))) for i, (c, e) in enumerate(pieces)]
            earlier.add(st.target)
            since.add(st.target)
            printed.append(({"kind": "piecewise", "target": st.target, "branches": tuple(
                {"cond": "" if i == last else printer.doprint(cond), "code": printer.doprint(e)}
                for i, (cond, e) in enumerate(pieces))},
                {s.name for c, e in pieces for s in (c.free_symbols | e.free_symbols)},
                any(_calls(c) or _calls(e) for c, e in pieces)))
    except NotImplementedError:
        return None
    groups: list[list[tuple[dict[str, Any], set[str], bool]]] = []
    starts: list[int] = []  # the index in printed of each group's first statement
    for k, item in enumerate(printed):
        if groups and groups[-1][-1][2] == item[2] and k not in before:
            groups[-1].append(item)
        else:
            groups.append([item])
            starts.append(k)
    # a run without calls and without pieces gains nothing from a loop of its own (it
    # would cost a pass over memory): it joins the loop before it
    merged: list[list[tuple[dict[str, Any], set[str], bool]]] = []
    merged_starts: list[int] = []
    for group, start in zip(groups, starts, strict=True):
        plain = not any(call or st["kind"] == "piecewise" for st, _, call in group)
        if merged and plain and start not in before:
            merged[-1].extend(group)
        else:
            merged.append(group)
            merged_starts.append(start)
    groups, starts = merged, merged_starts
    # the NumPy lines before each group's loop, and the names they read
    pre = [before.get(start, []) for start in starts]
    pre_reads = [before_reads.get(start, set()) for start in starts]
    between = [name for lines in pre for name, _ in lines]
    loops = []
    for k, group in enumerate(groups):
        read_later = ({n for g in groups[k + 1:] for _, reads, _ in g for n in reads}
                      | set().union(*pre_reads[k + 1:]))
        if not any(st["target"] in plan.returns or st["target"] in read_later
                   for st, _, _ in group):
            continue  # nothing returned or read later (no kernel has such a group)
        defined = [st["target"] for st, _, _ in group]
        reads = set().union(*(r for _, r, _ in group)) - set(defined)
        loops.append({
            "before": tuple(pre[k]),
            "inputs": tuple(n for n in list(plan.checked) + [h for h, _ in hoisted] + between
                            + [st["target"] for g in groups[:k] for st, _, _ in g]
                            if n in reads),
            "outputs": tuple(n for n in defined if n in read_later or n in plan.returns),
            "statements": [st for st, _, _ in group]})
        # the logarithms' arguments in float64 whatever the inputs' dtype: the loops
        # compute float32 entries in float64, and the correction of log1p's form
        # recomputes the argument, which must be the one the logarithm was taken of
        loops[-1]["wide"] = tuple(i for i, n in enumerate(loops[-1]["outputs"])
                                  if n in slot_names)
    return {"hoisted": hoisted, "quiet": quiet, "loops": loops}


def _log1p_as_log(pieces: list[tuple[sp.Basic, sp.Basic]]) -> list[tuple[sp.Basic, sp.Basic]]:
    """The pieces with each ``log1p(u)`` written with ``log(1 + u)``
    (:func:`derive.arrangement.log1p_as_log`, its step checked here: generation fails where
    it does not hold), where every call of the pieces is ``log`` or ``log1p``, at most one
    ``log1p`` a piece; else the pieces as they are. ``w = 1 + u`` is then computed twice,
    as the same printed expression, so that it rounds the same both times: once as the
    argument of the logarithm (:func:`_call_slots`), once in the correction.

    Example:
        >>> a, b = sp.symbols("a b", positive=True)
        >>> near = _log1p_as_log([(a < b, 2*log1p((a - b)/b)), (sp.true, sp.log(a))])[0][1]
        >>> FusedPrinter().doprint(near)
        '2*(math.log(1 + (a - b)/b) - 1/(1 + (a - b)/b)*(((1 + (a - b)/b) - 1) - (a - b)/b))'
    """
    calls = [f for _, e in pieces for f in e.atoms(sp.Function) if _calls(f)]
    if not any(isinstance(f, log1p) for f in calls) or not all(
            isinstance(f, (sp.log, log1p)) for f in calls):
        return pieces
    w = sp.Symbol("w_log1p", positive=True)  # (a fixed name: the check's verdict is cached by it)
    arranged = []
    for cond, expr in pieces:
        found = log1p_as_log(expr, w)
        if found is None:
            if expr.has(log1p):
                return pieces
            arranged.append((cond, expr))
            continue
        form, step = found
        check_step(step)
        arranged.append((cond, form.xreplace({w: sp.UnevaluatedExpr(step.given[0][1])})))
    return arranged


def _call_slots(pieces: list[tuple[sp.Basic, sp.Basic]]
                ) -> tuple[type[sp.Function], list[list[sp.Basic]]] | None:
    """Where a piecewise value's only calls are of one :data:`HOISTED` function in every
    one of its pieces (of arguments computed without a call; none in a condition), at most
    :data:`CALL_SLOTS` distinct ones a piece: the function, and for each ``j`` the argument
    of each piece's ``j``-th call (``1`` where it has fewer). A loop then chooses the
    arguments per entry (no call: vectorized), NumPy evaluates the function on every entry
    (several entries per instruction, as the hoisted calls), and a loop without calls
    evaluates the pieces with them. Only where each value is computed changes: each
    argument is its piece's own, as printed, and the value is read only where that piece
    is taken (so a ``log`` is never taken of another piece's argument, and an ``exp`` of a
    piece not taken never overflows). None where that does not apply.

    Example:
        >>> a, b = sp.symbols("a b", positive=True)
        >>> _call_slots([(a > b, 2*sp.log(a/b)), (sp.true, sp.log(a) - sp.log(b))])
        (log, [[a/b, a], [1, b]])
        >>> _call_slots([(a > b, sp.log(a)), (sp.true, sp.exp(a))]) is None
        True
    """
    per_piece, funcs = [], set()
    for cond, expr in pieces:
        calls = sorted((f for f in expr.atoms(sp.Function) if _calls(f)), key=sp.default_sort_key)
        if _calls(cond) or not calls or len(calls) > CALL_SLOTS or any(
                not isinstance(f, HOISTED) or _calls(f.args[0]) for f in calls):
            return None
        funcs.update(type(f) for f in calls)
        per_piece.append([f.args[0] for f in calls])
    if len(funcs) != 1:
        return None
    width = max(len(args) for args in per_piece)
    return funcs.pop(), [[args[j] if j < len(args) else sp.Integer(1) for args in per_piece]
                         for j in range(width)]
