"""Property-based tests (hypothesis) of every generated kernel (issue 25 item 8).

Kernels are discovered from ``generated.__all__``, each module's ``__all__`` and each
kernel's signature and docstring (a new module or kernel is covered without new code;
``derive.loader.kernel_modules()`` would derive everything first, 30 s). Hypothesis
draws shapes (batch dimensions, 0-d, empty batches), dtypes (float32, float64), layouts
(contiguous, strided views, broadcast inputs, transposed non-contiguous views, Fortran
order) and values (moderate, huge, tiny, subnormal, +-0, +-inf, NaN; ``check_finite=False``).

Properties:

- every library agrees with NumPy, NaN for NaN, inf for inf (same sign), and finite
  values within the library's bound (:data:`BOUNDS`): NumPy, eager PyTorch,
  ``array_api_strict`` and Dask run the same formulas with libm-grade functions (a few
  ulp); ``torch.compile`` (the "eager" backend: Dynamo's capture and the traced
  double-where path; Inductor's C++ build takes minutes and is not run here) likewise;
  ``jax.jit`` is within docs/numerics.md's 64 eps for the ``expm1(x) - x`` pieces, so 128 eps
  against NumPy. JAX flushes subnormals to zero (XLA on CPU), so subnormal inputs are
  not drawn for JAX: they are replaced by zero of the same sign before the NumPy call
  it is compared with, and results below the smallest normal compare as zero;
- no kernel changes an input (every input's whole buffer, including the entries a strided
  view skips, is bit-for-bit unchanged after the call) or returns an output that shares
  memory with an input (NumPy, PyTorch, ``array_api_strict``; a Dask output is never an
  input object, and its computed values never share the caller's NumPy buffer);
- for finite inputs in the domain, NumPy's outputs are finite and within the stated
  bound of a hand-written long-double reference (``tests/kl_reference.py``,
  ``tests/reference.py``): ``kl`` of every KL module within docs/numerics.md's eps bounds,
  ``kl_grad`` and the estimators within a few eps of their terms' magnitudes, and every
  coupling kernel within a few eps of ``tests/reference.py``'s formulas.

Runs are deterministic (``derandomize=True``, ``database=None``); the examples hypothesis
found are kept as ``@example`` regression cases. Compiled paths (``torch.compile``,
``jax.jit``) draw one fixed shape per kernel and few examples, and cache the compiled
function per kernel, so each kernel compiles at most once per dtype.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import warnings
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pytest

import generated

from . import kl_reference as klref
from . import reference as ref
from .backends import make

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (test extra)")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# --- the kernels, discovered ------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    name: str
    kind: str  # "batch" (..., n), "param" (n,), "function", "jacobian", "elementwise",
    #            "positive" (elementwise, every entry > 0)


@dataclass(frozen=True)
class Kernel:
    module: str
    name: str
    args: tuple[Arg, ...]

    @property
    def fn(self) -> Any:
        return getattr(importlib.import_module(f"generated.{self.module}"), self.name)

    @property
    def coupling(self) -> bool:
        return any(a.kind == "batch" for a in self.args)

    @property
    def id(self) -> str:
        return f"{self.module}.{self.name}"


def _kind(name: str, annotation: str, doc: str) -> str:
    line = re.search(rf"^\s+{re.escape(name)}: (.*)$", doc, re.MULTILINE)
    text = line.group(1) if line else ""
    if "Callable" in str(annotation):
        return "jacobian" if "(..., n, n)" in text else "function"
    if "shape (n,)" in text:
        return "param"
    if "shape (..., n)" in text:
        return "batch"
    return "positive" if "> 0" in text else "elementwise"


def discover() -> list[Kernel]:
    """Every kernel of every generated module, its arguments' kinds from its docstring."""
    found = []
    for module_name in generated.__all__:
        module = importlib.import_module(f"generated.{module_name}")
        for name in module.__all__:
            fn = getattr(module, name)
            params = [p for p in inspect.signature(fn).parameters.values()
                      if p.kind is p.POSITIONAL_OR_KEYWORD]
            found.append(Kernel(module_name, name, tuple(
                Arg(p.name, _kind(p.name, p.annotation, fn.__doc__)) for p in params)))
    return found


