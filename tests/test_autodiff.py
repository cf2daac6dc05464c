"""Autograd and compilers through the kernels: PyTorch (autograd, gradcheck, torch.func,
torch.compile) and JAX (jit, grad, vmap), and NaN-free gradients across piece boundaries."""

from __future__ import annotations

import importlib
import os
import warnings

import numpy as np
import pytest
import sympy as sp

import kernel_runtime
from codegen.plan import plan_kernel
from codegen.xp_backend import XpPrinter
from derive.coursework.blocks import BLOCKS
from derive.coursework.gaussian_kl import PARAMETERIZATIONS
from derive.coursework.kernels import gaussian_kl_module

from . import reference as ref

os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX2")
torch = pytest.importorskip("torch", reason="torch is not installed (test extra)")

BLOCK_NAMES = list(BLOCKS)
KL_MODULES = {p: ("gaussian_kl" if p == "sigma" else f"gaussian_kl_{p}")
              for p in PARAMETERIZATIONS}
KL_KERNELS = ("kl", "kl_grad", "kl_grad_reparam", "kl_grad_stl")
#: sigma from 1e-200 to 1e160, and 1 exactly
SIGMAS = np.concatenate([np.logspace(-200, 160, 361), [1.0]])


def kernels(name: str):
    return importlib.import_module(f"generated.{name}")


def torch_layers(n: int = 4, seed: int = 0):
    """Dense F, G (the reference's layers) with trainable torch parameters."""
    L = ref.DenseLayers.random(n, seed)
    W, b, V, c = (torch.tensor(a, dtype=torch.float64, requires_grad=True)
                  for a in (L.W, L.b, L.V, L.c))

    def F(x):
        return torch.tanh(x @ W.T + b)

    def G(x):
        return L.g_scale * torch.sin(x @ V.T + c)

    def JF(x):
        return (1 - torch.tanh(x @ W.T + b) ** 2)[..., :, None] * W

    def JG(x):
        return (L.g_scale * torch.cos(x @ V.T + c))[..., :, None] * V

    return (W, b, V, c), F, G, JF, JG


def torch_inputs(batch=(5,), n=4, seed=1):
    rng = np.random.default_rng(seed)
    return tuple(torch.tensor(a, requires_grad=True) for a in
                 (rng.normal(size=batch + (n,)), rng.normal(size=batch + (n,)),
                  0.3 * rng.normal(size=n)))


# --- PyTorch ------------------------------------------------------------------------------


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_log_det_gradient_equals_autograd_through_slogdet_of_the_jacobian(block):
    """d/d(s, W, b, V, c) of log_det_jacobian == of slogdet(vmap(jacrev(forward)))."""
    m = kernels(block)
    params, F, G, _, _ = torch_layers()
    x1, x2, s = torch_inputs()
    n = x1.shape[-1]

    def flat_forward(x, s):
        y1, y2 = m.forward(x[:n], x[n:], s, F, G)
        return torch.cat([y1, y2])

    x = torch.cat([x1, x2], dim=-1).detach()
    jac = torch.func.vmap(torch.func.jacrev(flat_forward), in_dims=(0, None))(x, s)
    want = torch.autograd.grad(torch.linalg.slogdet(jac)[1].sum(), (s, *params),
                               allow_unused=True)
    log_det = m.log_det_jacobian(x1, x2, s, F, G).sum()
    if not log_det.requires_grad:  # a constant log-det (the additive block): no graph
        assert all(w is None or not w.any() for w in want)
        return
    got = torch.autograd.grad(log_det, (s, *params), allow_unused=True)
    for name, g, w in zip(("s", "W", "b", "V", "c"), got, want, strict=True):
        if w is None or g is None:  # a parameter the block does not use: both agree
            assert g is None or not g.any(), name
            assert w is None or not w.any(), name
            continue
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_gradcheck_coupling_kernels(block):
    m = kernels(block)
    _, F, G, JF, JG = torch_layers()
    x1, x2, s = torch_inputs(batch=(3,))
    assert torch.autograd.gradcheck(lambda a, b, c: m.forward(a, b, c, F, G), (x1, x2, s))
    y = tuple(t.detach().requires_grad_() for t in m.forward(x1, x2, s, F, G))
    assert torch.autograd.gradcheck(lambda a, b, c: m.inverse(a, b, c, F, G), (*y, s))
    assert torch.autograd.gradcheck(lambda a, b, c: m.log_det_jacobian(a, b, c, F, G),
                                    (x1, x2, s))
    assert torch.autograd.gradcheck(lambda a, b, c: m.jacobian(a, b, c, F, G, JF, JG),
                                    (x1, x2, s))


