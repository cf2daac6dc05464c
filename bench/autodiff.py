"""Comparison 1: the closed-form log-determinant against PyTorch autodiff + slogdet.

The block is the question's coupling ``y1 = exp(G(x2)) * x1 + F(x2)``, ``y2 = exp(s) * x2``
with *dense* layers ``F(x) = tanh(W x + b)``, ``G(x) = 0.5 sin(V x + c)`` (so the
Jacobian is a full ``d x d`` matrix, ``d = 2n``). The baseline builds that Jacobian per
sample with ``torch.func.vmap(torch.func.jacrev(forward))`` and takes
``torch.linalg.slogdet`` of it, in float64 on the CPU; the contender is
``generated.coupling.log_det_jacobian`` on the same NumPy data, which evaluates ``G`` once
and sums (derivation 1.3). A second baseline needs no PyTorch: the dense Jacobian from
``generated.coupling.jacobian`` (exact ``JF``, ``JG``) and ``numpy.linalg.slogdet``.
All results are compared before anything is timed.

PyTorch 2.13's CPU LU runs into a oneMKL fault ("Parameter 6 was incorrect on entry to
SLASWP", then spins) from about 200 x 200 up unless MKL is limited to AVX2, so
``MKL_ENABLE_INSTRUCTIONS=AVX2`` is set before torch is imported (float64 then works at
512 x 512).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .timing import Timing, compare

__all__ = ["DenseLayers", "import_torch", "run"]

#: Seconds to wait between NumPy and PyTorch timings, for spinning worker threads to sleep.
PAUSE = 0.5


@dataclass(frozen=True)
class DenseLayers:
    """Dense F, G for the coupling block, in NumPy (the closed form calls these)."""

    W: np.ndarray
    b: np.ndarray
    V: np.ndarray
    c: np.ndarray

    @classmethod
    def random(cls, n: int, rng: np.random.Generator) -> DenseLayers:
        return cls(rng.standard_normal((n, n)) / math.sqrt(n), rng.standard_normal(n),
                   rng.standard_normal((n, n)) / math.sqrt(n), rng.standard_normal(n))

    def F(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x @ self.W.T + self.b)

    def G(self, x: np.ndarray) -> np.ndarray:
        return 0.5 * np.sin(x @ self.V.T + self.c)

    def JF(self, x: np.ndarray) -> np.ndarray:
        return (1 - np.tanh(x @ self.W.T + self.b) ** 2)[..., :, None] * self.W

    def JG(self, x: np.ndarray) -> np.ndarray:
        return (0.5 * np.cos(x @ self.V.T + self.c))[..., :, None] * self.V


def import_torch():
    """PyTorch with MKL limited to AVX2 (see the module docstring), or raise ImportError."""
    if "torch" not in sys.modules:
        os.environ["MKL_ENABLE_INSTRUCTIONS"] = "AVX2"
    import torch  # optional dependency, imported on demand

    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        torch.set_num_threads(int(threads))
    return torch


def _torch_logdet(torch, layers: DenseLayers, s: np.ndarray, n: int) -> tuple[Callable, Callable]:
    """(jacobian(x), logdet(x)) for a (batch, 2n) float64 tensor x, by autodiff."""
    W, b, V, c, s_t = (torch.from_numpy(np.ascontiguousarray(a))
                       for a in (layers.W, layers.b, layers.V, layers.c, s))

    def forward(x):  # one sample, shape (2n,)
        x1, x2 = x[:n], x[n:]
        F = torch.tanh(W @ x2 + b)
        G = 0.5 * torch.sin(V @ x2 + c)
        return torch.cat([torch.exp(G) * x1 + F, torch.exp(s_t) * x2])

    jacobian = torch.func.vmap(torch.func.jacrev(forward))

    def logdet(x):
        return torch.linalg.slogdet(jacobian(x)).logabsdet

    return jacobian, logdet


def run(dims: list[int], batch: int, repeats: int, min_sample: float, seed: int = 0,
        log: Callable[[str], None] = print) -> dict[str, object]:
    """Time every contender for every ``d`` in ``dims`` (the PyTorch ones when importable).

    Besides autodiff, a NumPy baseline needs no PyTorch: the dense Jacobian from
    ``generated.coupling.jacobian`` (exact ``JF``, ``JG``) and ``numpy.linalg.slogdet``.
    """
    try:
        torch = import_torch()
    except ImportError as exc:
        torch = None
        log(f"note: PyTorch is not importable ({exc}); comparison 1 runs without the "
            "autodiff baseline (install the bench extra: pip install -e '.[bench]')")
    rng = np.random.default_rng(seed)
    rows = [_one_size(d, batch, rng, torch, repeats, min_sample, log) for d in dims]
    key = "speedup" if torch is not None else "speedup_numpy"
    growth = None
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        growth = math.log(last[key] / first[key]) / math.log(last["d"] / first["d"])
    return {"rows": rows, "batch": batch, "growth_exponent": growth, "growth_of": key,
            "torch": torch.__version__ if torch is not None else None,
            "torch_threads": torch.get_num_threads() if torch is not None else None,
            "mkl_enable_instructions": os.environ.get("MKL_ENABLE_INSTRUCTIONS")}


def _one_size(d: int, batch: int, rng: np.random.Generator, torch, repeats: int,
              min_sample: float, log: Callable[[str], None]) -> dict[str, object]:
    from generated import coupling

    n = d // 2
    layers = DenseLayers.random(n, rng)
    s = 0.1 * rng.standard_normal(n)
    x = rng.standard_normal((batch, d))
    x1, x2 = np.ascontiguousarray(x[:, :n]), np.ascontiguousarray(x[:, n:])

    def closed_form():
        return coupling.log_det_jacobian(x1, x2, s, layers.F, layers.G)

    def dense_numpy():
        J = coupling.jacobian(x1, x2, s, layers.F, layers.G, layers.JF, layers.JG)
        return np.linalg.slogdet(J)[1]

    closed = closed_form()
    errors = {"jacobian + numpy slogdet": float(np.max(np.abs(closed - dense_numpy())))}
    # NumPy's (OpenBLAS) and PyTorch's (OpenMP) thread pools both spin for a while after
    # each call; interleaving the two libraries makes them fight over the two cores. So
    # each library's contenders are interleaved among themselves, with a pause between.
    timings = compare({"closed form": closed_form, "jacobian + numpy slogdet": dense_numpy},
                      repeats=repeats, min_sample=min_sample)
    if torch is not None:
        x_t = torch.from_numpy(x)
        jacobian, logdet = _torch_logdet(torch, layers, s, n)
        J_t = jacobian(x_t)
        errors["autodiff"] = float(np.max(np.abs(closed - logdet(x_t).numpy())))
        time.sleep(PAUSE)
        timings.update(compare({
            "autodiff": lambda: logdet(x_t),
            "jacrev only": lambda: jacobian(x_t),
            "slogdet only": lambda: torch.linalg.slogdet(J_t),
        }, repeats=repeats, min_sample=min_sample))
        time.sleep(PAUSE)
    row: dict[str, object] = {"d": d, "n": n, "batch": batch, "max_abs_diff": errors,
                              **timings}
    base = timings["closed form"].median
    row["speedup_numpy"] = timings["jacobian + numpy slogdet"].median / base
    text = (f"  d={d:4d}: closed form {_ms(timings['closed form'])}, jacobian + numpy "
            f"slogdet {_ms(timings['jacobian + numpy slogdet'])} (x{row['speedup_numpy']:.0f})")
    if torch is not None:
        row["speedup"] = timings["autodiff"].median / base
        text += (f", autodiff {_ms(timings['autodiff'])} (jacrev {_ms(timings['jacrev only'])}, "
                 f"slogdet {_ms(timings['slogdet only'])}) (x{row['speedup']:.0f})")
    log(text + f", max |diff| {max(errors.values()):.1e}")
    return row


def _ms(t: Timing) -> str:
    return f"{t.median * 1e3:.3g} ms"
