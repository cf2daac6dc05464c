"""Hand-written NumPy references, written from PROBLEM.md, independent of generated code.

Nothing here imports ``derive``, ``codegen`` or ``generated``: these are the formulas a
careful person would type, plus finite differences, to test the generated kernels against.
"""

from __future__ import annotations

from dataclasses import dataclass

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


# --- the three blocks, typed in from their equations ------------------------------------

def forward(block: str, x1, x2, s, F, G):
    if block == "coupling":
        return np.exp(G(x2)) * x1 + F(x2), np.exp(s) * x2
    if block == "coupling_affine":
        return np.exp(G(x2)) * x1 + F(x2), x2.copy()
    if block == "coupling_additive":
        return x1 + F(x2), x2.copy()
    raise KeyError(block)


def inverse(block: str, y1, y2, s, F, G):
    x2 = y2 / np.exp(s) if block == "coupling" else y2.copy()
    if block == "coupling_additive":
        return y1 - F(x2), x2
    return (y1 - F(x2)) / np.exp(G(x2)), x2


def jacobian(block: str, x1, x2, s, layers: DenseLayers):
    """The exact Jacobian, assembled entry by entry from the chain rule on paper."""
    n = x1.shape[-1]
    batch = np.broadcast_shapes(x1.shape[:-1], x2.shape[:-1])
    J = np.zeros(batch + (2 * n, 2 * n))
    eG = np.exp(layers.G(x2)) if block != "coupling_additive" else np.ones_like(x2)
    J[..., :n, :n] = eG[..., :, None] * np.eye(n)
    dG = layers.JG(x2) if block != "coupling_additive" else 0.0
    J[..., :n, n:] = layers.JF(x2) + (x1 * eG)[..., :, None] * dG
    scale = np.exp(s) if block == "coupling" else np.ones(n)
    J[..., n:, n:] = np.broadcast_to(np.diag(scale), batch + (n, n))
    return J


def log_det(block: str, x1, x2, s, G):
    if block == "coupling":
        return G(x2).sum(-1) + s.sum()
    if block == "coupling_affine":
        return G(x2).sum(-1)
    return np.zeros(np.broadcast_shapes(x1.shape[:-1], x2.shape[:-1]))


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


def kl_mpmath_logvar(mu, logvar, dps: int = 60):
    """The closed form at sigma^2 = exp(logvar), with 60 significant digits."""
    import mpmath

    with mpmath.workdps(dps):
        m, lv = mpmath.mpf(mu), mpmath.mpf(logvar)
        return (m**2 + mpmath.exp(lv) - lv - 1) / 2
