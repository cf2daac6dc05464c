r"""Deciding an answer against a derived result by two independent methods.

* numerically, at random points and 50 significant digits: the opaque functions ``F`` and
  ``G`` (and their Jacobians) become fixed random smooth functions that are *not*
  element-wise, sums are expanded at ``n = 1, 2, 3``, and each symbol is drawn from its
  domain (``sigma > 0``);
* symbolically, ``simplify(a - b) == 0``, within a time budget.

They must agree: disagreement, a timeout or a value that is not a number gives
``"undecided"``, never a guess. Question 1's index notation is made explicit the way
the engine checks its own steps (:func:`derive.vocabulary.instantiate`); an answer's
sums run over ``i = 1..n``, so its components are taken cyclically (``s_n`` is ``s_0``).

Example:
    >>> import sympy as sp
    >>> mu, sigma = sp.Symbol("mu", real=True), sp.Symbol("sigma", positive=True)
    >>> decide(sp.log(sigma**2) / 2 + mu, sp.log(sigma) + mu).status
    'equal'
    >>> decide(sp.log(sigma) / 2 + mu, sp.log(sigma) + mu).status
    'different'
"""

from __future__ import annotations

import random
import signal
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sympy as sp
from sympy.core.function import AppliedUndef

from ..vocabulary import i, index_values, instantiate, j, n
from .matrices import is_matrix_expr, matrix_entries

__all__ = ["Decision", "Timeout", "budget", "decide", "instances", "numeric_verdict",
           "explicit", "DIGITS", "POINTS"]

DIGITS = 50
POINTS = 4
SIZES = (1, 2, 3)
_TOLERANCE = sp.Float(10, DIGITS) ** -30
SIMPLIFY_SECONDS = 4.0


class Timeout(Exception):
    """A computation ran past its time budget."""


_DEADLINES: list[float] = []


@contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Raise :class:`Timeout` inside the block after ``seconds`` of this process's CPU time
    (main thread only): a busy machine slows a decision down, but does not change it.

    Budgets nest: an inner one never outlasts the one around it.
    """

    def expire(signum: int, frame: object) -> None:
        raise Timeout(f"more than {seconds:g} s")

    now = time.process_time()
    deadline = min([now + seconds, *_DEADLINES])
    if deadline <= now:
        raise Timeout("no time left")
    try:
        previous = signal.signal(signal.SIGPROF, expire)
    except ValueError:  # not the main thread: no budget can be set here
        yield
        return
    _DEADLINES.append(deadline)
    signal.setitimer(signal.ITIMER_PROF, deadline - now)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        _DEADLINES.pop()
        signal.signal(signal.SIGPROF, previous)
        if _DEADLINES:
            signal.setitimer(signal.ITIMER_PROF, max(_DEADLINES[-1] - time.process_time(), 1e-3))


@dataclass(frozen=True)
class Decision:
    """``status`` is ``"equal"``, ``"different"`` or ``"undecided"``; ``detail`` says why."""

    status: str
    detail: str = ""


def _cyclic(expr: sp.Basic, size: int) -> sp.Basic:
    """``n`` made concrete and every component index taken modulo ``size``."""
    expr = expr.xreplace({n: sp.Integer(size)})
    return expr.replace(
        lambda e: isinstance(e, sp.Indexed),
        lambda e: sp.Indexed(e.base, *[sp.Mod(k, size) for k in e.indices]))


def explicit(expr: sp.Basic, size: int, a: int, b: int, answer: bool,
             matrix: bool = False) -> sp.Basic:
    """The explicit meaning of ``expr`` at size ``size`` and indices ``i = a, j = b``.

    ``answer`` marks a student's expression (cyclic components, matrix algebra read
    entry-wise); a derived reference is instantiated as the engine does.
    """
    if not answer:
        return instantiate(expr, size, index_values(a, b))
    if matrix or is_matrix_expr(expr):
        return matrix_entries(_cyclic(expr, size), size)[a, b]
    return instantiate(_cyclic(expr, size), size, index_values(a, b))


def instances(answer: sp.Basic, reference: sp.Basic, index_form: bool,
              reference_is_answer: bool = False,
              matrix: bool = False) -> list[tuple[sp.Basic, sp.Basic]]:
    """Pairs of explicit instances of the two sides (one pair where nothing is indexed)."""
    if not index_form:
        return [(answer, reference)]
    sides = (answer, reference)
    matrix = matrix or any(is_matrix_expr(s) for s in sides)
    uses_i = matrix or any(s.has(i) for s in sides)
    uses_j = matrix or any(s.has(j) for s in sides)
    pairs = []
    for size in SIZES:
        for a in range(size) if uses_i else [0]:
            for b in range(size) if uses_j else [0]:
                pairs.append((explicit(answer, size, a, b, True, matrix),
                              explicit(reference, size, a, b, reference_is_answer, matrix)))
    return pairs


def _concrete(app: AppliedUndef) -> sp.Expr:
    """A fixed smooth function of all its arguments, chosen by the function's name."""
    frng = random.Random(zlib.crc32(str(app.func).encode()))
    coeffs = [sp.Rational(frng.randint(-900, 900), 1000) for _ in app.args]
    lin = sum((c * a for c, a in zip(coeffs, app.args, strict=True)), sp.Integer(0))
    shift = sp.Rational(frng.randint(-900, 900), 1000)
    return sp.sin(lin + shift) + sp.Rational(frng.randint(-900, 900), 1000)


