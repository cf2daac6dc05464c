"""The NumPy fast path's bulk value checks, against a plain reference, for every kernel.

Each generated kernel builds its fast path once (``_<kernel>_numpy_args``, from
:func:`kernel_runtime.numpy_elementwise` or :func:`kernel_runtime.numpy_coupling`). Its
value checks run in bulk (one ``argmin`` per array that must be positive, one ``vdot`` per
pair of read arrays) and fall back to the exact checks only when a bulk test fails. Here a
bad value (NaN, +-inf, and for positive arguments 0, -0, negative) is put at every position
class (first, middle, last entry, every entry) of every argument, for float32 and float64,
C order, Fortran order, strided views, 0-d and broadcast arrays, and the outcome (which
error, in which order, or none) is compared with :func:`_reference`, written from the
documented contract, not from the runtime. A weakened bulk test is shown to fail it.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import kernel_runtime as rt
from kernel_runtime import checks, fast_numpy

GENERATED = Path(__file__).resolve().parents[1] / "generated"


def _specs() -> dict[tuple, list[str]]:
    """Every generated fast path's (builder, names..., positive or params, read), with the
    kernels that use it, read from the generated modules' source (no import needed)."""
    specs: dict[tuple, list[str]] = {}
    for path in sorted(GENERATED.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                    and isinstance(node.value.func, ast.Attribute)
                    and node.value.func.attr in ("numpy_elementwise", "numpy_coupling")):
                continue
            key = (node.value.func.attr,
                   *(tuple(ast.literal_eval(a)) for a in node.value.args))
            specs.setdefault(key, []).append(f"{path.stem}.{node.targets[0].id}")
    return specs


SPECS = _specs()
DTYPES = (np.float64, np.float32)
LAYOUTS = ("C", "F", "strided", "0-d", "broadcast")
BAD = (np.nan, np.inf, -np.inf)
NOT_POSITIVE = (0.0, -0.0, -1.5, -np.finfo(np.float32).tiny)


def _spec_id(spec: tuple) -> str:
    """E.g. ``elementwise(mu,sigma;sigma;mu,sigma)``: names; positive or params; read."""
    return f"{spec[0].removeprefix('numpy_')}({';'.join(','.join(p) for p in spec[1:])})"


def test_every_generated_kernel_has_a_fast_path():
    assert sum(len(v) for v in SPECS.values()) >= 40
    assert any(spec[0] == "numpy_coupling" for spec in SPECS)
    assert any(len(spec[2]) == 2 and len(spec[1]) == 5 for spec in SPECS)  # pair, eps


def _reference(names: tuple[str, ...], arrays: list[np.ndarray], positive: tuple[str, ...],
               read: tuple[str, ...]) -> str | None:
    """The documented outcome: the first argument that must be positive and has a NaN
    (named as not finite) or an entry <= 0 (its minimum given); then the first read
    argument with a NaN or an infinity; else None."""
    for name, a in zip(names, arrays, strict=True):
        if name in positive and a.size:
            if np.isnan(a).any():
                return f"{name}: expected finite values, got NaN or infinity"
            if not (a > 0).all():
                return f"{name}: expected every entry > 0, got a minimum of {a.min()}"
    for name, a in zip(names, arrays, strict=True):
        if name in read and not np.isfinite(a).all():
            return f"{name}: expected finite values, got NaN or infinity"
    return None


