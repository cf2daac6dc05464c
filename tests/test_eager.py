"""The eager lowering of piecewise values (array-API body) against the double where.

A piecewise value is selected as :mod:`kernel_runtime.pieces` decides per call: gathered
(the piece holding on most entries everywhere, each other piece on the entries where it
holds), ``torch.where`` over every piece (eager PyTorch at small sizes, no device sync),
or the traced double where. Every path evaluates the same printed pieces. These tests
parametrize over the kernel registry: every kernel with a piecewise value, of every
module ``derive generate`` writes (a new specification is covered without new code),
computes the same values and the same finite gradients on every path, on dense grids
that include each condition's thresholds and their floating-point neighbours. They also
cover the runtime's choice of path (:func:`kernel_runtime.pieces.strategy`) and the
PyTorch value check's fast path.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import math
import warnings
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import sympy as sp
from array_api_compat import array_namespace

import kernel_runtime as rt
from codegen.plan import plan_kernel
from derive.loader import kernel_modules
from kernel_runtime import pieces
from kernel_runtime.fused import fused_available

from .backends import make
from .conftest import rendered_once

torch = pytest.importorskip("torch", reason="torch is not installed (test extra)")


def _thresholds(plan) -> tuple[float, ...]:
    """Every finite number in the planned kernel's piece conditions."""
    values = set()
    for st in plan.statements:
        for piece in st.pieces:
            values |= {float(t) for t in piece.cond.atoms(sp.Number) if t.is_finite}
    return tuple(sorted(values))


@dataclass(frozen=True)
class PiecewiseKernel:
    """What these tests read of a kernel with a piecewise value: its name, its arguments'
    names and kinds, and the thresholds of its piece conditions (from its plan)."""

    name: str
    args: tuple[SimpleNamespace, ...]
    thresholds: tuple[float, ...]
    gradient: str = ""


def _describe() -> str:
    """``[module, kernel, [[arg, kind], ...], thresholds]`` for every kernel of the registry
    with a piecewise value, as JSON (planning takes about 0.4 s a kernel, and deriving the
    registry 20 s: done once per run, by the first process that collects this module)."""
    found = []
    for module in kernel_modules():
        for kernel in module.kernels:
            plan = plan_kernel(kernel)
            if any(st.kind == "piecewise" for st in plan.statements):
                found.append([module.name, kernel.name,
                              [[a.name, a.kind] for a in kernel.args], _thresholds(plan),
                              kernel.gradient])
    return json.dumps(found)


#: The code that computes the description, in its cache key (the engine's digest is the rest)
_CODE = hashlib.sha256((inspect.getsource(_thresholds) + inspect.getsource(_describe))
                       .encode()).hexdigest()


def _piecewise_kernels() -> list[tuple[str, PiecewiseKernel]]:
    """``(module name, kernel)`` for every kernel of the registry with a piecewise value;
    through the run's derivation cache (:func:`tests.conftest.rendered_once`, keyed by the
    engine's sources, which hold the material), so the xdist workers derive it once."""
    return [(module, PiecewiseKernel(
        name, tuple(SimpleNamespace(name=a, kind=k) for a, k in args), tuple(thresholds),
        gradient)) for module, name, args, thresholds, gradient in json.loads(
            rendered_once("eager-piecewise-kernels", [_CODE], _describe))]


PIECEWISE = _piecewise_kernels()
IDS = [f"{m}.{k.name}" for m, k in PIECEWISE]


@functools.cache
def _pool_of(thresholds: tuple[float, ...], positive: bool) -> np.ndarray:
    centres = [0.0, 1.0]
    for t in thresholds:
        centres += [t, -t, 2 * t, t / 2]
        centres += [math.exp(v) for v in (t, t / 2, -t, -t / 2) if abs(v) < 700]
    near = [np.nextafter(c, d) for c in centres for d in (-np.inf, np.inf)]
    wide = np.concatenate([np.logspace(-300, 300, 241), np.logspace(-3, 3, 301)])
    values = np.unique(np.concatenate([centres, near, wide, -wide]))
    values = values[values > 0] if positive else values
    values = values[np.isfinite(values)]
    values.flags.writeable = False
    return values


