"""The baselines: each formula typed in as straightforward NumPy, as a careful person would.

Nothing here imports ``derive``, ``codegen`` or ``generated``. The formulas are those of
PROBLEM.md (and ``tests/reference.py``): no argument checks, no dtype handling, no
common-subexpression elimination beyond the obvious, no numerically careful arrangement.
Like the generated kernels, every function returns new arrays (never an input itself),
so both sides do the same work; where the formula's output *is* an input
(``d_mu = mu``) the baseline copies it.

``SAME_ARRANGEMENT`` adds, for the kernels whose generated formula is rearranged for
floating point (derivation 2.3n), that arrangement typed in with ``numpy.where``: a
comparison at equal accuracy (the straightforward formulas lose digits near sigma = 1).
"""

from __future__ import annotations

import math

import numpy as np

# --- question 1: the coupling block y1 = exp(G(x2)) x1 + F(x2), y2 = exp(s) x2 ------------


def forward(x1, x2, s, F, G):
    return np.exp(G(x2)) * x1 + F(x2), np.exp(s) * x2


def inverse(y1, y2, s, F, G):
    x2 = y2 / np.exp(s)
    return (y1 - F(x2)) / np.exp(G(x2)), x2


def log_det_jacobian(x1, x2, s, F, G):
    return G(x2).sum(-1) + s.sum()


def jacobian(x1, x2, s, F, G, JF, JG):
    """The dense (..., 2n, 2n) Jacobian, block by block (as in tests/reference.py)."""
    n = x1.shape[-1]
    batch = np.broadcast_shapes(x1.shape[:-1], x2.shape[:-1])
    J = np.zeros(batch + (2 * n, 2 * n))
    eG = np.exp(G(x2))
    J[..., :n, :n] = eG[..., :, None] * np.eye(n)
    J[..., :n, n:] = JF(x2) + (x1 * eG)[..., :, None] * JG(x2)
    J[..., n:, n:] = np.diag(np.exp(s))
    return J


# --- question 2: the Gaussian KL, sigma parameterization ---------------------------------


def kl(mu, sigma):
    return 0.5 * (mu**2 + sigma**2 - np.log(sigma**2) - 1)


def kl_grad(mu, sigma):
    return mu.copy(), sigma - 1 / sigma


def kl_grad_reparam(mu, sigma, eps):
    return mu + sigma * eps, mu * eps + sigma * eps**2 - 1 / sigma


def kl_grad_stl(mu, sigma, eps):
    return mu + sigma * eps - eps / sigma, mu * eps + sigma * eps**2 - eps**2 / sigma


# --- question 2, logvar = log sigma^2 parameterization ------------------------------------


def kl_logvar(mu, logvar):
    return 0.5 * (mu**2 + np.exp(logvar) - logvar - 1)


def kl_grad_logvar(mu, logvar):
    return mu.copy(), 0.5 * (np.exp(logvar) - 1)


def kl_grad_reparam_logvar(mu, logvar, eps):
    sigma = np.exp(0.5 * logvar)
    return mu + sigma * eps, 0.5 * (mu * eps * sigma + sigma**2 * eps**2 - 1)


def kl_grad_stl_logvar(mu, logvar, eps):
    sigma = np.exp(0.5 * logvar)
    return mu + sigma * eps - eps / sigma, 0.5 * (mu * eps * sigma + sigma**2 * eps**2 - eps**2)


# --- the same formulas in the numerically careful arrangement of derivation 2.3n ---------
#
# Where the generated kernel evaluates a rearranged formula (accurate near sigma = 1, for
# tiny and huge scales), the fair baseline is the same arrangement typed in as a careful
# person would: numpy.where over the pieces, each piece evaluated everywhere.


def _expm1mx_series(x):
    """exp(x) - 1 - x by its Taylor polynomial to x**15 (accurate for |x| < 0.5)."""
    acc = 1 / 1307674368000
    for k in range(14, 1, -1):  # Horner: coefficients 1/k!, from the highest down
        acc = acc * x + 1 / math.factorial(k)
    return x**2 * acc


def kl_same_arrangement(mu, sigma):
    x = 2 * np.log(sigma)
    f = np.where(np.abs(x) < 0.5, _expm1mx_series(x),
                 np.where(x >= 2, 4 * (sigma / 2) ** 2 - 1 - x, np.expm1(x) - x))
    return 0.5 * f + 2 * (mu / 2) ** 2


def kl_grad_same_arrangement(mu, sigma):
    return mu.copy(), (sigma - 1) * (1 + 1 / sigma)


def kl_grad_stl_same_arrangement(mu, sigma, eps):
    t = (sigma - 1) * (1 + 1 / sigma)
    return mu + t * eps, mu * eps + t * eps**2


def kl_logvar_same_arrangement(mu, logvar):
    f = np.where(np.abs(logvar) < 0.5, _expm1mx_series(logvar),
                 np.where(logvar >= 88, 4 * (np.exp(logvar / 2) / 2) ** 2 - 1 - logvar,
                          np.expm1(logvar) - logvar))
    return 0.5 * f + 2 * (mu / 2) ** 2


def kl_grad_logvar_same_arrangement(mu, logvar):
    return mu.copy(), 0.5 * np.expm1(logvar)


def kl_grad_stl_logvar_same_arrangement(mu, logvar, eps):
    sigma, t = np.exp(0.5 * logvar), np.sinh(0.5 * logvar)
    return mu + 2 * eps * t, eps * sigma * (eps * t + 0.5 * mu)


#: The baseline of each generated kernel, by (module, kernel name).
BASELINES = {
    ("coupling", "forward"): forward,
    ("coupling", "inverse"): inverse,
    ("coupling", "log_det_jacobian"): log_det_jacobian,
    ("coupling", "jacobian"): jacobian,
    ("gaussian_kl", "kl"): kl,
    ("gaussian_kl", "kl_grad"): kl_grad,
    ("gaussian_kl", "kl_grad_reparam"): kl_grad_reparam,
    ("gaussian_kl", "kl_grad_stl"): kl_grad_stl,
    ("gaussian_kl_logvar", "kl"): kl_logvar,
    ("gaussian_kl_logvar", "kl_grad"): kl_grad_logvar,
    ("gaussian_kl_logvar", "kl_grad_reparam"): kl_grad_reparam_logvar,
    ("gaussian_kl_logvar", "kl_grad_stl"): kl_grad_stl_logvar,
}

#: Where the generated kernel evaluates a rearranged formula: the same arrangement by hand.
SAME_ARRANGEMENT = {
    ("gaussian_kl", "kl"): kl_same_arrangement,
    ("gaussian_kl", "kl_grad"): kl_grad_same_arrangement,
    ("gaussian_kl", "kl_grad_stl"): kl_grad_stl_same_arrangement,
    ("gaussian_kl_logvar", "kl"): kl_logvar_same_arrangement,
    ("gaussian_kl_logvar", "kl_grad"): kl_grad_logvar_same_arrangement,
    ("gaussian_kl_logvar", "kl_grad_stl"): kl_grad_stl_logvar_same_arrangement,
}
