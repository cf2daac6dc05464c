r"""``derive test``: the tests that come free with material, run against its generated kernels.

A material's blocks, parameterizations and question kernels are generated into a
temporary package (as ``derive generate --material M --root TMP --package NAME`` does)
and run through a battery whose references come from the material's own equations,
evaluated in mpmath, never from a derivation or from generated code:

- a **block** (its module: the question kernels of that name, or the engine's coupling
  kernels rendered for it): ``forward`` against ``y1``, ``y2`` of the block's equations on a
  grid over ``x1`` (both signs, 1e-300 to 1e300; through the bin for a block on an interval)
  and over ``G`` (-800 to 800) and ``F``; ``inverse`` of ``forward``'s output back to the
  input; ``log_det_jacobian`` (and ``forward_and_log_det``) against ``sum log|dy1/dx1| +
  log|dy2/dx2|`` of the equations; finite wherever the truth is; float32 in, float32 out;
  batch dimensions broadcast; the dense ``jacobian`` against central differences of
  ``forward`` with non-element-wise ``F``, ``G``, and ``log_det_jacobian`` against
  ``slogdet`` of those differences;
- a **parameterization** whose module (:attr:`Parameterization.module`) the material
  generates (a question over parameterizations, :attr:`derive.api.Question.over`, such as
  the coursework's 2.3 to 2.4p, generates it for every loaded parameterization): ``kl``
  and ``kl_grad`` against ``mu**2/2 + (sigma**2 - 1 - log sigma**2)/2`` and its chain
  rule through ``sigma(scale)``, in mpmath, on a dense grid of the scale;
- **any other kernel**: it imports, is finite on random inputs of its arguments' kinds,
  float32 stays float32, a batch equals its rows one by one, and where a kernel declares
  its gradient (:attr:`derive.api.Kernel.gradient`) the gradient equals central differences.

Errors are in ulp of float64 (float32's for float32): ``|got - true| / (eps * scale)``,
where ``scale`` is the sum of the absolute values of the terms of the value (for an
inverse: ``|x1|`` plus those of ``y1`` divided by the slope ``|dy1/dx1|``, the inverse's
condition), so cancellation that no formula can avoid is not counted against the kernel.

Example:
    >>> import sympy as sp
    >>> from derive.api import F, G, x1, x2
    >>> ref = equation_reference(sp.exp(G) * x1 + F, x2)
    >>> float(ref.value("y1", {"x1": 2.0, "x2": 0.0, "s": 0.0, "F": 1.0, "G": 0.0}))
    3.0
    >>> ulps(1.0 + 2**-52, mpmath.mpf(1), 1.0)
    1.0
"""

from __future__ import annotations

import importlib
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import mpmath
import numpy as np
import sympy as sp

__all__ = ["EquationReference", "equation_reference", "digits_for", "ulps", "Row", "Report",
           "check_block", "check_parameterization", "check_pair", "kl_reference",
           "pair_reference", "check_kernels", "run", "BOUND", "FLOAT32_BOUND", "KL_BOUND",
           "PAIR_BOUND"]

#: The bound of every value the battery compares with mpmath, in ulp of its scale (see the
#: module doc): the coursework's and the worked example's blocks are within 8 (measured).
BOUND = 64.0
#: The same in float32's ulp, where float32 goes in.
FLOAT32_BOUND = 64.0
_EPS = float(np.finfo(np.float64).eps)
_EPS32 = float(np.finfo(np.float32).eps)
_HUGE = 1e300  # a truth beyond this may overflow float64: infinity is then accepted
_TINY = 1e-300  # a truth below this: 0 is accepted
_NORMAL = float(np.finfo(np.float64).tiny)  # the smallest subnormal, 2**-1074, over eps
_VOCABULARY = ("x1", "x2", "s", "F", "G")


# --- references from the material's own equations -----------------------------------------


def digits_for(*values: float) -> int:
    """mpmath digits enough for a formula as written at these arguments: an expression in
    ``exp(u)`` may cancel about ``|u| / ln 10`` digits, so ``60 + max |u|`` keeps 40 or more.

    Example:
        >>> digits_for(0.5, -800.0)
        860
    """
    return 60 + int(max((min(abs(float(v)), 5000.0) for v in values if math.isfinite(v)),
                        default=0))


def _plain(expr: Any) -> tuple[sp.Expr, dict[str, sp.Symbol]]:
    """``expr`` with each ``i``-th component (``x1[i]``, ``t[i]``) a plain real symbol of
    its base's name, and those symbols by name (scalar parameters included)."""
    expr = sp.sympify(expr)
    subs = {a: sp.Symbol(str(a.base.label), real=True) for a in expr.atoms(sp.Indexed)}
    expr = expr.xreplace(subs)
    names = {str(s): s for s in expr.free_symbols if str(s) not in ("i", "j", "n")}
    return expr, names


@dataclass(frozen=True)
class EquationReference:
    """A block's reference from its own two equations, in mpmath: no derivation, no
    generated code. ``value(what, point)`` evaluates ``y1``, ``y2``, a partial derivative
    (``y1_x1``, ``y1_G``, ...), the sum of the absolute values of the terms of ``y1`` or
    ``y2`` (``y1_terms``) or of ``log|dy1/dx1|`` (``ld1_terms``) at ``point``, a dict from
    the names of the vocabulary and of the block's own parameters to floats, in the current
    mpmath precision. ``uses``: the names the two equations depend on."""

    names: tuple[str, ...]
    expressions: dict[str, Callable[[], sp.Expr]]
    args: tuple[sp.Symbol, ...]
    uses: frozenset[str]
    _functions: dict[str, Callable[..., Any]] = field(default_factory=dict, repr=False)

    def function(self, what: str) -> Callable[..., Any]:
        """``what`` as an mpmath function of :attr:`names` (made on first use)."""
        if what not in self._functions:
            expr = self.expressions[what]()
            plain = expr.xreplace({s: self.args[self.names.index(str(s))]
                                   for s in expr.free_symbols})
            self._functions[what] = sp.lambdify(self.args, plain, "mpmath")
        return self._functions[what]

    def value(self, what: str, point: dict[str, float]) -> Any:
        args = [mpmath.mpf(float(point.get(name, 0.0))) for name in self.names]
        return self.function(what)(*args)

    def log_det(self, point: dict[str, float]) -> Any:
        """``log|dy1/dx1| + log|dy2/dx2|`` of one component (the Jacobian is triangular)."""
        return (mpmath.log(abs(self.value("y1_x1", point)))
                + mpmath.log(abs(self.value("y2_x2", point))))