def _pool(kernel, positive: bool) -> np.ndarray:
    """Dense values for one argument: a wide grid, each threshold t as the argument, as
    exp(t), exp(t/2) (the conditions are on intermediates such as 2 log sigma) and their
    negatives and reciprocals, each with its floating-point neighbours."""
    return _pool_of(kernel.thresholds, positive)


LAYOUTS = ("flat", "broadcast", "strided")


def _inputs(kernel, seed: int, lib, layout: str = "flat") -> tuple[list, dict]:
    """Arguments for ``kernel``: grids of every array, shuffled against each other; laid out
    flat, broadcasting against each other ((k, 1) against (1, k)), or as strided views."""
    rng = np.random.default_rng(seed)
    kinds = {a.kind for a in kernel.args}
    coupling = "batch" in kinds
    size = 2048
    args = []
    arrays = 0
    for arg in kernel.args:
        if arg.kind == "function":
            args.append(lambda v: v * 1.0)  # the piece conditions see the input's values
        elif arg.kind == "jacobian":
            def jacobian(v, xp=lib.xp):
                eye = xp.eye(v.shape[-1], dtype=v.dtype)
                return xp.broadcast_to(eye, tuple(v.shape) + (v.shape[-1],)) * 1.0
            args.append(jacobian)
        else:
            pool = _pool(kernel, positive=arg.kind == "positive")
            if arg.kind == "param":
                values = rng.choice(pool[np.abs(pool) < 5], size=4)
            elif layout == "broadcast":
                k = 45
                shape = (k, 1) if arrays % 2 == 0 else (1, k)
                values = rng.choice(pool, size=shape + ((4,) if coupling else ()))
            elif layout == "strided":
                values = rng.choice(pool, size=(size // 4, 8) if coupling else (2 * size,))
            else:
                values = rng.choice(pool, size=size)
                if coupling:
                    values = values.reshape(size // 4, 4)
            array = lib.asarray(values)
            if layout == "strided":
                array = array[..., ::2]
            args.append(array)
            arrays += 1
    return args, {"check_finite": False}


#: How the pieces are selected: as decided per call (:func:`kernel_runtime.pieces.strategy`),
#: ``torch.where`` over every piece, every piece gathered, or the last or the first piece
#: evaluated everywhere and the others gathered.
VARIANTS = ("measured", "where", "gathered", "last", "first")
#: The variants that gather
GATHERING = ("gathered", "last", "first")


def _variant(monkeypatch, variant: str) -> None:
    if variant == "measured":
        return
    how = "where" if variant == "where" else "gather"
    real = pieces.strategy
    monkeypatch.setattr(pieces, "strategy", lambda xp, shape, arrays: how
                        if real(xp, shape, arrays) != "traced" else "traced")
    if variant in GATHERING:
        monkeypatch.setattr(pieces, "base_piece", lambda counts, size: {
            "gathered": None, "last": len(counts) - 1, "first": 0}[variant])


def _traced(monkeypatch) -> None:
    """Make every call take the double where, as under tracing."""
    monkeypatch.setattr(pieces, "strategy", lambda xp, shape, arrays: "traced")


def _fused_route(kernel, module: str) -> bool:
    """Whether eager CPU tensors run this kernel's fused body (numba importable, and the
    module has one: kernel_runtime.gradients._on_views decides)."""
    mod = importlib.import_module(f"generated.{module}")
    return bool(kernel.gradient) and fused_available() and hasattr(
        getattr(mod, "fused", None), kernel.name)


def _run(kernel, module: str, args, kwargs, fused: bool = False):
    mod = importlib.import_module(f"generated.{module}")
    fn = getattr(mod.fused if fused else mod, kernel.name)
    with np.errstate(all="ignore"):
        out = fn(*args, **kwargs)
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["torch", "array_api_strict"])
@pytest.mark.parametrize(("module", "kernel"), PIECEWISE, ids=IDS)
def test_eager_and_traced_pieces_agree_on_dense_grids(monkeypatch, name, module, kernel,
                                                      layout, variant):
    """Bit for bit: each piece is the same expression on the same values on both paths."""
    lib = make(name)
    _variant(monkeypatch, variant)
    calls = []
    taken = pieces.taken
    monkeypatch.setattr(pieces, "taken", lambda *a: calls.append(1) or taken(*a))
    for seed in range(3):
        args, kwargs = _inputs(kernel, seed, lib, layout)
        eager = [lib.numpy(v) for v in _run(kernel, module, args, kwargs)]
        with monkeypatch.context() as m:
            if kernel.gradient and pieces.strategy(array_namespace(*args), (), args) == "numpy":
                # CPU tensors run the NumPy body on views of their memory (through
                # rt.differentiable), or its fused body where numba is importable: its
                # values are NumPy's (or the C library's), whose log and exp may round
                # otherwise than torch's, so they are compared with that kernel's
                args = [lib.numpy(a) for a in args]
                fused = _fused_route(kernel, module)
            else:
                _traced(m)
                fused = False
            traced = [lib.numpy(v) if not isinstance(v, np.ndarray) else v
                      for v in _run(kernel, module, args, kwargs, fused)]
        for e, t in zip(eager, traced, strict=True):
            np.testing.assert_array_equal(e, t)
    assert calls or variant not in GATHERING, "the pieces were not gathered"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("module", "kernel"), PIECEWISE, ids=IDS)
def test_eager_gradients_are_finite_and_equal_the_double_where(monkeypatch, module, kernel,
                                                               layout, variant):
    """torch.autograd.grad through every output: where the double where's gradient is
    finite, the eager one is the same (the last piece, evaluated everywhere, must not
    leak 0 * inf = NaN from the entries another piece overwrites)."""
    lib = make("torch")
    _variant(monkeypatch, variant)
    for seed in range(2):
        args, kwargs = _inputs(kernel, seed, lib, layout)
        args = [a.detach().requires_grad_() if isinstance(a, torch.Tensor) else a
                for a in args]
        leaves = [a for a in args if isinstance(a, torch.Tensor)]

        def grads(args=args, leaves=leaves, kwargs=kwargs):
            outs = _run(kernel, module, args, kwargs)
            total = sum((o * (o.detach().abs() < 1e300)).sum() for o in outs)
            return [g if g is not None else torch.zeros_like(x) for g, x in zip(
                torch.autograd.grad(total, leaves, allow_unused=True), leaves, strict=True)]

        eager = grads()
        with monkeypatch.context() as m:
            _traced(m)
            traced = grads()
        # broadcast: a leaf's gradient is a sum over the broadcast rows, which the two
        # lowerings may add in a different order (a few ulp apart)
        rtol = 8 * torch.finfo(leaves[0].dtype).eps if layout == "broadcast" else 0
        fused = variant == "measured" and _fused_route(kernel, module)
        if fused and layout != "broadcast":
            # the backward is kl_grad's fused body (kernel_runtime.gradients), whose exp
            # and expm1 are the C library's, not torch's: the gradient is that body's,
            # times the incoming gradient (the mask below), bit for bit
            (out,) = _run(kernel, module, args, kwargs)
            mask = (out.detach().abs() < 1e300).numpy()
            grad = getattr(importlib.import_module(f"generated.{module}").fused,
                           kernel.gradient)
            with np.errstate(all="ignore"):  # 0 * inf where the mask drops an entry
                expected = [x * mask for x in grad(*(a.detach().numpy() for a in leaves),
                                                    **kwargs)]
            for e, x in zip(eager, expected, strict=True):
                np.testing.assert_array_equal(e.numpy(), x)
        for e, t in zip(eager, traced, strict=True):
            finite = torch.isfinite(t)
            assert torch.isfinite(e[finite]).all()
            if not fused:
                torch.testing.assert_close(e[finite], t[finite], rtol=rtol, atol=0)


@pytest.mark.parametrize("parameterization", ["gaussian_kl", "gaussian_kl_logvar"])
def test_kl_gradients_at_every_piece_equal_kl_grad(parameterization):
    """Autograd through the eager kl equals the exact kl_grad where each piece holds: sigma
    from 1e-200 to 1e160, sigma = 1 exactly, next to the pieces' thresholds."""
    m = importlib.import_module(f"generated.{parameterization}")
    sigma = np.concatenate([np.logspace(-200, 160, 721), [1.0, np.exp(0.25), np.exp(-0.25),
                                                          np.e, np.exp(44.0)]])
    scale = sigma if parameterization == "gaussian_kl" else 2 * np.log(sigma)
    mu = torch.tensor(np.linspace(-3, 3, sigma.size), requires_grad=True)
    s = torch.tensor(scale, requires_grad=True)
    assert pieces.eager(array_namespace(s), (s,))
    d_mu, d_s = torch.autograd.grad(m.kl(mu, s).sum(), (mu, s))
    want_mu, want_s = m.kl_grad(mu.detach(), s.detach())
    finite = torch.isfinite(want_s)  # d/dlogvar = (sigma^2 - 1)/2 overflows past ~1e154
    assert finite.sum() > 700
    assert torch.isfinite(d_s[finite]).all() and torch.isfinite(d_mu).all()
    torch.testing.assert_close(d_mu, want_mu, rtol=1e-15, atol=0)
    torch.testing.assert_close(d_s[finite], want_s[finite], rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("module", "kernel"), PIECEWISE, ids=IDS)
def test_the_eager_path_leaves_the_inputs_alone(monkeypatch, module, kernel, variant):
    """Pieces are written into the kernel's own arrays, never into an input."""
    lib = make("torch")
    _variant(monkeypatch, variant)
    args, kwargs = _inputs(kernel, 0, lib)
    before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    _run(kernel, module, args, kwargs)
    for a, b in zip(args, before, strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)


# --- the runtime's choice of path -------------------------------------------------------


def test_eager_holds_for_eager_torch_and_array_api_strict_only():
    xp = array_namespace(torch.zeros(2))
    assert pieces.eager(xp, (torch.zeros(2),))
    assert not pieces.eager(xp, (torch.zeros(2, device="meta"),))
    strict = make("array_api_strict").xp
    assert pieces.eager(strict, (strict.asarray([1.0]),))
    jnp = pytest.importorskip("jax.numpy")
    assert not pieces.eager(jnp, (jnp.zeros(2),))
    da = pytest.importorskip("dask.array")
    dxp = array_namespace(da.zeros(2))
    assert not pieces.eager(dxp, (da.zeros(2),))


def test_eager_is_false_under_torch_func_and_torch_compile():
    xp = array_namespace(torch.zeros(2))

    def flag(x):
        return x * 0 + (1.0 if pieces.eager(xp, (x,)) else 0.0)

    x = torch.zeros(3)
    assert flag(x).tolist() == [1.0] * 3
    assert torch.func.vmap(flag)(x).tolist() == [0.0] * 3
    assert torch.func.grad(lambda v: flag(v).sum())(x).tolist() == [0.0] * 3
    compiled = torch.compile(flag, fullgraph=True, backend="eager")
    with warnings.catch_warnings():  # array-api-compat's lru_cache, harmless
        warnings.filterwarnings("ignore", message=".*lru_cache.*")
        assert compiled(x).tolist() == [0.0] * 3


def test_eager_helpers_gather_and_patch_with_gradients():
    """take_xp/put_xp: values land where the mask holds; gradients reach both sides."""
    xp = array_namespace(torch.zeros(2))
    x = torch.arange(6.0, dtype=torch.float64).reshape(2, 3).requires_grad_()
    mask = torch.tensor([True, False, True])  # broadcast against (2, 3)
    where = pieces.taken(xp, mask, (2, 3))
    picked = pieces.take_xp(xp, x, where, (2, 3))
    assert picked.tolist() == [0.0, 2.0, 3.0, 5.0]
    out = pieces.put_xp(xp, x * 0, where, 10 * picked)
    assert out.tolist() == [[0.0, 1 * 0, 20.0], [30.0, 0.0, 50.0]]
    (g,) = torch.autograd.grad(out.sum(), x)
    assert g.tolist() == [[10.0, 0.0, 10.0], [10.0, 0.0, 10.0]]
    assert pieces.taken(xp, torch.tensor(False), (4,)) is None
    with torch.no_grad():  # in place on the kernel's own array
        own = torch.zeros(3, dtype=torch.float64)
        where = pieces.taken(xp, mask, (3,))
        assert pieces.put_xp(xp, own, where, torch.ones((), dtype=own.dtype)) is own
    assert own.tolist() == [1.0, 0.0, 1.0]


def test_the_base_piece_holds_on_most_entries():
    assert pieces.base_piece([0, 3, 1, 6], 10) == 3
    assert pieces.base_piece([6, 3, 1, 0], 10) == 0  # whichever piece, not the last
    assert pieces.base_piece([0, 5, 0, 5], 10) is None
    assert pieces.base_piece([0, 0], 0) is None


def test_safe_where_only_where_a_gradient_is_recorded():
    xp = array_namespace(torch.zeros(2))
    x = torch.tensor([1.0, 1000.0], dtype=torch.float64)
    safe = torch.zeros((), dtype=torch.float64)
    assert pieces.safe_where(xp, x < 10, x, safe) is x
    g = x.clone().requires_grad_()
    assert pieces.safe_where(xp, x < 10, g, safe).tolist() == [1.0, 0.0]
    with torch.no_grad():
        assert pieces.safe_where(xp, x < 10, g, safe) is g


# --- the PyTorch value check: sums of squares, then entry by entry ----------------------


def _check(*arrays, positive=()):
    """The value checks alone (``check_finite=True``; one dtype and shape: nothing cast)."""
    names = tuple(f"a{k}" for k in range(len(arrays)))
    rt.prepare_elementwise(names, arrays, tuple(f"a{k}" for k in positive), names, True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torch_value_check_names_the_argument_like_the_exact_check(dtype):
    ok = torch.ones(5, dtype=dtype)
    _check(ok, ok * 1e30, ok * -1e200 if dtype == torch.float64 else ok)  # sums overflow
    for bad in (math.nan, math.inf, -math.inf):
        a = ok.clone()
        a[3] = bad
        with pytest.raises(ValueError, match="^a1: expected finite values, got NaN or inf"):
            _check(ok, a)
        with pytest.raises(ValueError, match="^a1: expected finite values"):
            _check(ok, a.reshape(5, 1).expand(5, 2).T)  # not contiguous: entry by entry
    with pytest.raises(ValueError, match=r"^a0: expected every entry > 0, got a minimum of 0"):
        _check(torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0], dtype=dtype), ok, positive=(0,))
    _check(torch.tensor([1e-300, 2.0], dtype=torch.float64), positive=(0,))