def _outcome(fast: Callable, arrays: list[np.ndarray]) -> str | None:
    """The fast path's outcome: its error message, or None; no warnings allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            result = fast(tuple(arrays), None)
        except ValueError as error:
            return str(error)
    assert result is not None, "the fast path refused arrays it is built for"
    return None


def _base(spec: tuple, dtype: type, layout: str, rng: np.random.Generator
          ) -> tuple[Callable, tuple[str, ...], tuple[str, ...], list[np.ndarray]]:
    """The fast path of ``spec``, its names, the names that must be positive, and valid
    arrays in ``layout`` (views of larger arrays where strided; the first one full-size
    and the others of shape (n,) where broadcast)."""
    builder, *rest = spec
    if builder == "numpy_coupling":
        vectors, params, read = rest
        names, positive = vectors + params, ()
        fast = rt.numpy_coupling(vectors, params, read)
        shapes = [(5, 6)] * len(vectors) + [(6,)] * len(params)
    else:
        names, positive, read = rest
        fast = rt.numpy_elementwise(names, positive, read)
        shapes = [(5, 6)] * len(names)
    if layout == "0-d":
        if builder == "numpy_coupling":
            pytest.skip("coupling kernels take vectors (..., n), n >= 1")
        shapes = [()] * len(names)
    if layout == "broadcast":
        if builder == "numpy_coupling":
            pytest.skip("coupling kernels do not broadcast")
        shapes = [(5, 6)] + [(6,)] * (len(names) - 1)
    arrays = []
    for name, shape in zip(names, shapes, strict=True):
        big = rng.standard_normal((2 * shape[0], 2 * shape[1]) if len(shape) == 2 else
                                  (2 * shape[0],) if shape else ())
        if name in positive:
            big = np.exp(big)
        big = big.astype(dtype)
        if layout == "strided":
            a = big[::2, 1::2] if len(shape) == 2 else big[::2]
        elif layout == "F":
            a = np.asfortranarray(big[: shape[0], : shape[1]] if len(shape) == 2 else
                                  big[: shape[0]])
        else:
            a = np.array(big[tuple(slice(0, s) for s in shape)], order="C")
        assert a.shape == shape
        arrays.append(a)
    return fast, names, positive, arrays


def _positions(a: np.ndarray) -> list[object]:
    """Where to put a bad value: first, middle and last entry (C order), and everywhere."""
    return sorted({0, a.size // 2, a.size - 1}) + ["all"]


def _mismatches(spec: tuple, dtype: type, layout: str, limit: int = 5) -> list[str]:
    """The cases where the fast path's outcome differs from :func:`_reference`."""
    rng = np.random.default_rng(7)
    fast, names, positive, arrays = _base(spec, dtype, layout, rng)
    read = spec[-1]
    found = []
    assert _outcome(fast, arrays) is None
    for k, name in enumerate(names):
        values = BAD + (NOT_POSITIVE if name in positive else ())
        for bad in values:
            for where in _positions(arrays[k]):
                target = _writeable_copy(arrays[k], layout)
                if where == "all":
                    target[...] = bad
                else:
                    target[np.unravel_index(where, target.shape)] = bad
                given = list(arrays)
                given[k] = target
                for later in (None, len(names) - 1) if k < len(names) - 1 else (None,):
                    case = list(given)
                    if later is not None:  # a later argument bad too
                        case[later] = case[later].copy()
                        case[later][(0,) * case[later].ndim] = np.nan
                    expected = _reference(names, case, positive, read)
                    got = _outcome(fast, case)
                    if got != expected:
                        found.append(f"{name}[{where}] = {bad}, later={later}: "
                                     f"expected {expected!r}, got {got!r}")
                        if len(found) >= limit:
                            return found
    return found


def _writeable_copy(a: np.ndarray, layout: str) -> np.ndarray:
    """A copy of ``a`` in the same layout (strided: a view of a new, larger array)."""
    if layout != "strided" or a.ndim == 0:
        return a.copy(order="K")
    big = np.zeros(tuple(2 * s for s in a.shape), a.dtype)
    view = big[::2, 1::2] if a.ndim == 2 else big[::2]
    view[...] = a
    return view


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("spec", list(SPECS), ids=[_spec_id(s) for s in SPECS])
def test_fast_checks_catch_every_bad_value_and_name_it_in_order(spec, dtype, layout):
    """NaN, +-inf (every argument) and 0, -0, negatives (positive arguments) at the first,
    middle, last and every entry are caught and named as the reference says, also with a
    later argument bad too (the first is named)."""
    assert _mismatches(spec, dtype, layout) == []


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("spec", list(SPECS), ids=[_spec_id(s) for s in SPECS])
def test_huge_finite_and_subnormal_values_pass(spec, dtype):
    """Products beyond the largest float (the dot product overflows) and subnormal scales
    pass silently: the exact fallback finds nothing wrong."""
    info = np.finfo(dtype)
    fast, names, positive, arrays = _base(spec, dtype, "C", np.random.default_rng(3))
    for fill in (info.max, -info.max, info.max / 3, info.smallest_subnormal, info.tiny):
        for k, name in enumerate(names):
            given = list(arrays)
            value = abs(fill) if name in positive else fill
            given[k] = np.full_like(arrays[k], value)
            assert _outcome(fast, given) is None
        every = [np.full_like(a, abs(fill) if name in positive else fill)
                 for name, a in zip(names, arrays, strict=True)]
        assert _outcome(fast, every) is None


PAIR_SPEC = next(s for s in SPECS if s[0] == "numpy_elementwise" and len(s[2]) == 2
                 and len(s[1]) == 5)


