"""Eager CPU PyTorch through the fused bodies (``kernel_runtime.gradients._on_views``): where
numba is importable, a KL kernel's forward runs its fused body on NumPy views of the
tensors' memory and its backward the fused body of the derived gradient (``kl_grad``).

Measured as ``tests/test_fused.py`` measures the fused kernels: every KL kernel's ``kl`` and
``kl_grad`` outputs densely over every piece and every boundary (+-64 ulp), against the
long-double reference checked against mpmath, with the stated bounds -- here ``kl`` called
with tensors and ``kl_grad`` as autograd's gradient of that call. Then gradcheck in
float64; finite gradients where an untaken piece would overflow; the same errors; double
backward (which records a graph, so takes torch's own gradient body); and, without numba,
the NumPy bodies as before."""

from __future__ import annotations

import numpy as np
import pytest

import kernel_runtime.fused as runtime_fused
from generated import gaussian_kl, gaussian_kl_logvar, gaussian_kl_pair, gaussian_kl_pair_logvar
from tests.dense_cases import assert_within_bound, case_id, kl_cases
from tests.kl_reference import HAS_EXTENDED, kl_sigma_ld, relative_error_in_eps

torch = pytest.importorskip("torch", reason="torch is not installed (test extra)")
numba = pytest.importorskip("numba")

MODULES = (gaussian_kl, gaussian_kl_logvar, gaussian_kl_pair, gaussian_kl_pair_logvar)


class Spy:
    """A fused body that counts its calls."""

    def __init__(self, body):
        self.body, self.calls = body, 0

    def __call__(self, *args):
        self.calls += 1
        return self.body(*args)


@pytest.fixture
def spies(monkeypatch):
    """Each KL module's ``_kl_fused`` and ``_kl_grad_fused`` replaced by a counting spy (the
    generated kernels look them up at call time)."""
    out = {}
    for module in MODULES:
        for name in ("_kl_fused", "_kl_grad_fused"):
            spy = Spy(getattr(module, name))
            monkeypatch.setattr(module, name, spy)
            out[module.__name__.rsplit(".", 1)[-1], name] = spy
    return out


def _tensors(args, requires_grad=False):
    """NumPy arguments as tensors of one broadcast shape (new memory), so each gradient is
    the element-wise one."""
    arrays = np.broadcast_arrays(*(np.asarray(a) for a in args))
    return [torch.from_numpy(np.array(a)).requires_grad_(requires_grad) for a in arrays]


def _eager_kl(kernel):
    def call(*args):
        with torch.no_grad():
            return kernel(*_tensors(args)).numpy()
    return call


def _eager_kl_grad(kernel):
    def call(*args):
        tensors = _tensors(args, True)
        kernel(*tensors).backward(torch.ones(tensors[0].shape, dtype=tensors[0].dtype))
        return tuple(t.grad.numpy() for t in tensors)
    return call


@pytest.fixture
def eager_modules(monkeypatch, spies):
    """Every KL module's ``kl`` called with CPU tensors, and its ``kl_grad`` as autograd's
    gradient of that call, where the dense cases look them up."""
    for module in MODULES:
        kl = module.kl
        monkeypatch.setattr(module, "kl", _eager_kl(kl))
        monkeypatch.setattr(module, "kl_grad", _eager_kl_grad(kl))
    return spies


@pytest.mark.skipif(not HAS_EXTENDED, reason="long double is float64 on this platform")
@pytest.mark.parametrize("case", kl_cases(estimators=False), ids=case_id)
def test_eager_kl_and_its_gradient_within_the_stated_bound_over_every_piece(case,
                                                                          eager_modules):
    assert_within_bound(case)
    body = "_kl_fused" if case.output == "kl" else "_kl_grad_fused"
    assert eager_modules[case.module, body].calls > 0, "the fused route was not taken"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_the_route_forward_and_backward_float32_stays_float32(module, dtype, spies):
    name = module.__name__.rsplit(".", 1)[-1]
    args = _args(module, dtype)
    out = module.kl(*args)
    assert out.dtype == dtype and spies[name, "_kl_fused"].calls == 1
    leaves = [a.clone().requires_grad_() for a in args]
    module.kl(*leaves).sum().backward()
    assert spies[name, "_kl_fused"].calls == 2 and spies[name, "_kl_grad_fused"].calls == 1
    expected = module.fused.kl_grad(*(a.numpy() for a in args))
    for leaf, g in zip(leaves, expected, strict=True):
        assert leaf.grad.dtype == dtype
        torch.testing.assert_close(leaf.grad, torch.from_numpy(g), rtol=0, atol=0)  # exact