KERNELS = discover()
IDS = [k.id for k in KERNELS]


def _outputs(kernel: Kernel) -> int:
    doc = kernel.fn.__doc__
    return len(re.findall(r"^        \w+: ", doc[doc.index("Returns:"):], re.MULTILINE))


#: Dask (about 0.3 s a call: graph building and a scheduler run), torch.compile and
#: jax.jit (0.3-1.5 s a compile) are run on one kernel per module within the time budget:
#: the one with the most outputs (forward_and_log_det, kl_grad_stl), the last of equals.
#: PROPERTY_TESTS_FULL=1 runs every kernel on every library.
FULL = os.environ.get("PROPERTY_TESTS_FULL") == "1"
SLOW_KERNELS = KERNELS if FULL else [
    max((k for k in KERNELS if k.module == m),
        key=lambda k: (_outputs(k), generated.__dict__[m].__all__.index(k.name)))
    for m in generated.__all__]


def test_discovery_finds_every_kernel_and_kind():
    assert len({k.module for k in KERNELS}) == len(generated.__all__) >= 9
    kinds = {(k.module, a.name): a.kind for k in KERNELS for a in k.args}
    assert kinds["gaussian_kl", "sigma"] == kinds["gaussian_kl_pair", "sigma_p"] == "positive"
    assert kinds["gaussian_kl_logvar", "logvar"] == "elementwise"
    assert kinds["coupling", "s"] == "param" and kinds["coupling", "x1"] == "batch"
    assert kinds["coupling", "JF"] == "jacobian" and kinds["coupling", "G"] == "function"


# --- values -----------------------------------------------------------------------------

DTYPES = (np.float64, np.float32)


def _specials(dtype) -> list[float]:
    info = np.finfo(dtype)
    sub = float(info.smallest_subnormal)
    return [0.0, -0.0, np.inf, -np.inf, np.nan, sub, -sub, 3 * sub, float(info.tiny) / 4,
            float(info.tiny), float(info.max), -float(info.max), float(info.max) / 4,
            1.0, -1.0, float(np.nextafter(dtype(1), dtype(2)))]


def _moderate(dtype, positive: bool) -> st.SearchStrategy:
    width = 64 if dtype == np.float64 else 32
    if positive:  # a scale: log-uniform over 1e-3 .. 1e3
        return st.floats(-3, 3, width=64).map(lambda e: float(dtype(10.0**e)))
    return st.floats(-30, 30, width=width, allow_subnormal=False)


def values(dtype, positive: bool, special: bool) -> st.SearchStrategy:
    """One entry: moderate values; with ``special``, also +-0, +-inf, NaN, subnormals, huge."""
    base = _moderate(dtype, positive)
    if not special:
        return base
    return st.one_of(base, base, st.sampled_from(_specials(dtype)))


# --- layouts ----------------------------------------------------------------------------

LAYOUTS = ("c", "strided", "broadcast", "transposed", "fortran")


@dataclass
class Laid:
    """An argument's values and how they are laid out in memory."""

    values: np.ndarray  # the logical values, C order
    layout: str
    source: np.ndarray  # the NumPy buffer the layout views (the values for "c")


def lay_out(values: np.ndarray, layout: str) -> Laid:
    if layout == "strided" and values.ndim:
        src = np.repeat(values, 2, axis=-1)
        src[..., 1::2] = 7.0  # entries the view skips: must stay untouched
        return Laid(values, layout, src)
    if layout == "broadcast" and values.ndim:
        # values constant along axis 0: the source has length 1 there
        return Laid(np.broadcast_to(values[:1], values.shape).copy(), layout,
                    np.ascontiguousarray(values[:1]))
    if layout == "transposed" and values.ndim >= 2:
        return Laid(values, layout, np.ascontiguousarray(values.T))
    if layout == "fortran" and values.ndim >= 2:
        return Laid(values, layout, np.asfortranarray(values))
    return Laid(values, "c", np.ascontiguousarray(values))


