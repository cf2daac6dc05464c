"""What the callables F, G (JF, JG) of the coupling kernels receive in mutable libraries.

NumPy, eager PyTorch and ``array_api_strict``: each callable its own copy of its argument,
never the caller's array, nor the kernel's own, nor another callable's; a callable that
writes into it in place raises ``ValueError`` naming it (PyTorch: the copy's version
counter; NumPy and ``array_api_strict``: a read-only buffer whose base is read-only), and
a write no check sees (``torch.from_numpy``, ``Tensor.data``, ``setflags``) reaches
nobody. References are typed in below (the torch scales of each block), not generated.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os

import numpy as np
import pytest

import kernel_runtime
from derive.coursework.blocks import BLOCKS

from . import reference as ref
from .backends import make

os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX2")
torch = pytest.importorskip("torch", reason="torch is not installed (test extra)")

BLOCK_NAMES = list(BLOCKS)
CALLABLES = ("F", "G", "JF", "JG")
N = 3


def _kernels(block: str) -> list[tuple[str, object]]:
    """The kernels of ``block``'s generated module that take callables."""
    m = importlib.import_module(f"generated.{block}")
    return [(k, getattr(m, k)) for k in m.__all__
            if "F" in inspect.signature(getattr(m, k)).parameters]


ALL_CASES = [(b, k) for b in BLOCK_NAMES for k, _ in _kernels(b)]


def _layers():
    return ref.DenseLayers.random(N, 0)


def _data(seed: int = 3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(4, N)), rng.normal(size=(4, N)), 0.3 * rng.normal(size=N)


def _expected_arg(block: str, kernel: str, a, b, s) -> np.ndarray:
    """The array the callables must see, typed in: x2, or for ``inverse`` x2 = y2 / b(s)."""
    return b / ref.block_reference(block).s_scale(s) if kernel == "inverse" else b


def _callables(lib, seen: dict[str, list]) -> dict[str, object]:
    """Dense F, G, JF, JG in ``lib`` that record what they receive."""
    L = _layers()
    xp = lib.xp
    W, bb, V, c = (lib.asarray(v) for v in (L.W, L.b, L.V, L.c))

    def record(name, fn):
        def wrapped(x):
            seen.setdefault(name, []).append(x)
            return fn(x)
        return wrapped

    def F(x):
        return xp.tanh(x @ xp.matrix_transpose(W) + bb)

    def G(x):
        return L.g_scale * xp.sin(x @ xp.matrix_transpose(V) + c)

    def JF(x):
        t = xp.tanh(x @ xp.matrix_transpose(W) + bb)
        return xp.expand_dims(1 - t * t, axis=-1) * W

    def JG(x):
        return xp.expand_dims(L.g_scale * xp.cos(x @ xp.matrix_transpose(V) + c), axis=-1) * V

    return {n: record(n, f) for n, f in zip(CALLABLES, (F, G, JF, JG), strict=True)}


def _call(block: str, kernel: str, args, fns: dict[str, object]):
    fn = dict(_kernels(block))[kernel]
    names = [p for p in inspect.signature(fn).parameters if p in CALLABLES]
    return fn(*args, *(fns[n] for n in names))


def _writer(lib, fn):
    def write(x):
        x *= 2  # in place: torch's mul_, array_api_strict's __imul__
        return fn(x)
    return write


def _called(block: str, kernel: str) -> list[str]:
    seen: dict[str, list] = {}
    _call(block, kernel, tuple(torch.asarray(v) for v in _data()), _callables(make("torch"), seen))
    return sorted(seen)


CALLED = {case: _called(*case) for case in ALL_CASES}
#: the kernels that call a callable (the additive block's log-det calls none)
CASES = [case for case in ALL_CASES if CALLED[case]]
WRITE_CASES = [(b, k, c) for b, k in CASES for c in CALLED[b, k]]


@pytest.fixture(params=["torch", "array_api_strict"])
def lib(request):
    return make(request.param)


