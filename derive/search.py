r"""An arrangement found by measuring: rewrites kept where they lower the error in ulp.

:func:`arrange_search` takes an expression and a box of intervals (one per variable),
samples the box as floats are spread (log-uniform magnitudes of both signs, the
endpoints, zero, then dense ulp neighbourhoods of the worst points), computes each
sample's true value with mpmath (at a precision raised until two evaluations agree), and
measures the error in ulp of the expression evaluated in float64 as the kernels evaluate
it. It then tries rewrites -- the rules of :mod:`derive.arrangement`, the rules of this
module (conjugates, differences of sines, cosines, tangents, arctangents and logs,
``log|sinh u|``, ``log1p(u**2)`` through ``log|u|``, ``log(exp a - exp b)``, differences
of softplus, ``log(1 - exp(-u))``), regimes split at thresholds found from the samples,
and Taylor series where the error concentrates near a point -- and keeps each one that
lowers the maximum error (or, at the same maximum, the mean) and raises neither the
maximum nor the mean on a held-out sample (another seed). Every kept rewrite is a
:class:`~derive.derivation.Step`, checked (:func:`~derive.derivation.check_step`)
before it is kept: a rewrite that is not an identity is refused. A series piece is
checked as a series (``f = P + O(u**n)``) and its remainder measured in its piece.

Example:
    >>> import sympy as sp
    >>> x = sp.Symbol("x", real=True)
    >>> found = arrange_search(sp.exp(x) - 1, {x: (-1.0, 1.0)}, samples=300)
    >>> found.expr
    expm1(x)
    >>> found.before.max_ulp > 1e6, found.after.max_ulp <= 1
    (True, True)
"""

from __future__ import annotations

import functools
import io
import math
import re
import tokenize
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import mpmath
import numpy as np
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p
from sympy.printing.numpy import NumPyPrinter

from .arrangement import KERNEL_REWRITES, LOG_REWRITES, Rewrite
from .arrangement import arrange as _arrange_all
from .derivation import Derivation, Result, Step, StepCheckError, check_step
from .nodes import cbrt, plain, sigmoid, softplus
from .nodes import identity as _identity
from .pieces import safe_point
from .rules_extra import EXTRA_RULES, Rounded
from .rules_extra import trig_of_exact_sum as _trig_of_exact_sum
from .rules_extra import two_terms as _two_terms
from .spec import Arg, Kernel, Module, Output

__all__ = ["Measure", "Found", "arrange", "arrange_search", "report", "parse_expression",
           "parse_over", "ulp_error", "reference", "float_function", "sample_box", "FUNCTIONS"]

#: The functions an expression given to ``derive arrange`` may call, by name.
FUNCTIONS: dict[str, Callable[..., sp.Basic]] = {
    "exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt, "cbrt": cbrt, "sin": sp.sin,
    "cos": sp.cos, "tan": sp.tan, "atan": sp.atan, "asin": sp.asin, "acos": sp.acos,
    "sinh": sp.sinh, "cosh": sp.cosh, "tanh": sp.tanh, "asinh": sp.asinh, "acosh": sp.acosh,
    "atanh": sp.atanh, "abs": sp.Abs, "Abs": sp.Abs, "expm1": expm1, "log1p": log1p,
    "softplus": softplus, "sigmoid": sigmoid,
}
_CONSTANTS: dict[str, sp.Basic] = {"pi": sp.pi, "E": sp.E}
_OPERATORS = {"+", "-", "*", "/", "**", "(", ")", ","}
#: The longest expression text accepted, and the most operations in it.
MAX_CHARS = 400
MAX_OPS = 120
_MAX_EXPONENT = 64


# --- reading the input -------------------------------------------------------------------


def parse_expression(text: str, names: Sequence[str]) -> sp.Expr:
    """``text`` as a SymPy expression in the variables ``names`` (each real).

    Only numbers, the variables, :data:`FUNCTIONS`, ``pi``, ``E`` and the operators
    ``+ - * / **`` and parentheses are accepted; nothing else is evaluated. Raises
    ValueError naming what was expected and what was given.

    Example:
        >>> parse_expression("sqrt(x + 1) - sqrt(x)", ["x"])
        -sqrt(x) + sqrt(x + 1)
        >>> parse_expression("x.__class__", ["x"])
        Traceback (most recent call last):
        ...
        ValueError: EXPR: expected numbers, variables (x), functions, + - * / ** ( ); got '.'
    """
    from sympy.parsing.sympy_parser import auto_number, parse_expr

    allowed = ", ".join(names)
    if not isinstance(text, str) or not text.strip():
        raise ValueError("EXPR: expected an expression such as 'exp(x) - 1', got nothing")
    if len(text) > MAX_CHARS:
        raise ValueError(f"EXPR: expected at most {MAX_CHARS} characters, got {len(text)}")
    symbols = {name: sp.Symbol(name, real=True) for name in names}
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError) as err:
        raise ValueError(f"EXPR: expected a complete expression, got {text!r} ({err})") from None
    for tok in tokens:
        if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            continue
        ok = ((tok.type == tokenize.NUMBER and re.fullmatch(r"[0-9.eE+-]+", tok.string))
              or (tok.type == tokenize.NAME
                  and (tok.string in symbols or tok.string in FUNCTIONS
                       or tok.string in _CONSTANTS))
              or (tok.type == tokenize.OP and tok.string in _OPERATORS))
        if not ok:
            what = ("an unknown name" if tok.type == tokenize.NAME else "")
            raise ValueError(f"EXPR: expected numbers, variables ({allowed}), functions, "
                             f"+ - * / ** ( ); got {what + ' ' if what else ''}"
                             f"{tok.string!r}")
    local = {**symbols, **FUNCTIONS, **_CONSTANTS}
    glob = {"Integer": sp.Integer, "Float": sp.Float, "Rational": sp.Rational, "Add": sp.Add,
            "Mul": sp.Mul, "Pow": sp.Pow}
    try:
        shape = parse_expr(text, local_dict=dict(local), global_dict=dict(glob),
                           transformations=(auto_number,), evaluate=False)
        for p in sp.preorder_traversal(shape):
            if p.is_Pow and p.exp.is_number and _too_large(p.exp):
                raise ValueError(f"EXPR: expected exponents of at most {_MAX_EXPONENT}, got "
                                 f"{p.exp}")
        if sp.count_ops(shape) > MAX_OPS:
            raise ValueError(f"EXPR: expected at most {MAX_OPS} operations, got more")
        expr = parse_expr(text, local_dict=dict(local), global_dict=dict(glob),
                          transformations=(auto_number,))
    except ValueError:
        raise
    except (SyntaxError, TypeError, AttributeError, NameError, sp.SympifyError) as err:
        raise ValueError(f"EXPR: expected an expression in {allowed}, got {text!r} "
                         f"({type(err).__name__})") from None
    if not isinstance(expr, sp.Expr) or expr.has(sp.I) or expr.has(sp.zoo, sp.nan):
        raise ValueError(f"EXPR: expected a real expression, got {text!r}")
    return expr


def _too_large(exponent: sp.Basic) -> bool:
    try:
        return not abs(float(exponent)) <= _MAX_EXPONENT
    except (TypeError, OverflowError):
        return True


_OVER = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s+in\s+\[\s*([^,\]]+?)\s*,\s*([^,\]]+?)\s*\]\s*$")


