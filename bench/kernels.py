"""Comparisons 2 and 3: generated kernels against hand-written NumPy and against memory.

For every kernel and batch size the contenders are timed interleaved in one loop:

- ``generated``: the kernel as shipped (``check_finite=True``, the default);
- ``generated, no check``: the kernel with ``check_finite=False``;
- ``hand-written``: the baseline of :mod:`bench.handwritten`;
- ``hand-written, same arrangement`` (the KL kernels whose formula is rearranged for
  floating point): that arrangement typed in, pieces selected with ``numpy.where``;
- ``copy floor`` (element-wise kernels only): ``numpy.copyto`` between two preallocated
  float64 arrays of ``(R + W) / 2`` bytes each, where ``R`` is the bytes of the kernel's
  array inputs and ``W`` of its outputs: a copy moving as many bytes as the kernel must
  read and write at the least;
- for ``forward`` and ``inverse``, also both sides with ``F`` and ``G`` precomputed
  (callables returning a ready array), which isolates the kernel's own arithmetic from
  the cost of evaluating ``tanh`` and ``sin``.

"Elements" is the size of one input array: ``batch * n`` entries of ``x1`` (and of
``x2``) for the coupling kernels, with ``n = 8`` and element-wise ``F = tanh``,
``G = sin``; the size of ``mu`` (= of ``sigma``, ``logvar``, ``eps``) for the KL kernels,
with ``log sigma ~ N(-0.5, 1)`` so that every branch of the stable KL is exercised.
Before timing, each generated kernel is compared with its baseline.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import handwritten
from .timing import compare

__all__ = ["Case", "cases", "run", "COUPLING_N"]

#: The half-width n of the coupling blocks in the element sweeps.
COUPLING_N = 8
F64 = 8  # bytes per element


@dataclass(frozen=True)
class Case:
    """One kernel at one size: its arguments and the bytes it must move."""

    module: str
    kernel: str
    elements: int
    args: tuple
    read_bytes: int
    write_bytes: int
    elementwise: bool
    precomputed_args: tuple | None = None  # the same call with F, G precomputed


def _coupling_case(kernel: str, elements: int, rng: np.random.Generator) -> Case:
    n = COUPLING_N
    batch = max(1, elements // n)
    x1, x2 = rng.standard_normal((2, batch, n))
    s = 0.1 * rng.standard_normal(n)
    eye = np.eye(n)

    def JF(x):
        return (1 - np.tanh(x) ** 2)[..., :, None] * eye

    def JG(x):
        return np.cos(x)[..., :, None] * eye

    size = batch * n * F64
    if kernel == "forward":
        args = (x1, x2, s, np.tanh, np.sin)
        Fx, Gx = np.tanh(x2), np.sin(x2)
        pre = (x1, x2, s, lambda _x: Fx, lambda _x: Gx)
        return Case("coupling", kernel, batch * n, args, 2 * size, 2 * size, True, pre)
    if kernel == "inverse":
        y1, y2 = handwritten.forward(x1, x2, s, np.tanh, np.sin)
        args = (y1, y2, s, np.tanh, np.sin)
        Fx, Gx = np.tanh(x2), np.sin(x2)
        pre = (y1, y2, s, lambda _x: Fx, lambda _x: Gx)
        return Case("coupling", kernel, batch * n, args, 2 * size, 2 * size, True, pre)
    if kernel == "log_det_jacobian":
        args = (x1, x2, s, np.tanh, np.sin)
        return Case("coupling", kernel, batch * n, args, 2 * size, batch * F64, True)
    if kernel == "jacobian":
        args = (x1, x2, s, np.tanh, np.sin, JF, JG)
        return Case("coupling", kernel, batch * n, args, 2 * size, 4 * n * size, False)
    raise KeyError(kernel)


def _kl_case(module: str, kernel: str, elements: int, rng: np.random.Generator) -> Case:
    mu = rng.standard_normal(elements)
    log_sigma = -0.5 + rng.standard_normal(elements)
    scale = np.exp(log_sigma) if module == "gaussian_kl" else 2 * log_sigma
    size = elements * F64
    if kernel in ("kl", "kl_grad"):
        out = 1 if kernel == "kl" else 2
        return Case(module, kernel, elements, (mu, scale), 2 * size, out * size, True)
    eps = rng.standard_normal(elements)
    return Case(module, kernel, elements, (mu, scale, eps), 3 * size, 2 * size, True)


COUPLING_KERNELS = ("forward", "inverse", "log_det_jacobian", "jacobian")
KL_KERNELS = ("kl", "kl_grad", "kl_grad_reparam", "kl_grad_stl")


def cases(module: str, kernel: str, elements: int, seed: int = 0) -> Case:
    rng = np.random.default_rng(seed)
    if module == "coupling":
        return _coupling_case(kernel, elements, rng)
    return _kl_case(module, kernel, elements, rng)


def _same(a, b) -> bool:
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    return len(a) == len(b) and all(
        np.shape(u) == np.shape(v) and np.allclose(u, v, rtol=1e-7, atol=1e-9)
        for u, v in zip(a, b, strict=True))


def available_modules(log: Callable[[str], None] = print) -> list[str]:
    """The generated modules to benchmark: coupling always, the KL ones when importable."""
    modules = ["coupling"]
    for name in ("gaussian_kl", "gaussian_kl_logvar"):
        try:
            importlib.import_module(f"generated.{name}")
        except ImportError as exc:
            log(f"note: generated.{name} is not importable ({exc}); skipping its rows")
        else:
            modules.append(name)
    return modules


def run(sizes: list[int], jacobian_max: int, repeats: int, min_sample: float,
        modules: list[str], log: Callable[[str], None] = print) -> list[dict[str, object]]:
    """Every (module, kernel, size) row: timings of all contenders, ratios, bytes."""
    rows: list[dict[str, object]] = []
    for module in modules:
        mod = importlib.import_module(f"generated.{module}")
        for kernel in COUPLING_KERNELS if module == "coupling" else KL_KERNELS:
            fn = getattr(mod, kernel, None)
            base = handwritten.BASELINES.get((module, kernel))
            if fn is None or base is None:
                log(f"note: {module}.{kernel} has no kernel or no baseline; skipped")
                continue
            same = handwritten.SAME_ARRANGEMENT.get((module, kernel))
            args = cases(module, kernel, 1000).args
            result = fn(*args)
            checked = True  # the row is marked where any baseline disagrees
            for label, baseline in (("hand-written", base), ("same-arrangement", same)):
                if baseline is not None and not _same(result, baseline(*args)):
                    log(f"WARNING: {module}.{kernel} disagrees with its {label} baseline")
                    checked = False
            for elements in sizes:
                if kernel == "jacobian" and elements > jacobian_max:
                    continue
                rows.append(_run_case(cases(module, kernel, elements), fn, base, checked,
                                      repeats, min_sample, same))
                _log_row(rows[-1], log)
    return rows


def _run_case(case: Case, fn: Callable, base: Callable, checked: bool, repeats: int,
              min_sample: float, same: Callable | None = None) -> dict[str, object]:
    args = case.args
    contenders: dict[str, Callable[[], object]] = {
        "generated": lambda: fn(*args),
        "generated, no check": lambda: fn(*args, check_finite=False),
        "hand-written": lambda: base(*args),
    }
    if same is not None:
        contenders["hand-written, same arrangement"] = lambda: same(*args)
    if case.precomputed_args is not None:
        pre = case.precomputed_args
        contenders["generated, F G precomputed"] = lambda: fn(*pre)
        contenders["generated, no check, F G precomputed"] = lambda: fn(*pre, check_finite=False)
        contenders["hand-written, F G precomputed"] = lambda: base(*pre)
    copy_elements = 0
    if case.elementwise:
        copy_elements = (case.read_bytes + case.write_bytes) // (2 * F64)
        src = np.ones(copy_elements)
        dst = np.empty_like(src)
        contenders["copy floor"] = lambda: np.copyto(dst, src)
    timings = compare(contenders, repeats=repeats, min_sample=min_sample)
    hand = timings["hand-written"].median
    row: dict[str, object] = {
        "module": case.module, "kernel": case.kernel, "elements": case.elements,
        "read_bytes": case.read_bytes, "write_bytes": case.write_bytes,
        "copy_elements": copy_elements, "agrees": checked, "timings": timings,
        "ratio": timings["generated"].median / hand,
        "ratio_no_check": timings["generated, no check"].median / hand,
    }
    if same is not None:
        row["ratio_same"] = (timings["generated"].median
                             / timings["hand-written, same arrangement"].median)
        row["ratio_same_no_check"] = (timings["generated, no check"].median
                                      / timings["hand-written, same arrangement"].median)
    if "copy floor" in timings:
        floor = timings["copy floor"].median
        row["floor_multiple"] = timings["generated"].median / floor
        row["floor_multiple_no_check"] = timings["generated, no check"].median / floor
        row["floor_multiple_hand"] = hand / floor
        if case.precomputed_args is not None:
            row["floor_multiple_precomputed"] = (
                timings["generated, F G precomputed"].median / floor)
            row["floor_multiple_hand_precomputed"] = (
                timings["hand-written, F G precomputed"].median / floor)
    if case.precomputed_args is not None:
        row["ratio_precomputed"] = (timings["generated, F G precomputed"].median
                                    / timings["hand-written, F G precomputed"].median)
    return row


def _log_row(row: dict[str, object], log: Callable[[str], None]) -> None:
    t = row["timings"]
    text = (f"  {row['module']}.{row['kernel']} @ {row['elements']:.0e}: generated "
            f"{_fmt(t['generated'].median)} (no check {_fmt(t['generated, no check'].median)}), "
            f"hand-written {_fmt(t['hand-written'].median)}, ratio {row['ratio']:.2f} "
            f"({row['ratio_no_check']:.2f})")
    if "ratio_same" in row:
        text += f", vs same arrangement {row['ratio_same']:.2f} ({row['ratio_same_no_check']:.2f})"
    if "floor_multiple" in row:
        text += f", {row['floor_multiple']:.1f}x copy floor"
    log(text)


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} us"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"
