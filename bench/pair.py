"""Comparison 5: the KL from a learned prior against PyTorch and the NumPy one-liner.

``generated.gaussian_kl_pair.kl(mu_q, sigma_q, mu_p, sigma_p)`` against
``torch.distributions.kl_divergence(Normal(mu_q, sigma_q), Normal(mu_p, sigma_p))`` on the
CPU (float64 tensors sharing the same buffers, no copies timed) and against the naive
NumPy one-liner ``log(sp/sq) + (sq**2 + (mq - mp)**2) / (2 sp**2) - 1/2``, the same data
for all three. Half of the pairs have q within 1e-3 of p, where the one-liner and
torch's variance-ratio form lose relative accuracy; the row reports that loss too
(largest relative error against the generated kernel, which tests/ checks against mpmath).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

from .autodiff import import_torch
from .timing import compare

__all__ = ["run", "markdown"]


def naive(mq: np.ndarray, sq: np.ndarray, mp: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """The formula as typed in."""
    return np.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5


def _data(elements: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    mp, sp = rng.standard_normal(elements), np.exp(rng.standard_normal(elements))
    near = np.arange(elements) % 2 == 0
    sq = np.where(near, sp * (1 + 1e-3 * rng.standard_normal(elements)),
                  np.exp(rng.standard_normal(elements)))
    mq = np.where(near, mp + 1e-3 * sp * rng.standard_normal(elements),
                  rng.standard_normal(elements))
    return mq, sq, mp, sp


def run(sizes: list[int], repeats: int, min_sample: float,
        log: Callable[[str], None] = print) -> list[dict[str, object]]:
    """One row per size: timings of the three, ratios, and the accuracy of the other two."""
    try:
        kp = importlib.import_module("generated.gaussian_kl_pair")
    except ImportError as exc:
        log(f"note: generated.gaussian_kl_pair is not importable ({exc}); skipping comparison 5")
        return []
    try:
        torch = import_torch()  # MKL limited to AVX2 and the bench's thread count, as elsewhere
    except ImportError:
        torch = None
        log("note: torch is not installed; comparison 5 without its torch column")
    rows = [_row(elements, kp, torch, repeats, min_sample) for elements in sizes]
    for row in rows:
        log(f"  gaussian_kl_pair.kl @ {row['elements']:.0e}: "
            + ", ".join(f"{k} {v.median * 1e3:.3g} ms" for k, v in row["timings"].items()))
    return rows


def _row(elements: int, kp: object, torch: object, repeats: int,
         min_sample: float) -> dict[str, object]:
    args = _data(elements)
    ours = kp.kl(*args)
    contenders: dict[str, Callable[[], object]] = {
        "generated": lambda: kp.kl(*args),
        "generated, no check": lambda: kp.kl(*args, check_finite=False),
        "numpy one-liner": lambda: naive(*args),
    }
    errors = {"numpy one-liner": naive(*args)}
    if torch is not None:
        mq, sq, mp, sp = (torch.from_numpy(a) for a in args)

        def torch_kl() -> object:
            return torch.distributions.kl_divergence(
                torch.distributions.Normal(mq, sq, validate_args=False),
                torch.distributions.Normal(mp, sp, validate_args=False))

        contenders["torch kl_divergence"] = torch_kl
        errors["torch kl_divergence"] = torch_kl().numpy()
    timings = compare(contenders, repeats=repeats, min_sample=min_sample)
    row: dict[str, object] = {"elements": elements, "timings": timings}
    for name, value in errors.items():
        row[f"ratio {name}"] = timings["generated"].median / timings[name].median
        row[f"error {name}"] = float(np.max(np.abs(value - ours) / ours))
    return row


def markdown(rows: list[dict[str, object]] | None) -> list[str]:
    """The section of ``benchmarks.md`` for comparison 6."""
    if not rows:
        return []
    others = [k[len("ratio "):] for k in rows[0] if k.startswith("ratio ")]
    lines = ["", "## 6. The KL from a learned prior: generated vs torch and NumPy", "",
             "Generated `gaussian_kl_pair.kl` time ÷ the other's (below 1: generated is "
             "faster), same float64 data on the CPU; half the pairs have q within 1e-3 of "
             "p. The error columns: the other's largest relative error.", "",
             "| elements | " + " | ".join(f"÷ {o}" for o in others) + " | "
             + " | ".join(f"error of {o}" for o in others) + " |",
             "|---:|" + "---:|" * (2 * len(others))]
    for row in rows:
        lines.append(f"| {row['elements']:.0e} | "
                     + " | ".join(f"{row[f'ratio {o}']:.2f}" for o in others) + " | "
                     + " | ".join(f"{row[f'error {o}']:.1e}" for o in others) + " |")
    return lines
