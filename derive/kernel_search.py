r"""The accuracy search at generate time: every kernel output through :mod:`derive.search`.

:func:`search_module` takes a generated module's specification (a
:class:`~derive.spec.Module`, as the material's kernels give it) and runs
:func:`~derive.search.arrange_search` on each output of each kernel, starting from the
output as the derivation arranged it, over the domain its arguments' kinds give:
``positive`` arguments over ``(0, max]``, every other argument (and the value of each
callable argument, ``F(x2)``) over both signs up to the largest float. An output that
sums over components (``ComponentSum``) is searched term by term (each summand is an
element-wise expression); named intermediates are put in first. A rewrite is kept only
when it lowers the measured maximum error and is no worse on a held-out sample (the
search's own rule); it is a checked step (:func:`~derive.derivation.check_step`), as
every step of a derivation is. A piecewise output is measured, and searched piece by
piece: each piece over the samples that fall in it (its condition, and not an earlier
one's), the rewrite kept only where it lowers the error there.

Deterministic: the budget is in samples and rounds (:data:`BUDGET`), never in seconds; the
sampling seeds are fixed. Cached: a :class:`~derive.cache.Store` holds each search by a
key of the expression (``srepr``, assumptions included), the domain, the budget and the
digest of the sources the search runs (:func:`search_digest`); an entry is text (the
expressions as ``srepr``, read back by a parser that builds only SymPy nodes,
:func:`read_srepr`), never code.

Example:
    >>> import sympy as sp
    >>> from derive.spec import Arg, Kernel, Module, Output
    >>> x = sp.Symbol("x", real=True)
    >>> m = Module("demo", "t", "d", (Kernel("f", (Arg("x", "elementwise", "x"),),
    ...            (Output("v", sp.log(1 + x**2), "v"),), "f."),), "s", "elementwise")
    >>> got = search_module(m)
    >>> v = got.verdicts[0]
    >>> v.before.max_ulp > 1e18, v.after.max_ulp <= 2, len(v.steps)
    (True, True, 1)
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, replace
from typing import Any

import sympy as sp
from sympy.core.function import AppliedUndef

from .cache import Store, source_digest
from .derivation import Step
from .nodes import ComponentSum
from .search import Measure, arrange_search
from .spec import Kernel, Module, Output

__all__ = ["BUDGET", "GAIN", "MAX_OPS", "Verdict", "Searched", "search_module",
           "search_digest", "read_srepr", "write_srepr", "searchable", "use_store", "LARGEST"]

#: The search's budget at generate time: points sampled (and neighbours refined around
#: the worst), rewrites kept one after the other at most. Deterministic: no time limit.
BUDGET = {"samples": 64, "rounds": 2, "refine": 4, "seed": 0, "series_orders": ()}
#: A rewrite found is kept at generate time only where it at least halves the maximum
#: error, leaves no more points not finite, and leaves every point measured within
#: ``2**52`` ulp (a value of the right sign and magnitude): a smaller gain is within what
#: another sample of the domain would measure, and a shipped kernel is not rewritten for it.
GAIN = 2.0
#: An expression with a piecewise value inside it (a named intermediate put in), or more
#: operations than this, is measured only: the rules' SymPy rewrites (``simplify``,
#: ``factor``) of a large or nested piecewise take minutes and gigabytes (one bin of a
#: rational-quadratic spline, 37 operations in 8 variables: 59 s).
MAX_OPS = 30
#: The largest float: each argument's domain reaches it.
LARGEST = sys.float_info.max
_TINY = 5e-324
#: The sources the search runs: a cached verdict's key holds their digest.
_SOURCES = ("search.py", "arrangement.py", "derivation.py", "nodes.py", "pieces.py",
            "rules_extra.py", "spec.py", "vocabulary.py", "kernel_search.py", "__init__.py")
_memo: dict[str, tuple] = {}
#: The store a search without one uses (:func:`use_store`; ``derive generate`` sets it).
_STORE: list[Store | None] = [None]


def use_store(store: Store | None) -> Store | None:
    """Make ``store`` the derivation cache every later search without one reads and fills;
    return the one it replaces (to be put back)."""
    previous, _STORE[0] = _STORE[0], store
    return previous


@dataclass(frozen=True)
class Verdict:
    """What the search found for one kernel output (or one term of a sum over components).

    Arguments:
        kernel, output: where (the kernel's and the output's names).
        term: the summand's number within a sum over components (1, 2, ...), or 0.
        domain: each variable and its interval, ``(name, low, high)``.
        before, after: the error in ulp against mpmath, as derived and as kept.
        steps: the checked steps the search kept (none: the output is unchanged).
        expr: the expression searched (the output as the derivation arranged it).
        piece: for a piecewise output, the piece searched (1, 2, ...), or 0.
    """

    kernel: str
    output: str
    term: int
    domain: tuple[tuple[str, float, float], ...]
    before: Measure
    after: Measure
    steps: tuple[Step, ...]
    expr: sp.Expr
    piece: int = 0
    searched: bool = True  # False: measured only (see :func:`searchable`)
    note: str = ""  # why the output was neither searched nor measured, where it was not

    @property
    def changed(self) -> bool:
        return bool(self.steps)


@dataclass(frozen=True)
class Searched:
    """A module with each output as the search left it, and the verdicts, in order."""

    module: Module
    verdicts: tuple[Verdict, ...]
    searched: int = 0  # how many searches ran (not read from the cache or the memo)


def search_digest() -> str:
    """SHA-256 of the sources the search runs and of the libraries' versions
    (:func:`~derive.cache.source_digest` of :data:`_SOURCES` alone)."""
    return source_digest(only=[f"derive/{name}" for name in _SOURCES], material=False)


# --- reading srepr back, without eval ------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<str>'[^'\\]*')"
                    r"|(?P<num>-?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)|(?P<op>[(),=]))")


def _constructor(name: str) -> Any:
    from sympy.codegen import cfunctions
    from sympy.functions.elementary import piecewise

    from . import nodes

    for where in (nodes, cfunctions, sp, piecewise):
        value = getattr(where, name, None)
        if isinstance(value, type) and issubclass(value, sp.Basic):
            return value
        if isinstance(value, sp.Basic):  # pi, E, oo, true, false, nan, zoo
            return value
    raise ValueError(f"not a SymPy node: {name!r}")


def write_srepr(e: sp.Basic) -> str:
    """``e`` as ``srepr`` prints it, but with every node's arguments in their own order
    (``srepr`` sorts an unevaluated product's factors, whose order the printed code keeps):
    what :func:`read_srepr` reads back as ``e``."""
    if not e.args or isinstance(e, (sp.Symbol, sp.Number, sp.NumberSymbol)):
        return sp.srepr(e)
    return f"{type(e).__name__}({', '.join(write_srepr(a) for a in e.args)})"


def read_srepr(text: str) -> sp.Basic:
    """The SymPy value ``srepr`` printed as ``text``, built without evaluating code: only
    SymPy's (and :mod:`derive.nodes`') classes are called, on numbers, strings and the
    values read before them; nothing is simplified on the way (``evaluate=False``).

    Example:
        >>> x = sp.Symbol("x", positive=True)
        >>> with sp.evaluate(False):
        ...     e = sp.exp(x / 2) * (x * sp.exp(x / 2))
        >>> read_srepr(write_srepr(e)) == e
        True
        >>> read_srepr("__import__('os')")
        Traceback (most recent call last):
        ...
        ValueError: not a SymPy node: '__import__'
    """
    tokens = [(m.lastgroup, m.group(m.lastgroup)) for m in _TOKEN.finditer(text)]
    if "".join(t for _, t in tokens) != re.sub(r"\s+", "", text):
        raise ValueError("not an srepr text")
    pos = 0

    def take() -> tuple[str, str]:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("srepr text ends early")
        pos += 1
        return tokens[pos - 1]

    def value() -> Any:
        kind, tok = take()
        if kind == "str":
            return tok[1:-1]
        if kind == "num":
            return int(tok) if re.fullmatch(r"-?[0-9]+", tok) else float(tok)
        if kind != "name":
            raise ValueError(f"unexpected {tok!r}")
        if tok in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[tok]
        fn = _constructor(tok)
        if pos < len(tokens) and tokens[pos] == ("op", "("):
            take()
            args, kwargs = [], {}
            while tokens[pos] != ("op", ")"):
                if tokens[pos][0] == "name" and pos + 1 < len(tokens) \
                        and tokens[pos + 1] == ("op", "="):
                    key = take()[1]
                    take()
                    kwargs[key] = value()
                else:
                    args.append(value())
                if tokens[pos] == ("op", ","):
                    take()
            take()
            if isinstance(fn, sp.Basic):
                raise ValueError(f"{tok} is not callable")
            return fn(*args, **kwargs)
        return fn

    with sp.evaluate(False):
        out = value()
    if pos != len(tokens) or not isinstance(out, sp.Basic):
        raise ValueError("not one SymPy value")
    return out


# --- the search of one expression, cached ---------------------------------------------------


def _measure_list(m: Measure) -> list:
    return [m.max_ulp, m.mean_ulp, m.points, m.nonfinite]


def searchable(expr: sp.Expr) -> bool:
    """Whether ``expr`` is searched (else measured only): no piecewise value inside it and
    at most :data:`MAX_OPS` operations."""
    return not expr.has(sp.Piecewise) and sp.count_ops(expr) <= MAX_OPS


def _search(expr: sp.Expr, box: dict[sp.Symbol, tuple[float, float]],
            where: sp.Basic | None, store: Store | None, counter: list[int]
            ) -> tuple[Measure, Measure, sp.Expr, tuple[Step, ...]]:
    """The search of ``expr`` over ``box`` (restricted to ``where``): the error before and
    after, the expression kept and the steps; from the memo, the store, or searched."""
    rounds = BUDGET["rounds"] if searchable(expr) else 0
    key = ["kernel-search", search_digest(), write_srepr(expr), GAIN, rounds,
           [[v.name, lo, hi] for v, (lo, hi) in box.items()],
           write_srepr(where) if where is not None else None,
           [[k, list(v) if isinstance(v, tuple) else v] for k, v in sorted(BUDGET.items())]]
    text = repr(key)
    if text in _memo:
        return _memo[text]
    value = store.get("kernel-search", key) if store is not None else None
    got = _read(value) if value is not None else None
    if got is None:
        counter[0] += 1
        try:
            found = arrange_search(expr, box, where=where, **{
                **BUDGET, "rounds": rounds, "refine": BUDGET["refine"] if rounds else 0})
            got = (found.before, found.after, found.expr, tuple(found.derivation.steps))
            if not (found.after.max_ulp * GAIN <= found.before.max_ulp
                    and found.after.nonfinite <= found.before.nonfinite
                    and found.after.max_ulp < 2.0 ** 52):
                got = (found.before, found.before, expr, ())
        except ValueError:  # no sample where it is real (a piece no sample falls in)
            none = Measure(0.0, 0.0, 0, 0)
            got = (none, none, expr, ())
        value = {"before": _measure_list(got[0]), "after": _measure_list(got[1]),
                 "expr": write_srepr(got[2]),
                 "steps": [[write_srepr(s.lhs), write_srepr(s.rhs), s.reason,
                            [write_srepr(n) for n in s.notes]] for s in got[3]]}
        if store is not None and _read(value) == got:  # cached only where it reads back
            store.put("kernel-search", key, value)
    _memo[text] = got
    return got


def _read(value: Any) -> tuple[Measure, Measure, sp.Expr, tuple[Step, ...]] | None:
    """A cached search read back; None where it does not read."""
    try:
        steps = tuple(Step(read_srepr(lhs), read_srepr(rhs), reason,
                           notes=tuple(read_srepr(n) for n in notes))
                      for lhs, rhs, reason, notes in value["steps"])
        return (Measure(*value["before"]), Measure(*value["after"]),
                read_srepr(value["expr"]), steps)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, RecursionError):
        return None


# --- a kernel output's domain and terms ------------------------------------------------------


def _inlined(kernel: Kernel, out: Output) -> sp.Expr:
    """The output's value with the kernel's named intermediates put in."""
    internals: dict[str, sp.Expr] = {}

    def put_in(e: sp.Basic) -> sp.Basic:
        named = {s: internals[s.name] for s in e.free_symbols
                 if isinstance(s, sp.Symbol) and s.name in internals}
        with sp.evaluate(False):
            return e.xreplace(named)

    for o in kernel.outputs:
        if o is out:
            break
        if o.internal and isinstance(o.value, sp.Basic):
            internals[o.name] = put_in(o.value)
    return put_in(out.value)


def _variables(kernel: Kernel, expr: sp.Expr
               ) -> tuple[sp.Expr, dict[sp.Symbol, tuple[float, float]], dict[sp.Basic, sp.Basic]]:
    """``expr`` in the search's variables (positive arguments assumed positive, each
    callable's value a variable of its own), the box, and the map back."""
    kinds = {a.name: a.kind for a in kernel.args}
    names = {a.name for a in kernel.args}
    to: dict[sp.Basic, sp.Basic] = {}
    box: dict[sp.Symbol, tuple[float, float]] = {}
    applied = sorted(expr.atoms(AppliedUndef), key=sp.default_sort_key)
    # the symbols outside the callables' arguments: each callable's value is a variable
    outside, todo = set(), [expr]
    while todo:
        node = todo.pop()
        if isinstance(node, sp.Symbol):
            outside.add(node)
        elif not isinstance(node, AppliedUndef):
            todo.extend(node.args)
    by_name = {s.name: s for s in outside}
    for a in kernel.args:
        s = by_name.get(a.name)
        if s is not None and a.is_array:
            v = sp.Symbol(a.name, positive=True) if kinds[a.name] == "positive" else (
                sp.Symbol(a.name, real=True))
            to[s] = v
            box[v] = (_TINY, LARGEST) if kinds[a.name] == "positive" else (-LARGEST, LARGEST)
    for app in applied:
        name = app.func.__name__
        while name in names:
            name += "_"
        names.add(name)
        v = sp.Symbol(name, real=True)
        to[app] = v
        box[v] = (-LARGEST, LARGEST)
    with sp.evaluate(False):
        searched = expr.xreplace(to)
    return searched, box, {v: k for k, v in to.items()}