@pytest.mark.parametrize(("block", "kernel"), CASES)
def test_each_callable_sees_exactly_the_callers_values(lib, block, kernel):
    data = _data()
    args = tuple(lib.asarray(v) for v in data)
    seen: dict[str, list] = {}
    _call(block, kernel, args, _callables(lib, seen))
    assert seen, "the kernel called no callable"
    expected = _expected_arg(block, kernel, *data)
    for name, received in seen.items():
        assert len(received) == 1, f"{name} called {len(received)} times"
        (x,) = received
        assert isinstance(x, lib.array_type), (name, type(x))
        assert all(x is not a for a in args), f"{name} got the caller's array"
        np.testing.assert_allclose(lib.numpy(x), expected, rtol=1e-15, atol=0, err_msg=name)
    for a, v in zip(args, data, strict=True):  # nothing was written
        np.testing.assert_array_equal(lib.numpy(a), v)


@pytest.mark.parametrize(("block", "kernel", "callee"), WRITE_CASES)
def test_a_callable_writing_its_argument_raises_naming_it(lib, block, kernel, callee):
    data = _data()
    args = tuple(lib.asarray(v) for v in data)
    fns = _callables(lib, {})
    fns[callee] = _writer(lib, fns[callee])
    with pytest.raises(ValueError, match=rf"^{callee}: expected {callee} to leave its argument "
                                         rf"unchanged \({callee} must not modify its argument "
                                         r"in place\)"):
        _call(block, kernel, args, fns)
    for a, v in zip(args, data, strict=True):  # the caller's arrays are unchanged
        np.testing.assert_array_equal(lib.numpy(a), v)


# --- eager PyTorch: how many copies ------------------------------------------------------


@pytest.mark.parametrize(("block", "kernel"), CASES)
def test_each_callable_gets_its_own_copy_in_eager_torch(monkeypatch, block, kernel):
    """Every callable gets a tensor of its own: one copy per call of a callable (counted
    where the runtime makes copies, ``Tensor.clone`` and ``xp.astype(..., copy=True)``),
    never the caller's x2, nor the kernel's own x2 (``inverse``: y2 / b(s), returned), nor
    an output: so a write no version counter sees (``Tensor.data``) reaches nobody."""
    import array_api_compat.torch as xp

    lib = make("torch")
    args = tuple(lib.asarray(v) for v in _data())
    made = []
    astype = xp.astype

    def counting(x, dtype, /, *, copy=True, **kwargs):
        out = astype(x, dtype, copy=copy, **kwargs)
        if copy:
            made.append(out.data_ptr())
        return out

    clone = torch.Tensor.clone

    def cloning(x, *args, **kwargs):
        out = clone(x, *args, **kwargs)
        made.append(out.data_ptr())
        return out

    monkeypatch.setattr(xp, "astype", counting)
    monkeypatch.setattr(torch.Tensor, "clone", cloning)
    seen: dict[str, list] = {}  # holds every tensor received: no address is reused
    out = _call(block, kernel, args, _callables(lib, seen))
    received = [x.data_ptr() for xs in seen.values() for x in xs]
    calls = len(received)
    assert len(set(received)) == calls, "two callables got the same tensor"
    assert not set(received) & {a.data_ptr() for a in args}, "a callable got the caller's array"
    outputs = out if isinstance(out, tuple) else (out,)
    assert not set(received) & {o.data_ptr() for o in outputs}, "a callable got an output"
    assert sum(p in received for p in made) == calls


def _writing_F_and_recording_G(seen: dict):
    """F doubles its argument in place; G records what it receives in ``seen["G"]``."""
    def F(x):
        x *= 2
        return torch.tanh(x)

    def G(x):
        seen["G"] = x.clone()
        return torch.sin(x)

    return F, G