def equation_reference(y1: Any, y2: Any, extra: Iterable[str] = ()) -> EquationReference:
    """The :class:`EquationReference` of the block ``y1_i = y1, y2_i = y2`` (``extra``:
    more names to accept, e.g. the ends of a domain's symbols)."""
    e1, n1 = _plain(y1)
    e2, n2 = _plain(y2)
    symbols = {name: sp.Symbol(name, real=True) for name in _VOCABULARY}
    symbols.update(n1)
    symbols.update(n2)
    for name in extra:
        symbols.setdefault(name, sp.Symbol(name, real=True))
    names = tuple(sorted(symbols))
    args = tuple(sp.Symbol(name, real=True) for name in names)
    # the plain symbols may carry assumptions (positive): differentiate by the very symbol
    by_name = {str(s): s for s in (*e1.free_symbols, *e2.free_symbols)}

    def d(e: sp.Expr, wrt: str) -> Callable[[], sp.Expr]:
        return lambda: sp.diff(e, by_name[wrt]) if wrt in by_name else sp.S.Zero

    def terms(e: sp.Expr) -> Callable[[], sp.Expr]:
        return lambda: sp.Add(*[sp.Abs(t) for t in sp.Add.make_args(e)])

    def log_terms(slope: Callable[[], sp.Expr]) -> Callable[[], sp.Expr]:
        # the terms of log|dy/dx| as its logs of products expand: the scale of the
        # log-determinant's error (exp(G)/sqrt(1 + x1**2) has G and log(1 + x1**2)/2)
        return lambda: terms(sp.expand_log(sp.log(sp.Abs(slope())), force=True))()

    exprs: dict[str, Callable[[], sp.Expr]] = {
        "y1": lambda: e1, "y2": lambda: e2, "y1_terms": terms(e1), "y2_terms": terms(e2)}
    for out, e in (("y1", e1), ("y2", e2)):
        for wrt in _VOCABULARY:
            exprs[f"{out}_{wrt}"] = d(e, wrt)
    exprs["ld1_terms"] = log_terms(exprs["y1_x1"])
    exprs["ld2_terms"] = log_terms(exprs["y2_x2"])
    return EquationReference(names, exprs, args, frozenset(by_name))


def _digits(ref: EquationReference, at: dict[str, float]) -> int:
    """:func:`digits_for` the values of F and G, where the equations use them, and more for
    a small input or a large one: a formula as written may add a small input's square to 1
    (``log(1 + x1**2)`` at ``x1 = 1e-149`` is 1e-298, 0 in 60 digits) or cancel a large
    one's (``sqrt(x1**2 + 1) - x1`` at ``x1 = 1e154`` is 5e-155, and its slope, -5e-309, was
    0 in 61 digits, which skipped the point as not invertible), so ``2 |log10 |v||`` more.

    Example:
        >>> import sympy as sp
        >>> from derive.api import F, G, x1, x2
        >>> _digits(equation_reference(sp.asinh(x1) + F, x2), {"x1": 1e-149, "F": 0.0})
        358
    """
    spread = max((2 * abs(math.log10(abs(v))) for name, v in at.items()
                  if name in ref.uses and 0 < abs(v) < math.inf), default=0.0)
    return digits_for(*(at[name] for name in ("F", "G") if name in ref.uses)) + int(spread)


def ulps(got: float, true: Any, scale: Any, eps: float = _EPS) -> float:
    """``|got - true|`` in units of ``eps * scale`` (0 where both are 0; inf for a NaN)."""
    if math.isnan(got):
        return math.inf
    if math.isinf(got):
        return 0.0 if abs(true) > _HUGE and mpmath.sign(true) == math.copysign(1, got) \
            else math.inf
    err = abs(mpmath.mpf(got) - true)
    if err == 0:
        return 0.0
    return float(err / (eps * max(abs(scale), mpmath.mpf(_TINY) / eps)))


# --- what a run finds ------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the summary: a subject (block, parameterization or module), a check, the
    number of points, the worst error in ulp (None: a pass/fail check), the bound, and the
    failures found (each one line: kernel, point, error)."""

    subject: str
    check: str
    points: int = 0
    worst: float | None = None
    bound: float | None = None
    failures: list[str] = field(default_factory=list)
    note: str = ""
    bound_text: str = ""  # the bound as the table shows it, where it varies by point

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def measure(self, error: float, message: Callable[[], str], bound: float) -> None:
        """Count one point: its error in ulp; a failure (``message()``) above ``bound``."""
        self.points += 1
        self.bound = bound
        if not math.isnan(error):
            self.worst = error if self.worst is None else max(self.worst, error)
        if not error <= bound:
            self.fail(message())

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def skipped(self) -> bool:
        """Whether nothing was checked (the note says why)."""
        return self.ok and self.points == 0


@dataclass
class Report:
    """Every row of a run, and the time it took."""

    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def table(self) -> str:
        """The summary: one line per subject and check."""
        head = ("subject", "check", "points", "worst (ulp)", "bound", "result")
        lines = [head]
        for r in self.rows:
            worst = "-" if r.worst is None else f"{r.worst:.3g}"
            bound = r.bound_text or ("-" if r.bound is None else f"{r.bound:g}")
            result = ("skipped" if r.skipped else "ok" if r.ok
                      else f"FAILED ({len(r.failures)})") + (f" {r.note}" if r.note else "")
            lines.append((r.subject, r.check, str(r.points), worst, bound, result))
        widths = [max(len(line[k]) for line in lines) for k in range(len(head) - 1)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False))
                         + "  " + line[-1] for line in lines) + "\n"

    def failures(self, limit: int = 20) -> str:
        """The first ``limit`` failures, one line each, and how many more there are."""
        found = [f"FAIL {r.subject}: {f}" for r in self.rows for f in r.failures]
        more = len(found) - limit
        return "\n".join(found[:limit] + ([f"... and {more} more"] if more > 0 else [])) + (
            "\n" if found else "")


def _fmt(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={float(v):.17g}" for k, v in point.items())


# --- blocks ----------------------------------------------------------------------------------

#: |x1| over float64's range (log1p(x1**2) overflows past 1.3e154), both signs and 0.
X1_EXTREMES = (0.0, 1e-300, 1e-200, 1e-8, 0.03, 0.5, 1.0, 2.5, 40.0, 800.0, 1e10, 1e154,
               2e154, 1e200, 1e300)
#: G through exp(G)'s overflow and underflow, and near 0.
G_VALUES = (-800.0, -40.0, -1.0, 0.0, 1e-9, 1.0, 40.0, 800.0)
F_VALUES = (0.0, 0.75)
#: Where x1 lies in a block's interval: both ends, and next to them.
FRACTIONS = (0.0, 1e-12, 1e-6, 0.1, 0.37, 0.5, 0.9, 1 - 1e-9, 1.0)
_N = 3  # components: each with its own parameter values


def _parameters(block: Any, rng: np.random.Generator) -> dict[str, Any]:
    """Values of the block's own parameters: a vector of ``_N`` or a scalar each, positive
    where declared; the upper end of an interval that is a parameter of its own is set
    above the lower end."""
    values: dict[str, Any] = {}
    for name, kind in block.parameters:
        size = () if kind.endswith("scalar") else (_N,)
        v = rng.uniform(0.3, 3.0, size) if kind.startswith("positive") else \
            rng.uniform(-1.5, 1.5, size)
        values[name] = np.float64(v) if size == () else v
    if block.domain is not None:
        lower, upper = (_plain(e)[0] for e in block.domain)
        if isinstance(upper, sp.Symbol) and str(upper) in values:
            at = dict(values, x2=0.0, s=0.0, F=0.0, G=0.0)
            low = [float(lower.subs({s: _component(at, str(s), k)
                                     for s in lower.free_symbols})) for k in range(_N)]
            values[str(upper)] = np.array(low) + rng.uniform(0.5, 4.0, _N)
    return values


def _component(values: dict[str, Any], name: str, k: int) -> float:
    v = values[name]
    return float(v) if np.ndim(v) == 0 else float(v[k])


class _Grid:
    """Points of one block: arrays ``x1, x2, F, G`` of shape ``(P, n)``, ``s`` and the
    parameters, and the mpmath truth at each entry."""

    def __init__(self, block: Any, ref: EquationReference, params: dict[str, Any],
                 rows: list[tuple[float, float, float]], dtype: type = np.float64) -> None:
        self.block, self.ref, self.params, self.dtype = block, ref, params, dtype
        self.param_names = tuple(name for name, _ in block.parameters)
        p = len(rows)
        self.s = np.array([0.1, -0.2, 0.3], dtype)
        self.x2 = np.tile(np.array([0.3, -0.7, 1.1], dtype), (p, 1))
        self.F = np.array([[r[1]] * _N for r in rows], dtype)
        self.G = np.array([[r[2]] * _N for r in rows], dtype)
        self.x1 = np.array([[r[0] * (-1) ** k for k in range(_N)] for r in rows], dtype)
        if block.domain is not None:
            self._into_domain(rows)
        self.own = tuple(np.asarray(params[name], dtype) for name in self.param_names)

    def _into_domain(self, rows: list[tuple[float, float, float]]) -> None:
        lower, upper = (_plain(e)[0] for e in self.block.domain)
        names = sorted({str(s) for e in (lower, upper) for s in e.free_symbols})
        lo_f = sp.lambdify([sp.Symbol(n_, real=True) for n_ in names],
                           lower.xreplace({s: sp.Symbol(str(s), real=True)
                                           for s in lower.free_symbols}), "mpmath")
        hi_f = sp.lambdify([sp.Symbol(n_, real=True) for n_ in names],
                           upper.xreplace({s: sp.Symbol(str(s), real=True)
                                           for s in upper.free_symbols}), "mpmath")
        for r in range(len(rows)):
            for k in range(_N):
                at = self.point(r, k)
                a = float(lo_f(*(mpmath.mpf(at[n_]) for n_ in names)))
                b = float(hi_f(*(mpmath.mpf(at[n_]) for n_ in names)))
                self.x1[r, k] = b if rows[r][0] == 1.0 else a + (b - a) * rows[r][0]

    def point(self, r: int, k: int) -> dict[str, float]:
        at = {"x1": float(self.x1[r, k]), "x2": float(self.x2[r, k]), "s": float(self.s[k]),
              "F": float(self.F[r, k]), "G": float(self.G[r, k])}
        for name in self.param_names:
            at[name] = _component(self.params, name, k)
        return at

    def functions(self) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
        """F and G as the kernels call them: F(x2), G(x2) give this grid's values."""
        f, g = self.F, self.G
        return (lambda v: np.broadcast_to(f, np.shape(v)).astype(v.dtype),
                lambda v: np.broadcast_to(g, np.shape(v)).astype(v.dtype))

    def args(self, first: Any, second: Any) -> tuple[Any, ...]:
        return (first, second, self.s, *self.own, *self.functions())