def _terms(expr: sp.Expr) -> list[sp.Expr]:
    """The summands searched: each ``ComponentSum``'s argument, or the whole value."""
    sums = [e for e in sp.preorder_traversal(expr) if isinstance(e, ComponentSum)]
    return [s.args[0] for s in dict.fromkeys(sums)] if sums else [expr]


def _back(e: sp.Basic, back: dict[sp.Basic, sp.Basic]) -> sp.Basic:
    """``e`` in the kernel's own symbols and callables (a series' ``O`` term, which SymPy
    cannot rebuild unevaluated, in the search's: the same names)."""
    try:
        with sp.evaluate(False):
            return e.xreplace(back)
    except (RecursionError, TypeError, ValueError):
        return e


def _verdicts_of(kernel: Kernel, out: Output, store: Store | None,
                 counter: list[int]) -> tuple[Output, list[Verdict]]:
    """The output as the search leaves it, and a verdict per term (and piece)."""
    if not isinstance(out.value, sp.Basic):  # a block matrix of the callables' Jacobians
        return out, []
    value = _inlined(kernel, out)
    verdicts: list[Verdict] = []
    replaced: dict[sp.Basic, sp.Basic] = {}
    terms = _terms(value)
    for k, term in enumerate(terms, 1):
        expr, box, back = _variables(kernel, term)
        if not box or isinstance(expr, sp.Symbol):
            continue  # a constant or an argument: exact, nothing to search
        number = k if len(terms) > 1 else 0
        domain = tuple((v.name if v not in back or not isinstance(back[v], AppliedUndef)
                        else sp.sstr(back[v]), lo, hi) for v, (lo, hi) in box.items())
        pieces = (list(expr.args) if isinstance(expr, sp.Piecewise) else [None])
        new_pieces, earlier = [], []
        for p, pair in enumerate(pieces, 1):
            if pair is None:
                target, where = expr, None
            else:
                target = pair.expr
                where = sp.And(pair.cond, *[sp.Not(c) for c in earlier])
                earlier.append(pair.cond)
                if not target.free_symbols or isinstance(target, sp.Symbol) \
                        or where is sp.false:
                    new_pieces.append(pair)
                    continue
            before, after, found, kept = _search(target, box, where, store, counter)
            steps = tuple(Step(_back(s.lhs, back), _back(s.rhs, back), s.reason,
                               notes=tuple(_back(n, back) for n in s.notes)) for s in kept)
            new = found if steps else target
            verdicts.append(Verdict(kernel.name, out.name, number, domain, before, after,
                                    steps, _back(target, back), p if pair is not None else 0,
                                    searchable(target)))
            new_pieces.append(new if pair is None else (new, pair.cond))
        if any(v.changed for v in verdicts if v.term == number):
            with sp.evaluate(False):
                arranged = (new_pieces[0] if pieces == [None]
                            else sp.Piecewise(*new_pieces))
            replaced[term] = _back(arranged, back)
    if not replaced:
        return out, verdicts
    with sp.evaluate(False):
        new_value = (replaced[value] if value in replaced else
                     value.xreplace({ComponentSum(t): ComponentSum(n)
                                     for t, n in replaced.items()}))
    return replace(out, value=new_value), verdicts