def _view(lib, source: Any, laid: Laid) -> Any:
    """The library's array for ``laid``, a view of ``source`` (the library's buffer)."""
    xp = lib.xp
    if laid.layout == "strided":
        return source[..., ::2]
    if laid.layout == "broadcast":
        return xp.broadcast_to(source, laid.values.shape)
    if laid.layout == "transposed":
        return xp.permute_dims(source, tuple(reversed(range(source.ndim))))
    return source


# --- libraries --------------------------------------------------------------------------

LIBS = ("numpy", "torch", "torch_compile", "jax_jit", "dask", "array_api_strict")
EAGER = ("numpy", "torch", "array_api_strict")
COMPILED = ("torch_compile", "jax_jit")
#: agreement with NumPy, in eps of the output dtype (relative, and absolute against the
#: magnitude of the call's terms; see _agree)
BOUNDS = {"numpy": 0, "torch": 16, "torch_compile": 16, "dask": 16, "array_api_strict": 16,
          "jax_jit": 128}


@cache
def lib_of(name: str):
    return make({"torch_compile": "torch", "jax_jit": "jax"}.get(name, name))


def _source(lib, laid: Laid) -> Any:
    if lib.name == "torch":
        import torch

        return torch.from_numpy(laid.source.copy())  # keeps the layout (Fortran strides)
    if lib.name == "dask":
        import dask.array as da

        return da.from_array(laid.source, chunks=2)
    return lib.asarray(laid.source.copy())


def _elementwise(lib):
    """F, G, JF, JG written with the library's own functions: F = tanh, G = 0.5 sin."""
    xp = lib.xp

    def F(x):
        return xp.tanh(x)

    def G(x):
        return 0.5 * xp.sin(x)

    def diag(d):
        eye = xp.eye(d.shape[-1], dtype=d.dtype)
        return xp.expand_dims(d, axis=-1) * eye

    def JF(x):
        return diag(1 - xp.tanh(x) ** 2)

    def JG(x):
        return diag(0.5 * xp.cos(x))

    return {"F": F, "G": G, "JF": JF, "JG": JG}


@cache
def callables(name: str) -> dict:
    """One set of callables per library (the same objects: compiled code is cached)."""
    if name == "numpy":
        return {"F": np.tanh, "G": lambda x: 0.5 * np.sin(x),
                "JF": lambda x: (1 - np.tanh(x) ** 2)[..., :, None] * np.eye(x.shape[-1]),
                "JG": lambda x: (0.5 * np.cos(x))[..., :, None] * np.eye(x.shape[-1])}
    return _elementwise(lib_of(name))


_COMPILED: dict = {}


def _compiled(name: str, kernel: Kernel):
    """``kernel`` compiled by ``torch.compile`` (the kernel function itself: Dynamo caches
    per code object) or ``jax.jit`` (arrays in, callables closed over), once per kernel."""
    key = (name, kernel.id)
    if key not in _COMPILED:
        fns, fn = callables(name), kernel.fn
        if name == "jax_jit":
            import jax

            def call(*arrays, fn=fn, kernel=kernel, fns=fns):
                it = iter(arrays)
                return fn(*[fns[a.name] if a.kind in ("function", "jacobian") else next(it)
                            for a in kernel.args], check_finite=False)

            _COMPILED[key] = jax.jit(call)
        else:
            import torch

            compiled = torch.compile(fn, fullgraph=True, backend="eager", dynamic=False)

            def call(*arrays, compiled=compiled, kernel=kernel, fns=fns):
                it = iter(arrays)
                return compiled(*[fns[a.name] if a.kind in ("function", "jacobian")
                                  else next(it) for a in kernel.args], check_finite=False)

            _COMPILED[key] = call
    return _COMPILED[key]


def _flush(a: np.ndarray) -> np.ndarray:
    """Subnormals as zero of the same sign (what XLA on CPU computes with)."""
    a = a.copy()
    tiny = np.finfo(a.dtype).tiny
    small = (np.abs(a) < tiny) & (a != 0)
    a[small] = np.copysign(0.0, a[small])
    return a


