"""Every kernel on every array library: values against tests/reference.py, types, checks.

One parametrized fixture (``lib``) runs each test on NumPy, PyTorch, JAX,
array_api_strict (2023.12) and Dask; a library that is not installed is skipped.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from derive.coursework.blocks import BLOCKS
from derive.coursework.gaussian_kl import PARAMETERIZATIONS

from . import reference as ref
from .backends import LIBS, make

BLOCK_NAMES = list(BLOCKS)
KL_MODULES = {p: ("gaussian_kl" if p == "sigma" else f"gaussian_kl_{p}")
              for p in PARAMETERIZATIONS}


def kernels(name: str):
    return importlib.import_module(f"generated.{name}")


@pytest.fixture(params=LIBS)
def lib(request):
    return make(request.param)


def coupling_inputs(batch=(2, 3), n=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=batch + (n,)), rng.normal(size=batch + (n,)),
            0.3 * rng.normal(size=n), ref.DenseLayers.random(n, seed))


def kl_inputs(parameterization: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(3, 5))
    sigma = np.exp(rng.uniform(-3, 3, size=(3, 5)))
    scale = sigma if parameterization == "sigma" else np.log(sigma**2)
    return mu, scale, rng.normal(size=(4, 3, 5))


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_coupling_kernels_match_the_reference(lib, block):
    x1, x2, s, L = coupling_inputs()
    F, G = lib.dense(L)
    m = kernels(block)
    a1, a2, sv = lib.asarray(x1), lib.asarray(x2), lib.asarray(s)
    y1, y2 = m.forward(a1, a2, sv, F, G)
    assert isinstance(y1, lib.array_type) and isinstance(y2, lib.array_type)
    r1, r2 = ref.forward(block, x1, x2, s, L.F, L.G)
    np.testing.assert_allclose(lib.numpy(y1), r1, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(lib.numpy(y2), r2, rtol=1e-13, atol=1e-13)
    b1, b2 = m.inverse(y1, y2, sv, F, G)
    np.testing.assert_allclose(lib.numpy(b1), x1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lib.numpy(b2), x2, rtol=1e-12, atol=1e-12)
    ld = m.log_det_jacobian(a1, a2, sv, F, G)
    assert isinstance(ld, lib.array_type)
    np.testing.assert_allclose(lib.numpy(ld), ref.log_det(block, x1, x2, s, L.G), rtol=1e-13,
                               atol=1e-13)
    xp = lib.xp
    W, b, V, c = (lib.asarray(a) for a in (L.W, L.b, L.V, L.c))

    def JF(x):
        return xp.expand_dims(1 - xp.tanh(x @ xp.matrix_transpose(W) + b) ** 2, axis=-1) * W

    def JG(x):
        return xp.expand_dims(L.g_scale * xp.cos(x @ xp.matrix_transpose(V) + c), axis=-1) * V

    J = m.jacobian(a1, a2, sv, F, G, JF, JG)
    assert isinstance(J, lib.array_type)
    np.testing.assert_allclose(lib.numpy(J), ref.jacobian(block, x1, x2, s, L), rtol=1e-13,
                               atol=1e-13)


@pytest.mark.parametrize("parameterization", list(PARAMETERIZATIONS))
def test_kl_kernels_match_the_hand_written_forms(lib, parameterization):
    """Each KL kernel on each library against PROBLEM.md's formulas typed in by hand."""
    m = kernels(KL_MODULES[parameterization])
    mu, scale, eps = kl_inputs(parameterization)
    sigma = scale if parameterization == "sigma" else np.exp(scale / 2)
    # d/dlogvar = d/dsigma * dsigma/dlogvar = d/dsigma * sigma / 2
    chain = 1.0 if parameterization == "sigma" else sigma / 2
    d_mu, d_sigma = ref.kl_grad_hand(mu, sigma)
    r_mu, r_sigma = ref.reparam_hand(mu, sigma, eps)
    s_mu, s_sigma = ref.stl_hand(mu, sigma, eps)
    hand = {"kl": (0.5 * (mu**2 + sigma**2 - 1) - np.log(sigma),),
            "kl_grad": (d_mu, d_sigma * chain),
            "kl_grad_reparam": (r_mu, r_sigma * chain),
            "kl_grad_stl": (s_mu, s_sigma * chain)}
    args = (lib.asarray(mu), lib.asarray(scale))
    for name, extra in (("kl", ()), ("kl_grad", ()), ("kl_grad_reparam", (eps,)),
                        ("kl_grad_stl", (eps,))):
        got = getattr(m, name)(*args, *(lib.asarray(e) for e in extra))
        got = got if isinstance(got, tuple) else (got,)
        for k, (g, w) in enumerate(zip(got, hand[name], strict=True)):
            assert isinstance(g, lib.array_type), (name, type(g))
            assert tuple(g.shape) == w.shape, (name, k)
            # atol: the hand forms cancel where the kernels' arrangements do not
            np.testing.assert_allclose(lib.numpy(g), w, rtol=1e-12,
                                       atol=1e-13 * np.abs(w).max(), err_msg=f"{name}[{k}]")