def test_torch_value_check_adds_nothing_to_the_graph():
    x = torch.ones(4, dtype=torch.float64, requires_grad=True)
    _check(x, x * 2)
    assert x.grad is None
    with pytest.raises(ValueError, match="^a0: expected finite values"):
        _check(x * math.inf)


# --- the eager path against hand-written numerics (not only against the traced path) ----

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("module", ["sigma", "logvar"])
def test_eager_kl_against_the_long_double_reference_across_every_piece(module, dtype):
    """The eager PyTorch body on derivation 2.3n's dense grid (1e5 points per piece and
    every boundary +-4 ulp) against ``tests/kl_reference.py``, within the NumPy bounds
    docs/numerics.md states (PyTorch's ``expm1`` and ``exp`` round like NumPy's here)."""
    from . import kl_reference as kr
    from .test_gaussian_kl import BOUNDARIES, BOUNDS, _dense_xs

    if not kr.HAS_EXTENDED:
        pytest.skip("long double is float64 on this platform")
    np_dtype = getattr(np, dtype)
    xs = _dense_xs(np_dtype)
    if module == "sigma":
        sigma = np.exp(xs.astype(np.float64) / 2).astype(np_dtype)
        edges = kr.ulp_neighbours([np.exp(b / 2) for b in BOUNDARIES], np_dtype)
        arg = np.concatenate([sigma, edges])
        arg = arg[(arg != 1) & (arg > 0) & np.isfinite(arg)]
        exact = kr.kl_sigma_ld(0, arg)
        kernel = importlib.import_module("generated.gaussian_kl").kl
    else:
        arg = xs
        exact = kr.kl_logvar_ld(0, arg)
        kernel = importlib.import_module("generated.gaussian_kl_logvar").kl
    t = torch.from_numpy(arg)
    assert pieces.eager(array_namespace(t), (t,))
    value = kernel(torch.zeros((), dtype=t.dtype), t)
    assert value.dtype == t.dtype and bool(torch.isfinite(value).all())
    errors = kr.relative_error_in_eps(value.numpy(), exact, np_dtype)
    assert errors.max() < BOUNDS[np_dtype, module], errors.max()