def run(name: str, kernel: Kernel, laid: list[Laid | None]) -> tuple[tuple[Any, ...], list]:
    """``kernel`` on library ``name``: its outputs as NumPy arrays, and the arrays it got
    (for the aliasing and mutation checks)."""
    lib = lib_of(name)
    fns = callables(name)
    sources, arrays = [], []
    for v in laid:
        if v is None:
            continue
        src = _source(lib, v)
        sources.append((v, src))
        arrays.append(_view(lib, src, v))
    if name in COMPILED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = _compiled(name, kernel)(*arrays)
    else:
        it = iter(arrays)
        args = [fns[a.name] if a.kind in ("function", "jacobian") else next(it)
                for a in kernel.args]
        out = kernel.fn(*args, check_finite=False)
    out = out if isinstance(out, tuple) else (out,)
    computed = None
    if name == "dask":  # one graph run for every output, in this thread
        import dask

        computed = tuple(np.asarray(c) for c in dask.compute(*out, scheduler="synchronous"))
    check_no_alias_no_mutation(name, lib, out, sources, computed)
    return computed or tuple(lib.numpy(o) for o in out), sources


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


def check_no_alias_no_mutation(name, lib, outs, sources, computed=None) -> None:
    for laid, src in sources:
        now = laid.source if name == "dask" else lib.numpy(src)
        assert np.array_equal(_bits(now), _bits(laid.source)), f"{name}: an input was changed"
        for k, o in enumerate(outs):
            if name in ("numpy", "array_api_strict"):
                buf = o if name == "numpy" else o._array
                sbuf = src if name == "numpy" else src._array
                assert not np.shares_memory(buf, sbuf), f"{name}: output {k} aliases an input"
            elif name in ("torch", "torch_compile"):
                if o.numel() and src.numel():
                    assert o.untyped_storage().data_ptr() != src.untyped_storage().data_ptr(), \
                        f"{name}: output {k} aliases an input"
            elif name == "dask":
                assert o is not src, f"dask: output {k} is an input object"
    for k, c in enumerate(computed or ()):
        for laid, _ in sources:
            assert not np.shares_memory(c, laid.source), \
                f"dask: computed output {k} shares the caller's buffer"


# --- agreement --------------------------------------------------------------------------


def _agree(name: str, got: np.ndarray, want: np.ndarray, scale: np.ndarray, dtype) -> None:
    assert got.dtype == want.dtype == np.dtype(dtype), (name, got.dtype, want.dtype)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    eps, tiny = float(np.finfo(dtype).eps), float(np.finfo(dtype).tiny)
    if name == "jax_jit":
        got, want = _flush(got), _flush(want)
    nan_g, nan_w = np.isnan(got), np.isnan(want)
    assert np.array_equal(nan_g, nan_w), (name, "NaN where the other is not", got, want)
    inf_g, inf_w = np.isinf(got), np.isinf(want)
    assert np.array_equal(got[inf_g | inf_w], want[inf_g | inf_w]), (name, "inf", got, want)
    fin = np.isfinite(want)
    g, w = got[fin].astype(np.float64), want[fin].astype(np.float64)
    scale = np.broadcast_to(scale, want.shape)[fin]
    with np.errstate(over="ignore"):
        bound = BOUNDS[name] * eps * (np.abs(w) + scale) + (tiny if name == "jax_jit" else 0)
        bad = np.abs(g - w) > bound
    assert not bad.any(), (name, g[bad], w[bad], (np.abs(g - w) / eps)[bad])


def _scale(kernel: Kernel, laid: list[Laid | None], shape: tuple[int, ...]) -> np.ndarray:
    """An absolute floor for the agreement bound, per output entry: the magnitude of the
    terms that entry is formed from, up to products of three of its finite inputs
    (cancellation leaves an error of that size). Element-wise kernels: the entry's own
    inputs; coupling kernels: its batch row's ``x1``, ``x2`` and ``s``."""
    arrays = [np.abs(v.values.astype(np.float64)) for v in laid if v is not None]
    arrays = [np.where(np.isfinite(a), a, 0.0) for a in arrays]
    if kernel.coupling:
        batch = [a for a, arg in zip(arrays, [a for a in kernel.args if a.kind in
                                             ("batch", "param")], strict=True)
                 if arg.kind == "batch"]
        rows = np.maximum.reduce([np.max(a, axis=-1, initial=0.0) for a in
                                  np.broadcast_arrays(*batch)])
        params = [a for a, arg in zip(arrays, [a for a in kernel.args if a.kind in
                                              ("batch", "param")], strict=True)
                  if arg.kind == "param"]
        m = np.maximum(rows, max((float(p.max(initial=0.0)) for p in params), default=0.0))
        m = m.reshape(m.shape + (1,) * (len(shape) - m.ndim))
    else:
        m = np.maximum.reduce(np.broadcast_arrays(*arrays)) if len(arrays) > 1 else arrays[0]
        m = np.broadcast_to(m, shape) if m.ndim <= len(shape) else m
    return np.minimum(np.maximum(m, 1.0), 1e100) ** 3


