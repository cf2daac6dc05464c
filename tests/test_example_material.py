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
    # where tanh saturates: finite, and relatively accurate (log|1 + x| is arranged as log1p)
    far = p.log_det_jacobian(np.full(N, 8.0) * np.sign(w), u, w, b)
    a = 8.0 * np.abs(w).sum() + b
    exact = np.log1p(4 * np.exp(-2 * a) / (1 + np.exp(-2 * a)) ** 2 * (w @ u))
    assert np.isfinite(far) and abs(far - exact) < 1e-12 * abs(exact)
    with pytest.raises(ValueError, match=r"^b: expected a scalar"):
        p.forward(z, u, w, np.ones(N))


#: Pre-activations a and products q = w . u for the accuracy grid: x = (1 - tanh(a)^2) q runs
#: from 0 (underflowing) through -1 (a zero determinant is avoided) to 1e100.
_A = (0.0, 0.5, -0.5, 3.0, -3.0, 19.0, 20.0, -20.0, 200.0, -200.0, 354.0, -354.0, 370.0)
_Q = (1e-300, 1e-20, 1e-8, 1e-3, 0.5, 3.0, 1e3, 1e30, 1e100)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_planar_log_det_is_accurate_near_a_determinant_of_one(kernels, dtype):
    """log|1 + x| is evaluated as log1p (P.1's arranged step), so it keeps every digit where
    x = (1 - tanh(a)^2) w.u is tiny: against mpmath, within 2 ulp of the value (float64;
    measured 1.55) and 4 ulp (float32; measured 3.0), float32 staying float32. With
    log(|1 + x|) as derived it was 0 for |x| < 1e-16 (error: the whole value). Left: where
    1 - tanh(a)^2 is subnormal (|a| > 354 in float64), it has lost digits before a large q
    scales it up, so there the error is bounded by |q| times the smallest normal number."""
    import mpmath

    p = kernels.planar_flow
    info = np.finfo(dtype)
    qs = [sign * q for q in _Q if float(info.tiny) < q < float(info.max) / 10 for sign in (1, -1)]
    a = np.repeat(np.array(_A, dtype=dtype), len(qs))[:, None]
    q = np.tile(np.array(qs, dtype=dtype), len(_A))[:, None]
    one = np.ones(1, dtype=dtype)
    # n = 1, w = 1, b = 0: a = w z + b and q = w u are exact, so the kernel's error is its own
    got = np.array([p.log_det_jacobian(a[k], q[k], one, dtype(0)) for k in range(len(a))])
    assert got.dtype == dtype and np.isfinite(got).all()
    worst = 0.0
    with mpmath.workdps(60):
        for value, av, qv in zip(got, a[:, 0], q[:, 0], strict=True):
            x = mpmath.sech(mpmath.mpf(float(av))) ** 2 * mpmath.mpf(float(qv))
            exact = mpmath.log1p(x) if x > -1 else mpmath.log(-1 - x)
            # where 1 - tanh(a)^2 is subnormal (|a| > 354) it has lost digits before q
            # scales it up: there the bound is absolute, the smallest normal number times |q|
            floor = info.tiny * max(1.0, abs(float(qv)))
            ulps = abs(mpmath.mpf(float(value)) - exact) / max(info.eps * abs(exact), floor)
            worst = max(worst, float(ulps))
    assert worst <= (2 if dtype == np.float64 else 4), worst


def test_log_abs_one_plus_rewrite_is_checked_and_a_wrong_one_fails():
    """The arrangement's rule log|1 + u| = log1p(max(u, -2 - u)) is a checked step, and the
    check refuses a wrong form of it (the max with -u instead of -2 - u)."""
    import sympy as sp

    from derive.api import KERNEL_REWRITES, Step, apply_rewrites
    from derive.derivation import StepCheckError, check_step

    u = sp.Symbol("u", real=True)
    arranged, steps = apply_rewrites(sp.log(sp.Abs(1 + u)), KERNEL_REWRITES)
    assert arranged.has(sp.Max) and len(steps) == 1
    assert check_step(steps[0]).method in ("symbolic", "numeric")
    with pytest.raises(StepCheckError, match="is false"):
        check_step(Step(sp.log(sp.Abs(1 + u)), arranged.replace(
            lambda e: isinstance(e, sp.Max), lambda e: sp.Max(u, -u)), "a wrong rewrite"))


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