def parse_over(text: str) -> tuple[str, float, float]:
    """``'x in [a, b]'`` as ``(name, a, b)``, ``a < b`` finite floats.

    Example:
        >>> parse_over("x in [-1, 1e3]")
        ('x', -1.0, 1000.0)
    """
    m = _OVER.match(text or "")
    if not m:
        raise ValueError(f"--over: expected 'NAME in [LOW, HIGH]', got {text!r}")
    name, lo_text, hi_text = m.groups()
    if name in FUNCTIONS or name in _CONSTANTS:
        raise ValueError(f"--over: expected a variable name, got the function {name!r}")
    try:
        lo, hi = float(lo_text), float(hi_text)
    except ValueError:
        raise ValueError(f"--over: expected numbers as bounds, got {lo_text!r} and "
                         f"{hi_text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"--over: expected finite bounds LOW < HIGH, got [{lo_text}, {hi_text}]")
    return name, lo, hi


# --- sampling, the truth, the error ------------------------------------------------------

_TINY = 5e-324


def _log_uniform(lo: float, hi: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` values in ``[lo, hi]`` (``0 <= lo < hi``), log-uniform in magnitude."""
    lo = max(lo, _TINY)
    if hi <= lo:
        return np.full(n, hi)
    e = rng.uniform(math.log2(lo), math.log2(hi), n)
    return np.clip(np.exp2(e), lo, hi)


def sample_axis(lo: float, hi: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` float64 values spread over ``[lo, hi]`` as floats are spread.

    Example:
        >>> v = sample_axis(-1.0, 1e300, 1000, np.random.default_rng(0))
        >>> bool(v.min() == -1.0 and v.max() == 1e300 and (v < 1e-200).any())
        True
    """
    parts = []
    if hi > 0:
        parts.append(_log_uniform(max(lo, 0.0), hi, n, rng))
    if lo < 0:
        parts.append(-_log_uniform(max(-hi, 0.0), -lo, n, rng))
    # uniform in [lo, hi] (halved where hi - lo overflows: a box spanning every float)
    wide = not math.isfinite(hi - lo)
    flat = rng.uniform(lo / 2, hi / 2, max(n // 8, 1)) * 2 if wide else rng.uniform(
        lo, hi, max(n // 8, 1))
    pool = np.concatenate(parts + [flat])
    v = rng.choice(pool, n)
    special = [lo, hi] + [x for x in (0.0, 1.0, -1.0, _TINY, -_TINY, 1e-300, -1e-300)
                          if lo <= x <= hi]
    v[:len(special)] = special[:n]
    return v


def sample_box(box: dict[sp.Symbol, tuple[float, float]], n: int,
               rng: np.random.Generator) -> np.ndarray:
    """``n`` points of the box, shape ``(n, len(box))``; each axis as :func:`sample_axis`
    (shuffled independently)."""
    cols = []
    for lo, hi in box.values():
        col = sample_axis(lo, hi, n, rng)
        cols.append(rng.permutation(col))
    return np.stack(cols, axis=1)


def _mp_softplus(u: mpmath.mpf) -> mpmath.mpf:
    return mpmath.log1p(_mp_exp(u))


def _mp_sigmoid(u: mpmath.mpf) -> mpmath.mpf:
    return 1 / (1 + _mp_exp(-u))


def _mp_exp(u: mpmath.mpf) -> mpmath.mpf:
    """``exp(u)`` at the working precision, fast for a large integer ``u`` too: mpmath takes
    ``e**u`` by repeated squaring there (every float beyond 2**53 is an integer: 5 ms an
    evaluation at 1e300), so ``exp(u - 1/2) * exp(1/2)`` is taken instead, ``u - 1/2``
    exact at the precision raised by ``u``'s binary exponent."""
    if not (isinstance(u, mpmath.mpf) and mpmath.isfinite(u) and abs(u) >= 2
            and mpmath.isint(u)):
        return mpmath.exp(u)
    with mpmath.extraprec(int(mpmath.mag(u)) + 20):
        value = mpmath.exp(u - mpmath.mpf(0.5)) * mpmath.exp(mpmath.mpf(0.5))
    return +value


_MP = {"exp": _mp_exp, "softplus": _mp_softplus, "sigmoid": _mp_sigmoid, "expm1": mpmath.expm1,
       "log1p": mpmath.log1p, "cbrt": lambda u: mpmath.sign(u) * mpmath.cbrt(abs(u)),
       "logaddexp": lambda a, b: mpmath.log(mpmath.exp(a) + mpmath.exp(b)),
       "Abs": abs}


def _mp_value(fn: Callable[..., object], point: Sequence[float], prec: int) -> mpmath.mpf | None:
    with mpmath.workprec(prec):
        try:
            v = fn(*[mpmath.mpf(float(x)) for x in point])
        except (ValueError, ZeroDivisionError, OverflowError, TypeError):
            return None
        if isinstance(v, mpmath.mpc):
            if v.imag == 0:
                v = v.real
            else:
                return None
        if not isinstance(v, mpmath.mpf) or mpmath.isnan(v):
            return None
        return +v


def reference(expr: sp.Expr, variables: Sequence[sp.Symbol], points: np.ndarray) -> np.ndarray:
    """The true value of ``expr`` at each point, rounded to float64 (NaN where it is not
    real): mpmath at 160 bits more than the inputs' largest binary exponent, then twice
    that, raised further where two evaluations disagree in their leading 60 bits.

    Example:
        >>> x = sp.Symbol("x", real=True)
        >>> reference(sp.sqrt(x + 1) - sp.sqrt(x), [x], np.array([[1e300]]))
        array([5.e-151])
    """
    fn = sp.lambdify(variables, expr, modules=[_MP, "mpmath"])
    out = np.empty(len(points))
    for k, point in enumerate(points):
        value = math.nan
        # enough bits that a sum of the inputs and constants is exact: 1 + 1e-300 needs
        # about 1000; then twice that, to confirm
        spread = max((abs(math.frexp(float(x))[1]) for x in point if x != 0), default=0)
        first = 160 + spread
        last = _mp_value(fn, point, first)
        top = 8 * first + 9000
        for prec in (2 * first, 4 * first + 2400, top):
            if last is None:
                break
            new = _mp_value(fn, point, prec)
            if new is None:
                last = None
                break
            agree = new == last or (new != 0 and abs((new - last) / new) < mpmath.mpf(2) ** -60)
            # an exact 0 (or an infinity: mpmath does not overflow, so it is a log or a
            # quotient of such a 0) at two precisions may be a cancellation both lost:
            # confirmed only at the highest precision
            if agree and ((new != 0 and mpmath.isfinite(new)) or prec == top):
                value = float(new) if abs(new) < mpmath.mpf("1.8e308") else (
                    math.inf if new > 0 else -math.inf)
                break
            last = new
        out[k] = value
    return out


def _portable(scalar: Callable[..., float], ieee: Callable[..., object]
              ) -> Callable[..., np.ndarray]:
    """``scalar`` (a function of Python's :mod:`math`: the C library's, one number at a
    time) element-wise over arrays, as float64; where it raises (an overflow, a pole, a
    domain error) the element is NumPy's ``ieee`` of it, whose special values (inf, 0,
    NaN) IEEE 754 fixes on every machine."""

    def one(*xs: float) -> float:
        try:
            return scalar(*xs)
        except (OverflowError, ValueError, ZeroDivisionError):
            with np.errstate(all="ignore"):
                return float(ieee(*map(np.float64, xs)))

    element_wise = np.frompyfunc(one, len(_arity(scalar)), 1)

    def run(*arrays: object) -> np.ndarray:
        return np.asarray(element_wise(*arrays), dtype=np.float64)

    return run


def _arity(f: Callable[..., float]) -> tuple[int, ...]:
    return (0, 1) if f in (math.pow, math.atan2, math.hypot) else (0,)


#: The transcendental functions of the float model the search measures in: the C library's
#: scalar functions (Python's :mod:`math`), not NumPy's vector loops. NumPy picks its loops
#: by the CPU (AVX-512 ones differ from AVX2 ones in the last bits), so errors measured with
#: them, and the generate-time notes that print them, would differ from machine to machine.
#: Arithmetic, ``sqrt``, comparisons and special values are IEEE 754's, the same everywhere.
_PORTABLE: dict[str, Callable[..., np.ndarray]] = {
    name: _portable(getattr(math, m), getattr(np, name)) for name, m in (
        ("exp", "exp"), ("log", "log"), ("expm1", "expm1"), ("log1p", "log1p"),
        ("sin", "sin"), ("cos", "cos"), ("tan", "tan"), ("sinh", "sinh"), ("cosh", "cosh"),
        ("tanh", "tanh"), ("arcsin", "asin"), ("arccos", "acos"), ("arctan", "atan"),
        ("arcsinh", "asinh"), ("arccosh", "acosh"), ("arctanh", "atanh"),
        ("arctan2", "atan2"), ("hypot", "hypot"), ("cbrt", "cbrt"), ("power", "pow"))}


def _portable_logaddexp(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``log(exp(a) + exp(b))`` as NumPy's ``logaddexp`` computes it (the larger plus
    ``log1p(exp(-|a - b|))``), with the portable ``exp`` and ``log1p``."""
    with np.errstate(all="ignore"):
        a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64),
                                   np.asarray(b, dtype=np.float64))
        big = np.maximum(a, b)
        tail = _PORTABLE["log1p"](_PORTABLE["exp"](-np.abs(a - b)))
        out = big + tail
        return np.where(a == b, a + math.log(2.0), np.where(np.isnan(a - b), a + b, out))


def _portable_softplus(u: np.ndarray) -> np.ndarray:
    return _portable_logaddexp(np.zeros_like(np.asarray(u, dtype=np.float64)), u)


def _portable_sigmoid(u: np.ndarray) -> np.ndarray:
    return _PORTABLE["exp"](-_portable_logaddexp(
        np.zeros_like(np.asarray(u, dtype=np.float64)), -np.asarray(u, dtype=np.float64)))


_NP = {"softplus": _portable_softplus, "sigmoid": _portable_sigmoid,
       "logaddexp": _portable_logaddexp, **_PORTABLE}


class _PortablePrinter(NumPyPrinter):
    """NumPy's printer, with every power that NumPy does not compute exactly (a square, a
    reciprocal, a square root) through the portable ``power``."""

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        if expr.exp in (2, -1, sp.S.Half):
            return super()._print_Pow(expr, rational=rational)
        return f"power({self._print(expr.base)}, {self._print(expr.exp)})"


def _lambdify(variables: Sequence[sp.Symbol], expr: sp.Basic) -> Callable[..., object]:
    """``expr`` as a NumPy function of ``variables`` in the portable float model, made once
    per process (a candidate is measured on the search's sample and on the held-out one:
    half of a cold generate's 494 calls were repeats)."""
    return _lambdified(tuple(variables), expr)


@functools.lru_cache(maxsize=1024)
def _lambdified(variables: tuple[sp.Symbol, ...], expr: sp.Basic) -> Callable[..., object]:
    # the settings lambdify gives its own printer: the names of _NP printed as they are
    printer = _PortablePrinter({"fully_qualified_modules": False, "inline": True,
                                "allow_unknown_functions": True,
                                "user_functions": {k: k for k in _NP}})
    return sp.lambdify(variables, expr, modules=[_NP, "numpy"], printer=printer)


def float_function(expr: sp.Expr, variables: Sequence[sp.Symbol]) -> Callable[..., np.ndarray]:
    """``expr`` evaluated in float64 as the kernels print it (``softplus`` through
    ``logaddexp``), element-wise over NumPy arrays, in a float model that is the same on
    every machine: IEEE 754 arithmetic and the C library's scalar functions
    (:data:`_PORTABLE`), so that what the search measures, and the notes it writes, do not
    depend on which of NumPy's vector loops the CPU selects.

    Example:
        >>> x = sp.Symbol("x", real=True)
        >>> float_function(sp.exp(x) - 1, [x])(np.array([1e-20, 800.0]))
        array([ 0., inf])
    """
    fn = _lambdify(variables, expr)

    def run(*arrays: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            value = fn(*arrays)
        return np.broadcast_to(np.asarray(value, dtype=np.float64), arrays[0].shape)

    return run


def _sign_magnitude(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bits = np.asarray(a, dtype=np.float64).view(np.int64)
    return bits < 0, bits & np.int64(0x7FFFFFFFFFFFFFFF)


#: The error counted for a NaN where the true value is a number (2**64 ulp).
NAN_ULP = 2.0 ** 64


def ulp_error(computed: np.ndarray, true: np.ndarray) -> np.ndarray:
    """The distance in float64 steps (ulp) from ``computed`` to ``true`` (float64 arrays);
    NaN where the true value is a number counts :data:`NAN_ULP`.

    Example:
        >>> ulp_error(np.array([1.0, np.nextafter(1.0, 2), np.nan]), np.ones(3)).tolist()
        [0.0, 1.0, 1.8446744073709552e+19]
    """
    neg_c, mag_c = _sign_magnitude(computed)
    neg_t, mag_t = _sign_magnitude(true)
    same = (neg_c == neg_t) | (mag_c == 0) | (mag_t == 0)
    # the same sign: the difference of the magnitudes' bit patterns, exact in int64;
    # opposite signs: their sum (at least 2 ulp; in float64, as it may not fit in int64)
    d = np.where(same, np.abs(mag_c - mag_t).astype(np.float64),
                 mag_c.astype(np.float64) + mag_t.astype(np.float64))
    return np.where(np.isnan(computed), NAN_ULP, d)


@dataclass(frozen=True)
class Measure:
    """Errors in ulp over the samples: maximum, mean, how many points, and the largest
    share of points that are not finite where the true value is."""

    max_ulp: float
    mean_ulp: float
    points: int
    nonfinite: int

    def __str__(self) -> str:
        bad = f", {self.nonfinite} not finite" if self.nonfinite else ""
        return (f"max {self.max_ulp:.3g} ulp, mean {self.mean_ulp:.3g} ulp over "
                f"{self.points} points{bad}")


def measure(errors: np.ndarray, computed: np.ndarray, true: np.ndarray) -> Measure:
    """The :class:`Measure` of per-point ``errors``."""
    nonfinite = int(np.sum(~np.isfinite(computed) & np.isfinite(true)))
    return Measure(float(errors.max()) if errors.size else 0.0,
                   float(errors.mean()) if errors.size else 0.0, int(errors.size), nonfinite)


# --- the rewrites ---------------------------------------------------------------------------

_a = sp.Symbol("a", real=True)
_b = sp.Symbol("b", real=True)
_u = sp.Symbol("u", real=True)


@dataclass(frozen=True)
class Candidate:
    """An expression equal to the current one, and the step's reason and notes."""

    expr: sp.Expr
    reason: str
    notes: tuple[sp.Basic, ...] = ()
    series: sp.Expr | None = None  # the checked series (with its O term), for a series piece


def _replace_difference(expr: sp.Basic, match: Callable[[sp.Basic, sp.Basic], sp.Basic | None]
                        ) -> sp.Basic:
    """``expr`` with every sum of two terms ``A - B`` that ``match(A, B)`` rewrites."""

    def query(e: sp.Basic) -> bool:
        parts = _two_terms(e)
        return parts is not None and match(*parts) is not None

    return expr.replace(query, lambda e: match(*_two_terms(e)))


def _conjugate(a: sp.Basic, b: sp.Basic) -> sp.Basic | None:
    """``A - B`` with A, B square or cube roots: the difference of the powers over the sum."""
    for k in (2, 3):
        ra, rb = a ** k, b ** k
        if not any(p.is_Pow and abs(p.exp) == sp.Rational(1, k)
                   for p in (*sp.preorder_traversal(a), *sp.preorder_traversal(b))):
            continue
        num = sp.factor(sp.together(sp.expand(sp.powsimp(sp.expand(ra - rb)))))
        if num.has(sp.Pow) and any(p.is_Pow and not p.exp.is_Integer
                                   for p in sp.preorder_traversal(num)):
            continue
        den = a + b if k == 2 else a ** 2 + a * b + b ** 2
        return num / den
    return None


def _trig_difference(a: sp.Basic, b: sp.Basic) -> sp.Basic | None:
    if isinstance(a, sp.sin) and isinstance(b, sp.sin):
        x, y = a.args[0], b.args[0]
        return 2 * sp.cos((x + y) / 2) * sp.sin(sp.expand(x - y) / 2)
    if isinstance(a, sp.cos) and isinstance(b, sp.cos):
        x, y = a.args[0], b.args[0]
        return -2 * sp.sin((x + y) / 2) * sp.sin(sp.expand(x - y) / 2)
    if isinstance(a, sp.tan) and isinstance(b, sp.tan):
        x, y = a.args[0], b.args[0]
        return sp.sin(sp.expand(x - y)) / (sp.cos(x) * sp.cos(y))
    return None


def _sum_to_product(e: sp.Basic) -> tuple[sp.Basic, ...]:
    """``e`` with its differences of sines, cosines, tangents as products; and the same
    with each sine or cosine of a sum there written through the exact sum
    (:func:`~derive.rules_extra.trig_of_exact_sum`)."""
    product = _replace_difference(e, _trig_difference)
    return product, _trig_of_exact_sum(product)


def _log_difference(a: sp.Basic, b: sp.Basic) -> sp.Basic | None:
    if isinstance(a, sp.log) and isinstance(b, sp.log):
        x, y = a.args[0], b.args[0]
        return log1p(sp.expand(x - y) / y)
    return None


def _atan_difference(a: sp.Basic, b: sp.Basic) -> sp.Basic | None:
    if isinstance(a, sp.atan) and isinstance(b, sp.atan):
        x, y = a.args[0], b.args[0]
        # atan x - atan y = atan((x - y)/(1 + x y)) where x y > -1
        ratio = sp.atan(sp.expand(x - y) / (1 + x * y))
        if _always_positive(1 + x * y):
            return ratio
        return sp.Piecewise((ratio, x * y > -1), (sp.atan(x) - sp.atan(y), True))
    return None


def _always_positive(p: sp.Basic) -> bool:
    """Whether the polynomial ``p`` in one real variable is positive everywhere."""
    syms = p.free_symbols
    if len(syms) != 1:
        return bool(p.is_positive)
    try:
        poly = sp.Poly(sp.expand(p), *syms)
        return not sp.real_roots(poly) and poly.LC() > 0 and poly.degree() % 2 == 0
    except (sp.PolynomialError, NotImplementedError):
        return False


def _reciprocal_by_factor(e: sp.Basic) -> sp.Basic:
    """``1/(a b)`` as ``(1/a)/b`` (grouping kept), and ``1/p(v)`` of a polynomial of
    degree 2 or more as ``(1/v)/(p(v)/v)``: the product overflows where the quotient does
    not."""

    def poly(t: sp.Basic) -> tuple[sp.Symbol, sp.Basic] | None:
        if t.is_Pow and t.exp == -1 and t.base.is_Add and len(t.base.free_symbols) == 1:
            (v,) = t.base.free_symbols
            p = sp.expand(t.base)
            if p.is_polynomial(v) and sp.degree(p, v) >= 2:
                return v, p
        return None

    def product(t: sp.Basic) -> sp.Basic | None:
        if not t.is_Mul or t.has(sp.UnevaluatedExpr):
            return None
        recips = [f for f in t.args if f.is_Pow and f.exp.is_Rational and f.exp < 0]
        if len(recips) < 2 and sum(-f.exp for f in recips) < 2:
            return None
        return recips[0].base ** -recips[0].exp if len(recips) >= 2 else recips[0].base

    def split(t: sp.Basic) -> sp.Basic:
        v, p = poly(t)
        return sp.UnevaluatedExpr(1 / v) / sp.expand(p / v)

    e = e.replace(lambda t: poly(t) is not None, split)
    return e.replace(lambda t: product(t) is not None,
                     lambda t: sp.UnevaluatedExpr(1 / product(t)) * (t * product(t)))


def _log1p_exp(e: sp.Basic) -> sp.Basic:
    return e.replace(lambda t: isinstance(t, log1p) and isinstance(t.args[0], sp.exp),
                     lambda t: softplus(t.args[0].args[0]))


def _exp_over_expm1(e: sp.Basic) -> sp.Basic:
    """``exp(u)/expm1(u)`` as ``-1/expm1(-u)``: no infinity over an infinity for large u."""

    def parts(t: sp.Basic) -> sp.Basic | None:
        if not t.is_Mul:
            return None
        for f in t.args:
            if isinstance(f, sp.exp):
                for g in t.args:
                    if g.is_Pow and g.exp == -1 and isinstance(g.base, expm1) \
                            and g.base.args[0] == f.args[0]:
                        return f.args[0]
        return None

    def value(t: sp.Basic) -> sp.Basic:
        u = parts(t)
        return t / (sp.exp(u) / expm1(u)) * (-1 / expm1(-u))

    return e.replace(lambda t: parts(t) is not None, value)


def _log_of_sigmoid(e: sp.Basic) -> sp.Basic:
    """``log(a)`` where ``1/a = 1 + exp(w)`` (a sigmoid, however written) as
    ``-softplus(w)``."""

    def arg(t: sp.Basic) -> sp.Basic | None:
        if not isinstance(t, sp.log) or not t.args[0].has(sp.exp):
            return None
        w = sp.expand(sp.simplify(1 / t.args[0]) - 1)
        return w.args[0] if isinstance(w, sp.exp) else None

    return e.replace(lambda t: arg(t) is not None, lambda t: -softplus(arg(t)))


#: ``e`` without the grouping kept for floating point (what a check compares)
_plain = plain


def _one_minus_cos(e: sp.Basic) -> sp.Basic:
    def query(t: sp.Basic) -> bool:
        parts = _two_terms(t)
        return parts is not None and parts[0] == 1 and isinstance(parts[1], sp.cos)

    return e.replace(query, lambda t: 2 * sp.sin(_two_terms(t)[1].args[0] / 2) ** 2)


def _log_abs_sinh(e: sp.Basic) -> sp.Basic:
    def arg(t: sp.Basic) -> sp.Basic | None:
        if isinstance(t, sp.log):
            inner = t.args[0]
            inner = inner.args[0] if isinstance(inner, sp.Abs) else inner
            if isinstance(inner, sp.sinh):
                return inner.args[0]
        return None

    def value(t: sp.Basic) -> sp.Basic:
        u = sp.Abs(arg(t))
        return u + log1p(-sp.exp(-2 * u)) - sp.log(2)

    return e.replace(lambda t: arg(t) is not None, value)


def _log1p_square(e: sp.Basic) -> sp.Basic:
    def arg(t: sp.Basic) -> sp.Basic | None:
        if isinstance(t, log1p) and t.args[0].is_Pow and t.args[0].exp == 2:
            return t.args[0].base
        if isinstance(t, sp.log):
            parts = t.args[0]
            if parts.is_Add and len(parts.args) == 2 and sp.S.One in parts.args:
                other = parts.args[0] if parts.args[1] == 1 else parts.args[1]
                if other.is_Pow and other.exp == 2:
                    return other.base
        return None

    def value(t: sp.Basic) -> sp.Basic:
        u = arg(t)
        return sp.Piecewise((log1p(u ** 2), sp.Abs(u) < 1),
                            (2 * sp.log(sp.Abs(u)) + log1p(u ** -2), True))

    return e.replace(lambda t: arg(t) is not None, value)


def _log_one_minus_exp(e: sp.Basic) -> sp.Basic:
    def arg(t: sp.Basic) -> sp.Basic | None:
        if isinstance(t, (sp.log, log1p)):
            inner = t.args[0]
            if isinstance(t, log1p):
                inner = 1 + inner
            parts = _two_terms(inner)
            if parts is not None and parts[0] == 1 and isinstance(parts[1], sp.exp):
                return -parts[1].args[0]
        return None

    def value(t: sp.Basic) -> sp.Basic:
        u = arg(t)
        return sp.Piecewise((sp.log(-expm1(-u)), u < sp.log(2)), (log1p(-sp.exp(-u)), True))

    return e.replace(lambda t: arg(t) is not None, value)


def _log_exp_difference(e: sp.Basic) -> sp.Basic:
    def parts(t: sp.Basic) -> tuple[sp.Basic, sp.Basic] | None:
        if isinstance(t, sp.log):
            d = _two_terms(t.args[0])
            if d is not None and isinstance(d[0], sp.exp) and isinstance(d[1], sp.exp):
                return d[0].args[0], d[1].args[0]
        return None

    def value(t: sp.Basic) -> sp.Basic:
        a, b = parts(t)
        return a + sp.log(-expm1(sp.expand(b - a)))

    return e.replace(lambda t: parts(t) is not None, value)


def _softplus_difference(a: sp.Basic, b: sp.Basic) -> sp.Basic | None:
    if isinstance(a, softplus) and isinstance(b, softplus):
        x, y = a.args[0], b.args[0]
        d = sp.expand(x - y)
        return sp.Piecewise((log1p(expm1(d) * sigmoid(y)), sp.Abs(d) < 1),
                            (softplus(x) - softplus(y), True))
    return None


def _logsumexp(e: sp.Basic) -> sp.Basic:
    def parts(t: sp.Basic) -> tuple[sp.Basic, sp.Basic] | None:
        if isinstance(t, sp.log) and t.args[0].is_Add and len(t.args[0].args) == 2:
            p, q = t.args[0].args
            if isinstance(p, sp.exp) and isinstance(q, sp.exp):
                return p.args[0], q.args[0]
        return None

    def value(t: sp.Basic) -> sp.Basic:
        a, b = parts(t)
        return sp.Piecewise((a + softplus(sp.expand(b - a)), a >= b),
                            (b + softplus(sp.expand(a - b)), True))

    return e.replace(lambda t: parts(t) is not None, value)


def _whole(name: str, fn: Callable[[sp.Basic], sp.Basic], reason: str,
           notes: tuple[sp.Basic, ...] = ()) -> tuple[str, Callable[[sp.Basic], sp.Basic], str,
                                                      tuple[sp.Basic, ...]]:
    return name, fn, reason, notes


#: This module's rewrites: ``(name, function, reason, notes)``; each is checked as a step.
RULES = (
    _whole("conjugate", lambda e: _replace_difference(e, _conjugate),
           "a difference of roots as the difference of their powers over a sum "
           "(no cancellation): {0}",
           (_identity(sp.sqrt(_a) - sp.sqrt(_b), (_a - _b) / (sp.sqrt(_a) + sp.sqrt(_b))),)),
    _whole("trig difference", _sum_to_product,
           "sum-to-product: {0}, whose small factor is formed from the difference of the "
           "arguments, not of the values (one alternative with the other factor's argument, "
           "a sum, split exactly by TwoSum and the addition formula)",
           (_identity(sp.sin(_a) - sp.sin(_b),
                      2 * sp.cos((_a + _b) / 2) * sp.sin((_a - _b) / 2)),)),
    _whole("log difference", lambda e: _replace_difference(e, _log_difference),
           "{0}: the difference of two close logs as the log1p of a small ratio",
           (_identity(sp.log(2 + _u**2) - sp.log(1 + _u**2), log1p(1 / (1 + _u**2))),)),
    _whole("atan difference", lambda e: _replace_difference(e, _atan_difference),
           "{0} where {1}", (_identity(sp.atan(2) - sp.atan(1), sp.atan(sp.Rational(1, 3))),
                             _a * _b > -1)),
    _whole("one minus cos", _one_minus_cos, "{0}: no cancellation near 0",
           (_identity(1 - sp.cos(_u), 2 * sp.sin(_u / 2) ** 2),)),
    _whole("log abs sinh", _log_abs_sinh, "{0}: sinh is never formed, so it never overflows",
           (_identity(sp.log(sp.sinh(2)), 2 + log1p(-sp.exp(-4)) - sp.log(2)),)),
    _whole("log1p square", _log1p_square,
           "{0} where {1}: the square is never formed where it would overflow",
           (_identity(log1p(4), 2 * sp.log(2) + log1p(sp.Rational(1, 4))), sp.Abs(_u) >= 1)),
    _whole("log one minus exp", _log_one_minus_exp,
           "{0}, evaluated as log(-expm1(-u)) below log 2 and log1p(-exp(-u)) above "
           "(Maechler's choice)", (_identity(sp.log(1 - sp.exp(-_u)), sp.log(-expm1(-_u))),)),
    _whole("log exp difference", _log_exp_difference,
           "{0}: neither exponential is formed", (_identity(sp.log(sp.exp(_a) - sp.exp(_b)),
                                                        _a + sp.log(-expm1(_b - _a))),)),
    _whole("softplus difference", lambda e: _replace_difference(e, _softplus_difference),
           "{0}: the difference of two close softplus values without cancellation",
           (_identity(softplus(_a) - softplus(_b), log1p(expm1(_a - _b) * sigmoid(_b))),)),
    _whole("logsumexp", _logsumexp, "{0}, the larger argument taken out",
           (_identity(sp.log(sp.exp(_a) + sp.exp(_b)), _a + softplus(_b - _a)),)),
    _whole("reciprocal by factor", _reciprocal_by_factor,
           "divide by one factor at a time, {0}: the product overflows where the quotient "
           "does not", (_identity(1 / (_a * _b), sp.UnevaluatedExpr(1 / _a) / _b),)),
    _whole("log1p exp", _log1p_exp, "{0}, which never forms the exponential",
           (_identity(log1p(sp.exp(_u)), softplus(_u)),)),
    _whole("exp over expm1", _exp_over_expm1,
           "{0}: numerator and denominator multiplied by exp(-u), so that no infinity is "
           "divided by an infinity where u is large",
           (_identity(sp.exp(_u) / expm1(_u), -1 / expm1(-_u)),)),
    _whole("log of a sigmoid", _log_of_sigmoid,
           "{0}: the log of a sigmoid, however written, without forming it",
           (_identity(sp.log(1 - 1 / (1 + sp.exp(-_u))), -softplus(_u)),)),
    _whole("together", sp.together, "over a common denominator: the terms that cancel are "
           "cancelled exactly"),
    _whole("cancel", sp.cancel, "cancel common factors"),
    _whole("factor", sp.factor, "factor"),
    _whole("expand", sp.expand, "expand"),
    _whole("simplify", sp.simplify, "simplify"),
    _whole("powers", lambda e: sp.powsimp(e, force=True),
           "powers of a common exponent combined: {0}, which overflows where neither "
           "power does not", (_identity(_a ** 2 / _b ** 2, (_a / _b) ** 2),)),
    _whole("exp rewrite", lambda e: sp.expand(e.rewrite(sp.exp)),
           "write the hyperbolic functions through exp"),
)


#: What a rule that does not apply raises (SymPy's own operations on a form it cannot take).
_RULE_ERRORS = (TypeError, ValueError, AttributeError, IndexError, RecursionError,
                NotImplementedError, sp.PolynomialError)


def _candidates(expr: sp.Expr) -> Iterator[Candidate]:
    """Every rewrite of ``expr`` this search knows, one at a time (unchanged ones skipped)."""
    rules: list[Rewrite] = list(dict.fromkeys((*KERNEL_REWRITES, *LOG_REWRITES)))
    for rule in rules:
        try:
            new = rule(expr)
        except _RULE_ERRORS:
            continue
        if new != expr:
            yield Candidate(new, rule.reason, rule.notes)
    for name, rewrites in (("kernel", KERNEL_REWRITES), ("log", LOG_REWRITES)):
        try:
            new, steps = _arrange_all(expr, rewrites)
        except _RULE_ERRORS:
            continue
        if new != expr and len(steps) > 1:
            notes = tuple(n for st in steps for n in st.notes)
            yield Candidate(new, f"the {name} rewrites in turn: " + "; ".join(
                _renumber(st.reason, sum(len(t.notes) for t in steps[:k]))
                for k, st in enumerate(steps)), notes)
    for _name, fn, reason, notes in (*RULES, *EXTRA_RULES):
        try:
            got = fn(expr)
        except _RULE_ERRORS:
            continue
        # a rule gives one rewrite, or a tuple of alternatives (one per place it applies)
        for new in (got if isinstance(got, tuple) else (got,)):
            yield from _with_optimizations(expr, new, reason, notes)


def _with_optimizations(expr: sp.Expr, new: sp.Basic, reason: str,
                        notes: tuple[sp.Basic, ...]) -> Iterator[Candidate]:
    """``new`` as a candidate, and each of the expm1/log1p optimizations applied to it."""
    if new == expr or not isinstance(new, sp.Expr) or new.has(sp.I):
        return
    yield Candidate(new, reason, notes)
    # the rule's result, then the sympy optimizations for expm1 / log1p on it
    for rule in (r for r in KERNEL_REWRITES if r.whole is not None):
        try:
            more = rule(new)
        except _RULE_ERRORS:
            continue
        if more != new and not more.has(sp.I):
            yield Candidate(more, reason + f"; then the {rule.name} rewrite", notes)


def _renumber(reason: str, offset: int) -> str:
    """``reason`` with its placeholders ``{k}`` moved to ``{k + offset}``."""
    return re.sub(r"\{(\d+)\}", lambda m: "{" + str(int(m.group(1)) + offset) + "}", reason)


# --- the search -----------------------------------------------------------------------------


@dataclass
class Found:
    """What :func:`arrange_search` found.

    Arguments:
        expr: the arranged expression (a Piecewise where regimes are split).
        original: the expression as given.
        variables: the variables, in argument order.
        box: each variable's interval.
        before, after: the error of the given and of the arranged expression, in ulp.
        derivation: the checked steps from the one to the other.
        refused: the rewrites that lowered the error but failed their check (reason, error).
    """

    expr: sp.Expr
    original: sp.Expr
    variables: tuple[sp.Symbol, ...]
    box: dict[sp.Symbol, tuple[float, float]]
    before: Measure
    after: Measure
    derivation: Derivation
    refused: list[tuple[str, str]] = field(default_factory=list)
    points: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), repr=False)
    true: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    def measure(self, fn: Callable[..., np.ndarray]) -> Measure:
        """The error of ``fn`` (a float64 function of the variables, as the written file's
        ``f``) at the search's points."""
        with np.errstate(all="ignore"):
            computed = np.asarray(fn(*[self.points[:, k] for k in range(len(self.variables))]),
                                  dtype=np.float64)
        return measure(ulp_error(computed, self.true), computed, self.true)

    def module(self, name: str = "arranged") -> Module:
        """The generated module's specification: one kernel ``f`` of the variables."""
        args = tuple(Arg(v.name, "elementwise", f"array; the search covered [{lo:.6g}, {hi:.6g}].")
                     for v, (lo, hi) in self.box.items())
        kernel = Kernel("f", args, (Output("value", self.expr, "the value"),),
                        f"f({', '.join(v.name for v in self.variables)}) = "
                        f"{sp.sstr(self.original)}, arranged for floating point.",
                        f"Error in float64 against mpmath, as typed: {self.before}; as "
                        f"arranged: {self.after}.")
        return Module(name, f"f = {sp.sstr(self.original)}, arranged by derive arrange.",
                      "Found by measuring the error in ulp against mpmath over the box "
                      + ", ".join(f"{v.name} in [{lo:.6g}, {hi:.6g}]"
                                  for v, (lo, hi) in self.box.items())
                      + "; every rewrite is a checked step (derive arrange).",
                      (kernel,), f"derive arrange {sp.sstr(self.original)!r}", "elementwise")


class _Scorer:
    """Errors of candidate expressions at fixed points against fixed true values."""

    def __init__(self, variables: Sequence[sp.Symbol], points: np.ndarray,
                 true: np.ndarray) -> None:
        self.variables = tuple(variables)
        keep = ~np.isnan(true)
        self.points, self.true = points[keep], true[keep]
        self.columns = [self.points[:, k].copy() for k in range(self.points.shape[1])]

    def errors(self, expr: sp.Expr) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            computed = float_function(expr, self.variables)(*self.columns)
        except Exception:  # noqa: BLE001 - a candidate numpy cannot evaluate is dropped
            return None
        return ulp_error(computed, self.true), computed

    def measure(self, expr: sp.Expr) -> tuple[Measure, np.ndarray] | None:
        got = self.errors(expr)
        if got is None:
            return None
        err, computed = got
        return measure(err, computed, self.true), err


def _better(a: Measure, b: Measure) -> bool:
    """Whether ``a`` is better than ``b``: a lower maximum, or the same and a lower mean.
    Within 4 ulp, a maximum lower by 2 ulp at least: one ulp is within the spread between
    two samples of the domain (a rewrite kept for it was worse than typed on another)."""
    if b.max_ulp <= 4:
        return a.max_ulp <= b.max_ulp - 2
    if a.max_ulp < b.max_ulp * 0.999:
        return True
    return a.max_ulp <= b.max_ulp and a.mean_ulp < b.mean_ulp * 0.9


def _worse_held_out(a: Measure, b: Measure) -> bool:
    """Whether a rewrite measuring ``a`` on the held-out sample is worse there than the
    form it replaces (``b``): a higher maximum, or a higher mean. A rewrite that gains at
    the search's worst points and loses on the rest (``(x - mu)**2`` expanded, in the
    Gaussian log-density: 185 -> 130 ulp at the worst points, and a mean of 0.36 ulp
    against 0.32 elsewhere, 111 ulp at worst on other samples) is not kept.

    Example:
        >>> _worse_held_out(Measure(1, 0.36, 200, 0), Measure(2, 0.32, 200, 0))
        True
        >>> _worse_held_out(Measure(1, 0.2, 200, 0), Measure(2, 0.32, 200, 0))
        False
    """
    return a.max_ulp > b.max_ulp or a.mean_ulp > b.mean_ulp * (1 + 1e-9)


def _renderable(expr: sp.Expr) -> bool:
    """Whether every piece of every Piecewise in ``expr`` has a safe point (the planner
    needs one). Asked with the variables plain reals, as the written kernel's arguments are
    (a positive symbol makes SymPy's sign queries on a Horner form take minutes)."""
    expr = expr.xreplace({v: sp.Symbol(v.name, real=True) for v in expr.free_symbols
                          if isinstance(v, sp.Symbol)})
    for pw in expr.atoms(sp.Piecewise):
        earlier: list[sp.Basic] = []
        for piece, cond in pw.args:
            try:
                safe_point(piece, sp.And(cond, *[sp.Not(c) for c in earlier]))
            except (ValueError, TypeError):
                return False
            earlier.append(cond)
    return True


def _threshold(t: float) -> sp.Number:
    """``t`` as SymPy prints it short: a rational where it is, a float otherwise."""
    r = sp.Rational(repr(t))
    return r if r.q < 10**6 and abs(r.p) < 10**12 else sp.Float(repr(t), 17)


def _short_between(a: float, b: float) -> float:
    """The shortest decimal in ``(a, b]``."""
    for digits in range(1, 18):
        t = float(f"{b:.{digits}g}")
        if a < t <= b:
            return t
    return b


def _best_split(key: np.ndarray, below: np.ndarray, above: np.ndarray
                ) -> tuple[float, float, float] | None:
    """The threshold ``t`` that minimizes the error (max, then mean) of taking ``above``'s
    errors where ``key >= t`` and ``below``'s elsewhere; ``(t, max, mean)``, or None
    where no threshold beats both."""
    order = np.argsort(key, kind="stable")
    k, lo, hi = key[order], below[order], above[order]
    n = len(k)
    prefix_max = np.concatenate([[0.0], np.maximum.accumulate(lo)])
    suffix_max = np.concatenate([np.maximum.accumulate(hi[::-1])[::-1], [0.0]])
    prefix_sum = np.concatenate([[0.0], np.cumsum(lo)])
    suffix_sum = np.concatenate([np.cumsum(hi[::-1])[::-1], [0.0]])
    # a split at i: below for k[:i], above for k[i:]; only between distinct keys
    ok = np.ones(n + 1, dtype=bool)
    ok[1:n] = k[1:] > k[:-1]
    ok[0] = ok[n] = False
    if not ok.any():
        return None
    worst = np.where(ok, np.maximum(prefix_max, suffix_max), np.inf)
    mean = (prefix_sum + suffix_sum) / n
    i = int(np.lexsort((mean, worst))[0])
    t = _short_between(float(k[i - 1]), float(k[i]))
    return t, float(worst[i]), float(mean[i])


def _split_candidates(current: sp.Expr, current_err: np.ndarray, other: Candidate,
                      other_err: np.ndarray, scorer: _Scorer) -> Iterator[Candidate]:
    """``other`` on one side of a threshold on one variable (or its magnitude), ``current``
    on the other; the threshold that gives the lowest error on the samples."""
    if not (other_err < current_err).any():
        return
    for k, v in enumerate(scorer.variables):
        col = scorer.columns[k]
        for mag in (True, False):
            key = np.abs(col) if mag else col
            lhs = sp.Abs(v) if mag else v
            for side in ("above", "below"):
                split = (_best_split(key, current_err, other_err) if side == "above" else
                         _best_split(-key, current_err, other_err))
                if split is None:
                    continue
                t = split[0]
                cond = lhs >= _threshold(t) if side == "above" else (
                    lhs <= _threshold(-t))
                yield Candidate(sp.Piecewise((other.expr, cond), (current, True)),
                                other.reason + f"; where {{{len(other.notes)}}} (a threshold "
                                "found from the samples), and as it was elsewhere",
                                (*other.notes, cond))


def _centre(values: np.ndarray) -> float | None:
    """The short number the ``values`` (a variable at the worst points) crowd around, or
    None where they do not: within 1e-1 of it (relative to it beyond 1)."""
    if not values.size:
        return None
    mid = float(np.median(values))
    for c in (0.0, float(f"{mid:.1g}")):
        if np.median(np.abs(values - c)) <= 1e-1 * max(1.0, abs(c)):
            return c
    return None


def _two_digits_up(x: float) -> float:
    """``x > 0`` rounded up to two significant digits."""
    t = float(f"{x:.2g}")
    if t < x:
        t = float(f"{t + 10.0 ** (math.floor(math.log10(x)) - 1):.2g}")
    return t


#: The orders tried for a series piece (terms kept: the order minus one).
SERIES_ORDERS = (12, 24, 32)
#: No series about a centre farther from 0 than this: its coefficients hold exponentials of
#: the centre (``sinh(800)``), which SymPy evaluates slowly and a float cannot hold.
SERIES_CENTRE_MAX = 64


def _series_candidates(current: sp.Expr, err: np.ndarray, scorer: _Scorer,
                       orders: Sequence[int] = SERIES_ORDERS) -> Iterator[Candidate]:
    """A Taylor polynomial of ``current`` in one variable around the point ``c`` its worst
    errors crowd around (the other variables kept as they are, in its coefficients), in
    powers of ``t = v - c`` (formed first: exact near ``c`` by Sterbenz's lemma for ``c``
    a power of two), used where it is more accurate than ``current``: the threshold on
    ``|t|`` found from the samples."""
    if current.has(sp.Piecewise):
        return
    worst = np.argsort(err)[-max(len(err) // 50, 3):]
    for k, v in enumerate(scorer.variables):
        col = scorer.columns[k]
        c = _centre(col[worst])
        if c is None or abs(c) > SERIES_CENTRE_MAX:
            continue
        centre = sp.Rational(repr(c)) if c != int(c) else sp.Integer(int(c))
        # a pole or a branch point at c (a log of something vanishing there): no series
        try:
            probe = current.subs(v, centre + sp.Rational(1, 10**30))
            if not probe.is_finite or current.subs(v, centre) is sp.zoo:
                continue
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        t = sp.Dummy("t", real=True)
        shift = v if c == 0 else sp.UnevaluatedExpr(v - centre)
        key = np.abs(col - c)
        for order in orders:
            try:
                series = sp.series(current, v, centre, order)
            except Exception:  # noqa: BLE001 - no series there: nothing to try
                break
            poly = series.removeO()
            if poly.has(sp.log, sp.Abs) or not poly.is_polynomial(v):
                continue
            in_t = sp.expand(poly.xreplace({v: centre + t}))
            if not in_t.is_polynomial(t):
                continue
            printed = sp.horner(in_t, t).xreplace({t: shift})
            got = scorer.errors(printed)
            if got is None:
                continue
            split = _best_split(key, got[0], err)
            if split is None:
                continue
            # the threshold just above the farthest point measured in the piece (rounded
            # up to two digits), not the shortest number before the next point: a series
            # goes wrong fast beyond where it was measured
            used = key[key < split[0]]
            if not used.size:
                continue
            thr = _two_digits_up(float(used.max()))
            if thr <= 0:
                continue
            lhs = sp.Abs(v - centre)
            cond = lhs < _threshold(thr)
            yield Candidate(sp.Piecewise((printed, cond), (current, True)),
                            f"its Taylor series in {{1}} (to order {order}), used truncated "
                            "where {0}: the remainder is below the rounding error there "
                            "(measured on the samples)", (cond, v - centre), series=series)


def _check(current: sp.Expr, cand: Candidate, seed: int = 1) -> Step:
    """The candidate's step, checked; raises :class:`StepCheckError` where it does not hold.

    A series piece is not an identity: its step is the series (``f = P + O(v**n)``),
    checked as a series, and the piece beyond it is the expression unchanged. A rewrite
    that carries roundings in remainders is checked with them perturbed too
    (:func:`check_carried`).
    """
    step = Step(_plain(current), cand.series if cand.series is not None else _plain(cand.expr),
                cand.reason, notes=cand.notes)
    # the seed the derivation checks this step with, and another (the numeric fallback
    # tries a few random points: a rewrite must hold at both sets)
    check_step(step, seed=seed)
    check_step(step, seed=seed + 1000)
    if cand.series is None:
        check_carried(current, cand.expr, seed=seed)
    return step


#: The relative perturbation of each carried rounding (:func:`check_carried`), and how far
#: the rewrite may move: first order in it is a remainder used wrong, second order (a
#: dropped product of two remainders, a series truncated past its square) is allowed.
_PERTURBATION = 1e-8
_CARRIED_TOLERANCE = 1e-12


def check_carried(before: sp.Expr, after: sp.Expr, seed: int = 1, points: int = 12) -> None:
    """Check that ``after`` carries the roundings it claims to: each rounded operation whose
    error it keeps in a remainder (:class:`~derive.rules_extra.Rounded`: TwoSum's sum,
    TwoProduct's product, ...) is given a relative error of about 1e-8, the rest computed
    exactly (mpmath, 50 digits), at ``points`` random points; ``after`` must still equal
    ``before`` to 1e-12, relative. In the reals every remainder is 0, so the identity
    check passes whatever multiplies one; here a remainder used wrong (a sign, a factor)
    moves the value by about 1e-8. Nothing is checked where ``after`` holds no such
    operation; where fewer than half the points drawn evaluate to a nonzero real number,
    the check cannot decide, and refuses. Raises :class:`StepCheckError`.

    Example:
        >>> from derive.rules_extra import trig_of_exact_sum
        >>> a, b = sp.symbols("a b", real=True)
        >>> right = trig_of_exact_sum(sp.cos(a + b))
        >>> check_carried(sp.cos(a + b), right)
        >>> s, = right.atoms(Rounded)  # a + b rounded; t, its remainder, is built from it
        >>> wrong = right.xreplace({sp.sin(s): -sp.sin(s)})  # cos(s - t): a sign flipped
        >>> check_carried(sp.cos(a + b), wrong)
        Traceback (most recent call last):
        ...
        derive.derivation.StepCheckError: the remainders of the rounded operations ...
    """
    rounded = sorted(after.atoms(Rounded), key=sp.default_sort_key)
    if not rounded:
        return
    variables = sorted(before.free_symbols | after.free_symbols, key=lambda v: v.name)
    rng = np.random.default_rng(seed)
    deltas = {}
    for k, node in enumerate(rounded):
        deltas[node] = sp.Symbol(f"_delta{k}", real=True)

    def perturbed(e: sp.Basic) -> sp.Basic:
        if not e.args:
            return e
        args = [perturbed(a) for a in e.args]
        if isinstance(e, Rounded):
            return args[0] * (1 + deltas[e])
        if isinstance(e, sp.UnevaluatedExpr):
            return args[0]
        return e.func(*args)

    names = [*variables, *deltas.values()]
    moved = sp.lambdify(names, perturbed(after), "mpmath")
    exact = sp.lambdify(variables, _plain(before), "mpmath")
    with mpmath.workdps(50):
        checked = 0
        for _ in range(4 * points):  # until `points` evaluate to a real number, or give up
            if checked == points:
                break
            point = []
            for v in variables:
                size = 10.0 ** rng.uniform(-2, 2)
                sign = 1 if (v.is_nonnegative or v.is_positive) else rng.choice([-1, 1])
                point.append(mpmath.mpf(float(sign * size)))
            delta = [mpmath.mpf(float(_PERTURBATION * rng.uniform(0.5, 1) * rng.choice([-1, 1])))
                     for _ in deltas]
            try:
                want = exact(*point)
                got = moved(*point, *delta)
            except (ZeroDivisionError, ValueError, TypeError, OverflowError):
                continue
            if not (isinstance(want, mpmath.mpf) and mpmath.isfinite(want) and want != 0):
                continue
            checked += 1
            error = abs(got - want) / abs(want) if isinstance(got, mpmath.mpf) else mpmath.inf
            if not error <= _CARRIED_TOLERANCE:
                at = ", ".join(f"{v} = {float(x):.6g}" for v, x in zip(variables, point,
                                                                        strict=True))
                raise StepCheckError(
                    "the remainders of the rounded operations do not carry their roundings: "
                    f"with each rounded by about {_PERTURBATION:g}, the rewrite moves by "
                    f"{float(error):.3g} (relative) at {at}")
    if checked < points // 2:  # nothing decided is no pass
        raise StepCheckError(
            "cannot decide whether the remainders of the rounded operations carry their "
            f"roundings: the expression is a nonzero real number at {checked} of "
            f"{4 * points} points drawn (needed {points // 2})")


def arrange_search(expr: sp.Expr, box: dict[sp.Symbol, tuple[float, float]], *,
                   samples: int = 1200, rounds: int = 4, seed: int = 0,
                   refine: int = 8, where: sp.Basic | None = None,
                   series_orders: Sequence[int] = SERIES_ORDERS) -> Found:
    """Search rewrites of ``expr`` that lower its error in ulp over ``box``.

    Arguments:
        expr: the expression (SymPy), its free symbols among ``box``'s keys.
        box: each variable and its interval ``(low, high)``, in argument order.
        samples: how many points are drawn (the worst are then refined by ``refine``
            neighbours each, within 64 ulp).
        rounds: how many rewrites are kept, at most, one after the other.
        seed: the sampling seed (the result is deterministic for a seed).
        refine: the ulp neighbours added around each of the worst points.
        where: a condition on the variables (a piece's): only the points where it holds
            are measured (a piece of a piecewise value searched within its piece).
        series_orders: the orders a Taylor piece is tried at (none: no series).
    """
    variables = tuple(box)
    missing = expr.free_symbols - set(variables)
    if missing:
        raise ValueError(f"EXPR: uses {', '.join(sorted(map(str, missing)))}, which no --over "
                         f"gives (expected only {', '.join(map(str, variables)) or 'numbers'})")
    rng = np.random.default_rng(seed)
    inside = _inside(where, variables)
    points = inside(sample_box(box, samples, rng))
    true = reference(expr, variables, points)
    scorer = _Scorer(variables, points, true)
    if not len(scorer.true):
        raise ValueError(f"--over: {sp.sstr(expr)} is not real anywhere in the box sampled")
    # dense ulp neighbourhoods of the worst points of the expression as given
    got = scorer.measure(expr)
    assert got is not None
    worst = np.argsort(got[1])[-max(samples // 40, 4):]
    extra = []
    for p in scorer.points[worst]:
        for _ in range(refine):
            steps = rng.integers(-64, 65, size=p.shape)
            q = p.copy()
            for k in range(len(q)):
                lo, hi = box[variables[k]]
                q[k] = min(max(_nudge(q[k], int(steps[k])), lo), hi)
            extra.append(q)
    if extra:
        more = inside(np.array(extra))
        points = np.concatenate([points, more])
        true = np.concatenate([true, reference(expr, variables, more)])
        scorer = _Scorer(variables, points, true)
    before, current_err = scorer.measure(expr)
    current, best = expr, before
    steps: list[Step] = []
    refused: list[tuple[str, str]] = []
    # a held-out sample (another seed, half the size): a rewrite that gains on the search's
    # sample must not lose on it (a gain of noise on one sample is a loss on another)
    held_points = inside(sample_box(box, max(samples // 2, 8) if rounds else 0,
                                    np.random.default_rng(seed + 7919)))
    held = _Scorer(variables, held_points, reference(expr, variables, held_points))
    held_best = held.measure(expr)[0] if len(held.true) else None
    for _ in range(rounds):
        if best.max_ulp <= 2:  # within 2 ulp already: a rewrite would gain less than the
            break              # spread between two samples of the domain
        scored: list[tuple[Measure, np.ndarray, Candidate]] = []
        for cand in _candidates(current):
            got = scorer.measure(cand.expr)
            if got is not None:
                scored.append((got[0], got[1], cand))
        extra_c: list[Candidate] = []
        for m, err, cand in sorted(scored, key=lambda t: (t[0].max_ulp, t[0].mean_ulp))[:6]:
            if not _better(m, best):
                extra_c.extend(_split_candidates(current, current_err, cand, err, scorer))
        # a series piece only where no identity already brings the error within 4 ulp: a
        # truncated series is an approximation, an identity is not
        if not any(m.max_ulp <= 4 and _better(m, best) for m, _, _ in scored):
            extra_c.extend(_series_candidates(current, current_err, scorer, series_orders))
        for cand in extra_c:
            got = scorer.measure(cand.expr)
            if got is not None:
                scored.append((got[0], got[1], cand))
        scored.sort(key=lambda t: (t[0].max_ulp, t[0].mean_ulp, sp.count_ops(t[2].expr)))
        kept = False
        for m, err, cand in scored:
            if not _better(m, best):
                break
            if not _renderable(cand.expr):
                continue
            try:
                step = _check(current, cand, seed=len(steps) + 1)
            except (StepCheckError, ValueError) as error:
                refused.append((cand.reason, str(error)))
                continue
            held_m = held.measure(cand.expr) if held_best is not None else None
            if held_m is not None and _worse_held_out(held_m[0], held_best):
                continue  # not an error: measured worse on the held-out sample
            steps.append(step)
            current, best, current_err = cand.expr, m, err
            if held_m is not None:
                held_best = held_m[0]
            kept = True
            break
        if not kept:
            break
    d = Derivation("arrange", "An arrangement found by measuring",
                   f"Arrange {sp.sstr(expr)} for floating point over "
                   + ", ".join(f"{v} in [{lo:g}, {hi:g}]" for v, (lo, hi) in box.items())
                   + f": {before} as typed; {best} arranged.",
                   steps, [Result("f", current, "the arranged expression")])
    return Found(current, expr, variables, dict(box), before, best, d, refused,
                 scorer.points, scorer.true)


def _inside(where: sp.Basic | None, variables: Sequence[sp.Symbol]
            ) -> Callable[[np.ndarray], np.ndarray]:
    """The points (rows) where ``where`` holds, evaluated in float64 (all without one)."""
    if where is None or where is sp.true:
        return lambda points: points
    fn = _lambdify(variables, where)

    def keep(points: np.ndarray) -> np.ndarray:
        if not len(points):
            return points
        with np.errstate(all="ignore"):
            mask = np.broadcast_to(np.asarray(fn(*[points[:, k] for k in range(
                points.shape[1])]), dtype=bool), (len(points),))
        return points[mask]

    return keep


def _nudge(x: float, k: int) -> float:
    """``x`` moved ``k`` floats up (``k > 0``) or down."""
    with np.errstate(over="ignore"):  # the largest float's neighbour: inf, clipped after
        for _ in range(abs(k)):
            x = float(np.nextafter(x, math.inf if k > 0 else -math.inf))
    return x


def arrange(expr: str | sp.Expr, over: Sequence[str] | dict[str, tuple[float, float]], *,
            samples: int = 1200, seed: int = 0) -> Found:
    """Arrange ``expr`` for floating point over the box ``over``, by measuring.

    ``expr`` is SymPy syntax (or an expression in real symbols); ``over`` is a list of
    ``'x in [a, b]'`` (the variables' order is the arguments' order) or a dict from name
    to interval. ``found.module()`` is the spec of the file ``derive arrange -o`` writes.
    Raises ValueError (naming EXPR or --over) on bad input.

    Example:
        >>> found = arrange("sqrt(x + 1) - sqrt(x)", ["x in [0, 1e300]"], samples=300)
        >>> found.expr
        1/(sqrt(x) + sqrt(x + 1))
        >>> found.after.max_ulp <= 4 < found.before.max_ulp
        True
    """
    items = ([parse_over(o) for o in over] if not isinstance(over, dict)
             else [(k, float(lo), float(hi)) for k, (lo, hi) in over.items()])
    names = [name for name, _, _ in items]
    if not names:
        raise ValueError("--over: expected at least one 'NAME in [LOW, HIGH]'")
    if len(set(names)) != len(names):
        raise ValueError(f"--over: expected each variable once, got {', '.join(names)}")
    if isinstance(expr, str):
        parsed = parse_expression(expr, names)
    else:
        by_name = {n: sp.Symbol(n, real=True) for n in names}
        parsed = sp.sympify(expr).xreplace({s: by_name.get(s.name, s)
                                            for s in sp.sympify(expr).free_symbols})
    # what the box says of each variable is assumed (log(N + 1) - log(N) = log1p(1/N)
    # holds for N > 0, not for every real N); the kernel's arguments are plain reals
    plain = {name: sp.Symbol(name, real=True) for name, _, _ in items}
    assumed = {name: _assumed(name, lo, hi) for name, lo, hi in items}
    box = {assumed[name]: (lo, hi) for name, lo, hi in items}
    found = arrange_search(parsed.xreplace({plain[n]: assumed[n] for n in names}), box,
                           samples=samples, seed=seed)
    back = {assumed[n]: plain[n] for n in names}
    found.expr = found.expr.xreplace(back)
    found.original = found.original.xreplace(back)
    found.variables = tuple(plain[n] for n in names)
    found.box = {plain[name]: (lo, hi) for name, lo, hi in items}
    return found


def _assumed(name: str, lo: float, hi: float) -> sp.Symbol:
    """The variable, positive (or nonnegative, negative) where its interval says so."""
    if lo > 0:
        return sp.Symbol(name, positive=True)
    if lo >= 0:
        return sp.Symbol(name, nonnegative=True)
    if hi < 0:
        return sp.Symbol(name, negative=True)
    return sp.Symbol(name, real=True)


def report(found: Found) -> str:
    """What ``derive arrange`` prints: the errors before and after, and the steps.

    Example:
        >>> print(report(arrange("exp(x) - 1", ["x in [-1, 1]"], samples=200)))
        ... # doctest: +ELLIPSIS
        f(x) = exp(x) - 1, over x in [-1, 1]
        as typed: max ... ulp, ...
        arranged: max ... ulp, ...
        step 1: exp(x) - 1 = expm1(x)
        ...
    """
    from .derivation import fill

    box = ", ".join(f"{v} in [{lo:g}, {hi:g}]" for v, (lo, hi) in found.box.items())
    args = ", ".join(v.name for v in found.variables)
    lines = [f"f({args}) = {sp.sstr(found.original)}, over {box}",
             f"as typed: {found.before}", f"arranged: {found.after}"]
    for k, step in enumerate(found.derivation.steps, 1):
        lines.append(f"step {k}: {sp.sstr(step.lhs)} = {sp.sstr(step.rhs)}")
        lines.append("    " + fill(step.reason, lambda key, st=step: sp.sstr(st.notes[int(key)])))
    if not found.derivation.steps:
        lines.append("no rewrite lowered the error: the expression is kept as typed")
    for reason, error in found.refused:
        lines.append(f"refused (its check failed): {reason.split(':')[0]}: {error}")
    lines.append(f"f({args}) = {sp.sstr(found.expr)}")
    return "\n".join(lines)