def _args(module, dtype, shape=(7, 5)):
    """Arguments over every piece: scales around 1 (the series), small and large ones."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-8, 8, shape)
    x.flat[:4] = (0.0, 1e-9, -0.3, 0.2)
    mu = rng.standard_normal(shape)
    scale = np.exp(x / 2) if "logvar" not in module.__name__ else x
    if "pair" in module.__name__:
        prior = np.exp(rng.uniform(-2, 2, shape)) if "logvar" not in module.__name__ \
            else rng.uniform(-4, 4, shape)
        values = (mu, scale, rng.standard_normal(shape), prior)
    else:
        values = (mu, scale)
    return [torch.asarray(v, dtype=dtype) for v in values]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_gradcheck_in_float64(module, spies):
    args = [a.requires_grad_() for a in _args(module, torch.float64, (3, 4))]
    assert torch.autograd.gradcheck(module.kl, args)
    assert spies[module.__name__.rsplit(".", 1)[-1], "_kl_grad_fused"].calls > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_nan_gradient_from_an_untaken_piece_at_the_extremes(dtype, spies):
    """Scales where another piece's expression overflows or divides by zero: every gradient
    finite and equal to the derived one."""
    tiny, huge = (1e-30, 1e30) if dtype == torch.float32 else (1e-200, 1e100)
    sigma = torch.tensor([tiny, 1e-5, 1.0, 1 + 1e-7, 1e5, huge], dtype=dtype,
                         requires_grad=True)
    mu = torch.zeros(6, dtype=dtype, requires_grad=True)
    gaussian_kl.kl(mu, sigma).sum().backward()
    assert torch.isfinite(sigma.grad).all() and torch.isfinite(mu.grad).all()
    v = torch.tensor([-80.0, -1e-9, 0.0, 1e-9, 80.0], dtype=dtype, requires_grad=True)
    gaussian_kl_logvar.kl(torch.zeros(5, dtype=dtype), v).sum().backward()
    assert torch.isfinite(v.grad).all()
    assert spies["gaussian_kl", "_kl_grad_fused"].calls == 1
    assert spies["gaussian_kl_logvar", "_kl_grad_fused"].calls == 1


@pytest.mark.skipif(not HAS_EXTENDED, reason="long double is float64 on this platform")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_broadcast_and_strided_tensors_within_the_bound_and_gradients_summed(dtype, spies):
    rng = np.random.default_rng(1)
    bound = 10 if dtype == torch.float32 else 4
    mu = torch.asarray(rng.standard_normal((5, 1)), dtype=dtype)
    sigma = torch.asarray(np.exp(rng.standard_normal((3, 1, 4)) * 3), dtype=dtype)
    square = torch.asarray(np.exp(rng.standard_normal((6, 6))), dtype=dtype)
    for m, s in ((mu, sigma), (square.T, square), (square[::2, ::3], square[1::2, ::3])):
        got = gaussian_kl.kl(m, s)
        shape = torch.broadcast_shapes(m.shape, s.shape)
        assert got.shape == shape and got.dtype == dtype
        ref = kl_sigma_ld(np.broadcast_to(m.numpy(), shape).reshape(-1),
                          np.broadcast_to(s.numpy(), shape).reshape(-1))
        assert np.max(relative_error_in_eps(got.numpy().reshape(-1), ref,
                                            np.dtype(str(dtype).removeprefix("torch.")))
                      ) <= bound
    leaves = [mu.clone().requires_grad_(), sigma.clone().requires_grad_()]
    gaussian_kl.kl(*leaves).sum().backward()
    d_mu, d_sigma = gaussian_kl.kl_grad(*torch.broadcast_tensors(mu, sigma))
    torch.testing.assert_close(leaves[0].grad, d_mu.sum_to_size(mu.shape))
    torch.testing.assert_close(leaves[1].grad, d_sigma.sum_to_size(sigma.shape))
    assert spies["gaussian_kl", "_kl_grad_fused"].calls == 1


@pytest.mark.parametrize(("args", "message"), [
    ((np.zeros(3), -np.ones(3)), "sigma: expected every entry > 0"),
    ((np.array([0.0, np.nan]), np.ones(2)), "mu:"),
    ((np.zeros(3), np.ones(4)), "broadcast"),
])
def test_bad_tensors_raise_the_kernels_error(args, message, spies):
    with pytest.raises(ValueError, match=message) as tensor_error:
        gaussian_kl.kl(*(torch.asarray(a) for a in args))
    with pytest.raises(ValueError) as numpy_error:
        gaussian_kl.kl(*args)
    assert str(tensor_error.value) == str(numpy_error.value)
    out = gaussian_kl.kl(*(torch.asarray(a) for a in args[:2]), check_finite=False) \
        if "broadcast" not in message else None
    assert out is None or out.shape == (len(args[0]),)


def test_double_backward_takes_torch_s_gradient_body(spies):
    """With ``create_graph=True`` the backward pass records a graph: torch's own gradient
    body runs (not the fused one, whose NumPy results would record none)."""
    mu = torch.tensor([0.5, -2.0], dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([0.3, 4.0], dtype=torch.float64, requires_grad=True)
    (d_mu, d_sigma) = torch.autograd.grad(gaussian_kl.kl(mu, sigma).sum(), (mu, sigma),
                                          create_graph=True)
    assert spies["gaussian_kl", "_kl_grad_fused"].calls == 0
    (dd_mu,) = torch.autograd.grad(d_mu.sum(), (mu,))
    (dd_sigma,) = torch.autograd.grad(d_sigma.sum(), (sigma,))
    torch.testing.assert_close(dd_mu, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(dd_sigma, 1 + 1 / sigma.detach() ** 2)


def test_without_numba_the_numpy_bodies_as_before(monkeypatch, spies):
    monkeypatch.setattr(runtime_fused, "fused_available", lambda: False)
    for module in MODULES:
        args = _args(module, torch.float64)
        leaves = [a.clone().requires_grad_() for a in args]
        out = module.kl(*leaves)
        out.sum().backward()
        expected = module.kl_grad(*args)
        for leaf, g in zip(leaves, expected, strict=True):
            torch.testing.assert_close(leaf.grad, g)
        torch.testing.assert_close(out.detach(), torch.from_numpy(
            module.kl(*(a.numpy() for a in args))), rtol=0, atol=0)
    assert all(spy.calls == 0 for spy in spies.values())


def test_a_dispatch_mode_takes_torch_s_own_path(spies):
    """Under a dispatch mode (an op counter, FakeTensorMode) no view is taken."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with Count():
        out = gaussian_kl.kl(torch.zeros(3), torch.ones(3))
    assert out.tolist() == [0.0, 0.0, 0.0]
    assert spies["gaussian_kl", "_kl_fused"].calls == 0


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_gradients_are_new_memory_and_scale_with_the_incoming_gradient(module, spies):
    """``.sum().backward()`` (a broadcast 1 comes in) hands the fused gradient back as it
    is: never an input's memory nor another gradient's; any other incoming gradient
    multiplies it."""
    args = _args(module, torch.float64)
    leaves = [a.clone().requires_grad_() for a in args]
    module.kl(*leaves).sum().backward()
    grads = [leaf.grad for leaf in leaves]
    for k, g in enumerate(grads):
        others = [leaf.detach() for leaf in leaves] + grads[:k] + grads[k + 1:]
        assert not any(np.shares_memory(g.numpy(), o.numpy()) for o in others)
    twice = [a.clone().requires_grad_() for a in args]
    out = module.kl(*twice)
    out.backward(torch.full_like(out, 2.0))
    for g, g2 in zip(grads, (t.grad for t in twice), strict=True):
        torch.testing.assert_close(g2, 2 * g, rtol=0, atol=0)
    assert spies[module.__name__.rsplit(".", 1)[-1], "_kl_grad_fused"].calls == 2