@pytest.mark.parametrize("parameterization", list(PARAMETERIZATIONS))
def test_gradcheck_kl_kernels(parameterization):
    m = kernels(KL_MODULES[parameterization])
    rng = np.random.default_rng(2)
    # sigma (or logvar) across every piece of the arrangement, including sigma = 1
    sigma = np.array([0.05, 0.5, 0.97, 1.0, 1.04, 1.5, 4.0])
    scale = sigma if parameterization == "sigma" else np.log(sigma**2)
    mu, sc = (torch.tensor(a, requires_grad=True) for a in (rng.normal(size=7), scale))
    eps = torch.tensor(rng.normal(size=(2, 7)), requires_grad=True)
    for name in KL_KERNELS:
        fn = getattr(m, name)
        args = (mu, sc, eps) if "reparam" in name or "stl" in name else (mu, sc)
        assert torch.autograd.gradcheck(fn, args), name


@pytest.mark.parametrize("parameterization", list(PARAMETERIZATIONS))
def test_torch_func_grad_and_vmap(parameterization):
    m = kernels(KL_MODULES[parameterization])
    rng = np.random.default_rng(3)
    mu = torch.tensor(rng.normal(size=(6, 3)))
    scale = torch.tensor(rng.uniform(0.2, 3, size=(6, 3)))
    grads = torch.func.grad(lambda a, b: m.kl(a, b).sum(), argnums=(0, 1))(mu, scale)
    exact = m.kl_grad(mu, scale)
    for g, e in zip(grads, exact, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-14)
    batched = torch.func.vmap(m.kl)(mu, scale)
    torch.testing.assert_close(batched, m.kl(mu, scale), rtol=0, atol=0)
    per_row = torch.func.vmap(torch.func.grad(lambda a, b: m.kl(a, b).sum()))(mu, scale)
    torch.testing.assert_close(per_row, exact[0], rtol=1e-12, atol=1e-14)


def test_torch_compile_without_graph_breaks():
    """fullgraph=True fails on any graph break (Dynamo's capture; the "eager" backend skips
    Inductor's C++ build, which takes minutes on CI's CPU). A representative pair is
    compiled: a piecewise KL and a coupling log-det with callables, each after an eager
    call has filled the runtime's caches."""
    torch._dynamo.reset()
    m = kernels("gaussian_kl")
    mu = torch.linspace(-1, 1, 9, dtype=torch.float64)
    sigma = torch.logspace(-3, 3, 9, dtype=torch.float64)
    m.kl(mu, sigma)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*lru_cache.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="torch._dynamo")
        kl = torch.compile(m.kl, fullgraph=True, backend="eager")
        torch.testing.assert_close(kl(mu, sigma), m.kl(mu, sigma), rtol=1e-15, atol=0)
        _, F, G, _, _ = torch_layers()
        x1, x2, s = (t.detach() for t in torch_inputs())
        ld = torch.compile(kernels("coupling").log_det_jacobian, fullgraph=True,
                           backend="eager")
        torch.testing.assert_close(ld(x1, x2, s, F, G),
                                   kernels("coupling").log_det_jacobian(x1, x2, s, F, G))


def test_sigma_gradients_are_finite_and_exact_from_1e_minus_200_to_1e160():
    sigma = torch.tensor(SIGMAS, requires_grad=True)
    (grad,) = torch.autograd.grad(kernels("gaussian_kl").kl(torch.zeros(()), sigma).sum(),
                                  sigma)
    expected = SIGMAS - 1 / SIGMAS
    assert torch.isfinite(grad).all()
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-14, atol=0)
    assert grad[-1] == 0.0  # sigma = 1 exactly


def test_logvar_gradients_are_finite_and_exact_where_the_true_gradient_is_finite():
    # logvar from -900 to 700 (sigma from 1e-196 to 1e152), logvar = 0 exactly included
    lv = np.concatenate([np.linspace(-900, 700, 801), [0.0]])
    logvar = torch.tensor(lv, requires_grad=True)
    (grad,) = torch.autograd.grad(
        kernels("gaussian_kl_logvar").kl(torch.zeros(()), logvar).sum(), logvar)
    np.testing.assert_allclose(grad.numpy(), np.expm1(lv) / 2, rtol=1e-14, atol=0)