def _block_rows(block: Any, points: int) -> list[tuple[float, float, float]]:
    """(x1 or the fraction of the interval, F, G) of each row of the grid."""
    if block.domain is not None:  # more points: evenly through the interval as well
        xs = FRACTIONS if points <= len(FRACTIONS) else tuple(sorted(
            set(FRACTIONS) | set(np.linspace(0.0, 1.0, points - len(FRACTIONS) + 2))))
    else:
        # fewer points: spread over the list, both ends (0 and 1e300) kept
        xs = X1_EXTREMES if points >= len(X1_EXTREMES) else tuple(
            X1_EXTREMES[int(k)] for k in np.unique(np.round(
                np.linspace(0, len(X1_EXTREMES) - 1, points))))
        if points > len(X1_EXTREMES):  # more points: log-spaced between the extremes
            xs = tuple(sorted(set(xs) | set(np.geomspace(1e-300, 1e300,
                                                         points - len(X1_EXTREMES)))))
    # (the components alternate x1's sign: x1, -x1, x1); G and F where the block uses them
    used = {str(a.base.label) for e in (block.y1, block.y2)
            for a in sp.sympify(e).atoms(sp.Indexed)}
    return [(x, f, g) for x in xs for g in (G_VALUES if "G" in used else (0.0,))
            for f in (F_VALUES if "F" in used else (0.0,))]


def check_block(name: str, block: Any, module: Any, points: int = 15) -> list[Row]:
    """The battery of one block (see the module doc) on its generated ``module``."""
    ref = equation_reference(block.y1, block.y2, [p for p, _ in block.parameters])
    params = _parameters(block, np.random.default_rng(2026))
    rows = [Row(name, c) for c in ("forward y1, y2", "inverse (round trip)", "log_det_jacobian",
                                   "forward_and_log_det", "float32", "batch broadcast",
                                   "jacobian vs differences")]
    grid = _Grid(block, ref, params, _block_rows(block, points))
    _accuracy(name, grid, module, rows[0], rows[1], rows[2], rows[3])
    _float32(name, block, ref, params, module, rows[4])
    _broadcast(block, params, module, rows[5])
    if hasattr(module, "jacobian"):
        _differences(block, params, module, rows[6])
    else:
        rows[6].note = "(no jacobian kernel)"
    return rows


