"""Generated coupling kernels against hand-written NumPy, finite differences and slogdet."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from codegen import lambdify_kernel
from derive.coursework.blocks import BLOCKS
from derive.coursework.kernels import coupling_module

from . import reference as ref

BLOCK_NAMES = list(BLOCKS)
BATCHES = [(), (5,), (2, 3)]
N = 4


def module(name: str):
    return importlib.import_module(f"generated.{name}")


def inputs(batch, n=N, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=batch + (n,)).astype(dtype)
    x2 = rng.normal(size=batch + (n,)).astype(dtype)
    s = (0.3 * rng.normal(size=n)).astype(dtype)
    return x1, x2, s, ref.DenseLayers.random(n, seed)


@pytest.mark.parametrize("block", BLOCK_NAMES)
@pytest.mark.parametrize("batch", BATCHES)
def test_forward_matches_reference(block, batch):
    x1, x2, s, L = inputs(batch)
    y1, y2 = module(block).forward(x1, x2, s, L.F, L.G)
    r1, r2 = ref.forward(block, x1, x2, s, L.F, L.G)
    np.testing.assert_allclose(y1, r1, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(y2, r2, rtol=1e-14, atol=1e-14)
    assert y1.shape == y2.shape == batch + (N,)


@pytest.mark.parametrize("block", BLOCK_NAMES)
@pytest.mark.parametrize("batch", BATCHES)
def test_inverse_round_trip(block, batch):
    x1, x2, s, L = inputs(batch)
    m = module(block)
    y1, y2 = m.forward(x1, x2, s, L.F, L.G)
    b1, b2 = m.inverse(y1, y2, s, L.F, L.G)
    np.testing.assert_allclose(b1, x1, rtol=1e-12, atol=1e-12 * np.abs(x1).max())
    np.testing.assert_allclose(b2, x2, rtol=1e-12, atol=1e-12 * np.abs(x2).max())
    r1, r2 = ref.inverse(block, y1, y2, s, L.F, L.G)
    np.testing.assert_allclose(b1, r1, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(b2, r2, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("block", BLOCK_NAMES)
@pytest.mark.parametrize("batch", BATCHES)
def test_jacobian_matches_finite_differences_and_reference(block, batch):
    x1, x2, s, L = inputs(batch)
    J = module(block).jacobian(x1, x2, s, L.F, L.G, L.JF, L.JG)
    assert J.shape == batch + (2 * N, 2 * N)
    fd = ref.finite_difference_jacobian(
        lambda a, b: ref.forward(block, a, b, s, L.F, L.G), x1, x2)
    np.testing.assert_allclose(J, fd, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(J, ref.jacobian(block, x1, x2, s, L), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("block", BLOCK_NAMES)
@pytest.mark.parametrize("batch", BATCHES)
def test_log_det_matches_slogdet(block, batch):
    x1, x2, s, L = inputs(batch)
    ld = module(block).log_det_jacobian(x1, x2, s, L.F, L.G)
    assert ld.shape == batch
    fd = ref.finite_difference_jacobian(
        lambda a, b: ref.forward(block, a, b, s, L.F, L.G), x1, x2)
    sign, logabs = np.linalg.slogdet(fd)
    np.testing.assert_allclose(ld, logabs, rtol=1e-7, atol=1e-7)
    assert np.all(sign > 0)
    np.testing.assert_allclose(ld, ref.log_det(block, x1, x2, s, L.G), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_float32_stays_float32(block):
    x1, x2, s, L = inputs((3,), dtype=np.float32)
    m = module(block)
    outs = [*m.forward(x1, x2, s, L.F, L.G), *m.inverse(x1, x2, s, L.F, L.G),
            m.log_det_jacobian(x1, x2, s, L.F, L.G),
            m.jacobian(x1, x2, s, L.F, L.G, L.JF, L.JG)]
    assert all(o.dtype == np.float32 for o in outs), [o.dtype for o in outs]


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_batch_dimensions_broadcast(block):
    x1, _, s, L = inputs((2, 3))
    x2 = np.random.default_rng(1).normal(size=(3, N))  # broadcasts against x1's batch
    y1, y2 = module(block).forward(x1, x2, s, L.F, L.G)
    r1, r2 = ref.forward(block, x1, np.broadcast_to(x2, x1.shape), s, L.F, L.G)
    np.testing.assert_allclose(y1, r1, rtol=1e-14)
    np.testing.assert_allclose(y2, np.broadcast_to(r2, y1.shape), rtol=1e-14)
    assert y2.shape == (2, 3, N)
    assert module(block).log_det_jacobian(x1, x2, s, L.F, L.G).shape == (2, 3)


@pytest.mark.parametrize("block", ["coupling", "coupling_affine"])
def test_large_G_gives_finite_log_det(block):
    x1, x2, s, _ = inputs((2,))
    G = lambda x: np.full_like(x, 800.0)  # noqa: E731 - exp(800) overflows float64
    ld = module(block).log_det_jacobian(x1, x2, s, np.tanh, G)
    assert np.all(np.isfinite(ld))
    expected = 800.0 * N + (s.sum() if block == "coupling" else 0.0)
    np.testing.assert_allclose(ld, expected, rtol=1e-15)


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_each_callable_is_evaluated_once(block):
    x1, x2, s, L = inputs((3,))
    calls = {"F": 0, "G": 0, "JF": 0, "JG": 0}

    def counted(name, fn):
        def wrapper(x):
            calls[name] += 1
            return fn(x)
        return wrapper

    fns = {k: counted(k, getattr(L, k)) for k in calls}
    m = module(block)
    for run in (lambda: m.forward(x1, x2, s, fns["F"], fns["G"]),
                lambda: m.inverse(x1, x2, s, fns["F"], fns["G"]),
                lambda: m.jacobian(x1, x2, s, fns["F"], fns["G"], fns["JF"], fns["JG"]),
                lambda: m.log_det_jacobian(x1, x2, s, fns["F"], fns["G"])):
        calls.update(dict.fromkeys(calls, 0))
        run()
        assert max(calls.values()) <= 1, calls


def test_python_scalars_do_not_change_the_dtype():
    from generated import coupling, gaussian_kl

    sigma = np.full(3, 1.5, np.float32)
    assert gaussian_kl.kl(0.0, sigma).dtype == np.float32
    assert gaussian_kl.kl(0, sigma).dtype == np.float32
    x = np.ones((2, 3), np.float32)
    assert coupling.forward(x, x, np.zeros(3, np.float32), np.tanh, np.sin)[0].dtype == np.float32


def test_callables_returning_non_real_values_are_refused():
    x = np.ones((2, 3))
    from generated import coupling

    with pytest.raises(TypeError, match=r"F: expected F\(x\) to return real numbers"):
        coupling.forward(x, x, np.zeros(3), lambda v: v + 1j, np.sin)
    with pytest.raises(TypeError, match=r"x1: expected a real numeric array, got dtype bool"):
        coupling.forward(x > 0, x, np.zeros(3), np.tanh, np.sin)


def test_unused_parameters_are_ignored():
    x1, x2, s, L = inputs((3,))
    m = module("coupling_additive")
    y1, y2 = m.forward(x1, x2, s, L.F, None)
    np.testing.assert_allclose(y1, x1 + L.F(x2))
    ld = m.log_det_jacobian(x1, x2, s, None, None)  # NICE's log-det uses neither F nor G
    np.testing.assert_array_equal(ld, np.zeros(3))


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_shape_errors_name_the_arguments(block):
    x1, x2, s, L = inputs((3,))
    m = module(block)
    with pytest.raises(ValueError, match=r"x1, x2: expected the same last dimension"):
        m.forward(x1, x2[..., :2], s, L.F, L.G)
    if block == "coupling":
        with pytest.raises(ValueError, match=r"s: expected shape \(4,\)"):
            m.forward(x1, x2, s[:3], L.F, L.G)
    else:  # s is unused: accepted and ignored, whatever it is
        m.forward(x1, x2, None, L.F, L.G)
        m.forward(x1, x2, s[:3], L.F, L.G)
    with pytest.raises(ValueError, match=r"do not broadcast"):
        m.forward(x1, np.zeros((2, N)), s, L.F, L.G)
    with pytest.raises(ValueError, match=r"y1: expected an array of shape \(\.\.\., n\)"):
        m.inverse(1.0, x2, s, L.F, L.G)
    with pytest.raises(ValueError, match=r"F: expected F\(x\) of shape \(3, 4\)"):
        m.forward(x1, x2, s, lambda x: x[..., :2], L.G)
    with pytest.raises(TypeError, match=r"F: expected a callable"):
        m.forward(x1, x2, s, 3.0, L.G)


def test_huge_finite_inputs_pass_the_finiteness_check():
    x1, x2, s, L = inputs((3,))
    x1[0, 0], x1[1, 1] = 1e300, -1e300  # the check's sum of squares overflows; still finite
    y1, _ = module("coupling").forward(x1, x2, s, L.F, L.G)
    assert abs(y1[0, 0]) > 1e299
    x1[2, 2] = np.inf
    with pytest.raises(ValueError, match=r"x1: expected finite values"):
        module("coupling").forward(x1, x2, s, L.F, L.G)


def test_an_input_that_lends_only_its_shape_is_not_value_checked():
    # log_det_jacobian does not read x1's values (derivation 1.3): a NaN there changes
    # nothing, and costs no pass over x1; its shape still fixes the batch.
    x1, x2, s, L = inputs((3,))
    m = module("coupling")
    expected = m.log_det_jacobian(x1, x2, s, L.F, L.G)
    x1[0, 0] = np.nan
    np.testing.assert_array_equal(m.log_det_jacobian(x1, x2, s, L.F, L.G), expected)
    with pytest.raises(ValueError, match=r"x1, x2: leading \(batch\) dimensions"):
        m.log_det_jacobian(x1[:2], x2, s, L.F, L.G)
    with pytest.raises(ValueError, match=r"x1: expected finite values"):
        m.forward(x1, x2, s, L.F, L.G)


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_non_finite_input_is_an_error(block):
    x1, x2, s, L = inputs((3,))
    x1[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"x1: expected finite values"):
        module(block).forward(x1, x2, s, L.F, L.G)
    s2 = s.copy()
    s2[0] = np.inf
    if block == "coupling":
        with pytest.raises(ValueError, match=r"s: expected finite values"):
            module(block).forward(np.nan_to_num(x1), x2, s2, L.F, L.G)


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_lambdified_and_generated_kernels_agree(block):
    x1, x2, s, L = inputs((2, 3))
    m = module(block)
    kernels = {k.name: lambdify_kernel(k) for k in coupling_module(BLOCKS[block]).kernels}
    for name in ("forward", "inverse"):
        pairs = zip(kernels[name](x1, x2, s, L.F, L.G), getattr(m, name)(x1, x2, s, L.F, L.G),
                    strict=True)
        for a, b in pairs:
            np.testing.assert_allclose(np.broadcast_to(a, b.shape), b, rtol=1e-14)
    np.testing.assert_allclose(kernels["jacobian"](x1, x2, s, L.F, L.G, L.JF, L.JG),
                               m.jacobian(x1, x2, s, L.F, L.G, L.JF, L.JG), rtol=1e-14)
    ld = m.log_det_jacobian(x1, x2, s, L.F, L.G)
    np.testing.assert_allclose(np.broadcast_to(kernels["log_det_jacobian"](x1, x2, s, L.F, L.G),
                                               ld.shape), ld, rtol=1e-14)


@pytest.mark.parametrize("y1, y2, hand", [
    ("2*x1 + F", "x2", lambda a, b, s, F: (2 * a + F(b), b)),
    ("-(s**2 + 1)*x1 + F", "exp(s)*x2",
     lambda a, b, s, F: (-(s**2 + 1) * a + F(b), np.exp(s) * b)),
])
def test_new_blocks_generate_working_kernels(y1, y2, hand):
    """A user's block, including constant and signed scales, derived and rendered in memory."""
    import sympy as sp

    from codegen.backends import render_numpy
    from derive.coupling import CouplingBlock
    from derive.vocabulary import F, G, s, x1, x2

    names = {"x1": x1, "x2": x2, "s": s, "F": F, "G": G, "exp": sp.exp}
    block = CouplingBlock("user", "a user's block", y1=sp.sympify(y1, locals=names),
                          y2=sp.sympify(y2, locals=names))
    namespace: dict = {}
    exec(render_numpy(coupling_module(block), "test"), namespace)  # noqa: S102
    a, b, sv, L = inputs((5,))
    sv = sv - 0.5  # some negative entries; a negative scale: log|-(s^2 + 1)| is no log of
    # a negative number (s**2*x1 is refused: its scale is 0 where s = 0)
    fd = ref.finite_difference_jacobian(lambda u, v: hand(u, v, sv, L.F), a, b)
    ld = namespace["log_det_jacobian"](a, b, sv, L.F, None)
    np.testing.assert_allclose(ld, np.linalg.slogdet(fd)[1], rtol=1e-7, atol=1e-7)
    y = namespace["forward"](a, b, sv, L.F, None)
    back = namespace["inverse"](*y, sv, L.F, None)
    np.testing.assert_allclose(back[0], a, rtol=1e-12, atol=1e-12)