def _single_where(xp, module="sigma", **arrays):
    """kl's piecewise value selected by one nested where, without safe arguments: printed
    from the same plan as the kernel, to show what the double where prevents."""
    kernel = next(k for k in gaussian_kl_module(PARAMETERIZATIONS[module]).kernels
                  if k.name == "kl")
    plan = plan_kernel(kernel)
    printer = XpPrinter()
    env = {"xp": xp, "_rt": kernel_runtime, **arrays}  # the printer calls the runtime
    for st in plan.statements:
        if st.kind == "piecewise":
            code = printer.doprint(st.pieces[-1].expr)
            for piece in reversed(st.pieces[:-1]):
                code = f"xp.where({printer.doprint(piece.cond)}, " \
                       f"{printer.doprint(piece.expr)}, {code})"
        else:
            code = printer.doprint(st.expr)
        env[st.target] = eval(code, env)  # noqa: S307 -- code printed by our printer
    return env["kl"]


def test_a_single_where_would_give_nan_where_expm1_overflows():
    # the logvar module's last piece is expm1(x) - x (the sigma module's, since issue 24,
    # is formed from sigma and is finite with its derivative wherever sigma is)
    logvar = torch.tensor([800.0, 2.0], dtype=torch.float64, requires_grad=True)
    mu = torch.zeros(2)
    (naive,) = torch.autograd.grad(
        _single_where(torch, "logvar", mu=mu, logvar=logvar).sum(), logvar)
    assert torch.isnan(naive[0])  # d(expm1(x) - x) = inf, times a zero cotangent
    (ours,) = torch.autograd.grad(kernels("gaussian_kl_logvar").kl(mu, logvar).sum(), logvar)
    assert not torch.isnan(ours).any()  # expm1(800)/2 = inf: the true derivative overflows
    sigma = torch.tensor([1e160, 2.0], dtype=torch.float64, requires_grad=True)
    (ours,) = torch.autograd.grad(kernels("gaussian_kl").kl(mu, sigma).sum(), sigma)
    assert ours[0] == 1e160 and torch.isfinite(ours).all()
    for piece in plan_kernel(next(k for k in gaussian_kl_module(PARAMETERIZATIONS["sigma"])
                                  .kernels if k.name == "kl")).statements:
        for p in piece.pieces:  # every safe point: the piece and its derivative finite
            if not p.expr.free_symbols:
                continue  # a constant piece (the infinite scale's kl = oo): nothing to replace
            point = dict(p.safe)
            exact = p.expr.replace(lambda a: isinstance(a, sp.UnevaluatedExpr),
                                   lambda a: a.args[0])
            assert exact.subs(point).is_finite
            assert all(sp.diff(exact, v).subs(point).is_finite for v in point)


# --- JAX ------------------------------------------------------------------------------------


@pytest.fixture
def jax():
    jax = pytest.importorskip("jax", reason="jax is not installed (test extra)")
    jax.config.update("jax_enable_x64", True)
    return jax


def _first(value):
    return value[0] if isinstance(value, tuple) else value


