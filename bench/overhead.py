"""Per-call overhead of every generated kernel, for one or more source trees side by side.

The overhead is the public kernel minus its own NumPy body called directly (the same
arithmetic on the same, valid, C-contiguous float64 arrays): the cost of the argument
checks and the dispatch. Each tree (a checkout with ``generated/`` and
``kernel_runtime/``) is imported under its own copies of those packages, so two versions
are timed in one process and one loop: per round, each tree's kernel and body are sampled
back to back (in alternating order), and the overhead is the median over rounds of the
difference of the two samples of one round, which drift of a shared machine between rounds
does not reach. Part 5 of ``python -m bench`` times five kernels this way; this tool times
all of them, e.g. before and after a change to the runtime::

    python -m bench.overhead before=/path/to/main after=.

Example:
    >>> batch_values("gaussian_kl", ("mu", "sigma"), 2, 3)["sigma"].shape
    (2, 3)
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import statistics
import sys
from collections.abc import Callable
from time import perf_counter
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["MODULES", "load_tree", "batch_values", "overhead_rows", "main"]

#: The generated modules timed, in report order.
MODULES = ("coupling", "coupling_additive", "coupling_affine", "coupling_glow",
           "coupling_soft_clamp", "gaussian_kl", "gaussian_kl_logvar", "gaussian_kl_pair",
           "gaussian_kl_pair_logvar")

_OWN = ("kernel_runtime", "generated")


def _forget() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in _OWN]:
        del sys.modules[name]


def load_tree(root: str) -> dict[str, ModuleType]:
    """The generated modules of the checkout at ``root``, with the runtime they import."""
    _forget()
    sys.path.insert(0, root)
    try:
        return {m: importlib.import_module(f"generated.{m}") for m in MODULES}
    finally:
        sys.path.remove(root)
        _forget()


def batch_values(module: str, params: tuple[str, ...], batch: int, n: int) -> dict[str, Any]:
    """Valid arguments of a kernel of ``module`` for a batch of ``batch x n`` (seeded)."""
    rng = np.random.default_rng(0)
    values: dict[str, Any] = {}
    for p in params:
        if p in ("x1", "x2", "y1", "y2") or p.startswith("mu") or p == "eps":
            values[p] = rng.standard_normal((batch, n))
        elif p == "s":
            values[p] = 0.1 * rng.standard_normal(n)
        elif p in ("F", "G"):
            values[p] = np.tanh if p == "F" else np.sin
        elif p in ("JF", "JG"):
            values[p] = _half_identity
        elif p.startswith("sigma"):
            values[p] = np.exp(-0.5 + rng.standard_normal((batch, n)))
        elif p.startswith("logvar"):
            values[p] = 2 * (-0.5 + rng.standard_normal((batch, n)))
        else:
            raise KeyError(f"{module}: no test value for argument {p!r}")
    return values


def _half_identity(x: np.ndarray) -> np.ndarray:
    """A Jacobian callable: 0.5 I for every row of ``x``."""
    return np.broadcast_to(0.5 * np.eye(x.shape[-1]), x.shape + x.shape[-1:])


def _calls(mod: ModuleType, kernel: str, values: dict[str, Any]
           ) -> tuple[Callable[[], object], Callable[[], object]]:
    """The public kernel and its NumPy body, each on ``values``."""
    fn, body = getattr(mod, kernel), getattr(mod, f"_{kernel}_numpy")
    names = [p for p in inspect.signature(body).parameters if not p.startswith("_")]
    arrays = [values[p] for p in names if not callable(values[p])]
    if mod.__name__.split(".")[-1].startswith("coupling"):
        shape: tuple = (arrays[0].shape[:-1], arrays[0].shape[-1], arrays[0].dtype)
    else:
        shape = (np.broadcast_shapes(*(a.shape for a in arrays)), arrays[0].dtype)
    body_args = [values[p] for p in names] + list(shape)
    args = [values[p] for p in inspect.signature(fn).parameters if p != "check_finite"]
    return (lambda: fn(*args)), (lambda: body(*body_args))


def _sample(f: Callable[[], object], number: int) -> float:
    start = perf_counter()
    for _ in range(number):
        f()
    return (perf_counter() - start) / number


def overhead_rows(trees: dict[str, dict[str, ModuleType]], batch: int, n: int,
                  rounds: int = 41, only: str = "") -> list[dict[str, Any]]:
    """One row per kernel: for each tree, the median overhead and body time in seconds."""
    rows = []
    first = next(iter(trees.values()))
    for module in MODULES:
        for kernel in first[module].__all__:
            if only not in f"{module}.{kernel}":
                continue
            params = tuple(p for p in inspect.signature(getattr(first[module], kernel))
                           .parameters if p != "check_finite")
            values = batch_values(module, params, batch, n)
            calls = {label: _calls(mods[module], kernel, values)
                     for label, mods in trees.items()}
            number = max(5, int(2e-3 / _sample(calls[next(iter(calls))][0], 20)))
            diffs: dict[str, list[float]] = {label: [] for label in calls}
            bodies: dict[str, list[float]] = {label: [] for label in calls}
            for r in range(rounds):
                for label, (fn, body) in calls.items():
                    if r % 2:
                        t_fn, t_body = _sample(fn, number), _sample(body, number)
                    else:
                        t_body, t_fn = _sample(body, number), _sample(fn, number)
                    diffs[label].append(t_fn - t_body)
                    bodies[label].append(t_body)
            rows.append({"kernel": f"{module}.{kernel}", "shape": f"{batch}x{n}",
                         **{label: (statistics.median(diffs[label]),
                                    statistics.median(bodies[label])) for label in calls}})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the overhead table; see ``--help``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead",
        description="Per-call overhead (kernel minus its NumPy body) of every generated "
                    "kernel, for source trees timed side by side.")
    parser.add_argument("trees", nargs="+", metavar="LABEL=ROOT",
                        help="a label and a checkout's root, e.g. before=../main after=.")
    parser.add_argument("--shapes", default="16x8,128x32",
                        help="comma-separated batch x n shapes (default: 16x8,128x32)")
    parser.add_argument("--rounds", type=int, default=41, help="rounds (default: 41)")
    parser.add_argument("--only", default="", help="only kernels whose name contains this")
    args = parser.parse_args(argv)
    pairs = [t.split("=", 1) if "=" in t else (t, t) for t in args.trees]
    trees = {label: load_tree(root) for label, root in pairs}
    print("| kernel | shape | " + " | ".join(f"{label} overhead | {label} body"
                                              for label in trees) + " |")
    print("| --- | --- |" + " --: | --: |" * len(trees))
    for shape in args.shapes.split(","):
        batch, n = (int(k) for k in shape.split("x"))
        for row in overhead_rows(trees, batch, n, args.rounds, args.only):
            cells = " | ".join(f"{row[label][0] * 1e6:.2f} µs | {row[label][1] * 1e6:.1f} µs"
                               for label in trees)
            print(f"| `{row['kernel']}` | {row['shape']} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