def _call(fn: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    """``fn(*args)`` as a tuple, floating-point warnings off and the kernels' value checks
    off (an infinite y1 is a right answer the round trip is then not asked about)."""
    with np.errstate(all="ignore"):
        out = fn(*args, check_finite=False)
    return out if isinstance(out, tuple) else (out,)


def _accuracy(name: str, grid: _Grid, module: Any, fwd: Row, inv: Row, ld: Row,
              both: Row) -> None:
    y1, y2 = _call(module.forward, *grid.args(grid.x1, grid.x2))
    (log_det,) = _call(module.log_det_jacobian, *grid.args(grid.x1, grid.x2))
    fy1, fy2, fld = _call(module.forward_and_log_det, *grid.args(grid.x1, grid.x2)) \
        if hasattr(module, "forward_and_log_det") else (y1, y2, log_det)
    b1, b2 = _call(module.inverse, *grid.args(y1, y2))
    for r in range(grid.x1.shape[0]):
        total, total_scale, finite = mpmath.mpf(0), mpmath.mpf(0), True
        for k in range(_N):
            at = grid.point(r, k)
            with mpmath.workdps(_digits(grid.ref, at)):
                t1, t2 = grid.ref.value("y1", at), grid.ref.value("y2", at)
                s1, s2 = grid.ref.value("y1_terms", at), grid.ref.value("y2_terms", at)
                d1, d2 = grid.ref.value("y1_x1", at), grid.ref.value("y2_x2", at)
                if d1 == 0 or d2 == 0:
                    finite = False  # the block is not invertible at this point
                    continue
                total += mpmath.log(abs(d1)) + mpmath.log(abs(d2))
                total_scale += grid.ref.value("ld1_terms", at) + grid.ref.value("ld2_terms", at)
                for out, got, true, scale, row in (
                        ("y1", y1, t1, s1, fwd), ("y2", y2, t2, s2, fwd),
                        ("y1", fy1, t1, s1, both), ("y2", fy2, t2, s2, both)):
                    err = ulps(float(got[r, k]), true, scale)
                    kernel = "forward" if row is fwd else "forward_and_log_det"
                    row.measure(err, lambda o=out, g=got[r, k], t=true, e=err, a=at, k_=kernel: (
                        f"{k_} {o} at {_fmt(a)}: {g!r}, true {mpmath.nstr(t, 17)} "
                        f"({e:.3g} ulp)"), BOUND)
                # the round trip, where y1 and y2 are finite: the inverse's condition
                if abs(t1) < _HUGE and abs(t2) < _HUGE:
                    for out, back, x, s_, d in (("x1", b1, at["x1"], s1, d1),
                                                ("x2", b2, at["x2"], s2, d2)):
                        # y's rounding, eps |y| or the smallest subnormal, over the slope;
                        # where that moves x by more than 1e-3 of its size, the forward map
                        # has lost x (no inverse can recover it) and the point is left out
                        width = _domain_width(grid, at)
                        spread = (s_ + _NORMAL) / abs(d)
                        if _EPS * spread > 1e-3 * (abs(mpmath.mpf(x)) + width + 1):
                            continue
                        scale = abs(mpmath.mpf(x)) + spread + width
                        err = ulps(float(back[r, k]), mpmath.mpf(x), scale)
                        inv.measure(err, lambda o=out, b=back, x_=x, e=err, a=at, r=r, k=k: (
                            f"inverse {o} of forward's output at {_fmt(a)}: {b[r, k]!r}, "
                            f"expected {x_!r} ({e:.3g} ulp of its condition)"), BOUND)
        if not finite:
            continue
        at = {"x1": tuple(grid.x1[r]), "F": grid.F[r, 0], "G": grid.G[r, 0]}
        where = f"x1={[float(v) for v in grid.x1[r]]}, F={grid.F[r, 0]!r}, G={grid.G[r, 0]!r}"
        err = ulps(float(log_det[r]), total, total_scale)
        ld.measure(err, lambda e=err, v=log_det[r], t=total, where=where: (
            f"log_det_jacobian at {where}: {v!r}, true {mpmath.nstr(t, 17)} ({e:.3g} ulp)"),
            BOUND)
        err = ulps(float(fld[r]), total, total_scale)
        both.measure(err, lambda e=err, v=fld[r], t=total, where=where: (
            f"forward_and_log_det log_det at {where}: {v!r}, true {mpmath.nstr(t, 17)} "
            f"({e:.3g} ulp)"), BOUND)


def _domain_width(grid: _Grid, at: dict[str, float]) -> Any:
    """The ends of the interval of x1 (a spline's bin), which the inverse adds to the fraction
    of the bin it solves for; 0 on the real line."""
    if grid.block.domain is None:
        return 0
    lower, upper = (_plain(e)[0] for e in grid.block.domain)
    vals = []
    for e in (lower, upper):
        vals.append(abs(float(e.xreplace({s: sp.Float(at.get(str(s), 0.0))
                                          for s in e.free_symbols}))))
    return mpmath.mpf(sum(vals))


def _float32(name: str, block: Any, ref: EquationReference, params: dict[str, Any],
             module: Any, row: Row) -> None:
    """float32 in, float32 out, within float32's bound where its range holds the truth."""
    rows = [(x, f, g) for x, f, g in _block_rows(block, 15)
            if abs(x) <= 1e10 and (x == 0 or abs(x) >= 1e-8) and abs(g) <= 40]
    grid = _Grid(block, ref, params, rows, np.float32)
    y1, y2 = _call(module.forward, *grid.args(grid.x1, grid.x2))
    (log_det,) = _call(module.log_det_jacobian, *grid.args(grid.x1, grid.x2))
    b1, _ = _call(module.inverse, *grid.args(y1, y2))
    for kernel, outs in (("forward", (y1, y2)), ("log_det_jacobian", (log_det,)),
                         ("inverse", (b1,))):
        for o in outs:
            if o.dtype != np.float32:
                row.fail(f"{kernel} returned {o.dtype} for float32 input")
    for r in range(grid.x1.shape[0]):
        for k in range(_N):
            at = grid.point(r, k)
            with mpmath.workdps(_digits(ref, at)):
                t1, s1 = ref.value("y1", at), ref.value("y1_terms", at)
            if not 1e-30 < abs(s1) < 1e30:
                continue
            err = ulps(float(y1[r, k]), t1, s1, _EPS32)
            row.measure(err, lambda e=err, a=at, r=r, k=k, t1=t1: (
                f"forward y1 in float32 at {_fmt(a)}: {y1[r, k]!r}, true {mpmath.nstr(t1, 9)} "
                f"({e:.3g} float32 ulp)"), FLOAT32_BOUND)


def _dense(n: int, seed: int = 7) -> tuple[Callable[..., Any], ...]:
    """Non-element-wise F and G (small dense tanh / sin layers) and their exact Jacobians."""
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(n, n)) / np.sqrt(n), rng.normal(size=n)
    v, c = rng.normal(size=(n, n)) / np.sqrt(n), rng.normal(size=n)

    def f(x: Any) -> Any:
        return np.tanh(x @ w.T.astype(x.dtype) + b.astype(x.dtype))

    def g(x: Any) -> Any:
        return 0.5 * np.sin(x @ v.T.astype(x.dtype) + c.astype(x.dtype))

    def jf(x: Any) -> Any:
        return (1 - np.tanh(x @ w.T + b) ** 2)[..., :, None] * w

    def jg(x: Any) -> Any:
        return (0.5 * np.cos(x @ v.T + c))[..., :, None] * v

    return f, g, jf, jg


def _inside(block: Any, params: dict[str, Any], x1: Any, fraction: float = 0.4) -> Any:
    """``x1`` moved into the block's interval (for a block on one), at ``fraction`` of it."""
    if block.domain is None:
        return x1
    lower, upper = (_plain(e)[0] for e in block.domain)
    out = np.array(x1, dtype=float)
    for k in range(out.shape[-1]):
        at = {name: _component(params, name, k) for name, _ in block.parameters}
        a, b = (float(e.xreplace({s: sp.Float(at.get(str(s), 0.0)) for s in e.free_symbols}))
                for e in (lower, upper))
        out[..., k] = a + (b - a) * fraction
    return out


def _broadcast(block: Any, params: dict[str, Any], module: Any, row: Row) -> None:
    """x1 of shape (2, 4, n) with x2 of (4, n): outputs of shape (2, 4, n) and (2, 4), equal
    to the calls one batch entry at a time (F and G element-wise here: a dense layer's
    matrix product may round a batch and a row differently, which is not the kernel's)."""
    f, g = _elementwise()
    own = tuple(np.asarray(params[name]) for name, _ in block.parameters)
    rng = np.random.default_rng(11)
    x1 = _inside(block, params, rng.normal(size=(2, 4, _N)))
    if block.domain is not None:
        x1 = _inside(block, params, x1, 0.3) + np.linspace(0, 0.2, 8).reshape(2, 4, 1) * (
            _inside(block, params, x1, 1.0) - _inside(block, params, x1, 0.0))
    x2, s = rng.normal(size=(4, _N)), np.array([0.1, -0.2, 0.3])
    for kernel, want in (("forward", ((2, 4, _N), (2, 4, _N))),
                         ("log_det_jacobian", ((2, 4),))):
        fn = getattr(module, kernel)
        got = _call(fn, x1, x2, s, *own, f, g)
        row.points += 1
        if tuple(o.shape for o in got) != want:
            row.fail(f"{kernel}: shapes {[o.shape for o in got]} for x1 (2, 4, n) and "
                     f"x2 (4, n), expected {list(want)}")
            continue
        for a in range(2):
            for b in range(4):
                one = _call(fn, x1[a, b], x2[b], s, *own, f, g)
                if not all(np.allclose(o[a, b], v, rtol=4 * _EPS, atol=0, equal_nan=True)
                           for o, v in zip(got, one, strict=True)):
                    row.fail(f"{kernel}: batch entry ({a}, {b}) differs from the same input "
                             "alone")


