"""Every block's kernels at extreme G against mpmath: accurate, finite, and without warnings.

Parametrized over ``BLOCKS`` (a new block is tested without new code, once its scales are
in ``tests/reference.py``) and over one block that is not shipped, a softplus scale, added
in memory as docs/adding-material.md says.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import SimpleNamespace

import mpmath
import numpy as np
import pytest
import sympy as sp

from derive.blocks import BLOCKS

from . import reference as ref

G_VALUES = [-800.0, -40.0, -1.0, 0.0, 1e-9, 1.0, 40.0, 800.0]
F_VALUES = [0.0, 0.75]
N = 3
S = np.array([0.1, 0.2, 0.3])
X1 = np.array([[0.5, -1.25, 2.0], [1.5, 0.75, -0.6]])
X2 = np.array([[0.3, -0.2, 0.1], [-1.0, 0.4, 0.9]])
#: Blocks nobody shipped, written as a user would: a softplus scale (bare, and kept away
#: from 0), and a sigmoid scale written as exp(G)/(1 + exp(G)).
USER_BLOCKS = {
    "user_softplus": ("a softplus-scaled block", "log(1 + exp(G))*x1 + F", "x2"),
    "user_softplus_floor": ("a softplus-scaled block with a floor",
                            "(log(1 + exp(G)) + 1/1000)*x1 + F", "x2"),
    "user_exp_sigmoid": ("a sigmoid-scaled block", "exp(G)/(1 + exp(G))*x1 + F", "x2"),
}


def _sigmoid(g):
    return 1 / (1 + np.exp(-g))


for _name, _ref in {
    "user_softplus": ref.BlockReference(
        lambda g: np.logaddexp(0, g), _sigmoid, lambda g: mpmath.log1p(mpmath.exp(g))),
    "user_softplus_floor": ref.BlockReference(
        lambda g: np.logaddexp(0, g) + 1e-3, _sigmoid,
        lambda g: mpmath.log1p(mpmath.exp(g)) + mpmath.mpf(1) / 1000),
    "user_exp_sigmoid": ref.BlockReference(
        _sigmoid, lambda g: _sigmoid(g) * _sigmoid(-g), lambda g: 1 / (1 + mpmath.exp(-g))),
}.items():
    ref.BLOCK_REFERENCES.setdefault(_name, _ref)
ALL_BLOCKS = list(BLOCKS) + list(USER_BLOCKS)

#: Overflow, invalid operations and division by zero raise (underflow to 0 is allowed: it
#: is the correctly rounded value where the true value is below the smallest subnormal).
RAISE = {"over": "raise", "invalid": "raise", "divide": "raise"}


@cache
def kernels(name: str) -> SimpleNamespace:
    if name in BLOCKS:
        return SimpleNamespace(**vars(importlib.import_module(f"generated.{name}")))
    from codegen.backends import render_numpy
    from derive.coupling import CouplingBlock
    from derive.kernels import coupling_module
    from derive.vocabulary import F, G, s, x1, x2

    title, y1, y2 = USER_BLOCKS[name]
    names = {"x1": x1, "x2": x2, "s": s, "F": F, "G": G, "exp": sp.exp, "log": sp.log}
    block = CouplingBlock(name, title, y1=sp.sympify(y1, locals=names),
                          y2=sp.sympify(y2, locals=names))
    namespace: dict = {}
    exec(render_numpy(coupling_module(block), "test"), namespace)  # noqa: S102
    return SimpleNamespace(**namespace)


def constant(value: float):
    return lambda x: np.full_like(x, value)


@pytest.mark.parametrize("block", ALL_BLOCKS)
@pytest.mark.parametrize("g", G_VALUES)
@pytest.mark.parametrize("f", F_VALUES)
def test_log_det_against_mpmath(block, g, f):
    with np.errstate(**RAISE):
        ld = kernels(block).log_det_jacobian(X1, X2, S, constant(f), constant(g))
        y1, y2, ld2 = kernels(block).forward_and_log_det(X1, X2, S, constant(f), constant(g)) \
            if _forward_is_finite(block, g, f) else (None, None, ld)
    exact = ref.log_det_mpmath(block, g, S, N)
    assert ld.shape == (2,)
    np.testing.assert_array_equal(ld, ld2)
    if abs(exact) < 1e-300:  # the true value underflows: it is 0 to within 1e-300
        assert np.all(np.abs(ld) <= 1e-300), (ld, exact)
    else:
        rel = np.abs((ld - float(exact)) / float(exact))
        assert np.all(rel <= 1e-12), (ld, exact, rel)


def _scale(block: str, g: float) -> mpmath.mpf:
    with mpmath.workdps(50):
        return ref.block_reference(block).scale_mp(mpmath.mpf(g))


def _forward_is_finite(block: str, g: float, f: float) -> bool:
    """Whether y1 = a(G) x1 + F is a finite float64 (an overflowing y1 raises, rightly)."""
    return float(_scale(block, g) * max(abs(X1.max()), abs(X1.min())) + f) < 1e300 \
        if _scale(block, g) < 1e300 else False


def _keeps_information(block: str, g: float, f: float) -> bool:
    """Whether the forward map's y1 still holds x1 to 1e-13 or so.

    It does not where a(G) x1 underflows (a(-800) = exp(-800) for exp scales, 0 in float64:
    y1 = F whatever x1 is), where a(G) x1 is so small next to F that F + a(G) x1 rounds it
    away (relative error eps |y1| / |a(G) x1| above 1e-13), or where y1 overflows.
    """
    a = _scale(block, g)
    smallest = a * min(abs(X1.min()), np.abs(X1).min())
    return (_forward_is_finite(block, g, f) and smallest > 1e-290
            and f / smallest <= 100 and a < 1e300)


@pytest.mark.parametrize("block", ALL_BLOCKS)
@pytest.mark.parametrize("g", G_VALUES)
@pytest.mark.parametrize("f", F_VALUES)
def test_round_trip(block, g, f):
    if not _keeps_information(block, g, f):
        pytest.skip("the forward map loses x1 here (a(G) x1 underflows, rounds away next to "
                    "F, or y1 overflows): no inverse can recover it")
    m = kernels(block)
    with np.errstate(**RAISE):
        y1, y2 = m.forward(X1, X2, S, constant(f), constant(g))
        b1, b2 = m.inverse(y1, y2, S, constant(f), constant(g))
    np.testing.assert_allclose(b1, X1, rtol=1e-12, atol=0)
    np.testing.assert_allclose(b2, X2, rtol=1e-12, atol=0)


@pytest.mark.parametrize("block", ALL_BLOCKS)
@pytest.mark.parametrize("g", G_VALUES)
def test_forward_against_mpmath(block, g):
    """Where y1 is a finite number, the kernel gives it to 1e-12 (no overflow first)."""
    f = 0.0
    if not _forward_is_finite(block, g, f):
        pytest.skip("y1 = a(G) x1 overflows float64: infinity is the right answer")
    with np.errstate(**RAISE):
        y1, _ = kernels(block).forward(X1, X2, S, constant(f), constant(g))
    a = _scale(block, g)
    expected = np.array([[float(a * mpmath.mpf(v)) for v in row] for row in X1])
    tiny = np.abs(expected) < 1e-300
    np.testing.assert_allclose(y1[~tiny], expected[~tiny], rtol=1e-12, atol=0)
    assert np.all(np.abs(y1[tiny]) <= 1e-300)


@pytest.mark.parametrize("block", ALL_BLOCKS)
def test_forward_and_log_det_agrees_with_the_two_kernels(block):
    L = ref.DenseLayers.random(N, seed=3)
    calls = {"F": 0, "G": 0}

    def counted(name, fn):
        def wrapper(x):
            calls[name] += 1
            return fn(x)
        return wrapper

    m = kernels(block)
    y1, y2, ld = m.forward_and_log_det(X1, X2, S, counted("F", L.F), counted("G", L.G))
    assert max(calls.values()) <= 1, calls  # G(x2) evaluated once for both
    f1, f2 = m.forward(X1, X2, S, L.F, L.G)
    np.testing.assert_allclose(y1, f1, rtol=1e-15, atol=0)
    np.testing.assert_allclose(y2, f2, rtol=1e-15, atol=0)
    np.testing.assert_allclose(ld, m.log_det_jacobian(X1, X2, S, L.F, L.G), rtol=1e-15)
    np.testing.assert_allclose(ld, ref.log_det(block, X1, X2, S, L.G), rtol=1e-13)


@pytest.mark.parametrize("block", ALL_BLOCKS)
def test_jacobian_and_log_det_against_the_hand_written_reference(block):
    L = ref.DenseLayers.random(N, seed=4)
    m = kernels(block)
    J = m.jacobian(X1, X2, S, L.F, L.G, L.JF, L.JG)
    np.testing.assert_allclose(J, ref.jacobian(block, X1, X2, S, L), rtol=1e-12, atol=1e-14)
    sign, logabs = np.linalg.slogdet(J)
    np.testing.assert_allclose(m.log_det_jacobian(X1, X2, S, L.F, L.G), logabs, rtol=1e-12)


def test_an_unknown_block_has_no_reference():
    with pytest.raises(KeyError, match="no hand-written reference for block 'nobody'"):
        ref.forward("nobody", X1, X2, S, np.tanh, np.sin)


@pytest.mark.parametrize("block", ALL_BLOCKS)
@pytest.mark.parametrize("g", G_VALUES)
def test_jacobian_against_mpmath(block, g):
    """dy1/dx1 = a(G) I and dy1/dx2 = JF + diag(x1 a'(G)) JG, to 1e-12 where finite."""
    with mpmath.workdps(50):
        scale = ref.block_reference(block).scale_mp
        a, da = scale(mpmath.mpf(g)), mpmath.diff(scale, mpmath.mpf(g))
    if max(abs(a), abs(da) * np.abs(X1).max()) > 1e300:
        pytest.skip("an entry of the Jacobian overflows float64: infinity is the right answer")
    jf, jg = 0.5 * np.eye(N), np.full((N, N), 0.25)
    with np.errstate(**RAISE):
        J = kernels(block).jacobian(X1, X2, S, constant(0.0), constant(g),
                                    lambda x: np.broadcast_to(jf, x.shape + (N,)),
                                    lambda x: np.broadcast_to(jg, x.shape + (N,)))
    expected = np.zeros_like(J)
    for b in range(X1.shape[0]):
        for r in range(N):
            expected[b, r, r] = float(a)
            for c in range(N):
                expected[b, r, N + c] = float(jf[r, c] + mpmath.mpf(X1[b, r]) * da * jg[r, c])
    expected[:, N:, N:] = np.diag(ref.block_reference(block).s_scale(S))
    tiny = np.abs(expected) < 1e-300
    np.testing.assert_allclose(J[~tiny], expected[~tiny], rtol=1e-12, atol=0)
    assert np.all(np.abs(J[tiny]) <= 1e-300)


@pytest.mark.parametrize("block", ALL_BLOCKS)
@pytest.mark.parametrize("g", [-100.0, -20.0, -1.0, 0.0, 1.0, 20.0, 100.0])
def test_float32_log_det_and_round_trip(block, g):
    """float32 stays float32 at extreme G too: no overflow first, float32's accuracy kept."""
    x1, x2, s = X1.astype(np.float32), X2.astype(np.float32), S.astype(np.float32)
    m = kernels(block)
    with np.errstate(**RAISE):
        ld = m.log_det_jacobian(x1, x2, s, constant(0.0), constant(g))
    assert ld.dtype == np.float32
    exact = ref.log_det_mpmath(block, g, s.astype(np.float64), N)
    if abs(exact) < 1e-37:  # below float32's normal range
        assert np.all(np.abs(ld) <= 1e-37)
    else:
        np.testing.assert_allclose(ld, float(exact), rtol=1e-5)
    a = _scale(block, g)
    if not 1e-30 < a < 1e30:
        return  # the forward map overflows or loses x1 in float32
    with np.errstate(**RAISE):
        y = m.forward(x1, x2, s, constant(0.0), constant(g))
        back = m.inverse(*y, s, constant(0.0), constant(g))
    assert all(v.dtype == np.float32 for v in (*y, *back))
    np.testing.assert_allclose(back[0], x1, rtol=1e-5)