def test_the_guard_names_a_write_that_the_copy_already_keeps_from_everyone(monkeypatch):
    """Without the version check, F's write reaches neither G nor the result (F has its
    own copy); with it, the write is named."""
    m = importlib.import_module("generated.coupling")
    x1, x2, s = (torch.asarray(v) for v in _data())
    seen: dict = {}
    F, G = _writing_F_and_recording_G(seen)

    def unchecked(self, name):
        self._copy = None

    monkeypatch.setattr(kernel_runtime.CalleeArg, "done", unchecked)
    y1, _ = m.forward(x1, x2, s, F, G)
    np.testing.assert_array_equal(seen["G"].numpy(), x2.numpy())
    torch.testing.assert_close(y1, torch.tanh(2 * x2) + x1 * torch.exp(torch.sin(x2)),
                               rtol=1e-14, atol=0)  # typed in: F(x) = tanh(2x), G = sin
    # (to a few ulp: 1.3n computes x1 exp(G) as (x1 exp(G/2)) exp(G/2), finite to G = 1419)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="^F: expected F to leave its argument unchanged"):
        m.forward(x1, x2, s, F, G)


def test_inference_mode_gives_each_callable_its_own_copy():
    """Inference tensors have no version counter: a fresh copy per callable, no check."""
    m = importlib.import_module("generated.coupling")
    x1, x2, s = (torch.asarray(v) for v in _data())
    seen: dict = {}
    F, G = _writing_F_and_recording_G(seen)

    with torch.inference_mode():
        m.forward(x1, x2, s, F, G)
    np.testing.assert_array_equal(seen["G"].numpy(), x2.numpy())
    np.testing.assert_array_equal(x2.numpy(), _data()[1])


# --- autograd through the shared copy ------------------------------------------------------

#: each block's scales a(G), b(s) in torch, typed in from its equations (tests.reference)
TORCH_SCALES = {
    "coupling": (torch.exp, torch.exp),
    "coupling_affine": (torch.exp, torch.ones_like),
    "coupling_additive": (torch.ones_like, torch.ones_like),
    "coupling_glow": (lambda g: torch.sigmoid(g + 2), torch.ones_like),
    "coupling_soft_clamp": (lambda g: torch.exp(4 / math.pi * torch.atan(g / 2)),
                            torch.ones_like),
}


def _by_hand(block: str, kernel: str, a, b, s, F, G):
    try:
        scale, s_scale = TORCH_SCALES[block]
    except KeyError:
        raise KeyError(f"no torch reference for block {block!r}: add its scales to "
                       "TORCH_SCALES") from None
    if kernel == "inverse":
        x2 = b / s_scale(s)
        return (a - F(x2)) / scale(G(x2)), x2
    y = (scale(G(b)) * a + F(b), s_scale(s) * b)
    log_det = (torch.log(scale(G(b))).sum(-1) + torch.log(s_scale(s)).sum()).expand(b.shape[:-1])
    return {"forward": y, "log_det_jacobian": (log_det,),
            "forward_and_log_det": (*y, log_det)}[kernel]


@pytest.mark.parametrize(("block", "kernel"),
                         [c for c in CASES if c[1] != "jacobian"])  # JF, JG: the reference's
def test_autograd_through_the_shared_copy_equals_the_hand_written_formula(block, kernel):
    L = _layers()
    W, bb, V, c = (torch.tensor(v, requires_grad=True) for v in (L.W, L.b, L.V, L.c))

    def F(x):
        return torch.tanh(x @ W.T + bb)

    def G(x):
        return L.g_scale * torch.sin(x @ V.T + c)

    leaves = tuple(torch.tensor(v, requires_grad=True) for v in _data())
    weights = [torch.asarray(np.random.default_rng(k).normal(size=(4, N))) for k in range(3)]

    def loss(outputs):
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return sum((o * w[..., : o.shape[-1]] if o.ndim == 2 else o * w[:, 0]).sum()
                   for o, w in zip(outputs, weights, strict=False))

    wrt = (*leaves, W, bb, V, c)
    got = torch.autograd.grad(loss(_call(block, kernel, leaves, {"F": F, "G": G})), wrt,
                              allow_unused=True)
    want = torch.autograd.grad(loss(_by_hand(block, kernel, *leaves, F, G)), wrt,
                               allow_unused=True)
    for name, g, w in zip(("x1", "x2", "s", "W", "b", "V", "c"), got, want, strict=True):
        if g is None or w is None:  # unused by both (the additive block's G)
            assert g is None or not bool(g.any()), name
            assert w is None or not bool(w.any()), name
            continue
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-12, atol=1e-13, err_msg=name)