def _differences(block: Any, params: dict[str, Any], module: Any, row: Row) -> None:
    """The dense jacobian against central differences of forward (non-element-wise F, G),
    and log_det_jacobian against slogdet of those differences."""
    f, g, jf, jg = _dense(_N)
    own = tuple(np.asarray(params[name]) for name, _ in block.parameters)
    s = np.array([0.1, -0.2, 0.3])
    rng = np.random.default_rng(5)
    for trial in range(3):
        x1 = _inside(block, params, rng.normal(size=_N), 0.2 + 0.3 * trial)
        x2 = rng.normal(size=_N)
        x = np.concatenate([x1, x2])
        width = np.concatenate([np.maximum(np.abs(_inside(block, params, x1, 1.0)
                                                  - _inside(block, params, x1, 0.0)), 1.0)
                                if block.domain is not None else np.ones(_N), np.ones(_N)])
        cols = []
        for c in range(2 * _N):
            h = 1e-6 * width[c]
            e = np.zeros(2 * _N)
            e[c] = h
            plus = np.concatenate(_call(module.forward, (x + e)[:_N], (x + e)[_N:], s, *own,
                                        f, g))
            minus = np.concatenate(_call(module.forward, (x - e)[:_N], (x - e)[_N:], s,
                                         *own, f, g))
            cols.append((plus - minus) / (2 * h))
        fd = np.stack(cols, axis=-1)
        (jac,) = _call(module.jacobian, x1, x2, s, *own, f, g, jf, jg)
        row.points += 1
        scale = max(1.0, float(np.abs(fd).max()))
        if not np.allclose(jac, fd, rtol=1e-6, atol=1e-6 * scale):
            worst = float(np.abs(jac - fd).max())
            row.fail(f"jacobian at x1={x1.tolist()}, x2={x2.tolist()}: differs from central "
                     f"differences of forward by {worst:.3g}")
        (ld,) = _call(module.log_det_jacobian, x1, x2, s, *own, f, g)
        sign, logabs = np.linalg.slogdet(fd)
        if sign == 0 or not np.isclose(float(ld), logabs, rtol=1e-6, atol=1e-7):
            row.fail(f"log_det_jacobian at x1={x1.tolist()}, x2={x2.tolist()}: {float(ld)!r}, "
                     f"slogdet of central differences {logabs!r}")


# --- parameterizations -----------------------------------------------------------------------


@cache
def _sigma_mp(scale: sp.Symbol, sigma: sp.Expr) -> tuple[Callable[..., Any], ...]:
    return (sp.lambdify(scale, sigma, "mpmath"),
            sp.lambdify(scale, sp.diff(sigma, scale), "mpmath"))


def _kl_digits(sigma: sp.Expr, *values: float) -> int:
    """mpmath digits: 80, and where sigma holds an exponential, enough for exp(+-|v|) next
    to 1 (mpmath's exponent is unbounded: squares of 1e300 need no digits)."""
    if not sigma.has(sp.exp):
        return 80
    return 80 + int(max(min(abs(v), 5000.0) for v in values) / 2.2)


def kl_reference(scale: sp.Symbol, sigma: sp.Expr, rho: float, mu: float = 0.0,
                 eps: float = 0.0) -> tuple:
    """The Gaussian KL at the scale ``rho`` of a parameterization ``sigma(scale)``, in
    mpmath from the closed form ``mu**2/2 + (sigma**2 - 1 - log sigma**2)/2`` and its chain
    rule through ``sigma`` (no derivation): ``(kl, d kl/d rho, the reparameterization and
    sticking-the-landing estimates of d/d rho at noise eps, the bound terms of the three
    (the first-order effect of rounding sigma: |sigma**2 - 1| for the KL), sigma,
    |sigma'|)``.

    Example:
        >>> rho = sp.Symbol("rho", real=True)
        >>> [float(v) for v in kl_reference(rho, sp.exp(rho), 0.0, 1.0)[:2]]
        [0.5, 0.0]
    """
    sig, dsig = _sigma_mp(scale, sigma)
    with mpmath.workdps(_kl_digits(sigma, rho)):
        r, m, e = mpmath.mpf(rho), mpmath.mpf(mu), mpmath.mpf(eps)
        s, ds = sig(r), dsig(r)
        d = ds / s
        kl = m**2 / 2 + (s**2 - 1 - mpmath.log(s**2)) / 2
        grad = (s - 1 / s) * ds
        reparam = (m * e + s * e**2) * ds - d
        stl = (m * e) * ds + e**2 * (s - 1 / s) * ds
        scale_kl = abs(s**2 - 1) + 4 * _EPS * s**2  # sigma's rounding, to second order
        scale_grad = abs(s * ds) + abs(d)
        scale_est = (abs(m * e) + e**2 * s) * abs(ds) + (e**2 + 1) * abs(d)
        return kl, grad, reparam, stl, scale_kl, scale_grad, scale_est, s, abs(ds)


def pair_reference(scale: sp.Symbol, sigma: sp.Expr, rq: float, rp: float,
                   mu: float) -> tuple:
    """The KL of ``N(mu_q, sigma(rq)**2)`` from a learned prior ``N(mu_p, sigma(rp)**2)``
    with ``mu = mu_q - mu_p``, as ``(r**2 - 1 - log r**2 + m**2)/2`` (``r = sigma_q/sigma_p``,
    ``m = mu/sigma_p``: r**2 - 1 is exactly 0 at r = 1), in mpmath: ``(kl, d/d rq, d/d rp,
    d/d mu_q, the bound terms of kl, d/d rq, d/d rp, r, sigma_p, the largest chain factor)``.

    Example:
        >>> rho = sp.Symbol("rho", real=True)
        >>> float(pair_reference(rho, sp.exp(rho), 0.0, 0.0, 2.0)[0])
        2.0
    """
    sig, dsig = _sigma_mp(scale, sigma)
    with mpmath.workdps(_kl_digits(sigma, rq, rp)):
        a, b, d = mpmath.mpf(rq), mpmath.mpf(rp), mpmath.mpf(mu)
        sq, sp_, dq, dp = sig(a), sig(b), dsig(a), dsig(b)
        r = sq / sp_
        m = d / sp_
        r2 = r**2 - 1
        kl = (r2 - mpmath.log(r**2) + m**2) / 2
        gq = r2 * dq / sq
        gp = -(m**2 + r2) * dp / sp_
        return (kl, gq, gp, m / sp_, abs(r2) + 4 * _EPS * r**2, (r**2 + 1) * abs(dq / sq),
                (m**2 + r**2 + 1) * abs(dp / sp_), r, sp_,
                max(abs(dq), abs(dp), abs(gq / dq) if dq else 0, abs(gp / dp) if dp else 0))


