"""High-precision references for the Gaussian KL, vectorized: long double, checked by mpmath.

Nothing here imports ``derive``, ``codegen`` or ``generated``. The KL of
``N(mu, sigma^2)`` from ``N(0, 1)`` is ``mu^2/2 + (exp(x) - 1 - x)/2`` with
``x = log sigma^2``; :func:`expm1mx_ld` evaluates ``exp(x) - 1 - x`` in ``numpy.longdouble``
(x86's 64-bit significand: 11 bits beyond float64), by its Taylor series where the
subtraction would cancel. :func:`kl_mp` is the 50-digit mpmath value (in long double) for spot
checks of the long-double reference itself.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np

LD = np.longdouble
#: Whether long double carries more bits than float64 (not on every platform).
HAS_EXTENDED = np.finfo(LD).eps < np.finfo(np.float64).eps / 100


def expm1mx_ld(x: np.ndarray) -> np.ndarray:
    """``exp(x) - 1 - x`` in long double, to about 1e-19 relative."""
    x = np.asarray(x, LD)
    with np.errstate(over="ignore"):  # inf where exp(x) overflows even in long double
        out = np.expm1(x) - x
    small = np.abs(x) < 0.5
    xs = x[small]
    # sum_{k>=2} x^k/k!, 28 terms: the remainder at |x| = 0.5 is below 1e-30 relative
    term, acc = xs * xs / 2, np.zeros_like(xs)
    for k in range(3, 31):
        acc += term
        term = term * xs / k
    out[small] = acc
    return out


def kl_sigma_ld(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The KL at scale ``sigma``, in long double (``sigma`` read exactly)."""
    mu, sigma = np.asarray(mu, LD), np.asarray(sigma, LD)
    x = 2 * np.log(sigma)
    return mu * mu / 2 + expm1mx_ld(x) / 2


def kl_logvar_ld(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """The KL at log-variance ``logvar``, in long double."""
    mu = np.asarray(mu, LD)
    return mu * mu / 2 + expm1mx_ld(np.asarray(logvar, LD)) / 2


def kl_mp(mu: float, sigma: float | None = None, logvar: float | None = None) -> np.longdouble:
    """The KL in 50 digits (give ``sigma`` or ``logvar``), rounded to long double."""
    with mpmath.workdps(50):
        m = mpmath.mpf(mu)
        x = mpmath.log(mpmath.mpf(sigma) ** 2) if logvar is None else mpmath.mpf(logvar)
        value = m**2 / 2 + (mpmath.expm1(x) - x) / 2
        return LD(mpmath.nstr(value, 30, min_fixed=1, max_fixed=0))


def relative_error_in_eps(value: np.ndarray, exact: np.ndarray, dtype: type) -> np.ndarray:
    """``|value - exact| / |exact|`` in units of ``dtype``'s eps (``exact`` nonzero)."""
    value = np.asarray(value, LD)
    return np.asarray(np.abs(value - exact) / np.abs(exact), np.float64) / float(
        np.finfo(dtype).eps)


def ulp_neighbours(points: list[float], dtype: type, k: int = 4) -> np.ndarray:
    """Every point and its ``k`` representable neighbours on each side, in ``dtype``."""
    out = []
    for p in points:
        v = dtype(p)
        lo = hi = v
        out.append(v)
        for _ in range(k):
            lo, hi = np.nextafter(lo, dtype(-math.inf)), np.nextafter(hi, dtype(math.inf))
            out += [lo, hi]
    return np.array(out, dtype)