def test_each_copy_is_let_go_after_its_call():
    """The holder drops a callable's copy as soon as the callable has returned, so no copy
    stays alive through the rest of the body (peak memory: one copy at a time)."""
    import weakref

    import array_api_compat.torch as xp

    x = xp.ones(4, dtype=xp.float64)
    held = kernel_runtime.callee_arg(xp, x, xp.float64)
    refs = []

    def F(v):
        refs.append(weakref.ref(v))
        return v + 1

    kernel_runtime.call_xp(xp, "F", F, held, "vector", xp.float64)
    assert refs[0]() is None, "the copy outlived its call"
    kernel_runtime.call_xp(xp, "G", F, held, "vector", xp.float64)
    assert refs[1]() is None, "the copy outlived its call"


def test_an_identity_callable_gives_a_writeable_result():
    """array_api_strict: F returning its (read-only) argument still gives writeable
    outputs, and a block whose output is F(x2) itself returns a writeable array."""
    lib = make("array_api_strict")
    x1, x2, s = (lib.asarray(v) for v in _data())
    held = kernel_runtime.callee_arg(lib.xp, x2, x2.dtype)
    value = kernel_runtime.call_xp(lib.xp, "F", lambda v: v, held, "vector", x2.dtype)
    value *= 2  # writeable, and not the caller's x2
    np.testing.assert_array_equal(lib.numpy(x2), _data()[1])
    for block, kernel in CASES:
        out = _call(block, kernel, (x1, x2, s), {n: (lambda v: v) for n in ("F", "G")}
                    | {n: (lambda v: lib.xp.stack([v] * v.shape[-1], axis=-1))
                       for n in ("JF", "JG")})
        for o in out if isinstance(out, tuple) else (out,):
            o *= 1  # every output is writeable


# --- traced PyTorch: each callable gets its own copy, as before -----------------------------


def _plain_torch():
    L = _layers()
    W, bb, V, c = (torch.asarray(v) for v in (L.W, L.b, L.V, L.c))
    return (lambda x: torch.tanh(x @ W.T + bb)), (lambda x: L.g_scale * torch.sin(x @ V.T + c))


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def test_torch_compile_fullgraph_and_torch_func_on_every_kernel_with_callables():
    """No graph break from the holder (Dynamo's capture, the "eager" backend), and
    torch.func.vmap and grad give the eager values."""
    import warnings

    F, G = _plain_torch()
    x1, x2, s = (torch.asarray(v) for v in _data())
    torch._dynamo.reset()
    for block, kernel in CASES:
        if kernel == "jacobian":
            continue  # JF, JG of the reference take a batch; covered eagerly above
        fn = dict(_kernels(block))[kernel]
        eager = fn(x1, x2, s, F, G)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*lru_cache.*")
            warnings.filterwarnings("ignore", category=UserWarning, module="torch._dynamo")
            compiled = torch.compile(fn, fullgraph=True, backend="eager")(x1, x2, s, F, G)
        torch.testing.assert_close(compiled, eager, rtol=1e-15, atol=0)
        mapped = torch.func.vmap(lambda a, b, f=fn: f(a, b, s, F, G))(x1, x2)
        torch.testing.assert_close(mapped, eager, rtol=1e-14, atol=1e-15)
        grad = torch.func.grad(lambda b, f=fn: _first(f(x1, b, s, F, G)).sum())(x2)
        leaf = x2.clone().requires_grad_()
        (want,) = torch.autograd.grad(_first(fn(x1, leaf, s, F, G)).sum(), leaf)
        torch.testing.assert_close(grad, want, rtol=1e-13, atol=1e-14)


# --- writes that bypass the read-only flag or the version counter (issue 25 item 1) -------