def _scale_grid(positive: bool, points: int) -> np.ndarray:
    k = max(points, 8) * 8
    if positive:
        return np.geomspace(1e-300, 1e300, 2 * k + 1)
    return np.unique(np.concatenate([-np.geomspace(1e-8, 3000, k), np.geomspace(1e-8, 3000, k),
                                     np.linspace(-60, 60, 2 * k + 1), [0.0]]))


#: The KL's bound, as tests/test_kl_user_parameterizations.py states it: ulp of
#: ``|value| + |sigma**2 - 1|`` (relative away from the optimum, sigma's rounding near it);
#: the learned prior's, whose KL has more terms, and its gradients' ``(64 + |log r|)``.
KL_BOUND, PAIR_BOUND = 16.0, 64.0
#: The noise at which the two gradient estimators are compared (eps = 0 exactly, where
#: sigma or sigma' overflows, is 0 * inf: a documented edge).
NOISE = (-1.5, 0.7)


def check_parameterization(p: Any, module: Any, points: int = 15) -> list[Row]:
    """``kl``, ``kl_grad`` and the estimators ``kl_grad_reparam``, ``kl_grad_stl`` (those the
    module has) of parameterization ``p``'s generated ``module`` against mpmath over a dense
    grid of the scale (both signs unless it is positive)."""
    kl_row, grad_row = Row(p.name, "kl"), Row(p.name, "kl_grad")
    rows = [kl_row, grad_row]
    rho = _scale_grid(p.positive, points)
    mu = np.where(np.arange(rho.size) % 3 == 0, 0.75, 0.0)
    (kl,) = _call(module.kl, mu, rho)
    grads = _call(module.kl_grad, mu, rho) if hasattr(module, "kl_grad") else None
    for k, (r, m) in enumerate(zip(rho, mu, strict=True)):
        true, grad, _, _, a_kl, a_grad, *_ = kl_reference(p.scale, p.sigma, float(r),
                                                            float(m))
        if abs(true) < _HUGE:
            err = ulps(float(kl[k]), true, abs(true) + a_kl)
            kl_row.measure(err, lambda e=err, r_=r, m_=m, g=kl[k], t=true: (
                f"kl at mu={m_!r}, {p.name}={r_!r}: {g!r}, true {mpmath.nstr(t, 17)} "
                f"({e:.3g} ulp of |kl| + |sigma**2 - 1|)"), KL_BOUND)
        if grads is not None and abs(grad) < _HUGE and a_grad < _HUGE:
            got = grads[-1]
            err = ulps(float(got[k]), grad, abs(grad) + a_grad)
            grad_row.measure(err, lambda e=err, r_=r, m_=m, g=got[k], t=grad: (
                f"kl_grad d_{p.name} at mu={m_!r}, {p.name}={r_!r}: {g!r}, true "
                f"{mpmath.nstr(t, 17)} ({e:.3g} ulp)"), KL_BOUND)
            if not np.array_equal(grads[0][k], m):
                grad_row.fail(f"kl_grad d_mu at mu={m!r}, {p.name}={r!r}: {grads[0][k]!r}, "
                              f"true {m!r}")
    if grads is None:
        grad_row.note = "(no kl_grad kernel)"
    for name, slot in (("kl_grad_reparam", 2), ("kl_grad_stl", 3)):
        if not hasattr(module, name):
            continue
        row = Row(p.name, f"{name} at eps {', '.join(map(str, NOISE))}")
        rows.append(row)
        for noise in NOISE:
            (_, got) = _call(getattr(module, name), mu, rho, np.full_like(rho, noise))
            for k, (r, m) in enumerate(zip(rho, mu, strict=True)):
                ref = kl_reference(p.scale, p.sigma, float(r), float(m), noise)
                true, scale = ref[slot], ref[6]
                if abs(true) < _HUGE and scale < _HUGE:
                    err = ulps(float(got[k]), true, abs(true) + scale)
                    row.measure(err, lambda e=err, r_=r, m_=m, g=got[k], t=true, n_=noise,
                                name=name: (
                        f"{name} d_{p.name} at mu={m_!r}, {p.name}={r_!r}, eps={n_!r}: {g!r}, "
                        f"true {mpmath.nstr(t, 17)} ({e:.3g} ulp)"), KL_BOUND)
    rows.append(_float32_kl(p, module, ("kl", "kl_grad"), 1))
    rows.append(_broadcast_kl(p, module, ("kl", "kl_grad"), 1))
    return rows


def _broadcast_kl(p: Any, module: Any, kernels: tuple[str, ...], pairs: int) -> Row:
    """Element-wise arguments broadcast: a mean of shape (2, 1) with a scale of shape (3,)
    gives outputs of shape (2, 3), each entry that of its two numbers alone."""
    row = Row(p.name, "broadcast" if pairs == 1 else "pair broadcast")
    mu, scale = np.array([[0.0], [0.75]]), np.array([0.5, 2.0, 3.0])
    for name in kernels:
        if not hasattr(module, name):
            continue
        row.points += 1
        outs = _call(getattr(module, name), *([mu, scale] * pairs))
        if any(o.shape != (2, 3) for o in outs):
            row.fail(f"{name}: shapes {[o.shape for o in outs]} for a mean (2, 1) and a "
                     "scale (3,), expected (2, 3)")
            continue
        for a in range(2):
            for b in range(3):
                one = _call(getattr(module, name), *([mu[a, 0], scale[b]] * pairs))
                if not all(np.allclose(o[a, b], v, rtol=4 * _EPS, atol=0)
                           for o, v in zip(outs, one, strict=True)):
                    row.fail(f"{name}: entry ({a}, {b}) differs from its mean and scale alone")
    return row


def _float32_kl(p: Any, module: Any, kernels: tuple[str, ...], pairs: int) -> Row:
    """float32 in, float32 out: ``pairs`` (mean, scale) arguments of float32."""
    row = Row(p.name, "float32" if pairs == 1 else "pair float32", points=1)
    args = [np.zeros(3, np.float32), np.array([0.5, 2.0, 3.0], np.float32)] * pairs
    outs = sum((_call(getattr(module, k), *args) for k in kernels if hasattr(module, k)), ())
    if any(o.dtype != np.float32 for o in outs):
        row.fail(f"{', '.join(kernels)} returned {[str(o.dtype) for o in outs]} for float32 "
                 "input")
    return row


def _pair_values(positive: bool) -> list[float]:
    if positive:
        return [1e-300, 1e-150, 1e-30, 1e-5, 0.3, 0.999, 1.0, 1.001, 3.0, 1e5, 1e30, 1e150,
                1e300]
    return [-800.0, -745.5, -700.0, -40.0, -20.0 - 1e-12, -20.0, -19.9, -5.0, -1.0, 0.0, 0.3,
            0.5413248546129181, 0.55, 1.0, 3.0, 30.0, 700.0, 800.0, 1e5, 1e200]