# --- drawing a call ---------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One array argument: its entries (cycled to fill its shape), layout, how many of the
    call's trailing batch dimensions it keeps (the rest it broadcasts over) and, for
    ``eps``, whether it has a leading sample dimension."""

    values: tuple[float, ...]
    layout: str = "c"
    keep: int = 9
    samples: bool = False


@dataclass(frozen=True)
class Case:
    """One call, independent of the kernel (so found examples can be kept as ``@example``):
    the kernel's array arguments take ``slots`` in order."""

    dtype: str
    batch: tuple[int, ...]
    n: int
    slots: tuple[Slot, ...]


BATCHES = [(), (0,), (3,), (2, 3)]
MAX_ARRAYS = max(sum(a.kind not in ("function", "jacobian") for a in k.args) for k in KERNELS)


@st.composite
def cases(draw, *, batches=BATCHES, dtypes=("float64", "float32"), special=True,
          fixed=False) -> Case:
    dtype = draw(st.sampled_from(dtypes))
    batch = draw(st.sampled_from(batches))
    n = 3 if fixed else draw(st.sampled_from((1, 3)))
    slots = []
    for _ in range(MAX_ARRAYS):
        entries = draw(st.lists(values(np.dtype(dtype).type, False, special), min_size=1,
                                max_size=6))
        slots.append(Slot(tuple(entries),
                          draw(st.sampled_from(LAYOUTS)),
                          len(batch) if fixed else draw(st.integers(0, len(batch))),
                          False if fixed else draw(st.booleans())))
    return Case(dtype, batch, n, tuple(slots))


def laid_out(kernel: Kernel, case: Case, domain: bool = False) -> list[Laid | None]:
    """``case`` as ``kernel``'s arguments (None for its callables). ``domain``: scales
    (``positive`` arguments) as ``|v|`` (0 as 1)."""
    dtype = np.dtype(case.dtype)
    slots = iter(case.slots)
    out = []
    for a in kernel.args:
        if a.kind in ("function", "jacobian"):
            out.append(None)
            continue
        slot = next(slots)
        batch = case.batch
        keep = len(batch) if 0 in batch else min(slot.keep, len(batch))
        shape = batch[len(batch) - keep:]
        if a.kind == "param":
            shape, layout = (case.n,), ("strided" if slot.layout == "strided" else "c")
        else:
            layout = slot.layout
            if a.kind == "batch":
                shape = shape + (case.n,)
            elif a.name == "eps" and slot.samples:
                shape = (2,) + batch
        v = np.resize(np.array(slot.values, dtype), shape)
        if domain and a.kind == "positive":
            v = np.where(v == 0, dtype.type(1), np.abs(v))
        out.append(lay_out(v, layout))
    return out


SETTINGS = settings(deadline=None, derandomize=True, database=None, max_examples=8,
                    suppress_health_check=list(HealthCheck))
COMPILED_SETTINGS = settings(SETTINGS, max_examples=2)


def _quiet():
    """NumPy's overflow/invalid warnings are expected for special values."""
    return np.errstate(all="ignore")


# --- the properties ---------------------------------------------------------------------

