"""Dask: lazy in, lazy out, chunks kept, nothing computed during the call; a KL over 10^8
elements reduced to its total, against NumPy chunk by chunk, locally and on a
``dask.distributed`` cluster."""

from __future__ import annotations

import numpy as np
import pytest

from generated import coupling, gaussian_kl, gaussian_kl_logvar

from . import reference as ref

da = pytest.importorskip("dask.array", reason="dask[array] is not installed (test extra)")
dask = pytest.importorskip("dask")

#: 10^8 elements in 40 chunks of 2.5 * 10^6 (20 MB each, a few temporaries per thread)
TOTAL, CHUNK = 10**8, 25 * 10**5


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


def test_kl_of_1e8_elements_through_dask_matches_numpy_chunk_by_chunk(chunk_by_chunk_total):
    mu, sigma = _lazy_inputs()
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