def test_float32_stays_float32_and_integers_compute_in_float64(lib):
    mu = lib.asarray(np.zeros(3, np.float32))
    sigma = lib.asarray(np.array([0.5, 1.0, 2.0], np.float32))
    out = kernels("gaussian_kl").kl(mu, sigma)
    assert lib.numpy(out).dtype == np.float32
    ints = kernels("gaussian_kl").kl(lib.asarray(np.array([0, 1])), lib.asarray(np.array([1, 2])))
    assert lib.numpy(ints).dtype == np.float64  # not the library's default float (torch: f32)
    np.testing.assert_allclose(lib.numpy(ints), [0.0, 0.5 * (1 + 4 - 1) - np.log(2)])
    # Python scalars stay weak
    half = kernels("gaussian_kl").kl(mu, 0.5)
    assert lib.numpy(half).dtype == np.float32


def test_mixing_libraries_names_the_arguments(lib):
    if lib.name == "numpy":
        pytest.skip("needs a second library")
    mu = lib.asarray(np.zeros(3))
    with pytest.raises(TypeError, match=r"mu, sigma: expected arrays of one array library.*"
                       r"sigma \(numpy.ndarray\)"):
        kernels("gaussian_kl").kl(mu, np.ones(3))
    x = lib.asarray(np.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"x1, x2, s: .*x2 \(numpy.ndarray\)"):
        kernels("coupling").forward(x, np.zeros((2, 3)), x[0, ...], lib.xp.tanh, lib.xp.tanh)


def test_a_callable_returning_another_library_names_it(lib):
    if lib.name == "numpy":
        pytest.skip("NumPy converts what F returns")
    x = lib.asarray(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="F: expected F\\(x\\) to return an array of the library"):
        kernels("coupling").forward(x, x, x[0, ...], lambda v: np.zeros((2, 3)), lib.xp.tanh)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_value_checks_follow_check_finite(lib):
    m = kernels("gaussian_kl")
    mu = lib.asarray(np.zeros(3))
    bad = lib.asarray(np.array([1.0, -1.0, np.nan]))
    default_checks = lib.name in ("numpy", "torch", "array_api_strict")
    if default_checks:
        with pytest.raises(ValueError, match="sigma: expected finite values"):
            m.kl(mu, bad)
    else:  # JAX and Dask: no sync; outside the domain gives NaN
        out = lib.numpy(m.kl(mu, bad))
        assert np.isnan(out[1:]).all() and np.isfinite(out[0])
    with pytest.raises(ValueError, match="sigma: expected every entry > 0"):
        m.kl(mu, lib.asarray(np.array([1.0, -1.0, 2.0])), check_finite=True)
    with pytest.raises(ValueError, match="mu: expected finite values"):
        m.kl(lib.asarray(np.array([0.0, np.inf, 0.0])), lib.asarray(np.ones(3)),
             check_finite=True)
    assert np.isnan(lib.numpy(m.kl(mu, bad, check_finite=False))[2])


def test_shape_errors_name_the_arguments_on_every_library(lib):
    x = lib.asarray(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"s: expected shape \(3,\)"):
        kernels("coupling").forward(x, x, lib.asarray(np.zeros(4)), lib.xp.tanh, lib.xp.tanh)
    with pytest.raises(ValueError, match="mu, sigma: shapes do not broadcast"):
        kernels("gaussian_kl").kl(lib.asarray(np.zeros(2)), lib.asarray(np.ones(3)))
    with pytest.raises(TypeError, match="G: expected a callable"):
        kernels("coupling").log_det_jacobian(x, x, x[0, ...], None, 3)