#: Found by hypothesis: a Dask output was the caller's input object itself (y2 = x2 in the
#: blocks with b(s) = 1, d_mu = mu in kl_grad), so item assignment on it changed the input.
DASK_IDENTITY = Case("float64", (), 1, (Slot((0.0,)),) * MAX_ARRAYS)
#: subnormals, signed zeros, infinities and NaN together, broadcast and strided
SPECIALS = Case("float64", (2, 3), 3, (
    Slot((5e-324, -0.0, np.inf), "broadcast", 2), Slot((-5e-324, 0.0, np.nan, 1.0), "strided"),
    Slot((-np.inf, 2.2250738585072014e-308, 1e300), "transposed", 1, True),
    Slot((1.0, -1.0), "fortran"), Slot((0.5,), "c", 0)))
EMPTY = Case("float32", (0,), 3, (Slot((1.0,), "strided"),) * MAX_ARRAYS)


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
@SETTINGS
@given(case=cases())
@example(case=DASK_IDENTITY)
@example(case=SPECIALS)
@example(case=EMPTY)
def test_eager_libraries_agree_and_leave_inputs_alone(kernel, case):
    laid = laid_out(kernel, case)
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, _ = run("numpy", kernel, laid)
        for name in EAGER[1:]:
            got, _ = run(name, kernel, laid)
            assert len(got) == len(want)
            for g, w in zip(got, want, strict=True):
                _agree(name, g, w, _scale(kernel, laid, w.shape), case.dtype)


@pytest.mark.parametrize("kernel", SLOW_KERNELS, ids=[k.id for k in SLOW_KERNELS])
@settings(SETTINGS, max_examples=3)
@given(case=cases())
@example(case=DASK_IDENTITY)
@example(case=SPECIALS)
def test_dask_agrees_and_leaves_inputs_alone(kernel, case):
    pytest.importorskip("dask.array")
    laid = laid_out(kernel, case)
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, _ = run("numpy", kernel, laid)
        got, _ = run("dask", kernel, laid)
    for g, w in zip(got, want, strict=True):
        _agree("dask", g, w, _scale(kernel, laid, w.shape), case.dtype)


