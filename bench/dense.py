"""Dense measured bounds of the shipped KL kernels (issue 23, item 3).

For each kernel output of ``gaussian_kl``, ``gaussian_kl_logvar``, ``gaussian_kl_pair``
and ``gaussian_kl_pair_logvar`` (float64; ``kl`` also in float32; the sticking-the-landing
estimators at two noise values), and forward's ``y1``, inverse's ``x1`` and the
log-determinant of every shipped coupling block (over G from -800 to 800, at x1 from
1e-300 to 1e300): its largest relative error, in units of
float64's eps, over every piece of derivation 2.3n / 2.3np -- at least 1e5 points per
piece (``--points``), spread evenly in the log variance ratio ``x`` the pieces are cut
by -- and over every boundary between pieces, +-64 ulp. The pair modules are measured at
five prior scales (1e-150 to 1e150, log-variances -300 to 300).

The reference is evaluated in ``numpy.longdouble`` (x86's 64-bit significand) from the
float64 inputs actually passed, in forms that do not cancel (the difference ``sigma_q -
sigma_p`` formed exactly, ``exp(x) - 1 - x`` by its series below 1/2); it is checked against
mpmath (50 digits) on a stratified subsample (``--check`` points per piece), and the
largest disagreement is reported in the same units: it must be below 0.01 eps for the
long-double values to stand for the true ones.

Run alone (writes ``docs/dense.json``; the table goes into ``docs/numerics.md`` by hand
from its output)::

    python -m bench.dense [--points 100000] [--check 40]

or as the ``dense`` part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mpmath
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # pragma: no cover - run as a script
    sys.path.insert(0, str(ROOT))

from derive.coursework.gaussian_kl.natural import (  # noqa: E402
    EXACT_FROM,
    LOGVAR_LIMIT,
    RATIO_RADIUS,
    TINY_RATIO,
)
from derive.coursework.gaussian_kl.stable import (  # noqa: E402
    DIRECT_RADIUS,
    OVERFLOW_RADIUS,
    SERIES_RADIUS,
)
from generated import (  # noqa: E402
    gaussian_kl,
    gaussian_kl_logvar,
    gaussian_kl_pair,
    gaussian_kl_pair_logvar,
)
from tests.kl_reference import expm1mx_ld  # noqa: E402 - the tests' hand-written reference

LD = np.longdouble
EPS = float(np.finfo(np.float64).eps)
#: the largest x = log variance ratio at which the KL (about exp(x)/2) is finite in float64
X_TOP = float(np.log(2.0) + np.log(np.finfo(np.float64).max)) - 1e-6
#: where exp(x) - 1 overflows: d logvar = expm1(x)/2 is finite up to about this
X_GRAD_TOP = 709.78 + float(np.log(2.0)) - 1e-3

#: The pieces of derivation 2.3n by x, and the boundaries between them.
SINGLE_RANGES = ((-1400.0, -2.0), (-2.0, -float(SERIES_RADIUS)),
                 (-float(SERIES_RADIUS), float(SERIES_RADIUS)),
                 (float(SERIES_RADIUS), float(DIRECT_RADIUS)),
                 (float(DIRECT_RADIUS), float(OVERFLOW_RADIUS)), (float(OVERFLOW_RADIUS), X_TOP))
SINGLE_EDGES = (-float(SERIES_RADIUS), float(SERIES_RADIUS), float(DIRECT_RADIUS),
                float(OVERFLOW_RADIUS))
#: 2.3np adds, in x: the exact-difference piece |sigma_q - sigma_p| < sigma_p/2 (x from
#: 2 log(1/2) to 2 log(3/2)), the ratio from two logs below sigma_q/sigma_p = 1e-30, and for
#: the log-variances the ratio from two exact inputs from x = 4 up.
PAIR_EDGES = SINGLE_EDGES + (2 * float(np.log(1 - float(RATIO_RADIUS))),
                             2 * float(np.log(1 + float(RATIO_RADIUS))),
                             2 * float(np.log(float(TINY_RATIO))), float(EXACT_FROM))
PRIOR_SIGMAS = (1e-150, 1e-5, 1.0, 1e5, 1e150)
PRIOR_LOGVARS = (-300.0, -10.0, 0.0, 10.0, 300.0)


def _neighbours_of(points: np.ndarray, k: int) -> np.ndarray:
    """Every point and its ``k`` neighbours in its own type on each side."""
    out, lo, hi = [points], points.copy(), points.copy()
    for _ in range(k):
        lo, hi = np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)
        out += [lo, hi]
    return np.concatenate(out)


def neighbours(points: np.ndarray, k: int = 64) -> np.ndarray:
    """Every point and its ``k`` float64 neighbours on each side."""
    points = np.asarray(points, np.float64)
    out, lo, hi = [points], points.copy(), points.copy()
    for _ in range(k):
        lo, hi = np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)
        out += [lo, hi]
    return np.concatenate(out)


@dataclass(frozen=True)
class Case:
    """One kernel output: how to call it from x (and a prior's scale), its long-double and
    mpmath references, and the bound the documentation states (in eps; None: none)."""

    module: str
    output: str
    call: Callable[[np.ndarray, float], np.ndarray]
    inputs: Callable[[np.ndarray, float], tuple[np.ndarray, ...]]
    ld: Callable[..., np.ndarray]
    mp: Callable[..., mpmath.mpf]
    priors: tuple[float, ...]
    ranges: tuple[tuple[float, float], ...]
    edges: tuple[float, ...]
    bound: float | None
    dtype: type = np.float64  # the inputs' and outputs' type; errors in its eps


def _sigma_inputs(x: np.ndarray, prior: float) -> tuple[np.ndarray, ...]:
    with np.errstate(over="ignore", under="ignore"):
        return (np.exp(x / 2) * prior,)


def _logvar_inputs(x: np.ndarray, prior: float) -> tuple[np.ndarray, ...]:
    return (x + prior,)


def _log1p_ratio_ld(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``log(q/p)`` in long double: from the exact difference ``q - p`` where ``q`` is
    within a factor 1.5 of ``p``, else from the ratio (long double does not underflow)."""
    q, p = np.asarray(q, LD), np.asarray(p, LD)
    near = np.abs(q - p) < p / 2
    with np.errstate(all="ignore"):
        return np.where(near, np.log1p((q - p) / p), np.log(q / p))


def _kl_ld(q: np.ndarray, p: np.ndarray | float) -> np.ndarray:
    """``(exp(x) - 1 - x)/2`` with ``x = log(q**2/p**2)``, in long double: by the series of
    ``x`` where ``|x| < 1/2``, else with ``exp(x)`` as the square of the ratio (rounded
    once: ``exp`` of a rounded ``x`` would amplify its rounding ``x`` times)."""
    q = np.asarray(q, LD)
    p = np.broadcast_to(np.asarray(p, LD), q.shape)
    x = 2 * _log1p_ratio_ld(q, p)
    r = q / p
    with np.errstate(all="ignore"):
        out = np.where(np.abs(x) < 0.5, expm1mx_ld(x), r * r - 1 - x)
    return out / 2


def _mp(v: float) -> mpmath.mpf:
    return mpmath.mpf(float(v))


def _cases() -> list[Case]:
    zero = np.zeros(1)
    top_ranges = tuple((lo, min(hi, X_GRAD_TOP)) for lo, hi in SINGLE_RANGES)
    return [
        Case("gaussian_kl", "kl",
             lambda s, p: gaussian_kl.kl(zero, s), _sigma_inputs,
             lambda s, p: _kl_ld(s, 1.0),
             lambda s, p: (mpmath.expm1(2 * mpmath.log(_mp(s))) - 2 * mpmath.log(_mp(s))) / 2,
             (1.0,), SINGLE_RANGES, SINGLE_EDGES, 4),
        Case("gaussian_kl", "d_sigma",
             lambda s, p: gaussian_kl.kl_grad(zero, s)[1], _sigma_inputs,
             lambda s, p: ((np.asarray(s, LD) - 1) * (np.asarray(s, LD) + 1)
                           / np.asarray(s, LD)),
             lambda s, p: _mp(s) - 1 / _mp(s),
             (1.0,), SINGLE_RANGES, SINGLE_EDGES, 2),
        Case("gaussian_kl_logvar", "kl",
             lambda v, p: gaussian_kl_logvar.kl(zero, v), _logvar_inputs,
             lambda v, p: expm1mx_ld(v) / 2,
             lambda v, p: (mpmath.expm1(_mp(v)) - _mp(v)) / 2,
             (0.0,), SINGLE_RANGES, SINGLE_EDGES, 3),
        Case("gaussian_kl_logvar", "d_logvar",
             lambda v, p: gaussian_kl_logvar.kl_grad(zero, v)[1], _logvar_inputs,
             lambda v, p: np.expm1(np.asarray(v, LD)) / 2,
             lambda v, p: mpmath.expm1(_mp(v)) / 2,
             (0.0,), top_ranges, SINGLE_EDGES, 2),
        Case("gaussian_kl_pair", "kl",
             lambda s, p: gaussian_kl_pair.kl(zero, s, zero, np.full(1, p)), _sigma_inputs,
             lambda s, p: _kl_ld(s, p),
             lambda s, p: (lambda x: (mpmath.expm1(x) - x) / 2)(
                 2 * mpmath.log(_mp(s) / _mp(p))),
             PRIOR_SIGMAS, SINGLE_RANGES, PAIR_EDGES, 5),
        Case("gaussian_kl_pair", "d_sigma_q",
             lambda s, p: gaussian_kl_pair.kl_grad(zero, s, zero, np.full(1, p))[1],
             _sigma_inputs,
             lambda s, p: ((np.asarray(s, LD) - LD(p)) * (np.asarray(s, LD) + LD(p))
                           / (np.asarray(s, LD) * LD(p) * LD(p))),
             lambda s, p: _mp(s) / _mp(p) ** 2 - 1 / _mp(s),
             PRIOR_SIGMAS, SINGLE_RANGES, PAIR_EDGES, 3),
        Case("gaussian_kl_pair", "d_sigma_p",
             lambda s, p: gaussian_kl_pair.kl_grad(zero, s, zero, np.full(1, p))[3],
             _sigma_inputs,
             lambda s, p: -((np.asarray(s, LD) - LD(p)) * (np.asarray(s, LD) + LD(p))
                            / (LD(p) * LD(p) * LD(p))),
             lambda s, p: -(_mp(s) ** 2 / _mp(p) ** 2 - 1) / _mp(p),
             PRIOR_SIGMAS, SINGLE_RANGES, PAIR_EDGES, 4),
        Case("gaussian_kl_pair_logvar", "kl",
             lambda v, p: gaussian_kl_pair_logvar.kl(zero, v, zero, np.full(1, p)),
             _logvar_inputs,
             lambda v, p: expm1mx_ld(np.asarray(v, LD) - LD(p)) / 2,
             lambda v, p: (lambda x: (mpmath.expm1(x) - x) / 2)(_mp(v) - _mp(p)),
             PRIOR_LOGVARS, SINGLE_RANGES, PAIR_EDGES + (float(LOGVAR_LIMIT),
                                                         -float(LOGVAR_LIMIT)), 5),
        Case("gaussian_kl_pair_logvar", "d_logvar_q",
             lambda v, p: gaussian_kl_pair_logvar.kl_grad(zero, v, zero, np.full(1, p))[1],
             _logvar_inputs,
             lambda v, p: np.expm1(np.asarray(v, LD) - LD(p)) / 2,
             lambda v, p: mpmath.expm1(_mp(v) - _mp(p)) / 2,
             PRIOR_LOGVARS, top_ranges, PAIR_EDGES, 2),
    ]


#: float32: x within the type's range (sigma from about 1e-28 to 1e19, the KL to its overflow)
F32_X = (-130.0, 89.0)
PRIOR_SIGMAS_32 = (1e-15, 1e-5, 1.0, 1e5, 1e15)
PRIOR_LOGVARS_32 = (-30.0, -10.0, 0.0, 10.0, 30.0)
#: The noise values the estimators are measured at (mu = 0: no cancellation with the mean).
NOISE = (0.7, -1.3)


def _clip(ranges: tuple[tuple[float, float], ...], lo: float, hi: float
          ) -> tuple[tuple[float, float], ...]:
    return tuple((max(a, lo), min(b, hi)) for a, b in ranges if min(b, hi) > max(a, lo))


def _float32_cases() -> list[Case]:
    """The KL kernels' ``kl`` in float32 (inputs float32, outputs float32, error in
    float32's eps against the long-double reference of the float32 inputs)."""
    f = np.float32
    zero = np.zeros(1, f)
    ranges = _clip(SINGLE_RANGES, *F32_X)
    edges = tuple(e for e in SINGLE_EDGES if F32_X[0] < e < F32_X[1])
    pair_edges = tuple(e for e in PAIR_EDGES if F32_X[0] < e < F32_X[1])
    return [
        Case("gaussian_kl", "kl", lambda s, p: gaussian_kl.kl(zero, s), _sigma_inputs,
             lambda s, p: _kl_ld(s, 1.0), lambda s, p: (mpmath.expm1(2 * mpmath.log(_mp(s)))
                                                        - 2 * mpmath.log(_mp(s))) / 2,
             (1.0,), ranges, edges, 10, f),
        Case("gaussian_kl_logvar", "kl", lambda v, p: gaussian_kl_logvar.kl(zero, v),
             _logvar_inputs, lambda v, p: expm1mx_ld(np.asarray(v, LD)) / 2,
             lambda v, p: (mpmath.expm1(_mp(v)) - _mp(v)) / 2, (0.0,), ranges, edges, 4, f),
        Case("gaussian_kl_pair", "kl",
             lambda s, p: gaussian_kl_pair.kl(zero, s, zero, np.full(1, p, f)),
             lambda x, p: (np.asarray(_sigma_inputs(x, p)[0], f),),
             lambda s, p: _kl_ld(s, LD(float(f(p)))),
             lambda s, p: (lambda x: (mpmath.expm1(x) - x) / 2)(
                 2 * mpmath.log(_mp(s) / _mp(float(f(p))))),
             PRIOR_SIGMAS_32, ranges, pair_edges, 5, f),
        Case("gaussian_kl_pair_logvar", "kl",
             lambda v, p: gaussian_kl_pair_logvar.kl(zero, v, zero, np.full(1, p, f)),
             _logvar_inputs,
             lambda v, p: expm1mx_ld(np.asarray(v, LD) - LD(p)) / 2,
             lambda v, p: (lambda x: (mpmath.expm1(x) - x) / 2)(_mp(v) - _mp(p)),
             PRIOR_LOGVARS_32, ranges, pair_edges, 7, f),
    ]


def _estimator_cases() -> list[Case]:
    """The sticking-the-landing estimators at ``mu = 0`` and a fixed noise (the ``priors``
    field holds the noise value), float64."""
    zero = np.zeros(1)

    def stl(module, k):
        return lambda a, e: module.kl_grad_stl(zero, a, np.full(1, e))[k]

    def s_ld(s):
        s = np.asarray(s, LD)
        return (s - 1) * (s + 1) / s

    return [
        Case("gaussian_kl", "stl d_mu", stl(gaussian_kl, 0), _sigma_inputs,
             lambda s, e: LD(e) * s_ld(s), lambda s, e: _mp(e) * (_mp(s) - 1 / _mp(s)),
             NOISE, SINGLE_RANGES, SINGLE_EDGES, 3),
        Case("gaussian_kl", "stl d_sigma", stl(gaussian_kl, 1), _sigma_inputs,
             lambda s, e: LD(e) * LD(e) * s_ld(s),
             lambda s, e: _mp(e) ** 2 * (_mp(s) - 1 / _mp(s)),
             NOISE, SINGLE_RANGES, SINGLE_EDGES, 3),
        Case("gaussian_kl_logvar", "stl d_mu", stl(gaussian_kl_logvar, 0), _logvar_inputs,
             lambda v, e: 2 * LD(e) * np.sinh(np.asarray(v, LD) / 2),
             lambda v, e: 2 * _mp(e) * mpmath.sinh(_mp(v) / 2),
             NOISE, SINGLE_RANGES, SINGLE_EDGES, 3),
        Case("gaussian_kl_logvar", "stl d_logvar", stl(gaussian_kl_logvar, 1), _logvar_inputs,
             lambda v, e: LD(e) * LD(e) * np.expm1(np.asarray(v, LD)) / 2,
             lambda v, e: _mp(e) ** 2 * mpmath.expm1(_mp(v)) / 2,
             NOISE, tuple((lo, min(hi, X_GRAD_TOP)) for lo, hi in SINGLE_RANGES),
             SINGLE_EDGES, 3),
    ]


def _g_inputs(x: np.ndarray, x1: float) -> tuple[np.ndarray, ...]:
    """The coupling kernels: the grid is G itself (``x1`` is the ``priors`` field)."""
    return (np.asarray(x, np.float64),)


#: x1 (or y1) values the coupling kernels are measured at, for every G of the grid.
X1S = (1e-300, 1e-100, 1e-8, 1.0, 1e8, 1e100, 1e300)
#: G's grid: where exp(G) over- and underflows in float64, +-64 ulp around each.
G_RANGE = (-800.0, 800.0)
G_EDGES = (float(np.log(np.finfo(np.float64).max)), float(np.log(np.finfo(np.float64).tiny)),
           -float(np.log(np.finfo(np.float64).max)), 0.0)


def _coupling_call(module, kernel: str, k: int, with_s: bool = True):
    """``module.kernel`` on a column of G values (batch N, one component), x1 (or y1) the
    same everywhere, F = 0, x2 = 0, s = 0; output ``k`` raveled."""
    def call(g: np.ndarray, x1: float) -> np.ndarray:
        g = np.asarray(g, np.float64)[:, None]
        a, x2 = np.full(g.shape, x1), np.zeros(g.shape)
        args = (a, x2, np.zeros(1), lambda v: np.zeros_like(v), lambda v: g)
        out = getattr(module, kernel)(*args)
        out = out[k] if isinstance(out, tuple) else out
        return np.asarray(out).reshape(-1)
    return call


#: pi in long double (float64's pi is 1.2e-16 off: 0.35 eps in the reference)
PI_LD = 4 * np.arctan(LD(1))


def _log1p_exp_ld(u: np.ndarray) -> np.ndarray:
    """``log(1 + exp(u))`` in long double without overflow or cancellation."""
    with np.errstate(over="ignore"):
        return np.where(u > 0, u + np.log1p(np.exp(-u)), np.log1p(np.exp(u)))


def _coupling_cases() -> list[Case]:
    """forward's y1, inverse's x1 and the log-determinant of each shipped block, F = 0 (no
    cancellation with the shift), over G in [-800, 800] (1e5 points a piece) and +-64 ulp
    around where exp(G) over- and underflows and around each piece's boundary."""
    from generated import coupling, coupling_affine, coupling_glow, coupling_soft_clamp

    def ld(f):
        return lambda g, x1: f(np.asarray(g, LD), LD(x1))

    def sig(g):  # sigmoid(G + 2) in long double, without overflow
        with np.errstate(over="ignore"):
            return 1 / (1 + np.exp(-(g + 2)))

    def mp_sig(g):
        return 1 / (1 + mpmath.exp(-(_mp(g) + 2)))

    def clamp(g):
        return np.exp(4 * np.arctan(g / 2) / PI_LD)

    def mp_clamp(g):
        return mpmath.exp(4 * mpmath.atan(_mp(g) / 2) / mpmath.pi)

    one = ((G_RANGE,), G_EDGES)
    glow = (((G_RANGE[0], -2.0), (-2.0, G_RANGE[1])), G_EDGES + (-2.0,))
    cases = []
    for module, with_s in ((coupling, True), (coupling_affine, False)):
        name = module.__name__.split(".")[-1]
        cases += [
            Case(name, "forward y1", _coupling_call(module, "forward", 0, with_s), _g_inputs,
                 ld(lambda g, x1: x1 * np.exp(g)), lambda g, x1: _mp(x1) * mpmath.exp(_mp(g)),
                 X1S, *one, 2),
            Case(name, "inverse x1", _coupling_call(module, "inverse", 0, with_s), _g_inputs,
                 ld(lambda g, x1: x1 * np.exp(-g)), lambda g, x1: _mp(x1) * mpmath.exp(-_mp(g)),
                 X1S, *one, 2),
            Case(name, "log_det", _coupling_call(module, "log_det_jacobian", 0, with_s),
                 _g_inputs, ld(lambda g, x1: g), lambda g, x1: _mp(g), (1.0,), *one, 1),
        ]
    cases += [
        Case("coupling_glow", "forward y1", _coupling_call(coupling_glow, "forward", 0, False),
             _g_inputs, ld(lambda g, x1: x1 * sig(g)), lambda g, x1: _mp(x1) * mp_sig(g),
             X1S, *glow, 3),
        Case("coupling_glow", "inverse x1", _coupling_call(coupling_glow, "inverse", 0, False),
             _g_inputs, ld(lambda g, x1: x1 / sig(g)), lambda g, x1: _mp(x1) / mp_sig(g),
             X1S, *glow, 3),
        Case("coupling_glow", "log_det",
             _coupling_call(coupling_glow, "log_det_jacobian", 0, False), _g_inputs,
             ld(lambda g, x1: -_log1p_exp_ld(-(g + 2))),
             lambda g, x1: -mpmath.log1p(mpmath.exp(-(_mp(g) + 2))),
             (1.0,), *glow, 2),
        Case("coupling_soft_clamp", "forward y1",
             _coupling_call(coupling_soft_clamp, "forward", 0, False), _g_inputs,
             ld(lambda g, x1: x1 * clamp(g)), lambda g, x1: _mp(x1) * mp_clamp(g),
             X1S, *one, 3),
        Case("coupling_soft_clamp", "inverse x1",
             _coupling_call(coupling_soft_clamp, "inverse", 0, False), _g_inputs,
             ld(lambda g, x1: x1 / clamp(g)), lambda g, x1: _mp(x1) / mp_clamp(g),
             X1S, *one, 3),
        Case("coupling_soft_clamp", "log_det",
             _coupling_call(coupling_soft_clamp, "log_det_jacobian", 0, False), _g_inputs,
             ld(lambda g, x1: 4 * np.arctan(g / 2) / PI_LD),
             lambda g, x1: 4 * mpmath.atan(_mp(g) / 2) / mpmath.pi, (1.0,), *one, 2),
    ]
    return cases


def all_cases() -> list[Case]:
    """Every measured output: the KL kernels in float64, in float32, the estimators, and
    the coupling kernels."""
    return _cases() + _float32_cases() + _estimator_cases() + _coupling_cases()


def _rel_eps(got: np.ndarray, ref: np.ndarray, eps: float = EPS) -> np.ndarray:
    """``|got - ref|/|ref|`` in ``eps``; 0 where both are 0, inf where only ``ref`` is."""
    got = np.asarray(got, LD)
    with np.errstate(all="ignore"):
        err = np.asarray(np.abs(got - ref) / np.abs(ref), np.float64) / eps
    err = np.where(ref == 0, np.where(got == 0, 0.0, np.inf), err)
    return np.where(np.isnan(got) & ~np.isnan(ref), np.inf, err)


def measure_case(case: Case, points: int, check: int, rng: np.random.Generator
                 ) -> dict[str, object]:
    """The case's largest error per prior scale, piece by piece and at the boundaries."""
    worst, worst_at, checked, n_points, mp_gap, mp_at = 0.0, None, 0, 0, 0.0, None
    per_piece: list[float] = []
    info = np.finfo(case.dtype)
    eps = float(info.eps)
    # the reference where it is finite and normal, 1e8 inside float64's range (float32's:
    # 16 below its largest, to its overflow edge at x = 89): beyond, the kernel's range
    # ends (stated separately in docs/numerics.md)
    top = float(info.max) / (1e8 if case.dtype is np.float64 else 16)
    bottom = float(info.tiny) * 1e8
    for prior in case.priors:
        xs = [np.linspace(lo, hi, points) for lo, hi in case.ranges]
        xs.append(neighbours(np.array(case.edges), 64))
        for k, x in enumerate(xs):
            (arg,) = case.inputs(x, prior)
            true_x = arg if case.inputs in (_logvar_inputs, _g_inputs) else None
            with np.errstate(all="ignore"):
                if case.dtype is not np.float64:  # the inputs rounded to the type, then
                    # +-64 of its own ulp around each boundary
                    arg = arg.astype(case.dtype)
                    if k == len(case.ranges):
                        arg = _neighbours_of(arg[:len(case.edges)], 64)
                    arg = arg[np.isfinite(arg)]
                ref = case.ld(arg, prior)
                ref64 = np.asarray(ref, np.float64)
            keep = (np.isfinite(ref64) & (np.abs(ref64) < top) & (np.abs(ref64) > bottom)
                    & np.isfinite(arg))
            if true_x is None:
                keep &= (arg > bottom) & (arg < top)
            arg, ref = arg[keep], ref[keep]
            if not arg.size:
                continue
            with np.errstate(all="ignore"):
                out = case.call(arg, prior)
                assert np.asarray(out).dtype == case.dtype, (case, np.asarray(out).dtype)
                got = np.asarray(out, np.float64)
            err = _rel_eps(got, ref, eps)
            n_points += arg.size
            i = int(np.argmax(err))
            if k < len(case.ranges):
                per_piece.append(float(err[i]))
            if err[i] > worst:
                worst, worst_at = float(err[i]), (float(arg[i]), prior)
            # the long-double reference against mpmath on a stratified subsample (and at
            # this piece's worst point)
            sub = np.unique(np.concatenate([rng.choice(arg.size, min(check, arg.size),
                                                       replace=False), [i]]))
            with mpmath.workdps(50):
                for j in sub:
                    mp_value = case.mp(arg[j], prior)
                    if mp_value == 0:
                        continue
                    ld_value = mpmath.mpf(np.format_float_scientific(ref[j], unique=True))
                    gap = abs((ld_value - mp_value) / mp_value) / eps
                    if gap > mp_gap:
                        mp_gap, mp_at = float(gap), (float(arg[j]), prior)
                    checked += 1
    return {"module": case.module, "output": case.output, "dtype": np.dtype(case.dtype).name,
            "points": n_points,
            "pieces": len(case.ranges), "priors": list(case.priors), "max_eps": worst,
            "at": worst_at, "bound": case.bound, "mp_checked": checked,
            "ld_vs_mp_eps": mp_gap, "ld_vs_mp_at": mp_at}


def run(points: int = 100_000, check: int = 40, log: Callable[[str], None] = print,
        modules: tuple[str, ...] | None = None) -> dict[str, object]:
    """Every case's row."""
    rng = np.random.default_rng(0)
    rows = []
    for case in all_cases():
        if modules is not None and case.module not in modules:
            continue
        start = time.perf_counter()
        row = measure_case(case, points, check, rng)
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        log(f"  {row['module']:24} {row['output']:11} max {row['max_eps']:.3g} eps at "
            f"{row['at']} over {row['points']} points (long double vs mpmath "
            f"{row['ld_vs_mp_eps']:.2g} eps at {row['ld_vs_mp_at']} on {row['mp_checked']}; "
            f"{row['seconds']:.1f} s)")
    return {"points_per_piece": points, "rows": rows}


def markdown(result: dict[str, object]) -> list[str]:
    """The table, as Markdown lines."""
    out = ["| module | output | type | points | max error (eps) | at (input, prior or noise) "
           "| stated bound | long double vs mpmath (eps) |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        at = r["at"]
        out.append(f"| `{r['module']}` | `{r['output']}` | {r.get('dtype', 'float64')} | "
                   f"{r['points']:,} | "
                   f"{r['max_eps']:.3g} | {f'{at[0]:.6g}, {at[1]:g}' if at else '—'} | "
                   f"{r['bound'] if r['bound'] is not None else '—'} | "
                   f"{r['ld_vs_mp_eps']:.1e} ({r['mp_checked']} points) |")
    return out


def section(result: dict[str, object] | None) -> list[str]:
    """The benchmark report's section (nothing where the part did not run)."""
    if not result:
        return []
    return (["## Dense measured bounds of the KL kernels (issue 23)", "",
             f"{result['points_per_piece']:,} points per piece and every boundary +-64 ulp, "
             "float64, relative error in eps against a long-double reference checked by "
             "mpmath (`python -m bench.dense`).", ""] + markdown(result) + [""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dense", description=__doc__.split("\n")[0])
    p.add_argument("--points", type=int, default=100_000, help="points per piece (1e5)")
    p.add_argument("--check", type=int, default=40, help="mpmath points per piece")
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    args = p.parse_args(argv)
    result = run(args.points, args.check)
    (args.out / "dense.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print("\n".join(markdown(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
