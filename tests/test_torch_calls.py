"""What one PyTorch call costs beyond its arithmetic: device syncs in eager mode, warnings
under ``torch.compile``.

A device sync is any read of a tensor's values on the host (``item``, ``tolist``,
``bool``, ``nonzero``, ``.cpu()``...): on a GPU each one waits for the queue to drain. At
the sizes of a VAE's batch, a kernel call makes at most one (the value checks, folded
into one reduction) and none with ``check_finite=False``: the pieces of a piecewise value
are then selected with ``torch.where`` (:func:`kernel_runtime.pieces.strategy`). From
:data:`kernel_runtime.pieces.GATHER_FROM` entries up, the pieces are gathered after one
more sync per piecewise value, which counts where each piece holds. (Eager CPU tensors
run the NumPy body on views of their memory, with no device to sync; the counters here
are dispatch modes, under which, as on a GPU, the torch path runs.)
"""

from __future__ import annotations

import contextlib
import importlib
import warnings

import pytest

from kernel_runtime import pieces

torch = pytest.importorskip("torch")
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

#: aten operators whose result's size or value the host must wait for
SYNC_OPS = {"nonzero", "_local_scalar_dense", "is_nonzero", "item", "masked_select"}
#: Tensor methods that read values on the host
SYNC_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "cpu", "numpy")

KL = [("gaussian_kl", 2), ("gaussian_kl_logvar", 2), ("gaussian_kl_pair", 4),
      ("gaussian_kl_pair_logvar", 4)]


class _Syncs(TorchDispatchMode):
    """Collects the syncing aten operators not called from a counted Tensor method."""

    def __init__(self, found: list[str], inside: list[int]) -> None:
        super().__init__()
        self.found, self.inside = found, inside

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNC_OPS and not self.inside:
            self.found.append(name)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def counting_syncs(monkeypatch):
    """Yields a list that collects one name per device sync made inside the block."""
    found: list[str] = []
    inside: list[int] = []
    with monkeypatch.context() as m:
        for name in SYNC_METHODS:
            real = getattr(torch.Tensor, name)

            def wrapper(self, *a, _real=real, _name=name, **k):
                if not inside:
                    found.append(_name)
                inside.append(1)
                try:
                    return _real(self, *a, **k)
                finally:
                    inside.pop()

            m.setattr(torch.Tensor, name, wrapper)
        with _Syncs(found, inside):
            yield found


def _arguments(count: int, shape: tuple[int, ...], dtype, grad: bool = False):
    g = torch.Generator().manual_seed(0)
    means = [torch.randn(shape, generator=g, dtype=dtype) for _ in range(count // 2)]
    scales = [torch.exp(-0.5 + torch.randn(shape, generator=g, dtype=dtype))
              for _ in range(count // 2)]
    args = [a for pair in zip(means, scales, strict=True) for a in pair]
    return [a.requires_grad_() for a in args] if grad else args


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("module", "arity"), KL)
def test_an_eager_call_at_a_batch_size_syncs_at_most_once(monkeypatch, module, arity, dtype):
    kl = importlib.import_module(f"generated.{module}").kl
    for shape in [(128, 32), (16, 8)]:
        args = _arguments(arity, shape, getattr(torch, dtype))
        with counting_syncs(monkeypatch) as default:
            kl(*args)
        with counting_syncs(monkeypatch) as unchecked:
            kl(*args, check_finite=False)
        assert len(default) <= 1, default
        assert unchecked == [], unchecked
        grad_args = _arguments(arity, shape, getattr(torch, dtype), grad=True)
        with counting_syncs(monkeypatch) as backward:
            kl(*grad_args, check_finite=False).sum().backward()
        assert backward == [], backward


@pytest.mark.parametrize(("module", "arity", "piecewise"),
                         [("gaussian_kl", 2, 1), ("gaussian_kl_pair", 4, 2)])
def test_a_large_eager_call_syncs_once_more_per_piecewise_value(monkeypatch, module, arity,
                                                                piecewise):
    """One sync per piecewise value counts where each piece holds; the gathers themselves
    (``nonzero_static`` of the counted size) wait for nothing."""
    kl = importlib.import_module(f"generated.{module}").kl
    args = _arguments(arity, (pieces.GATHER_FROM // 32, 32), torch.float64)
    assert pieces.strategy(torch, tuple(args[0].shape), args) == "numpy"  # CPU: NumPy body
    with _Syncs([], []):  # under a dispatch mode (the counter's), as on a GPU, torch gathers
        assert pieces.strategy(torch, tuple(args[0].shape), args) == "gather"
    with counting_syncs(monkeypatch) as default:
        kl(*args)
    with counting_syncs(monkeypatch) as unchecked:
        kl(*args, check_finite=False)
    assert len(default) <= 1 + piecewise, default
    assert len(unchecked) <= piecewise, unchecked


def test_the_counter_sees_the_syncs_it_counts(monkeypatch):
    """Shown failing: each way of reading values on the host is counted."""
    x = torch.tensor([0.0, 1.0])
    with counting_syncs(monkeypatch) as found:
        x.sum().item()
        x.tolist()
        torch.nonzero(x)
        bool(x[1])
    assert found.count("item") == 1 and "tolist" in found and "nonzero" in found
    assert "__bool__" in found


@pytest.mark.parametrize(("module", "arity"), KL)
def test_torch_compile_warns_of_nothing_and_agrees(monkeypatch, module, arity):
    """No warning under ``torch.compile`` (array_api_compat's ``lru_cache``-wrapped helpers
    are not called while tracing), one graph, and the values of the eager call: bit for bit
    those of torch's own eager path (the NumPy body of CPU tensors rounds its log and exp
    as NumPy does: within 4 eps of them)."""
    kl = importlib.import_module(f"generated.{module}").kl
    torch._dynamo.reset()
    args = _arguments(arity, (64, 8), torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = torch.compile(kl, backend="eager", fullgraph=True)
        value = compiled(*args)
        grad_args = [a.detach().clone().requires_grad_() for a in args]
        compiled(*grad_args).sum().backward()
    assert [str(w.message)[:200] for w in caught] == []
    torch.testing.assert_close(value, kl(*args), rtol=4 * torch.finfo(value.dtype).eps,
                               atol=0)
    real = pieces.strategy
    monkeypatch.setattr(pieces, "strategy", lambda xp, shape, arrays: "where"
                        if real(xp, shape, arrays) == "numpy" else real(xp, shape, arrays))
    torch.testing.assert_close(value, kl(*args), rtol=0, atol=0)
    assert all(torch.isfinite(a.grad).all() for a in grad_args)