def test_callables_cannot_change_the_callers_array(lib):
    """Issue 12 item 19: F and G get a read-only view (NumPy) or a copy (torch, strict)."""
    x1 = lib.asarray(np.zeros((2, 3)))
    x2 = lib.asarray(np.ones((2, 3)))

    def in_place(v):
        v *= 2
        return v

    if lib.name == "numpy":
        with pytest.raises(ValueError, match="^F: expected F to leave its argument "
                           "unchanged") as raised:
            kernels("coupling").forward(x1, x2, x1[0, ...], in_place, lib.xp.tanh)
        assert "read-only" in str(raised.value.__cause__)  # NumPy's own error, chained
    else:
        try:
            kernels("coupling").forward(x1, x2, x1[0, ...], in_place, lib.xp.tanh)
        except (TypeError, ValueError, NotImplementedError):
            pass  # immutable arrays (JAX) refuse in-place updates themselves
    np.testing.assert_array_equal(lib.numpy(x2), np.ones((2, 3)))


class _Labelled:
    """Stands in for a pandas Series (pandas is not a dependency): an index, and values."""

    __module__ = "pandas.core.series"

    def __init__(self, values, index):
        self.values, self.index = np.asarray(values), list(index)

    def __array__(self, dtype=None, copy=None):
        return self.values


def test_inputs_with_an_index_are_refused():
    """Issue 12 item 20: values paired by position would silently mis-pair labelled data."""
    mu = _Labelled([0.0, 1.0, 2.0], "abc")
    sigma = _Labelled([1.0, 2.0, 3.0], "cba")
    with pytest.raises(TypeError, match=r"mu: got a _Labelled, whose index the kernels would "
                       r"ignore.*mu.to_numpy\(\)"):
        kernels("gaussian_kl").kl(mu, sigma)
    with pytest.raises(TypeError, match="x1: got a _Labelled"):
        kernels("coupling").forward(_Labelled(np.zeros((2, 3)), "ab"), np.zeros((2, 3)),
                                    np.zeros(3), np.tanh, np.tanh)


def test_ragged_lists_and_unsupported_dtypes_name_the_argument():
    """Issue 12 item 21: no bare 'inhomogeneous shape' or 'unsupported ScalarType'."""
    with pytest.raises(TypeError, match="mu: expected a real numeric array, got a list"):
        kernels("gaussian_kl").kl([[0.0, 1.0], [2.0]], 1.0)
    with pytest.raises(TypeError, match="x2: expected a real numeric array, got a list"):
        kernels("coupling").forward(np.zeros((1, 2)), [[0.0, 1.0], [2.0]], np.zeros(2),
                                    np.tanh, np.tanh)
    torch = pytest.importorskip("torch", reason="torch is not installed (test extra)")
    half = torch.zeros(3, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match=r"sigma: expected a float32, float64 or integer "
                       r"array, got dtype torch.bfloat16"):
        kernels("gaussian_kl").kl(torch.zeros(3), half)


def _half(lib, values):
    """``values`` as a float16 array of ``lib``, or None where it has no float16."""
    if lib.name == "torch":
        import torch

        return torch.asarray(values, dtype=torch.float16)
    if lib.name == "dask":
        import dask.array as da

        return da.from_array(np.asarray(values, np.float16), chunks=2)
    if not hasattr(lib.xp, "float16"):
        return None  # array_api_strict: float32 and float64 only
    return lib.xp.asarray(np.asarray(values), dtype=lib.xp.float16)


def test_float16_is_refused_on_every_library_naming_the_argument(lib):
    """Issue 25 item 6: NumPy returned float16 where the other libraries raised; the
    kernels' bounds and thresholds are derived for float32 and float64, so every library
    refuses half precision alike, naming the argument and the dtypes expected."""
    half = _half(lib, [0.5, 1.0, 2.0])
    if half is None:
        pytest.skip(f"{lib.name} has no float16")
    one = lib.asarray(np.ones(3))
    expected = r"expected a float32, float64 or integer array, got dtype \S*float16"
    with pytest.raises(TypeError, match=rf"^sigma: {expected}"):
        kernels("gaussian_kl").kl(one, half)
    with pytest.raises(TypeError, match=rf"^mu: {expected}"):
        kernels("gaussian_kl_logvar").kl_grad(half, one)
    x = lib.asarray(np.ones((2, 3)))
    with pytest.raises(TypeError, match=rf"^x2: {expected}"):
        kernels("coupling").forward(x, _half(lib, np.ones((2, 3))), lib.asarray(np.zeros(3)),
                                    lib.xp.tanh, lib.xp.tanh)


def test_long_double_is_refused_by_numpy():
    """float32 and float64 only: NumPy's long double is refused as float16 is."""
    if np.dtype(np.longdouble) == np.float64:
        pytest.skip("numpy.longdouble is float64 on this platform")
    with pytest.raises(TypeError, match=r"^sigma: expected a float32, float64 or integer "
                       r"array, got dtype float128"):
        kernels("gaussian_kl").kl(0.0, np.ones(3, np.longdouble))
