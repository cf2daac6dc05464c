"""Hand-written NumPy references, written from PROBLEM.md, independent of generated code.

Nothing here imports ``codegen`` or ``generated``: these are the formulas a careful person
would type, plus finite differences, to test the generated kernels against. The one import
of ``derive`` is :mod:`derive.selftest`'s reference from a block's own equations (SymPy
differentiates the two equations themselves, mpmath evaluates them: no derivation, no
generated code), which ``derive test`` runs on any material; :func:`equation_reference`
adapts it to the tests' positional ``(x1, x2, s, F, G)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np


@dataclass(frozen=True)
class DenseLayers:
    """Non-element-wise F, G: small dense tanh / sin layers, with exact Jacobians."""

    W: np.ndarray
    b: np.ndarray
    V: np.ndarray
    c: np.ndarray
    g_scale: float = 0.5

    @classmethod
    def random(cls, n: int, seed: int = 0) -> DenseLayers:
        rng = np.random.default_rng(seed)
        return cls(rng.normal(size=(n, n)) / np.sqrt(n), rng.normal(size=n),
                   rng.normal(size=(n, n)) / np.sqrt(n), rng.normal(size=n))

    def F(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x @ self.W.T.astype(x.dtype) + self.b.astype(x.dtype))

    def G(self, x: np.ndarray) -> np.ndarray:
        return self.g_scale * np.sin(x @ self.V.T.astype(x.dtype) + self.c.astype(x.dtype))

    def JF(self, x: np.ndarray) -> np.ndarray:
        t = np.tanh(x @ self.W.T + self.b)
        return (1 - t**2)[..., :, None] * self.W

    def JG(self, x: np.ndarray) -> np.ndarray:
        return (self.g_scale * np.cos(x @ self.V.T + self.c))[..., :, None] * self.V


# --- the blocks, typed in from their equations -----------------------------------------
#
# Every block is y1 = a(G(x2)) * x1 + F(x2), y2 = b(s) * x2: a scale a(G) (and its
# derivative) for the first half, a scale b(s) for the second. Each is typed in twice: in
# NumPy as the formula reads, and in mpmath (for the accuracy tests at extreme G).


@dataclass(frozen=True)
class BlockReference:
    """A block's scales by hand: ``a(G)``, ``a'(G)`` and ``b(s)`` in NumPy, ``a`` in mpmath."""

    scale: Callable[[np.ndarray], np.ndarray]
    dscale: Callable[[np.ndarray], np.ndarray]
    scale_mp: Callable[[Any], Any]
    s_scale: Callable[[np.ndarray], np.ndarray] = np.ones_like
    s_log_scale_mp: Callable[[Any], Any] = lambda s: 0  # noqa: E731


def _sigmoid(u: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-u))


def _clamp_scale_mp(g: Any) -> Any:
    return mpmath.exp(2 * 2 / mpmath.pi * mpmath.atan(g / 2))


BLOCK_REFERENCES: dict[str, BlockReference] = {
    "coupling": BlockReference(np.exp, np.exp, mpmath.exp,
                               np.exp, lambda s: s),
    "coupling_affine": BlockReference(np.exp, np.exp, mpmath.exp),
    "coupling_additive": BlockReference(np.ones_like, np.zeros_like, lambda g: 1),
    "coupling_glow": BlockReference(
        lambda g: _sigmoid(g + 2), lambda g: _sigmoid(g + 2) * (1 - _sigmoid(g + 2)),
        lambda g: 1 / (1 + mpmath.exp(-(g + 2)))),
    "coupling_soft_clamp": BlockReference(
        lambda g: np.exp(4 / np.pi * np.arctan(g / 2)),
        lambda g: np.exp(4 / np.pi * np.arctan(g / 2)) * 2 / np.pi / (1 + g**2 / 4),
        _clamp_scale_mp),
}


def block_reference(block: str) -> BlockReference:
    """The hand-written reference of ``block``; a block without one is refused."""
    try:
        return BLOCK_REFERENCES[block]
    except KeyError:
        raise KeyError(f"no hand-written reference for block {block!r}: add its scales to "
                       "tests.reference.BLOCK_REFERENCES") from None


@dataclass(frozen=True)
class EquationReference:
    """A block's reference from its own two equations, in mpmath: no generated code.

    For a block nobody typed a reference for: ``y1_i`` and ``y2_i`` (SymPy expressions in
    the ``i``-th components of ``x1, x2, s, F, G``) and their partial derivatives, taken by
    SymPy from the equations themselves (not from any derivation) and evaluated in mpmath
    with :func:`digits_for` digits (:func:`derive.selftest.equation_reference`). Each
    function takes one component's ``(x1, x2, s, F, G)``.
    """

    y1: Callable[..., Any]
    y2: Callable[..., Any]
    partials: dict[str, Callable[..., Any]]

    def log_det(self, x1, x2, s, f, g) -> Any:
        """``log|det dy/dx|`` with ``G`` and ``F`` constant: the sum over components of
        ``log|dy1_i/dx1_i| + log|dy2_i/dx2_i|`` (the Jacobian is block triangular)."""
        with mpmath.workdps(digits_for(g)):
            total = mpmath.mpf(0)
            for a, b, c in zip(np.ravel(x1), np.ravel(x2), np.ravel(s), strict=True):
                args = (mpmath.mpf(float(a)), mpmath.mpf(float(b)), mpmath.mpf(float(c)),
                        mpmath.mpf(f), mpmath.mpf(g))
                total += (mpmath.log(abs(self.partials["y1_x1"](*args)))
                          + mpmath.log(abs(self.partials["y2_x2"](*args))))
            return total


def digits_for(*values: float) -> int:
    """mpmath digits enough for a formula as written at these arguments: an expression in
    ``exp(u)`` may cancel about ``|u| / ln 10`` digits (``exp(u)/(exp(u) + 1)`` differentiated
    is a difference of two numbers near 1), so ``60 + max |u|`` keeps 40 or more
    (:func:`derive.selftest.digits_for`)."""
    from derive.selftest import digits_for as digits

    return digits(*values)


_VOCABULARY = ("x1", "x2", "s", "F", "G")


def equation_reference(y1: Any, y2: Any) -> EquationReference:
    """The :class:`EquationReference` of the block ``y1_i = y1, y2_i = y2``.

    Example:
        >>> import sympy as sp
        >>> x, f, g = (sp.IndexedBase(n)[sp.Symbol("i")] for n in ("x1", "F", "G"))
        >>> ref = equation_reference(sp.exp(g) * x + f, sp.IndexedBase("x2")[sp.Symbol("i")])
        >>> float(ref.log_det([1.0], [0.0], [0.0], 0.0, 2.0))
        2.0
    """
    from derive.selftest import equation_reference as from_equations

    ref = from_equations(y1, y2)

    def positional(what: str) -> Callable[..., Any]:
        names = ref.names

        def call(*args: Any) -> Any:  # (x1, x2, s, F, G); a block's own parameters 0
            given = dict(zip(_VOCABULARY, args, strict=True))
            return ref.function(what)(*(given.get(name, mpmath.mpf(0)) for name in names))
        return call

    partials = {f"{out}_{wrt}": positional(f"{out}_{wrt}")
                for out in ("y1", "y2") for wrt in _VOCABULARY}
    return EquationReference(positional("y1"), positional("y2"), partials)


def forward(block: str, x1, x2, s, F, G):
    ref = block_reference(block)
    return ref.scale(G(x2)) * x1 + F(x2), ref.s_scale(s) * x2


def inverse(block: str, y1, y2, s, F, G):
    ref = block_reference(block)
    x2 = y2 / ref.s_scale(s)
    return (y1 - F(x2)) / ref.scale(G(x2)), x2


def jacobian(block: str, x1, x2, s, layers: DenseLayers):
    """The exact Jacobian, assembled entry by entry from the chain rule on paper."""
    ref = block_reference(block)
    n = x1.shape[-1]
    batch = np.broadcast_shapes(x1.shape[:-1], x2.shape[:-1])
    J = np.zeros(batch + (2 * n, 2 * n))
    g = layers.G(x2)
    J[..., :n, :n] = ref.scale(g)[..., :, None] * np.eye(n)
    J[..., :n, n:] = layers.JF(x2) + (x1 * ref.dscale(g))[..., :, None] * layers.JG(x2)
    J[..., n:, n:] = np.broadcast_to(np.diag(ref.s_scale(s)), batch + (n, n))
    return J


def log_det(block: str, x1, x2, s, G):
    ref = block_reference(block)
    batch = np.broadcast_shapes(x1.shape[:-1], x2.shape[:-1])
    return np.broadcast_to(np.log(ref.scale(G(x2))).sum(-1) + np.log(ref.s_scale(s)).sum(),
                           batch)


def log_det_mpmath(block: str, g: float, s, n: int, dps: int = 50):
    """log|det| with every component of G equal to ``g``, in mpmath (``dps`` digits)."""
    ref = block_reference(block)
    with mpmath.workdps(dps):
        return n * mpmath.log(ref.scale_mp(mpmath.mpf(g))) + sum(
            ref.s_log_scale_mp(mpmath.mpf(float(v))) for v in s)


def finite_difference_jacobian(f, x1, x2, h: float = 1e-6) -> np.ndarray:
    """Central differences of ``f(x1, x2) -> (y1, y2)`` over x = (x1, x2), batched."""
    x = np.concatenate(np.broadcast_arrays(x1, x2), axis=-1)
    n = x1.shape[-1]
    cols = []
    for k in range(2 * n):
        e = np.zeros(2 * n)
        e[k] = h
        yp = np.concatenate(f((x + e)[..., :n], (x + e)[..., n:]), axis=-1)
        ym = np.concatenate(f((x - e)[..., :n], (x - e)[..., n:]), axis=-1)
        cols.append((yp - ym) / (2 * h))
    return np.stack(cols, axis=-1)


# --- question 2: the Gaussian KL, by quadrature and in high precision -------------------

def kl_quadrature(mu: float, sigma: float) -> float:
    """KL(N(mu, sigma^2) || N(0, 1)) as the integral of q log(q / p), by scipy.integrate.quad."""
    from scipy import integrate, stats

    q = stats.norm(mu, sigma)

    def integrand(z: float) -> float:
        return q.pdf(z) * (q.logpdf(z) - stats.norm.logpdf(z))

    lo, hi = mu - 40 * sigma, mu + 40 * sigma
    value, _ = integrate.quad(integrand, lo, hi, points=[mu], limit=200, epsabs=1e-13,
                              epsrel=1e-12)
    return value


def kl_mpmath(mu, sigma, dps: int = 60):
    """The closed form of PROBLEM.md evaluated with 60 significant digits."""
    import mpmath

    with mpmath.workdps(dps):
        m, s = mpmath.mpf(mu), mpmath.mpf(sigma)
        return (m**2 + s**2 - mpmath.log(s**2) - 1) / 2


def kl_grad_hand(mu, sigma):
    """PROBLEM.md's gradient of the closed form: (mu, sigma - 1/sigma)."""
    return mu, sigma - 1 / sigma


def reparam_hand(mu, sigma, eps):
    """PROBLEM.md 2.4, typed in: (mu + sigma eps, mu eps + sigma eps^2 - 1/sigma)."""
    return mu + sigma * eps, mu * eps + sigma * eps**2 - 1 / sigma


def stl_hand(mu, sigma, eps):
    """The sticking-the-landing estimate: 2.4's without the score of log q, by hand.

    With z = mu + sigma eps, d/dz of log q(z) - log p(z) is z - eps / sigma, and dz/dmu = 1,
    dz/dsigma = eps: (mu + sigma eps - eps/sigma, (mu + sigma eps - eps/sigma) eps).
    """
    d_z = mu + sigma * eps - eps / sigma
    return d_z, d_z * eps


def kl_mpmath_logvar(mu, logvar, dps: int = 60):
    """The closed form at sigma^2 = exp(logvar), with 60 significant digits."""
    import mpmath

    with mpmath.workdps(dps):
        m, lv = mpmath.mpf(mu), mpmath.mpf(logvar)
        return (m**2 + mpmath.exp(lv) - lv - 1) / 2