def _first_entry_only(values, positive, pairs):
    """A deliberately weakened bulk test: positivity of the first entry only."""
    if any(not values[i].reshape(-1)[0] > 0 for i in positive if values[i].size):
        return False
    return all(math.isfinite(np.vdot(values[i], values[j])) for i, j in pairs)


def _one_pair_short(values, positive, pairs):
    """A deliberately weakened bulk test: the last pair of read arrays is not tested."""
    if any(not values[i].min() > 0 for i in positive if values[i].size):
        return False
    return all(math.isfinite(np.vdot(values[i], values[j])) for i, j in pairs[:-1])


@pytest.mark.parametrize("weakened", [_first_entry_only, _one_pair_short])
def test_a_weakened_bulk_check_is_caught(monkeypatch, weakened):
    monkeypatch.setattr(fast_numpy, "values_pass", weakened)  # the bulk test it calls
    assert _mismatches(PAIR_SPEC, np.float64, "C")


def _old_runtime():
    """An older kernel_runtime to compare with, from $OLD_KERNEL_RUNTIME (a path to its
    ``__init__.py``: a single module or a package of modules), e.g. the main branch's; None
    where unset."""
    path = os.environ.get("OLD_KERNEL_RUNTIME")
    if not path:
        return None
    name = "_old_kernel_runtime"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, path, submodule_search_locations=[os.path.dirname(path)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its own submodules import it by name
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.parametrize("spec", list(SPECS), ids=[_spec_id(s) for s in SPECS])
def test_same_outcomes_as_an_older_runtime(spec):
    """Differential: random arrays with random bad entries give the same result or error
    as an older runtime's fast path (skipped unless $OLD_KERNEL_RUNTIME is set)."""
    old = _old_runtime()
    if old is None:
        pytest.skip("set OLD_KERNEL_RUNTIME to an older kernel_runtime/__init__.py")
    rng = np.random.default_rng(11)
    builder, *rest = spec
    new_fast, old_fast = getattr(rt, builder)(*rest), getattr(old, builder)(*rest)
    _, names, positive, _ = _base(spec, np.float64, "C", rng)
    for _ in range(300):
        dtype = rng.choice([np.float64, np.float32])
        info = np.finfo(dtype)
        pool = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, info.max,
                         info.smallest_subnormal], dtype)
        layout = rng.choice(["C", "F", "strided"])
        _, _, _, arrays = _base(spec, dtype, layout, rng)
        arrays = [_writeable_copy(a, layout) for a in arrays]
        for _ in range(rng.integers(0, 3)):
            a = arrays[rng.integers(len(arrays))]
            a[np.unravel_index(rng.integers(a.size), a.shape)] = rng.choice(pool)
        outcomes = []
        for fast in (new_fast, old_fast):
            try:
                outcomes.append(fast(tuple(arrays), None))
            except ValueError as error:
                outcomes.append(str(error))
        assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("size", [16, checks.BLAS_THREADS_FROM])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_bulk_checks_on_either_side_of_the_blas_threshold(size, bad):
    """Below the threshold a dot product per pair, from it minimum and maximum per array:
    each catches a NaN or an infinity anywhere in either array of a pair (and the torch
    check of CPU tensors, on NumPy views, catches them too)."""
    torch = pytest.importorskip("torch")
    ok = np.linspace(0.5, 2.0, size)
    assert checks.values_pass((ok, ok.copy()), (1,), ((0, 1),))
    for at in (0, size // 2, size - 1):
        for which in (0, 1):
            arrays = [ok.copy(), ok.copy()]
            arrays[which][at] = bad
            assert not checks.values_pass(arrays, (), ((0, 1),))
            with pytest.raises(ValueError, match=("mu", "sigma")[which]):
                rt.prepare_elementwise(("mu", "sigma"), tuple(map(torch.from_numpy, arrays)),
                                       ("sigma",), ("mu", "sigma"), None)


@pytest.mark.parametrize("which", [0, 1])
def test_the_torch_check_of_cpu_tensors_of_other_sizes(which):
    """CPU tensors that broadcast (of other sizes) are each tested by itself."""
    torch = pytest.importorskip("torch")
    arrays = [torch.zeros(3, 1, dtype=torch.float64), torch.ones(4, dtype=torch.float64)]
    rt.prepare_elementwise(("mu", "sigma"), tuple(arrays), ("sigma",), ("mu", "sigma"), None)
    arrays[which][-1] = np.inf
    with pytest.raises(ValueError, match=("mu", "sigma")[which]):
        rt.prepare_elementwise(("mu", "sigma"), tuple(arrays), ("sigma",), ("mu", "sigma"),
                               None)
