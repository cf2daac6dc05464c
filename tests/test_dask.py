"""Dask: lazy in, lazy out, chunks kept, nothing computed during the call; a KL over many
chunks, built lazily chunk by chunk and reduced to its total, against NumPy chunk by
chunk, locally and on a ``dask.distributed`` cluster."""

from __future__ import annotations

import numpy as np
import pytest

from generated import coupling, gaussian_kl, gaussian_kl_logvar

from . import reference as ref

da = pytest.importorskip("dask.array", reason="dask[array] is not installed (test extra)")
dask = pytest.importorskip("dask")

#: 40 chunks of 2,500 elements: the graph, the chunk-wise kernel and the tree reduction are
#: those of any size (each chunk is made by its task, never held whole); the size only adds
#: time (10^8 elements took ~130 s of the suite and caught nothing more)
TOTAL, CHUNK = 10**5, 2500


def _refuse_to_compute(*args, **kwargs):
    raise AssertionError("a kernel computed its Dask graph during the call")


def test_dask_in_lazy_dask_out_with_chunks_kept():
    rng = np.random.default_rng(0)
    mu = da.from_array(rng.normal(size=(6, 8)), chunks=(2, 4))
    sigma = da.from_array(rng.uniform(0.1, 3, size=(6, 8)), chunks=(2, 4))
    eps = da.from_array(rng.normal(size=(3, 6, 8)), chunks=(1, 2, 4))
    L = ref.DenseLayers.random(8)
    import array_api_compat.dask.array as xp

    def F(x):
        assert isinstance(x, da.Array)
        return xp.tanh(x @ xp.asarray(L.W.T) + xp.asarray(L.b))

    with dask.config.set(scheduler=_refuse_to_compute):
        kl = gaussian_kl.kl(mu, sigma)
        d_mu, d_sigma = gaussian_kl.kl_grad_stl(mu, sigma, eps)
        lv = gaussian_kl_logvar.kl(mu, sigma)
        y1, y2 = coupling.forward(mu, sigma, da.zeros(8, chunks=4), F, F)
    for out, like in ((kl, mu), (lv, mu), (d_mu, eps), (d_sigma, eps), (y2, sigma)):
        assert isinstance(out, da.Array)
        assert out.chunks == like.chunks
    assert isinstance(y1, da.Array) and y1.shape == (6, 8)
    np.testing.assert_allclose(kl.compute(), gaussian_kl.kl(mu.compute(), sigma.compute()),
                               rtol=1e-15)


def _chunk(block_id=None, which=0):
    """The inputs of chunk ``block_id``, made from its own seed: mu, or sigma."""
    rng = np.random.default_rng([block_id[0], 2024])
    mu = rng.normal(size=CHUNK)
    sigma = np.exp(rng.uniform(-4, 4, size=CHUNK))
    return mu if which == 0 else sigma


def _lazy_inputs():
    chunks = ((CHUNK,) * (TOTAL // CHUNK),)
    mu = da.map_blocks(_chunk, chunks=chunks, dtype=float, which=0)
    sigma = da.map_blocks(_chunk, chunks=chunks, dtype=float, which=1)
    return mu, sigma


@pytest.fixture(scope="module")
def chunk_by_chunk_total():
    total = 0.0
    for k in range(TOTAL // CHUNK):
        total += gaussian_kl.kl(_chunk((k,), 0), _chunk((k,), 1)).sum()
    return total


def test_kl_of_many_lazy_chunks_through_dask_matches_numpy_chunk_by_chunk(chunk_by_chunk_total):
    mu, sigma = _lazy_inputs()
    assert mu.numblocks == (40,) and mu.chunks[0][0] < mu.shape[0]
    with dask.config.set(scheduler=_refuse_to_compute):
        total = gaussian_kl.kl(mu, sigma).sum()
    value = total.compute(scheduler="threads")
    np.testing.assert_allclose(value, chunk_by_chunk_total, rtol=1e-12)


def test_the_same_call_on_a_distributed_cluster(chunk_by_chunk_total):
    distributed = pytest.importorskip("distributed",
                                      reason="distributed is not installed (test extra)")
    # A user with a real cluster passes its scheduler's address to Client instead.
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        mu, sigma = _lazy_inputs()
        value = client.compute(gaussian_kl.kl(mu, sigma).sum()).result()
    np.testing.assert_allclose(value, chunk_by_chunk_total, rtol=1e-12)


def _unknown(a: np.ndarray):
    """``a`` as a Dask array whose first dimension's chunk sizes are unknown (nan)."""
    x = da.from_array(a, chunks=2)
    keep = da.from_array(np.ones(a.shape[0], bool), chunks=2)
    out = x[keep]
    assert np.isnan(out.shape[0])
    return out


def test_unknown_chunk_sizes_are_refused_in_one_line_that_says_what_to_do():
    """Issue 25 item 4: shapes with nan were compared as numbers (NumPy's internal
    TypeError in kl; 'expected F(x) of shape (nan, 3) ... got (nan, 3)' in coupling).
    Every kernel refuses them before computing anything, naming the argument and the
    fix; after ``compute_chunk_sizes()`` the same call gives the reference's values."""
    rng = np.random.default_rng(1)
    mu, sigma = rng.normal(size=(4, 3)), rng.uniform(0.5, 2, size=(4, 3))
    hint = r"call {0}.compute_chunk_sizes\(\) first"
    with dask.config.set(scheduler=_refuse_to_compute):
        with pytest.raises(ValueError, match=r"^sigma: expected an array of known shape, got "
                           r"shape \(nan, 3\) \(a Dask array of unknown chunk sizes\); "
                           + hint.format("sigma") + "$"):
            gaussian_kl.kl(da.from_array(mu, chunks=2), _unknown(sigma))
        with pytest.raises(ValueError, match="^mu: .*" + hint.format("mu")):
            gaussian_kl_logvar.kl_grad(_unknown(mu), 1.0)
        x = da.arange(10.)[da.arange(10) > 5]  # the reproducer
        with pytest.raises(ValueError, match="^mu: .*" + hint.format("mu")):
            gaussian_kl.kl(x * 0, x + 1)
        for args, name in (((_unknown(mu), da.from_array(mu, chunks=2)), "x1"),
                           ((da.from_array(mu, chunks=2), _unknown(mu)), "x2")):
            with pytest.raises(ValueError, match=f"^{name}: .*" + hint.format(name)):
                coupling.forward(*args, da.zeros(3), lambda v: v, lambda v: v)
            with pytest.raises(ValueError, match=f"^{name}: .*" + hint.format(name)):
                coupling.log_det_jacobian(*args, da.zeros(3), None, lambda v: v)
    far = sigma + 1.5  # away from sigma = 1, where the typed-in formula cancels
    known = _unknown(far)
    known.compute_chunk_sizes()
    np.testing.assert_allclose(gaussian_kl.kl(0.0, known).compute(),  # typed in: KL(q || N(0, 1))
                               0.5 * (far**2 - 1) - np.log(far), rtol=1e-14)