def test_check_marks_a_planar_flow_answer_in_the_question_s_own_symbols(tmp_path):
    """derive check reads P.1's z, u, w, b (taken from its results, not listed by the
    material), tanh, the Kronecker delta and a second free index j: a right answer scores
    5 of 5, a wrong sign in the determinant and swapped indices in the Jacobian lose their
    parts."""
    jac = (r"\frac{\partial f_i}{\partial z_j} = \delta_{ij} "
           r"+ u_i (1 - \tanh^2(\sum_k w_k z_k + b)) w_j")
    swapped = jac.replace("u_i (", "u_j (").replace(") w_j", ") w_i")
    det = (r"\det \frac{\partial f}{\partial z} "
           r"= 1 + (1 - \tanh^2(\sum_i w_i z_i + b)) \sum_i w_i u_i")
    files = {"right": (jac, det), "wrong": (jac, det.replace("(1 - ", "(1 + ")),
             "swapped": (swapped, det)}
    for name, lines in files.items():
        (tmp_path / f"{name}.tex").write_text(" \\\\\n".join(lines) + "\n")
    done = _run(["check", "P.1", *(f"{name}.tex" for name in files), "--material",
                 "examples.material"], tmp_path)
    rows = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    assert rows["right.tex"].startswith("correct (5/5)"), done.stdout + done.stderr
    assert rows["wrong.tex"].startswith("incorrect (2/5)"), done.stdout
    assert "sign" in rows["wrong.tex"], done.stdout
    assert rows["swapped.tex"].startswith("incorrect (3/5)"), done.stdout


#: One bin per component: knots xk < xk1, bottom yk, height h, knot slopes dk, dk1 (a steep
#: and a flat bin, a wide and a narrow one), and where x1 lies in it (edges included).
_BIN = {"xk": np.array([-3.0, 0.25, 1e-3]), "xk1": np.array([-1.0, 0.5, 40.0]),
        "yk": np.array([-2.0, 0.0, 5.0]), "h": np.array([3.0, 1e-2, 60.0]),
        "dk": np.array([0.5, 1e-3, 2.0]), "dk1": np.array([4.0, 7.0, 1e-2])}
_FRACTIONS = np.array([0.0, 1e-12, 1e-6, 0.1, 0.37, 0.5, 0.9, 1 - 1e-9, 1.0])


def _bin_args():
    return tuple(_BIN[k] for k in ("dk", "dk1", "h", "xk", "xk1", "yk"))


def _bin_reference():
    """The bin's own equation, y1 of x1, its slope, and its inverse by bisection, in
    mpmath (60 digits) from ``BLOCKS["coupling_rq_bin"].y1``: not from any derivation."""
    import mpmath
    import sympy as sp

    from examples.material.blocks import BLOCKS

    block = BLOCKS["coupling_rq_bin"]
    plain = {a: sp.Symbol(str(a.base), real=True) for a in sp.sympify(block.y1).atoms(
        sp.Indexed)}
    expr = sp.sympify(block.y1).xreplace(plain)
    names = sorted(str(v) for v in plain.values())
    args = [sp.Symbol(name, real=True) for name in names]
    value = sp.lambdify(args, expr, "mpmath")
    slope = sp.lambdify(args, sp.diff(expr, sp.Symbol("x1", real=True)), "mpmath")

    def point(k, **given):
        return {name: mpmath.mpf(float(given[name] if name in given else _BIN[name][k]))
                for name in names if name in given or name in _BIN}

    def y1(k, x, f):
        return value(**point(k, x1=x, F=f))

    def dy1(k, x, f):
        return slope(**point(k, x1=x, F=f))

    def x1(k, y, f):
        # bisection: the bin is increasing on [xk, xk1]; 200 halvings reach 60 digits
        lo, hi = mpmath.mpf(float(_BIN["xk"][k])), mpmath.mpf(float(_BIN["xk1"][k]))
        if y <= y1(k, lo, f):
            return lo
        if y >= y1(k, hi, f):
            return hi
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if y1(k, mid, f) < y else (lo, mid)
        return (lo + hi) / 2

    return y1, dy1, x1