def check_pair(p: Any, module: Any) -> list[Row]:
    """The learned prior's module (:attr:`Parameterization.pair_module`): ``kl`` and
    ``kl_grad`` against :func:`pair_reference` on a grid of both scales (``mu_p = 0``,
    ``mu_q`` 0.75 or 0), with the bounds and edges of
    ``tests/test_kl_user_parameterizations.py``: the gradients where ``r`` is within
    1e150 of 1 and ``sigma_p`` above 1e-300."""
    kl_row = Row(p.name, "pair kl")
    grad_row = Row(p.name, "pair kl_grad", bound_text="64+|log r|")
    values = _pair_values(p.positive)
    rq, rp = (a.ravel() for a in np.meshgrid(values, values))
    mu = np.where(np.arange(rq.size) % 2 == 0, 0.75, 0.0)
    zeros = np.zeros_like(mu)
    (kl,) = _call(module.kl, mu, rq, zeros, rp)
    d_mu, d_rq, _, d_rp = _call(module.kl_grad, mu, rq, zeros, rp)
    for k in range(rq.size):
        ref = pair_reference(p.scale, p.sigma, float(rq[k]), float(rp[k]), float(mu[k]))
        where = f"mu_q={mu[k]!r}, {p.name}_q={rq[k]!r}, mu_p=0.0, {p.name}_p={rp[k]!r}"
        if abs(ref[0]) < _HUGE and ref[4] < _HUGE:
            err = ulps(float(kl[k]), ref[0], abs(ref[0]) + ref[4])
            kl_row.measure(err, lambda e=err, g=kl[k], t=ref[0], w=where: (
                f"pair kl at {w}: {g!r}, true {mpmath.nstr(t, 17)} ({e:.3g} ulp)"), PAIR_BOUND)
        ratio, prior = ref[7], ref[8]
        if not (1e-150 < ratio < 1e150 and prior > 1e-300):
            continue
        bound = PAIR_BOUND + abs(float(mpmath.log(ratio)))
        for label, got, true, scale in (("d_mu_q", d_mu, ref[3], 0), ("d_q", d_rq, ref[1],
                                                                      ref[5]),
                                        ("d_p", d_rp, ref[2], ref[6])):
            if abs(true) < _HUGE and scale < _HUGE:
                err = ulps(float(got[k]), true, abs(true) + scale)
                grad_row.measure(err, lambda e=err, g=got[k], t=true, w=where, lab=label: (
                    f"pair kl_grad {lab} at {w}: {g!r}, true {mpmath.nstr(t, 17)} "
                    f"({e:.3g} ulp)"), bound)
    return [kl_row, grad_row, _float32_kl(p, module, ("kl",), 2),
            _broadcast_kl(p, module, ("kl", "kl_grad"), 2)]


# --- any other kernel -------------------------------------------------------------------------


def _elementwise() -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """Element-wise F and G, for comparing a batch with its entries: tanh and sin / 2."""
    return np.tanh, (lambda v: 0.5 * np.sin(v))


def _inputs(kernel: Any, rng: np.random.Generator, batch: tuple[int, ...], dtype: type,
            n: int = _N) -> list[Any]:
    """Random arguments of ``kernel``'s kinds (positive where it says so); a callable of
    kind ``function`` is element-wise (tanh), one of kind ``jacobian`` its Jacobian."""
    f = _elementwise()[0]

    def jf(v: Any) -> Any:
        return (1 - np.tanh(v) ** 2)[..., :, None] * np.eye(n, dtype=v.dtype)

    out: list[Any] = []
    for a in kernel.args:
        kind = a.kind
        if kind == "function":
            out.append(f)
        elif kind == "jacobian":
            out.append(jf)
        else:
            shape = {"batch": batch + (n,), "param": (n,), "positive_param": (n,),
                     "scalar": (), "positive_scalar": (), "elementwise": batch,
                     "positive": batch}[kind]
            v = rng.uniform(0.3, 3.0, shape) if a.is_positive else rng.normal(size=shape)
            out.append(np.asarray(v, dtype))
    return out