def test_a_dask_output_is_never_the_callers_array():
    """Found by the property above: y2 = x2 (blocks with b(s) = 1) and d_mu = mu were
    returned as the caller's Dask array itself, so item assignment on the output (which
    rebinds the Dask object's graph) changed the caller's input."""
    da = pytest.importorskip("dask.array")
    from generated import coupling_additive, gaussian_kl

    mu = da.from_array(np.zeros(3), chunks=2)
    d_mu, _ = gaussian_kl.kl_grad(mu, da.ones(3))
    d_mu[0] = 5.0
    np.testing.assert_array_equal(mu.compute(), np.zeros(3))
    x2 = da.from_array(np.arange(6.0).reshape(2, 3), chunks=2)
    _, y2 = coupling_additive.forward(da.zeros((2, 3)), x2, da.zeros(3), da.tanh, da.tanh)
    y2[y2 > 2] = 0.0
    np.testing.assert_array_equal(x2.compute(), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(y2.compute(), [[0, 1, 2], [0, 0, 0]])


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("kernel", SLOW_KERNELS, ids=[k.id for k in SLOW_KERNELS])
@COMPILED_SETTINGS
@given(case=cases(batches=[(2, 3)], dtypes=("float64",), fixed=True))
def test_compiled_libraries_agree_and_leave_inputs_alone(name, kernel, case):
    pytest.importorskip({"jax_jit": "jax", "torch_compile": "torch"}[name])
    laid = laid_out(kernel, case)
    if name == "jax_jit":  # XLA flushes subnormals: none given to JAX
        laid = [None if v is None else lay_out(_flush(v.values), v.layout) for v in laid]
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, _ = run("numpy", kernel, laid)
        got, _ = run(name, kernel, laid)
    for g, w in zip(got, want, strict=True):
        _agree(name, g, w, _scale(kernel, laid, w.shape), case.dtype)


# --- NumPy against hand-written references ------------------------------------------------

LD = np.longdouble


def _terms(kernel: Kernel, a: dict) -> list[list]:
    """Each output of ``kernel`` as a list of terms (their sum is the value, the sum of
    their magnitudes the scale of its rounding error), in long double, typed in from
    PROBLEM.md: z = mu_q + sigma_q eps, t = log q(z) - log p(z)."""
    logvar = "logvar" in kernel.module
    pair = "pair" in kernel.module
    mq = a["mu_q" if pair else "mu"]
    mp = a["mu_p"] if pair else LD(0)
    sq = np.exp(a["logvar_q" if pair else "logvar"] / 2) if logvar else \
        a["sigma_q" if pair else "sigma"]
    sp = (np.exp(a["logvar_p"] / 2) if logvar else a["sigma_p"]) if pair else LD(1)
    d = mq - mp
    if kernel.name == "kl_grad":
        out = [[d / sp**2], [sq / sp**2, -1 / sq], [-d / sp**2],
               [1 / sp, -sq**2 / sp**3, -d**2 / sp**3]]
    else:
        e = a["eps"]
        z = (mq - mp) + sq * e
        score = [-e / sq] if kernel.name == "kl_grad_stl" else []
        out = [score + [d / sp**2, sq * e / sp**2],
               [-1 / sq] + [v * e for v in score] + [d * e / sp**2, sq * e * e / sp**2]
               if kernel.name == "kl_grad_reparam" else
               [v * e for v in score] + [d * e / sp**2, sq * e * e / sp**2],
               [-z / sp**2], [1 / sp, -z**2 / sp**3]]
    if not pair:
        out = out[:2]
    if logvar:  # d/dlogvar = d/dsigma * sigma / 2
        out[1] = [t * sq / 2 for t in out[1]]
        if pair:
            out[3] = [t * sp / 2 for t in out[3]]
    return out


def _kl_exact(kernel: Kernel, a: dict) -> np.ndarray:
    pair = "pair" in kernel.module
    if "logvar" in kernel.module:
        lq = a["logvar_q" if pair else "logvar"]
        x = lq - a["logvar_p"] if pair else lq
        m2 = (a["mu_q"] - a["mu_p"]) ** 2 / np.exp(a["logvar_p"]) if pair else a["mu"] ** 2
    else:
        sq = a["sigma_q" if pair else "sigma"]
        x = 2 * np.log(sq / a["sigma_p"]) if pair else 2 * np.log(sq)
        m2 = ((a["mu_q"] - a["mu_p"]) / a["sigma_p"]) ** 2 if pair else a["mu"] ** 2
    x = np.asarray(x, LD)
    return m2 / 2 + klref.expm1mx_ld(x.reshape(-1)).reshape(x.shape) / 2


#: kl's relative error bounds in eps (float64, float32), from docs/numerics.md
KL_BOUNDS = {"gaussian_kl": (4, 7), "gaussian_kl_logvar": (3, 4),
             "gaussian_kl_pair": (5, 8), "gaussian_kl_pair_logvar": (5, 8)}
#: bound in eps of the terms' magnitudes, for the outputs without a stated bound
TERMS_BOUND = 16


def _in_domain(kernel: Kernel, laid: list[Laid | None]) -> list[Laid | None]:
    """Moderate values in the documented ranges: scales 1e-3 .. 1e3, log-variances
    -12 .. 12, coupling's s -3 .. 3 (entries are drawn from -30 .. 30; s = -13 makes
    inverse's x2 = y2 e^13, where sin(x2) in G is ill-conditioned)."""
    out = []
    for arg, v in zip(kernel.args, laid, strict=True):
        if v is not None and arg.kind in ("positive", "param") or "logvar" in arg.name:
            x = v.values.astype(np.float64)
            x = 10.0 ** (x / 10) if arg.kind == "positive" else \
                x * 0.1 if arg.kind == "param" else x * 0.4
            v = lay_out(x.astype(v.values.dtype), v.layout)
        out.append(v)
    return out


@pytest.mark.skipif(not klref.HAS_EXTENDED, reason="numpy.longdouble is float64 here")
@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
@SETTINGS
@given(case=cases(special=False))
@example(case=Case("float64", (3,), 3, (Slot((1e-3, 0.0, -29.9)),) * MAX_ARRAYS))
@example(case=Case("float64", (), 1, (Slot((0.0,)), Slot((7.622555081660819e-222,)))
                   + (Slot((0.0,)),) * (MAX_ARRAYS - 2)))  # found: kl underflows correctly
@example(case=Case("float64", (), 1, (Slot((15.880317193563812,)), Slot((0.0,)), Slot((1.0,)),
                                      Slot((1.0,)), Slot((-19.0625,)))))  # found: z - mu_p
@example(case=Case("float64", (), 1, (Slot((0.0,)), Slot((7.0,)), Slot((-13.0,)))
                   + (Slot((0.0,)),) * (MAX_ARRAYS - 3)))  # found: s = -13, see _in_domain
def test_numpy_is_finite_and_within_its_bound_of_a_reference_in_the_domain(kernel, case):
    laid = _in_domain(kernel, laid_out(kernel, case))
    dtype = np.dtype(case.dtype)
    eps = float(np.finfo(dtype).eps)
    with np.errstate(all="raise", under="ignore"):
        got, _ = run("numpy", kernel, laid)
    for g in got:
        assert np.isfinite(g).all(), (kernel.id, g)
    arrays = [v for v in laid if v is not None]
    if kernel.coupling:
        block = kernel.module
        x1, x2, s = (v.values.astype(np.float64) for v in arrays)
        layers = ref.DenseLayers(np.eye(case.n), np.zeros(case.n), np.eye(case.n),
                                 np.zeros(case.n))  # F = tanh, G = 0.5 sin, as callables()
        fwd = ref.forward(block, x1, x2, s, layers.F, layers.G)
        want = {"forward": fwd, "inverse": ref.inverse(block, x1, x2, s, layers.F, layers.G),
                "jacobian": (ref.jacobian(block, x1, x2, s, layers),),
                "log_det_jacobian": (ref.log_det(block, x1, x2, s, layers.G),),
                "forward_and_log_det": fwd + (ref.log_det(block, x1, x2, s, layers.G),)}
        for g, w in zip(got, want[kernel.name], strict=True):
            w = np.broadcast_to(w, g.shape)
            scale = np.broadcast_to(_scale(kernel, laid, g.shape), g.shape)
            assert np.all(np.abs(g - w) <= TERMS_BOUND * eps * (np.abs(w) + scale)), \
                (kernel.id, g, w)
        return
    names = [a.name for a in kernel.args]
    a = dict(zip(names, np.broadcast_arrays(*(v.values.astype(LD) for v in arrays)),
                 strict=True))
    if kernel.name == "kl":
        exact = _kl_exact(kernel, a)
        bound = KL_BOUNDS[kernel.module][dtype == np.float32] * eps
        # below the dtype's normal range the rounded value's relative error is unbounded
        # (kl(0, logvar=3e-222) is 2.3e-444: 0 in float64 is correctly rounded)
        normal = np.abs(exact) >= np.finfo(dtype).tiny
        err = np.abs(got[0].astype(LD) - exact)
        assert np.all(err[normal] / exact[normal] <= bound), (kernel.id, err.max() / eps)
        assert np.all(err[~normal] <= np.finfo(dtype).tiny), kernel.id
        return
    # the scale: every term at the inputs' magnitudes with every difference turned into a
    # sum (z - mu_p = mu_q - mu_p + sigma_q eps may cancel inside a term), and for the
    # logvar modules the exp's argument error (|logvar| eps relative)
    mag = {k: (-np.abs(v) if k == "mu_p" else np.abs(v) if k[:2] in ("mu", "ep") else v)
           for k, v in a.items()}
    cond = 1 + sum(np.abs(v) for k, v in a.items() if "logvar" in k)
    for g, terms, mterms in zip(got, _terms(kernel, a), _terms(kernel, mag), strict=True):
        value = sum(terms)
        scale = sum(np.abs(t) for t in mterms) * cond
        w = np.broadcast_to(value, g.shape)
        # the inputs' own rounding (float32 -> the kernel's exp of logvar) is in the terms;
        # below the dtype's normal range the error is absolute, as for kl above
        # (kl_grad_stl at mu_q = 1e-300, eps = 2e-300 is 2.1e-600: 0 is correctly rounded)
        assert np.all(np.abs(g.astype(LD) - w) <= TERMS_BOUND * eps * np.broadcast_to(
            scale, g.shape) + np.finfo(dtype).tiny), (kernel.id, g, w)