def _point(symbols: list[sp.Symbol], rng: random.Random) -> dict[sp.Symbol, sp.Expr]:
    values = {}
    for sym in symbols:
        if sym.is_positive or sym.is_nonnegative:
            values[sym] = sp.Rational(rng.randint(300, 2000), 1000)
        else:
            values[sym] = sp.Rational(rng.randint(-1500, 1500), 1000)
    return values


def _value(expr: sp.Basic, values: dict[sp.Symbol, sp.Expr]) -> sp.Expr | None:
    e = expr.replace(lambda x: isinstance(x, AppliedUndef), _concrete)
    e = e.doit() if e.has(sp.Derivative, sp.Sum, sp.Product) else e
    v = e.xreplace(values).evalf(DIGITS)
    if not v.is_number or v.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
        return None
    return v


def numeric_verdict(pairs: list[tuple[sp.Basic, sp.Basic]], seed: int = 0) -> str:
    """``"equal"``, ``"different"`` or ``"undecided"`` from random points."""
    rng = random.Random(seed)
    for a, b in pairs:
        symbols = sorted((a.free_symbols | b.free_symbols), key=sp.default_sort_key)
        for _ in range(POINTS):
            values = _point(symbols, rng)
            va, vb = _value(a, values), _value(b, values)
            if va is None or vb is None:
                return "undecided"
            if abs(va - vb) > _TOLERANCE * (1 + abs(vb)):
                return "different"
    return "equal"


def _zero(diff: sp.Basic) -> bool:
    if diff == 0 or sp.expand(diff) == 0:
        return True
    simplified = sp.simplify(diff)
    if simplified == 0:
        return True
    return sp.simplify(sp.expand_log(simplified.rewrite(sp.exp), force=False)) == 0


def symbolic_zero(pairs: list[tuple[sp.Basic, sp.Basic]]) -> bool:
    """``simplify(a - b) == 0`` for every pair."""
    return all(_zero(a - b) for a, b in pairs)


def decide(answer: sp.Basic, reference: sp.Basic, index_form: bool = False,
           seconds: float = SIMPLIFY_SECONDS, reference_is_answer: bool = False,
           matrix: bool = False) -> Decision:
    """Decide ``answer == reference`` numerically *and* symbolically."""
    try:
        with budget(seconds):
            pairs = instances(answer, reference, index_form, reference_is_answer, matrix)
            numeric = numeric_verdict(pairs)
    except Timeout:
        return Decision("undecided", "the numeric comparison took too long")
    except (ValueError, TypeError, IndexError, ZeroDivisionError, RecursionError) as err:
        return Decision("undecided", f"cannot evaluate it ({type(err).__name__})")
    if numeric == "undecided":
        return Decision("undecided", "it does not evaluate to a number at every point")
    try:
        with budget(seconds):
            symbolic = (not index_form and _zero(answer - reference)) or symbolic_zero(pairs)
    except Timeout:
        return Decision("undecided", f"simplify did not finish within {seconds:g} s")
    except (ValueError, TypeError, NotImplementedError, RecursionError):
        symbolic = False
    if numeric == "equal" and symbolic:
        return Decision("equal", "equal at random points and by simplify")
    if numeric == "different" and not symbolic:
        return Decision("different", "different at random points; simplify agrees")
    return Decision("undecided", "the numeric and the symbolic check disagree")


def same(answer: sp.Basic, reference: sp.Basic, index_form: bool,
         matrix: bool = False) -> bool:
    """A quick numeric-only test, used to *name* a mistake already decided."""
    try:
        with budget(2.0):
            return numeric_verdict(
                instances(answer, reference, index_form, matrix=matrix), seed=7) == "equal"
    except (Timeout, ValueError, TypeError, IndexError, ZeroDivisionError, RecursionError):
        return False