@pytest.mark.parametrize("parameterization", list(PARAMETERIZATIONS))
def test_jax_jit_grad_vmap_on_every_kl_kernel(jax, parameterization):
    jnp = jax.numpy
    m = kernels(KL_MODULES[parameterization])
    rng = np.random.default_rng(4)
    mu = jnp.asarray(rng.normal(size=(5, 3)))
    scale = jnp.asarray(rng.uniform(0.2, 3, size=(5, 3)))
    eps = jnp.asarray(rng.normal(size=(5, 3)))
    for name in KL_KERNELS:
        fn = getattr(m, name)
        args = (mu, scale, eps) if "reparam" in name or "stl" in name else (mu, scale)
        eager = fn(*args)
        for g, e in zip(jax.tree.leaves(jax.jit(fn)(*args)), jax.tree.leaves(eager),
                        strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-14, atol=1e-15)
        for g, e in zip(jax.tree.leaves(jax.vmap(fn)(*args)), jax.tree.leaves(eager),
                        strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-14, atol=1e-15)
        grads = jax.jit(jax.grad(lambda *a, f=fn: _first(f(*a)).sum(), argnums=(0, 1)))(*args)
        assert all(bool(jnp.isfinite(g).all()) for g in grads), name
    kl_grad = jax.jit(jax.grad(lambda a, b: m.kl(a, b).sum(), argnums=(0, 1)))(mu, scale)
    exact = jax.jit(m.kl_grad)(mu, scale)
    for g, e in zip(kl_grad, exact, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_jax_jit_grad_vmap_on_every_coupling_kernel(jax, block):
    jnp = jax.numpy
    m = kernels(block)
    L = ref.DenseLayers.random(4, 0)
    W, b, V, c = (jnp.asarray(a) for a in (L.W, L.b, L.V, L.c))

    def F(x):
        return jnp.tanh(x @ W.T + b)

    def G(x):
        return L.g_scale * jnp.sin(x @ V.T + c)

    rng = np.random.default_rng(5)
    x1, x2 = (jnp.asarray(rng.normal(size=(5, 4))) for _ in range(2))
    s = jnp.asarray(0.3 * rng.normal(size=4))
    JF, JG = jax.vmap(jax.jacfwd(F)), jax.vmap(jax.jacfwd(G))
    calls = {"forward": lambda a, b, t: m.forward(a, b, t, F, G),
             "inverse": lambda a, b, t: m.inverse(a, b, t, F, G),
             "jacobian": lambda a, b, t: m.jacobian(a, b, t, F, G, JF, JG),
             "log_det_jacobian": lambda a, b, t: m.log_det_jacobian(a, b, t, F, G)}
    for name, fn in calls.items():
        eager = jax.tree.leaves(fn(x1, x2, s))
        for g, e in zip(jax.tree.leaves(jax.jit(fn)(x1, x2, s)), eager, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-13, atol=1e-14, err_msg=name)
        if name != "jacobian":  # JF, JG above take a batch
            mapped = jax.vmap(fn, in_axes=(0, 0, None))(x1, x2, s)
            for g, e in zip(jax.tree.leaves(mapped), eager, strict=True):
                np.testing.assert_allclose(g, e, rtol=1e-13, atol=1e-14, err_msg=name)
        grads = jax.jit(jax.grad(lambda a, b, t, f=fn: _first(f(a, b, t)).sum(),
                                 argnums=(0, 1, 2)))(x1, x2, s)
        assert all(bool(jnp.isfinite(g).all()) for g in grads), name
    # log_det's gradient in s against slogdet of the Jacobian, through JAX
    def via_slogdet(t):
        flat = jax.vmap(jax.jacfwd(lambda x: jnp.concatenate(m.forward(x[:4], x[4:], t, F, G))))
        return jnp.linalg.slogdet(flat(jnp.concatenate([x1, x2], axis=-1)))[1].sum()

    np.testing.assert_allclose(
        jax.grad(lambda t: m.log_det_jacobian(x1, x2, t, F, G).sum())(s),
        jax.grad(via_slogdet)(s), rtol=1e-10, atol=1e-10)


def test_jax_sigma_gradients_are_finite_from_1e_minus_200_to_1e160(jax):
    grad = jax.jit(jax.grad(lambda s: kernels("gaussian_kl").kl(0.0, s).sum()))(
        jax.numpy.asarray(SIGMAS))
    np.testing.assert_allclose(np.asarray(grad), SIGMAS - 1 / SIGMAS, rtol=1e-14, atol=0)
    naive = jax.grad(lambda x: _single_where(jax.numpy, "logvar", mu=0.0, logvar=x).sum())(
        jax.numpy.asarray([800.0, 2.0]))
    assert np.isnan(np.asarray(naive)[0])


def test_jax_differentiates_kl_through_the_derived_kl_grad(jax):
    """Issue 24: jax.grad, jvp and jit(grad) of ``kl`` go through a custom JVP whose
    tangent is the derived ``kl_grad`` (kernel_runtime.gradients; jit(grad(kl)) took
    7.5-7.8x the naive formula's, about 1.0x this way), and ``kl``'s traced pieces need no
    safe points then. Second derivatives differentiate ``kl_grad``,
    whose pieces keep theirs: finite from 1e-200 to 1e160, and exact."""
    jnp = jax.numpy
    m = kernels("gaussian_kl")
    s = jnp.asarray(SIGMAS)
    value, tangent = jax.jvp(lambda t: m.kl(0.0, t), (s,), (jnp.ones_like(s),))
    np.testing.assert_allclose(np.asarray(tangent), SIGMAS - 1 / SIGMAS, rtol=1e-14, atol=0)
    inside = SIGMAS[(SIGMAS >= 1e-150) & (SIGMAS <= 1e150)]  # 1 + 1/s**2 finite
    second = jax.jit(jax.grad(lambda t: jax.grad(lambda u: m.kl(0.0, u).sum())(t).sum()))(
        jnp.asarray(inside))
    assert bool(jnp.isfinite(second).all())
    np.testing.assert_allclose(np.asarray(second), 1 + 1 / inside**2, rtol=1e-13, atol=0)
    # the value is one custom JVP call, whose pieces carry no safe point: fewer equations
    # than the same body traced on its own (48 against 55 here)
    args = (jnp.zeros(3), jnp.ones(3))
    (call,) = jax.make_jaxpr(m.kl)(*args).jaxpr.eqns
    assert call.primitive.name == "custom_jvp_call"
    from array_api_compat import array_namespace
    body = jax.make_jaxpr(lambda a, b: m._kl_xp(array_namespace(a), a, b, (3,), jnp.float64))
    assert len(call.params["call_jaxpr"].jaxpr.eqns) < len(body(*args).jaxpr.eqns)


def test_jax_grad_of_a_python_float_argument(jax):
    """``jax.grad`` with respect to a Python float (a ``TypedFloat`` inside the custom JVP,
    which has no device): the derived gradient, as before the custom JVP (review of issue
    24's change: it raised AttributeError)."""
    jnp = jax.numpy
    m = kernels("gaussian_kl")
    got = jax.grad(lambda mu: m.kl(mu, jnp.array([0.5, 2.0])).sum())(0.3)
    assert float(got) == pytest.approx(0.6, rel=1e-15)
    lv = kernels("gaussian_kl_logvar")
    assert float(jax.grad(lambda mu: lv.kl(mu, jnp.array([0.0])).sum())(0.3)) == \
        pytest.approx(0.3, rel=1e-15)


def test_jax_forward_mode_is_not_nan_where_another_argument_s_gradient_overflows(jax):
    """``jacfwd``/``jvp`` in ``mu`` where ``d kl/d sigma = sigma - 1/sigma`` overflows
    (sigma subnormal): the tangent of sigma is zero, and the overflowing gradient is not
    multiplied by it (inf * 0 was NaN; the true derivative is mu)."""
    jnp = jax.numpy
    m = kernels("gaussian_kl")
    jac = jax.jacfwd(lambda mu: m.kl(mu, jnp.array([1e-310, 5e-324])))(jnp.full(2, 0.3))
    np.testing.assert_array_equal(np.diag(np.asarray(jac)), [0.3, 0.3])
    lv = kernels("gaussian_kl_logvar")
    _, tangent = jax.jvp(lambda mu: lv.kl(mu, jnp.array([720.0])), (jnp.array([0.3]),),
                         (jnp.ones(1),))
    np.testing.assert_array_equal(np.asarray(tangent), [0.3])


def test_jax_pair_hessian_is_symmetric_where_the_scale_ratio_is_tiny(jax):
    """The pair's second derivative in (sigma_q, sigma_p) at sigma_q/sigma_p = 1e-40, the
    true -2 sigma_q/sigma_p**3 = -2e-40: one order gave 1.0 (JAX's own derivative of expm1
    is g*(ans + 1), exactly 0 where expm1 rounds to -1, and the custom JVP differentiates
    the gradient kernel for a Hessian). Now: one order to 1e-12, relative; the other to
    16 eps absolute (d kl/d sigma_q's terms of order 1 cancel there: the accuracy of the
    gradient kernel's pieces, as for any Hessian taken through them)."""
    jnp = jax.numpy
    m = kernels("gaussian_kl_pair")
    h = jax.vmap(jax.hessian(lambda a, b: m.kl(0.2, a, -0.1, b), argnums=(0, 1)))(
        jnp.array([1e-40, 1e-10]), jnp.ones(2))
    qp, pq = np.asarray(h[0][1]), np.asarray(h[1][0])
    np.testing.assert_allclose(pq, [-2e-40, -2e-10], rtol=1e-12, atol=0)
    np.testing.assert_allclose(qp, [-2e-40, -2e-10], rtol=0, atol=16 * 2.0**-52)


def test_check_finite_true_under_jit_is_a_clear_error(jax):
    m = kernels("gaussian_kl")
    fn = jax.jit(lambda a, b: m.kl(a, b, check_finite=True))
    with pytest.raises(TypeError, match="check_finite=True needs the values"):
        fn(jax.numpy.zeros(2), jax.numpy.ones(2))
    with pytest.raises(ValueError, match="sigma: expected every entry > 0"):
        m.kl(jax.numpy.zeros(2), jax.numpy.asarray([1.0, -1.0]), check_finite=True)