#: What SymPy raises where it cannot rebuild an expression (an unevaluated node whose
#: assumptions recurse without end): the output is then left as derived, and said so.
_SYMPY_ERRORS = (RecursionError, TypeError, ValueError, AttributeError, KeyError,
                 NotImplementedError)


def search_module(module: Module, store: Store | None = None) -> Searched:
    """``module`` with every kernel output searched (see the module doc), and the verdicts.

    Where no rewrite lowers an output's error, the output is the same object as given:
    the module is the same value, and prints the same bytes."""
    store = store if store is not None else _STORE[0]
    counter = [0]
    kernels, verdicts = [], []
    for kernel in module.kernels:
        outputs = []
        for out in kernel.outputs:
            try:
                new, found = (_verdicts_of(kernel, out, store, counter) if not out.internal
                              else (out, []))
            except _SYMPY_ERRORS as error:  # SymPy cannot rebuild it: left as derived
                none = Measure(0.0, 0.0, 0, 0)
                new, found = out, [Verdict(
                    kernel.name, out.name, 0, (), none, none, (), sp.Integer(0), 0, False,
                    f"not searched: SymPy could not rebuild it in the search's variables "
                    f"({type(error).__name__})")]
            outputs.append(new)
            verdicts += found
        kernels.append(kernel if all(a is b for a, b in zip(outputs, kernel.outputs,
                                                            strict=True))
                       else replace(kernel, outputs=tuple(outputs)))
    same = all(a is b for a, b in zip(kernels, module.kernels, strict=True))
    return Searched(module if same else replace(module, kernels=tuple(kernels)),
                    tuple(verdicts), counter[0])
