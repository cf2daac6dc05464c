"""Interleaved wall-clock timing: medians and quartiles of repeated samples.

Every contender of one comparison is timed in the same loop, round-robin (A B C, B C A,
...), so that drift of a noisy machine (another process, frequency changes) lands on all
of them alike. Each sample runs a contender ``loops`` times back to back, with ``loops``
chosen so that one sample lasts at least ``min_sample`` seconds; the garbage collector
is off while timing (as in :mod:`timeit`).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from time import perf_counter

import numpy as np

__all__ = ["Timing", "compare", "time_once"]


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median and quartiles of ``len(samples)`` samples."""

    median: float
    q1: float
    q3: float
    samples: tuple[float, ...]
    loops: int

    @classmethod
    def from_samples(cls, samples: list[float], loops: int) -> Timing:
        q1, med, q3 = np.percentile(samples, [25, 50, 75])
        return cls(float(med), float(q1), float(q3), tuple(samples), loops)

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def as_dict(self) -> dict[str, object]:
        return {"median": self.median, "q1": self.q1, "q3": self.q3, "loops": self.loops,
                "repeats": len(self.samples)}


def time_once(fn: Callable[[], object], loops: int = 1) -> float:
    """Seconds per call of ``fn`` over ``loops`` back-to-back calls."""
    start = perf_counter()
    for _ in range(loops):
        fn()
    return (perf_counter() - start) / loops


def compare(fns: Mapping[str, Callable[[], object]], repeats: int,
            min_sample: float = 0.01, max_loops: int = 100_000) -> dict[str, Timing]:
    """Time every callable ``repeats`` times, interleaved; return their :class:`Timing`."""
    names = list(fns)
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        loops: dict[str, int] = {}
        for name in names:
            fns[name]()  # warm-up: first-touch page faults, lazy imports, caches
            once = time_once(fns[name])
            loops[name] = min(max_loops, max(1, math.ceil(min_sample / max(once, 1e-9))))
        samples: dict[str, list[float]] = {name: [] for name in names}
        for r in range(repeats):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                samples[name].append(time_once(fns[name], loops[name]))
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: Timing.from_samples(samples[name], loops[name]) for name in names}
