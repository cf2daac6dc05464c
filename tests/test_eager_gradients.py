"""Gradients through the eager lowering: on one argument only, for an empty batch, and
finite at the extremes of the KL kernels."""

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
        # within 4 ulp, not bit for bit: eager CPU tensors run the NumPy body, traced ones
        # torch's, and Glow's exponent-safe product exp(log|x1| + ...) takes the two
        # libraries' exp and log, whose last bits differ (1 ulp measured)
        rtol = 4 * torch.finfo(eager.dtype).eps if eager.is_floating_point() else 0
        torch.testing.assert_close(eager[finite], traced[finite], rtol=rtol, atol=0)


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
    still depends on sigma in the graph, as on the traced path. Its eager gradient is the
    derived kl_grad's, inf (the derivative grows without bound); through the pieces (the
    traced path) it is the constant piece's, 0."""
    from generated import gaussian_kl

    sigma = torch.full((3,), math.inf, dtype=torch.float64, requires_grad=True)
    out = gaussian_kl.kl(torch.zeros(3, dtype=torch.float64), sigma, check_finite=False)
    assert out.requires_grad and out.tolist() == [math.inf] * 3
    (g,) = torch.autograd.grad(out.sum(), sigma)
    assert g.tolist() == [math.inf] * 3


# --- finite gradients at the extremes, not caused by the eager lowering (both paths, NumPy) -


def test_autograd_through_the_pair_logvar_kl_is_finite_for_a_huge_prior_logvar():
    """Was NaN: kl formed sigma_p = exp(logvar_p/2), which overflows past logvar_p ~ 1420
    (0 * inf in its backward); kl now forms only exp(-logvar_p/2) (derive/kernels.py)."""
    from generated import gaussian_kl_pair_logvar as m

    args = [torch.tensor([v], dtype=torch.float64, requires_grad=True)
            for v in (3.8, 0.0, 1.6, 1600.0)]
    got = torch.autograd.grad(m.kl(*args).sum(), args)
    want = m.kl_grad(*[a.detach() for a in args])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-13, atol=1e-300)


def test_a_softplus_parameterization_has_a_finite_kl_grad_far_left():
    """Was 0/0 = NaN for rho < -745 (true value -1): exp(rho)*(...)/(log1p(exp(rho))*...);
    now through (log sigma)' from the arranged log sigma (derivation 2.3c)."""
    import numpy as np

    from .test_kl_user_parameterizations import _module

    # the softplus parameterization's module, rendered once per run (the run's cache) for
    # this test and test_kl_user_parameterizations' softplus tests
    namespace = _module("softplus")
    with np.errstate(all="ignore"):
        _, d_rho = namespace["kl_grad"](np.zeros(2), np.array([-720.0, -800.0]))
    np.testing.assert_allclose(d_rho, [-1.0, -1.0], rtol=1e-13)


def test_the_pair_kl_grad_is_finite_at_a_subnormal_prior_scale():
    """Was NaN: the planner shared 1/sigma_p, which overflows where sigma_p is subnormal
    (inf * 0); a quotient m / sigma_p is 0 there, the true gradient (codegen/plan.py)."""
    import numpy as np

    from generated import gaussian_kl_pair as m

    s = np.array([1e-310])
    with np.errstate(all="ignore"):
        grads = m.kl_grad(np.zeros(1), s, np.zeros(1), s)
    for g in grads:
        np.testing.assert_array_equal(g, [0.0])


def test_the_logvar_stl_estimator_is_finite_far_left_for_nonzero_noise():
    """Found at the end of this round (not the eager lowering): the README had the edge as
    eps = 0 only; fixed in derivation 2.4 (expm1(logvar)/2 for sigma*sinh(logvar/2) below
    logvar = 0, issue 23). True value by hand: with z = mu + sigma*eps, the STL gradient is
    (z - eps/sigma) * sigma*eps/2 = eps*mu*sigma/2 + eps**2*(sigma**2 - 1)/2."""
    import numpy as np

    from generated import gaussian_kl_logvar as m

    logvar = np.array([-1400.0, -1450.0, -1500.0])
    mu = np.array([0.3, 0.3, 0.3])
    for eps in (0.7, -1.5):
        noise = np.full(3, eps)
        sigma = np.exp(logvar / 2)
        want = eps * mu * sigma / 2 + eps**2 * (sigma**2 - 1) / 2
        with np.errstate(all="ignore"):
            _, got = m.kl_grad_stl(mu, logvar, noise)
        np.testing.assert_allclose(got, want, rtol=1e-15)
