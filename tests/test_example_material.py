"""The worked example outside the engine (``examples/material``): generated with
``--material`` into a temporary package, its kernels checked against numerics written
here independently (finite differences, ``numpy.linalg.slogdet`` of the Jacobian), and its
solutions sheet typeset (and compiled where pdflatex exists)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from .conftest import ROOT


def _run(args: list[str], cwd: os.PathLike, extra: str = "") -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (extra, str(ROOT)) if p)
    return subprocess.run([sys.executable, "-m", "derive", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, PYTHONPATH=path))


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """The example generated into ``<tmp>/exkernels``, imported."""
    out = tmp_path_factory.mktemp("example")
    done = _run(["generate", "--material", "examples.material", "--root", str(out),
                 "--package", "exkernels"], out)
    assert done.returncode == 0, done.stderr
    sys.path.insert(0, str(out))
    try:
        import exkernels.coupling_asinh
        import exkernels.coupling_shifted
        import exkernels.planar_flow
        exkernels.root = out
        yield exkernels
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m.split(".")[0] == "exkernels"]:
            del sys.modules[name]


_RNG = np.random.default_rng(2026)
N = 3


def _F(v):
    return np.tanh(v) + 0.3 * v[..., ::-1]  # not element-wise


def _G(v):
    return np.sin(v) * 0.5 + 0.2 * np.roll(v, 1, axis=-1)


def _fd_jacobian(f, x, h=1e-6):
    """d f / d x of f: (2n,) -> (2n,) by central differences, independent of the engine."""
    cols = []
    for k in range(x.size):
        e = np.zeros_like(x)
        e[k] = h
        cols.append((f(x + e) - f(x - e)) / (2 * h))
    return np.stack(cols, axis=-1)


def _forward(module, s, *own):
    def f(x):
        y1, y2 = module.forward(x[:N], x[N:], s, *own, _F, _G)
        return np.concatenate([y1, y2])
    return f


def test_shift_vector_block_is_an_argument_and_matches_numerics(kernels):
    m = kernels.coupling_shifted
    x1, x2, s, t = _RNG.standard_normal((4, N))
    y1, y2 = m.forward(x1, x2, s, t, _F, _G)
    assert np.allclose(y2, np.exp(s) * x2 + t) and np.allclose(y1, np.exp(_G(x2)) * x1 + _F(x2))
    back = m.inverse(y1, y2, s, t, _F, _G)
    assert np.allclose(back[0], x1) and np.allclose(back[1], x2)
    jac = _fd_jacobian(_forward(m, s, t), np.concatenate([x1, x2]))
    sign, logdet = np.linalg.slogdet(jac)
    assert sign != 0
    assert np.isclose(m.log_det_jacobian(x1, x2, s, t, _F, _G), logdet, rtol=1e-6, atol=1e-7)
    # t is checked like s: its name, what was expected, what was given
    with pytest.raises(ValueError, match=r"^t: expected shape \(3,\)"):
        m.forward(x1, x2, s, np.zeros(2), _F, _G)


def test_monotone_block_that_is_not_affine_matches_numerics(kernels):
    m = kernels.coupling_asinh
    x1 = np.array([-40.0, -0.3, 2.5])
    x2, s = _RNG.standard_normal((2, N))
    y1, y2 = m.forward(x1, x2, s, _F, _G)
    assert np.allclose(y1, np.arcsinh(x1) * np.exp(_G(x2)) + _F(x2)) and np.allclose(y2, x2)
    back = m.inverse(y1, y2, s, _F, _G)
    assert np.allclose(back[0], x1) and np.allclose(back[1], x2)
    jac = _fd_jacobian(_forward(m, s), np.concatenate([x1, x2]), h=1e-5)
    assert np.isclose(m.log_det_jacobian(x1, x2, s, _F, _G), np.linalg.slogdet(jac)[1],
                      rtol=1e-6, atol=1e-7)
    # batches, and the dense Jacobian the kernel assembles equals the finite differences
    xb1, xb2 = _RNG.standard_normal((2, 5, N))
    assert m.log_det_jacobian(xb1, xb2, s, _F, _G).shape == (5,)

    def jac_of(f):
        return lambda v: np.stack([_fd_jacobian(f, row) for row in v.reshape(-1, N)]).reshape(
            v.shape + (N,))
    dense = m.jacobian(x1, x2, s, _F, _G, jac_of(_F), jac_of(_G))
    assert np.allclose(dense, jac, atol=1e-6)


def test_planar_flow_log_det_matches_slogdet(kernels):
    """The new question's kernel: f and log|det| against the map and numpy's slogdet of
    its finite-difference Jacobian; a batch; a large pre-activation stays finite."""
    p = kernels.planar_flow
    u, w = _RNG.standard_normal((2, N))
    b = 0.3
    z = _RNG.standard_normal((4, N))
    f = p.forward(z, u, w, b)
    assert np.allclose(f, z + u * np.tanh(z @ w + b)[:, None])
    log_det = p.log_det_jacobian(z, u, w, b)
    assert log_det.shape == (4,)
    for row, value in zip(z, log_det, strict=True):
        jac = _fd_jacobian(lambda v: p.forward(v, u, w, b), row)
        assert np.isclose(value, np.linalg.slogdet(jac)[1], rtol=1e-6, atol=1e-7)
    # where tanh saturates: finite, and within 1e-15 absolute (log|1 + x| is not log1p)
    far = p.log_det_jacobian(np.full(N, 8.0) * np.sign(w), u, w, b)
    a = 8.0 * np.abs(w).sum() + b
    exact = np.log1p(4 * np.exp(-2 * a) / (1 + np.exp(-2 * a)) ** 2 * (w @ u))
    assert np.isfinite(far) and abs(far - exact) < 1e-15
    with pytest.raises(ValueError, match=r"^b: expected a scalar"):
        p.forward(z, u, w, np.ones(N))


def test_solutions_sheet_typesets_and_compiles(kernels, tmp_path):
    tex = (kernels.root / "exkernels" / "solutions.tex").read_text()
    assert "Two coupling blocks of an outside package" in tex
    assert "matrix determinant lemma" in tex
    if shutil.which("pdflatex") is None:
        done = _run(["latex", "--material", "examples.material", "--sheet", "solutions",
                     "-o", str(tmp_path / "solutions.tex")], tmp_path)
        assert done.returncode == 0, done.stderr
        pytest.skip("pdflatex is not installed: the sheet is written, not compiled")
    pdf = _run(["latex", "--material", "examples.material", "--sheet", "solutions", "--pdf",
                "-o", str(tmp_path / "solutions.pdf")], tmp_path)
    assert pdf.returncode == 0, pdf.stderr
    assert (tmp_path / "solutions.pdf").read_bytes().startswith(b"%PDF")


def test_check_marks_an_answer_in_the_block_s_own_vector(tmp_path):
    """derive check reads t, the example's own parameter vector, as the question says."""
    right, wrong = tmp_path / "right.tex", tmp_path / "wrong.tex"
    right.write_text("x_2 = (y_2 - t) e^{-s}, \\quad x_1 = (y_1 - F(x_2)) e^{-G(x_2)}\n")
    wrong.write_text("x_2 = (y_2 + t) e^{-s}, \\quad x_1 = (y_1 - F(x_2)) e^{-G(x_2)}\n")
    good = _run(["check", "E.1", str(right), "--material", "examples.material"], tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "score:    5 of 5 points" in good.stdout
    bad = _run(["check", "E.1", str(wrong), "--material", "examples.material"], tmp_path)
    assert bad.returncode == 1 and "the sign of the term t is wrong" in bad.stdout
