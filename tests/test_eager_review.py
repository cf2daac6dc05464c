"""Adversarial checks of the eager lowering (review): gradients on one argument only."""

from __future__ import annotations

import math

import pytest

from .backends import make
from .test_eager import IDS, LAYOUTS, PIECEWISE, VARIANTS, _inputs, _run, _traced, _variant

torch = pytest.importorskip("torch", reason="torch is not installed (test extra)")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("module", "kernel"), PIECEWISE, ids=IDS)
def test_eager_gradient_on_one_argument_only(monkeypatch, module, kernel, layout, variant):
    """As the all-argument gradient test, but only one argument records a gradient (a fixed
    prior, a frozen input): the others reach the last piece raw where another piece holds."""
    lib = make("torch")
    _variant(monkeypatch, variant)
    base, kwargs = _inputs(kernel, 0, lib, layout)
    for k, a in enumerate(base):
        if not isinstance(a, torch.Tensor):
            continue
        args = list(base)
        args[k] = a.detach().clone().requires_grad_()

        def grad(args=args, k=k):
            outs = _run(kernel, module, args, kwargs)
            total = sum((o * (o.detach().abs() < 1e300)).sum() for o in outs
                        if o.requires_grad)
            if not torch.is_tensor(total):
                return torch.zeros_like(args[k])
            (g,) = torch.autograd.grad(total, (args[k],), allow_unused=True)
            return torch.zeros_like(args[k]) if g is None else g

        eager = grad()
        with monkeypatch.context() as m:
            _traced(m)
            traced = grad()
        finite = torch.isfinite(traced)
        bad = ~torch.isfinite(eager[finite])
        assert not bad.any(), (kernel.args[k].name, int(bad.sum()))
        torch.testing.assert_close(eager[finite], traced[finite], rtol=0, atol=0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("module", "kernel"), PIECEWISE, ids=IDS)
def test_eager_outputs_record_a_gradient_for_an_empty_batch(monkeypatch, module, kernel,
                                                           variant):
    """An empty batch (no entry takes any piece) still gives outputs in the graph wherever
    the double where's outputs are: ``backward`` on the loss of an empty batch works."""
    lib = make("torch")
    _variant(monkeypatch, variant)
    base, kwargs = _inputs(kernel, 0, lib)
    for k, a in enumerate(base):
        if not isinstance(a, torch.Tensor) or kernel.args[k].kind == "param":
            continue
        args = [b[:0] if isinstance(b, torch.Tensor) and kernel.args[j].kind != "param"
                else b for j, b in enumerate(base)]
        args[k] = args[k].detach().clone().requires_grad_()

        def recorded(args=args):
            return [o.requires_grad for o in _run(kernel, module, args, kwargs)]

        eager = recorded()
        with monkeypatch.context() as m:
            _traced(m)
            traced = recorded()
        assert eager == traced, (kernel.args[k].name, eager, traced)


def test_eager_kl_records_a_gradient_where_only_constant_pieces_hold():
    """sigma = inf everywhere (unchecked): kl is the constant piece inf at every entry, and
    still depends on sigma in the graph, as on the traced path."""
    from generated import gaussian_kl

    sigma = torch.full((3,), math.inf, dtype=torch.float64, requires_grad=True)
    out = gaussian_kl.kl(torch.zeros(3, dtype=torch.float64), sigma, check_finite=False)
    assert out.requires_grad and out.tolist() == [math.inf] * 3
    (g,) = torch.autograd.grad(out.sum(), sigma)
    assert g.tolist() == [0.0] * 3
