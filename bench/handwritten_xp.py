"""The baselines of comparison 5, typed in per library (PyTorch eager, ``jax.numpy``).

Like :mod:`bench.handwritten` (its NumPy twin), nothing here imports ``derive``,
``codegen`` or ``generated``: each formula is typed in as a careful person would, in the
library's own namespace ``xp`` (``torch`` or ``jax.numpy``), with no argument checks.
Every function returns new arrays where the library's arrays are mutable (``copy``:
``torch.clone``; JAX arrays are immutable and returned as they are).

Three kinds of baseline:

- ``naive_*``: the straightforward formulas (those of PROBLEM.md), which lose digits near
  sigma = 1 and for tiny and huge scales; F and G get the caller's array;
- ``promise_*``: the coupling formulas with the generated kernels' promise that F and G
  never get the caller's array nor each other's: one clone of the argument per callable
  (:data:`SAME_PROMISE`, timed in torch eager);
- ``same_*``: the arrangement of derivation 2.3n that the generated KL kernels evaluate,
  typed in: ``xp.where`` over the pieces, each piece evaluated everywhere (the form that
  works under ``jax.jit`` and in torch eager alike), and for torch eager also
  :func:`kl_mask_patch_torch` / :func:`kl_logvar_mask_patch_torch`, the general piece
  evaluated everywhere and the others patched in by boolean-mask indexing where they hold
  (what a careful engineer would write in eager PyTorch: each piece costs only where it
  is used).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["CASES", "SAME_PROMISE", "MASK_PATCH_TORCH"]


# --- the straightforward formulas ----------------------------------------------------------


def naive_log_det_jacobian(xp, copy, x1, x2, s, F, G):
    return xp.sum(G(x2), axis=-1) + xp.sum(s)


def naive_forward(xp, copy, x1, x2, s, F, G):
    return xp.exp(G(x2)) * x1 + F(x2), xp.exp(s) * x2


def naive_inverse(xp, copy, y1, y2, s, F, G):
    x2 = y2 * xp.exp(-s)
    return (y1 - F(x2)) * xp.exp(-G(x2)), x2


def naive_forward_and_log_det(xp, copy, x1, x2, s, F, G):
    g = G(x2)
    return xp.exp(g) * x1 + F(x2), xp.exp(s) * x2, xp.sum(g, axis=-1) + xp.sum(s)


# --- the same formulas, with the generated kernels' promise about F and G -----------------
#
# The generated kernels promise that F and G never get the caller's array, and that a
# write by one callable reaches neither the caller nor the other callable nor the formula
# (in torch: one clone per callable, issue 25). A careful engineer making that promise
# clones the argument for each callable, inverse's own x2 included.


def promise_log_det_jacobian(xp, copy, x1, x2, s, F, G):
    return xp.sum(G(copy(x2)), axis=-1) + xp.sum(s)


def promise_forward(xp, copy, x1, x2, s, F, G):
    return xp.exp(G(copy(x2))) * x1 + F(copy(x2)), xp.exp(s) * x2


def promise_inverse(xp, copy, y1, y2, s, F, G):
    x2 = y2 * xp.exp(-s)
    return (y1 - F(copy(x2))) * xp.exp(-G(copy(x2))), x2


def promise_forward_and_log_det(xp, copy, x1, x2, s, F, G):
    g = G(copy(x2))
    return xp.exp(g) * x1 + F(copy(x2)), xp.exp(s) * x2, xp.sum(g, axis=-1) + xp.sum(s)


def naive_kl(xp, copy, mu, sigma):
    return 0.5 * (mu**2 + sigma**2 - xp.log(sigma**2) - 1)


def naive_kl_grad(xp, copy, mu, sigma):
    return copy(mu), sigma - 1 / sigma


def naive_kl_logvar(xp, copy, mu, logvar):
    return 0.5 * (mu**2 + xp.exp(logvar) - logvar - 1)


def naive_kl_grad_logvar(xp, copy, mu, logvar):
    return copy(mu), 0.5 * (xp.exp(logvar) - 1)


# --- derivation 2.3n's arrangement, pieces selected with where ------------------------------


def _expm1mx_series(x):
    """exp(x) - 1 - x by its Taylor polynomial to x**15 (accurate for |x| < 0.5)."""
    acc = 1 / 1307674368000
    for k in range(14, 1, -1):  # Horner: coefficients 1/k!, from the highest down
        acc = acc * x + 1 / math.factorial(k)
    return x**2 * acc


def same_kl(xp, copy, mu, sigma):
    x = 2 * xp.log(sigma)
    f = xp.where(xp.abs(x) < 0.5, _expm1mx_series(x),
                 xp.where(x >= 2, 4 * (sigma / 2) ** 2 - 1 - x, xp.expm1(x) - x))
    return 0.5 * f + 2 * (mu / 2) ** 2


def same_kl_grad(xp, copy, mu, sigma):
    return copy(mu), (sigma - 1) * (1 + 1 / sigma)


def same_kl_logvar(xp, copy, mu, logvar):
    f = xp.where(xp.abs(logvar) < 0.5, _expm1mx_series(logvar),
                 xp.where(logvar >= 88, 4 * (xp.exp(logvar / 2) / 2) ** 2 - 1 - logvar,
                          xp.expm1(logvar) - logvar))
    return 0.5 * f + 2 * (mu / 2) ** 2


def same_kl_grad_logvar(xp, copy, mu, logvar):
    return copy(mu), 0.5 * xp.expm1(logvar)


# --- the same arrangement in eager PyTorch, mask and patch -------------------------------


def kl_mask_patch_torch(torch, mu, sigma):
    x = 2 * torch.log(sigma)
    f = torch.expm1(x) - x  # the general piece everywhere; overflow is patched below
    small = torch.abs(x) < 0.5
    f[small] = _expm1mx_series(x[small])
    big = x >= 2
    f[big] = 4 * (sigma[big] / 2) ** 2 - 1 - x[big]
    return 0.5 * f + 2 * (mu / 2) ** 2


def kl_logvar_mask_patch_torch(torch, mu, logvar):
    f = torch.expm1(logvar) - logvar
    small = torch.abs(logvar) < 0.5
    f[small] = _expm1mx_series(logvar[small])
    big = logvar >= 88
    lv = logvar[big]
    f[big] = 4 * (torch.exp(lv / 2) / 2) ** 2 - 1 - lv
    return 0.5 * f + 2 * (mu / 2) ** 2


#: (module, kernel) -> (straightforward formula, same arrangement or None), each taking
#: (xp, copy, *the kernel's arguments).
CASES: dict[tuple[str, str], tuple[Callable[..., Any], Callable[..., Any] | None]] = {
    ("coupling", "log_det_jacobian"): (naive_log_det_jacobian, None),
    ("coupling", "forward"): (naive_forward, None),
    ("coupling", "inverse"): (naive_inverse, None),
    ("coupling", "forward_and_log_det"): (naive_forward_and_log_det, None),
    ("gaussian_kl", "kl"): (naive_kl, same_kl),
    ("gaussian_kl", "kl_grad"): (naive_kl_grad, same_kl_grad),
    ("gaussian_kl_logvar", "kl"): (naive_kl_logvar, same_kl_logvar),
    ("gaussian_kl_logvar", "kl_grad"): (naive_kl_grad_logvar, same_kl_grad_logvar),
}

#: (module, kernel) -> the straightforward formula with the kernels' promise that F and G
#: never get the caller's array (one clone of the argument per callable), taking
#: (xp, copy, *the kernel's arguments); the coupling kernels, timed in torch eager.
SAME_PROMISE: dict[tuple[str, str], Callable[..., Any]] = {
    ("coupling", "log_det_jacobian"): promise_log_det_jacobian,
    ("coupling", "forward"): promise_forward,
    ("coupling", "inverse"): promise_inverse,
    ("coupling", "forward_and_log_det"): promise_forward_and_log_det,
}

#: (module, kernel) -> the mask-and-patch form in eager PyTorch, taking (torch, *arguments);
#: only for the kernels with more than one piece.
MASK_PATCH_TORCH: dict[tuple[str, str], Callable[..., Any]] = {
    ("gaussian_kl", "kl"): kl_mask_patch_torch,
    ("gaussian_kl_logvar", "kl"): kl_logvar_mask_patch_torch,
}