def check_kernels(spec: Any, module: Any, points: int = 15) -> list[Row]:
    """The generic checks of a kernel module that is neither a block's nor a
    parameterization's: each kernel finite on random inputs of its arguments' kinds, float32
    kept, a batch equal to its entries one by one, a declared gradient against central
    differences."""
    rows = []
    rng = np.random.default_rng(3)
    for kernel in spec.kernels:
        fn = getattr(module, kernel.name, None)
        row = Row(spec.name, kernel.name)
        rows.append(row)
        if fn is None:
            row.fail(f"{kernel.name}: not in the generated module")
            continue
        for _ in range(max(1, points // 3)):
            args = _inputs(kernel, rng, (4,), np.float64)
            outs = _call(fn, *args)
            row.points += 1
            bad = [o for o in outs if not np.all(np.isfinite(o))]
            if bad:
                given = ", ".join(f"{a.name}={np.asarray(v).tolist()}"
                                  for a, v in zip(kernel.args, args, strict=True) if a.is_array)
                row.fail(f"{kernel.name}: not finite on random inputs ({given})")
                break
            for b in range(4):
                one = [v[b] if a.kind in ("batch", "elementwise", "positive") else v
                       for a, v in zip(kernel.args, args, strict=True)]
                alone = _call(fn, *one)
                if not all(np.allclose(o[b], v, rtol=4 * _EPS, atol=1e-300)
                           for o, v in zip(outs, alone, strict=True)):
                    row.fail(f"{kernel.name}: batch entry {b} differs from the same input alone")
                    break
        outs = _call(fn, *_inputs(kernel, rng, (4,), np.float32))
        if any(np.asarray(o).dtype != np.float32 for o in outs):
            row.fail(f"{kernel.name}: returned {[str(np.asarray(o).dtype) for o in outs]} for "
                     "float32 input")
        if kernel.gradient:
            _gradient(kernel, fn, getattr(module, kernel.gradient), rng, row)
    return rows


def _gradient(kernel: Any, fn: Any, grad: Any, rng: np.random.Generator, row: Row) -> None:
    """A declared gradient against central differences, argument by argument (entry-wise
    arguments: each entry's own difference)."""
    args = _inputs(kernel, rng, (4,), np.float64)
    want = _call(grad, *args)
    arrays = [k for k, a in enumerate(kernel.args) if a.is_array]
    for slot, k in enumerate(arrays):
        if kernel.args[k].kind not in ("elementwise", "positive"):
            continue
        h = 1e-6 * np.maximum(np.abs(args[k]), 1.0)
        plus, minus = list(args), list(args)
        plus[k], minus[k] = args[k] + h, args[k] - h
        fd = (_call(fn, *plus)[0] - _call(fn, *minus)[0]) / (2 * h)
        if not np.allclose(want[slot], fd, rtol=1e-5, atol=1e-7):
            row.fail(f"{kernel.gradient}: d/d{kernel.args[k].name} differs from central "
                     f"differences of {kernel.name}: {np.asarray(want[slot]).tolist()} vs "
                     f"{fd.tolist()}")


#: The kernels a block's module needs for the block battery (the engine's coupling kernels).
_COUPLING = ("forward", "inverse", "log_det_jacobian")


def _coupling_modules(material: Any, files: dict[str, str], package: str) -> dict[str, str]:
    """Each block's module: the written module of its name where it defines the coupling
    kernels, else the engine's, rendered as ``<name>_coupling`` (or ``<name>`` where no
    module of that name is written)."""
    out = {}
    for name in material.blocks:
        text = files.get(f"{package}/{name}.py")
        if text is not None and not all(f"\ndef {k}(" in text for k in _COUPLING):
            out[name] = f"{name}_coupling"  # a question's own module of the block's name
        else:
            out[name] = name
    return out


def _specs(material: Any, written: set[str], blocks: dict[str, str],
           questions: Iterable[str] | None = None) -> dict[str, Any]:
    """The kernel specs (:class:`derive.api.Module`) of the written modules that are
    neither a block's nor a parameterization's, from the questions that make them: first
    the variants that are neither a block nor a parameterization, then the others while a
    module is still unaccounted for (each ``kernels(variant)`` derives its question).
    ``questions``: only the modules of these question ids (every variant of each)."""
    known = set(blocks.values()) | {m for p in material.parameterizations.values()
                                    for m in (p.module, p.pair_module)}
    needed = written - known
    chosen = None if questions is None else set(questions)
    pairs = [(q, v) for q in material.questions.values() if q.kernels
             and (chosen is None or q.qid in chosen) for v in q.variants]
    pairs.sort(key=lambda qv: qv[1] in material.blocks or qv[1] in material.parameterizations)
    specs: dict[str, Any] = {}
    for q, v in pairs:
        if chosen is None and needed <= specs.keys():
            break
        try:
            m = q.kernels(v)
        except Exception:  # noqa: BLE001, S112 - generate made it: the module is listed
            continue
        if m.name in needed:
            specs[m.name] = m
    return specs


def _block_module(block: Any, store: Any, command: str) -> str:
    """The source of the engine's coupling kernels of ``block`` (derivations 1.1-1.3n, as
    the accuracy search leaves them), through the derivation cache when there is one: keyed
    by the engine's and the material's sources and by the block's value."""
    from codegen.backends import render_module

    from .cache import fingerprint, source_digest
    from .coupling import coupling_kernels
    from .kernel_search import search_module

    def render() -> dict[str, str]:
        m = search_module(coupling_kernels(block, package=None), store).module
        return {"text": render_module(m, command)}

    if store is None:
        return render()["text"]
    key = [source_digest(), command, fingerprint(block)]
    return store.get_or_compute("test-block", key, render)["text"]


def _guarded(subject: str, battery: Callable[[], list[Row]]) -> list[Row]:
    """The rows of ``battery()``; an exception it raises (a kernel that refuses valid
    input, a module that does not import) is one failed row saying what was raised."""
    try:
        return battery()
    except Exception as err:  # noqa: BLE001 - any error of the material's kernels is a finding
        row = Row(subject, "runs")
        row.fail(f"raised {type(err).__name__}: {' '.join(str(err).split())}")
        return [row]


# --- a run: generate into a temporary package, import, check ------------------------------------

#: The temporary package's name.
PACKAGE = "derive_test_kernels"


def _import(root: Path, name: str) -> Any:
    """``PACKAGE.name`` from the temporary package under ``root`` (a seam for the tests)."""
    return importlib.import_module(f"{PACKAGE}.{name}")


def _untested_note(material: Any, p: Any) -> str:
    """Why parameterization ``p`` has no module to test: no question generates it; where
    no question of ``material`` ranges over parameterizations, what would."""
    if any(q.over == "parameterizations" and q.kernels for q in material.questions.values()):
        return f"(not tested: no question generates its module {p.module})"
    from .loader import DEFAULT

    return (f"(not tested: no question generates its module {p.module}; load a material "
            f"whose questions range over parameterizations beside it, e.g. --material "
            f"{DEFAULT[0]})")


def run(points: int = 15, jobs: int = 1, progress: Callable[[str], None] | None = None,
        command: str = "python -m derive test", only: Iterable[str] = ()) -> Report:
    """Generate the material in use (:func:`derive.loader.current`) into a temporary
    package and run the battery over every block, parameterization and kernel module.

    ``only``: names of materials in use (as ``--material`` gives them); then only what
    they bring is checked: their blocks, their parameterizations (with the modules any
    loaded question generates for them) and their questions' kernel modules."""
    from .cache import open_store
    from .files import generate, write_files
    from .loader import current, load_one

    say = progress or (lambda line: None)
    start = time.perf_counter()
    material = current()
    only = tuple(only)
    mine = [load_one(name) for name in only]  # (each imported already: what current holds)
    blocks = {k: b for k, b in material.blocks.items()
              if not only or any(k in m.blocks for m in mine)}
    params = [p for k, p in material.parameterizations.items()
              if not only or any(k in m.parameterizations for m in mine)]
    qids = None if not only else [q for m in mine for q in m.questions]
    report = Report()
    store = open_store()
    with tempfile.TemporaryDirectory(prefix="derive-test-") as folder:
        root = Path(folder)
        say(f"generating {material.name} into a temporary package")
        files = generate(store, command, PACKAGE, jobs=jobs)[0]
        write_files(root, files, command=command, package=PACKAGE)
        written = {Path(f).stem for f in files if f.endswith(".py")} - {"__init__"}
        modules = _coupling_modules(material, files, PACKAGE)
        specs = _specs(material, written, modules, qids)
        for name, block in blocks.items():
            if modules[name] not in written:  # no question writes them: the engine's
                say(f"rendering the coupling kernels of block {name}")
                (root / PACKAGE / f"{modules[name]}.py").write_text(
                    _block_module(block, store, command))
        sys.path.insert(0, str(root))
        try:
            for name, block in blocks.items():
                say(f"block {name}: forward, inverse, log-det over x1, G and F; float32; "
                    "batches; jacobian")
                report.rows += _guarded(name, lambda b=block, n_=name: check_block(
                    n_, b, _import(root, modules[n_]), points))
            for p in params:
                if p.module in written:
                    say(f"parameterization {p.name}: kl, kl_grad against mpmath")
                    report.rows += _guarded(p.name, lambda p_=p: check_parameterization(
                        p_, _import(root, p_.module), points))
                else:
                    report.rows.append(Row(p.name, "kl", note=_untested_note(material, p)))
                if p.pair_module in written:
                    say(f"parameterization {p.name}: the learned prior's kl, kl_grad")
                    report.rows += _guarded(p.name, lambda p_=p: check_pair(
                        p_, _import(root, p_.pair_module)))
            for name, spec in specs.items():
                say(f"module {name}: finite, float32, batches"
                    + (", declared gradients" if any(k.gradient for k in spec.kernels)
                       else ""))
                report.rows += _guarded(name, lambda s_=spec, n_=name: check_kernels(
                    s_, _import(root, n_), points))
            known = set(modules.values()) | set(specs) | {
                m for p in material.parameterizations.values()
                for m in (p.module, p.pair_module)}
            # (with --only, generate wrote what the material brings alone: these are its own)
            for name in sorted(written - known):
                report.rows.append(Row(name, "module", note="(not tested: no question's "
                                                            "kernels give its spec)"))
        finally:
            sys.path.remove(str(root))
            for mod in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
                del sys.modules[mod]
    report.seconds = time.perf_counter() - start
    return report