def test_spline_bin_matches_its_own_equation_over_the_bin(kernels):
    """The rational-quadratic bin: forward, inverse and log|det| against the block's own
    equation in mpmath over a grid of x1 through each bin, both knots included; the round
    trip; the dense Jacobian against central differences. Bounds: forward within 8 ulp
    of |y1| + h, the inverse within 16 ulp of |x1| + the bin's width + (|y1| + h)/slope
    (the inverse's condition: where the bin is flat, an ulp of y1 is many of x1), log|det|
    within 64 ulp of 1 + its value."""
    import mpmath

    m = kernels.coupling_rq_bin
    y1_ref, dy1_ref, x1_ref = _bin_reference()
    lo, hi = _BIN["xk"], _BIN["xk1"]
    x1 = lo + (hi - lo) * _FRACTIONS[:, None]
    x1[-1] = hi  # the upper knot exactly
    x2 = np.zeros_like(x1)
    s = np.zeros(N)

    def f_(v):
        return 0.25 * np.ones_like(v)

    def g_(v):
        return np.zeros_like(v)

    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y1, y2 = m.forward(x1, x2, s, *_bin_args(), f_, g_)
        back, _ = m.inverse(y1, y2, s, *_bin_args(), f_, g_)
        log_det = m.log_det_jacobian(x1, x2, s, *_bin_args(), f_, g_)
    eps = np.finfo(float).eps
    with mpmath.workdps(60):
        for r in range(x1.shape[0]):
            for k in range(N):
                want = y1_ref(k, x1[r, k], 0.25)
                assert abs(y1[r, k] - want) <= 8 * eps * (abs(want) + _BIN["h"][k]), (r, k)
                # the inverse of the forward value, against the root of the bin's equation
                # (backward stable: within a few ulp of y1, divided by the slope there)
                root = x1_ref(k, mpmath.mpf(float(y1[r, k])), 0.25)
                width = hi[k] - lo[k]
                bound = 16 * eps * (abs(root) + width + (abs(y1[r, k]) + _BIN["h"][k])
                                   / dy1_ref(k, root, 0.25))
                assert abs(back[r, k] - root) <= bound, (r, k)
            want_ld = sum(mpmath.log(dy1_ref(k, x1[r, k], 0.25)) for k in range(N))
            assert abs(log_det[r] - want_ld) <= 64 * eps * (1 + abs(want_ld)), r
    np.testing.assert_allclose(back, x1, rtol=0, atol=1e-12 * float(np.max(hi - lo)))
    # the Jacobian at an inner point, against central differences of forward
    xin = lo + (hi - lo) * 0.4
    x = np.concatenate([xin, np.zeros(N)])
    steps = np.concatenate([1e-6 * (hi - lo), np.full(N, 1e-6)])
    cols = []
    for c in range(2 * N):
        e = np.zeros(2 * N)
        e[c] = steps[c]
        plus = np.concatenate(m.forward((x + e)[:N], (x + e)[N:], s, *_bin_args(), _F, _G))
        minus = np.concatenate(m.forward((x - e)[:N], (x - e)[N:], s, *_bin_args(), _F, _G))
        cols.append((plus - minus) / (2 * steps[c]))
    fd = np.stack(cols, axis=-1)

    def jac_of(f):
        return lambda v: np.stack([_fd_jacobian(f, row) for row in v.reshape(-1, N)]).reshape(
            v.shape + (N,))
    dense = m.jacobian(xin, np.zeros(N), s, *_bin_args(), _F, _G, jac_of(_F), jac_of(_G))
    np.testing.assert_allclose(dense, fd, rtol=1e-6, atol=1e-6)
    assert np.isclose(m.log_det_jacobian(xin, np.zeros(N), s, *_bin_args(), _F, _G),
                      np.linalg.slogdet(fd)[1], rtol=1e-7, atol=1e-8)


def test_another_material_is_cached_by_its_own_sources(tmp_path):
    """The derivation cache serves a material outside the engine, keyed by its package's
    files as well as the engine's: a second run reads every derivation from the cache
    (counted, not timed), and an edit of the material's source is a miss."""
    package = tmp_path / "cachemat"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from derive.api import CouplingBlock, Material, Question, Section, F, "
        "derive_inverse, x1, x2\n"
        "SHIFT = CouplingBlock('my_shift', 'a shift block', x1 + F, x2)\n"
        "SECTION = Section('', 'A shift block', beyond=True)\n"
        "QUESTION = Question('9.1', 'Invert the shift block', ('my_shift',),\n"
        "                    lambda variant: derive_inverse(SHIFT), SECTION)\n"
        "MATERIAL = Material('cachemat', blocks={'my_shift': SHIFT},\n"
        "                    questions={'9.1': QUESTION}, sections={'shift': SECTION})\n")
    out = tmp_path / "out"
    out.mkdir()
    env = {"DERIVE_CACHE_DIR": str(tmp_path / "cache")}

    def generate():
        done = subprocess.run(
            [sys.executable, "-m", "derive", "generate", "--material", "cachemat", "--root",
             str(out), "--package", "k"], cwd=tmp_path, capture_output=True, text=True,
            timeout=600, env=dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}",
                                  **env))
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    assert "derived 1 derivations" in generate()
    assert "read 1 derivations" in generate()  # every part from the cache
    with open(package / "__init__.py", "a") as fh:
        fh.write("# an edit\n")
    assert "derived 1 derivations" in generate()  # the material's source is in the key


def test_check_help_lists_the_questions_of_the_material_in_use(tmp_path):
    """derive check --help names the questions it marks in the material given by
    --material (the example's E.1 and P.1), not the shipped coursework's."""
    done = _run(["check", "--material", "examples.material", "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    intro = " ".join(done.stdout.split())
    assert "answers to question E.1, P.1 against" in intro, intro[:400]
    assert "one of: E.1, P.1" in intro and "2.3" not in intro.split("against")[0]


def test_gradescope_grades_the_questions_of_the_material_in_use(tmp_path):
    """derive check --gradescope with --material grades that material's questions (E.1,
    P.1), not the coursework's: one test each, a missing answer scoring 0."""
    import json

    sub = tmp_path / "submission"
    sub.mkdir()
    (sub / "E.1.tex").write_text(
        "x_2 = (y_2 - t) e^{-s}, \\quad x_1 = (y_1 - F(x_2)) e^{-G(x_2)}\n")
    done = _run(["check", "--gradescope", str(sub), "-o", str(tmp_path / "results.json"),
                 "--material", "examples.material"],
                tmp_path)
    assert done.returncode in (0, 1), done.stderr
    tests = json.loads((tmp_path / "results.json").read_text())["tests"]
    assert [t["number"] for t in tests] == ["E.1", "P.1"]
    assert tests[0]["score"] == tests[0]["max_score"] == 5 and tests[1]["score"] == 0