def _sneaky_writes(name: str) -> dict[str, object]:
    """In-place doublings of a callable's argument that neither NumPy's read-only flag nor
    PyTorch's version counter sees."""
    if name == "numpy":
        def setflags(x):
            x.setflags(write=True)  # allowed on a read-only view of a writeable base
            np.multiply(x, 2, out=x)

        return {"torch.from_numpy": lambda x: torch.from_numpy(x).mul_(2),  # ignores the flag
                "setflags": setflags}
    if name == "torch":
        def through_numpy(x):
            x.numpy()[...] *= 2

        return {"x.data": lambda x: x.data.mul_(2), "x.numpy()": through_numpy}
    if name == "array_api_strict":
        def setflags(x):
            x._array.setflags(write=True)
            np.multiply(x._array, 2, out=x._array)

        return {"torch.from_numpy": lambda x: torch.from_numpy(x._array).mul_(2),
                "setflags": setflags}
    raise KeyError(name)


SNEAKY = [(lib, how) for lib in ("numpy", "torch", "array_api_strict")
          for how in _sneaky_writes(lib)]


@pytest.mark.parametrize(("lib_name", "how"), SNEAKY)
@pytest.mark.parametrize(("block", "kernel", "callee"), WRITE_CASES)
def test_a_write_no_check_sees_reaches_neither_the_caller_nor_the_result(
        lib_name, how, block, kernel, callee):
    """The callable computes its value, then writes into its argument by a route that
    bypasses the read-only flag or the version counter. Either the call raises
    ValueError naming it, or the caller's arrays are unchanged and every output equals
    that of the well-behaved callables (the other callables saw the caller's values, and
    the kernel's formulas used them)."""
    import warnings

    lib = make(lib_name)
    data = _data()
    args = tuple(lib.asarray(v) for v in data)
    clean = _call(block, kernel, args, _callables(lib, {}))
    fns = _callables(lib, {})
    fn, write = fns[callee], _sneaky_writes(lib_name)[how]

    def writer(x):
        out = fn(x)
        write(x)
        return out

    fns[callee] = writer
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            got = _call(block, kernel, args, fns)
    except ValueError as error:
        assert str(error).startswith(f"{callee}: "), error
    else:
        for g, c in zip(*((o if isinstance(o, tuple) else (o,)) for o in (got, clean)),
                        strict=True):
            np.testing.assert_array_equal(lib.numpy(g), lib.numpy(c))
    for a, v in zip(args, data, strict=True):  # the caller's arrays are unchanged
        np.testing.assert_array_equal(lib.numpy(a), v)


def test_the_issues_reproducers():
    """Issue 25 item 1, as reported: the caller's x2 and y2 (NumPy), and y1 (eager torch)."""
    import warnings

    m = importlib.import_module("generated.coupling")
    x2 = np.array([-1.0, 0.5, -2.0])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        y1, y2 = m.forward(np.zeros(3), x2, np.zeros(3),
                           lambda x: torch.relu_(torch.from_numpy(x)).numpy(), lambda x: 0 * x)
    np.testing.assert_array_equal(x2, [-1.0, 0.5, -2.0])
    np.testing.assert_array_equal(y1, [0.0, 0.5, 0.0])  # F = relu, typed in
    np.testing.assert_array_equal(y2, [-1.0, 0.5, -2.0])  # x2 * exp(0)

    def F(x):
        x.numpy()[...] = 55
        return 0 * x

    def F_data(x):
        x.data.add_(10)
        return 0 * x

    x1, t2, s = torch.ones(3, dtype=torch.float64), torch.asarray(x2), torch.zeros(3,
                                                                                  dtype=torch.float64)
    for f in (F, F_data):
        y1, y2 = m.forward(x1, t2, s, f, lambda x: x)  # G = identity: y1 = exp(x2)
        torch.testing.assert_close(y1, torch.exp(torch.asarray(x2)), rtol=1e-14, atol=0)
        np.testing.assert_array_equal(t2.numpy(), [-1.0, 0.5, -2.0])
