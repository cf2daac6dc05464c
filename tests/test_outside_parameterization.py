"""A parameterization brought by a package outside the repository gets the KL kernels.

The package ``klpkg`` is written into a temporary folder as a user would write it (one
text file importing SymPy and ``derive.api`` only): the log standard deviation,
``sigma = exp(rho)``, which the coursework does not ship. Loaded beside the coursework
(``--material derive.coursework --material klpkg``), it is a variant of every question
that ranges over parameterizations (2.3 to 2.4p): ``derive generate`` writes
``gaussian_kl_rho.py`` and ``gaussian_kl_pair_rho.py`` and the document's sections for
it, ``derive test ... --only klpkg`` tests those modules, and ``derive check`` marks an
answer to 2.3 written in ``rho``. The kernels are
compared here with the hand-written KL evaluated in mpmath, never with another generated
module. A package that clashes with the coursework, or whose parameterization is
inconsistent, is refused in one line.
"""

from __future__ import annotations

import importlib
import re
import sys

import mpmath
import numpy as np
import pytest

from derive import loader
from derive.cli import main

_PACKAGE = '''
"""The log standard deviation as a parameterization of the Gaussian KL: derive.api only."""
import sympy as sp
from derive.api import Material, Parameterization

rho = sp.Symbol("rho", real=True)
LOG_SIGMA = Parameterization("rho", "gaussian_kl_rho", rho, sp.exp(rho),
                             "the log standard deviation rho")
MATERIAL = Material("klpkg", parameterizations={"rho": LOG_SIGMA})
'''

_BOTH = ["--material", "derive.coursework", "--material", "klpkg"]
EPS = float(np.finfo(np.float64).eps)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """``klpkg`` in a folder outside the repository, generated beside the coursework into
    ``OUT/klkernels``; both folders on ``sys.path``. The material in use before is chosen
    again afterwards (:func:`derive.loader.use`, which also resets the cache's keys)."""
    names = loader._names
    folder = tmp_path_factory.mktemp("outside")
    (folder / "klpkg").mkdir()
    (folder / "klpkg" / "__init__.py").write_text(_PACKAGE)
    out = tmp_path_factory.mktemp("out")
    sys.path[:0] = [str(folder), str(out)]
    try:
        assert main(["generate", *_BOTH, "--only", "klpkg", "--root", str(out),
                     "--package", "klkernels", "--jobs", "1"]) == 0
        yield out / "klkernels"
    finally:
        for path in (str(folder), str(out)):
            sys.path.remove(path)
        for name in [m for m in sys.modules if m.split(".")[0] in ("klpkg", "klkernels")]:
            del sys.modules[name]
        importlib.invalidate_caches()
        loader.use(names)


def _kl(mu, rho):
    """The hand-written KL from N(0, 1) in the log standard deviation, in mpmath."""
    mu, rho = mpmath.mpf(mu), mpmath.mpf(rho)
    return mu**2 / 2 + (mpmath.exp(2 * rho) - 1 - 2 * rho) / 2


def _pair_kl(mu_q, rho_q, mu_p, rho_p):
    """The hand-written KL between N(mu_q, exp(rho_q)^2) and N(mu_p, exp(rho_p)^2)."""
    mu_q, rho_q, mu_p, rho_p = map(mpmath.mpf, (mu_q, rho_q, mu_p, rho_p))
    return (rho_p - rho_q + (mpmath.exp(2 * rho_q) + (mu_q - mu_p)**2)
            / (2 * mpmath.exp(2 * rho_p)) - mpmath.mpf(1) / 2)


def _ulps(got: float, want: mpmath.mpf) -> float:
    return float(abs(mpmath.mpf(got) - want) / (EPS * max(abs(want), mpmath.mpf(1e-300))))


def test_generate_writes_the_kl_modules_of_an_outside_parameterization(generated):
    """Both modules are written, say what they are derived from, and import from the
    user's package; kl and its exact gradient equal the hand-written values to a few ulp,
    also where the KL cancels (rho near 0) and at extreme scales."""
    for name in ("gaussian_kl_rho", "gaussian_kl_pair_rho"):
        head = (generated / f"{name}.py").read_text().splitlines()[1]
        assert head.startswith("# Derived from: parameterization 'rho' (sigma = exp(rho)), "
                               "derivations 2.3"), head
    from klkernels import gaussian_kl_pair_rho as pair
    from klkernels import gaussian_kl_rho as single

    points = [(0.0, 0.0), (0.0, 1e-8), (0.0, -1e-8), (0.75, 0.5), (-3.0, -20.0),
              (0.0, -700.0), (1.5, 300.0), (0.0, 3.0)]
    mu, rho = (np.array(v) for v in zip(*points, strict=True))
    kl = single.kl(mu, rho)
    d_mu, d_rho = single.kl_grad(mu, rho)
    with mpmath.workdps(60):
        for k, (m, r) in enumerate(points):
            assert _ulps(kl[k], _kl(m, r)) <= 4, (m, r, kl[k], _kl(m, r))
            assert _ulps(d_rho[k], mpmath.expm1(2 * mpmath.mpf(r))) <= 4, (m, r, d_rho[k])
    np.testing.assert_array_equal(d_mu, mu)
    assert single.kl(np.float32(0.5), np.float32(-1.0)).dtype == np.float32

    pairs = [(0.0, 0.0, 0.0, 0.0), (0.5, -1.0, 0.1, 0.3), (0.0, 1e-9, 0.0, 0.0),
             (1.0, 50.0, -1.0, 49.0), (0.0, -300.0, 2.0, -299.0)]
    args = [np.array(v) for v in zip(*pairs, strict=True)]
    got = pair.kl(*args)
    with mpmath.workdps(60):
        for k, point in enumerate(pairs):
            assert _ulps(got[k], _pair_kl(*point)) <= 16, (point, got[k], _pair_kl(*point))


def test_only_what_it_brings_is_written_and_the_header_says_how(generated):
    """``--only klpkg``: its two KL modules and the notes on its variant, none of the
    coursework's own (no coupling block, no sigma or logvar module: deriving the whole
    coursework beside it took 42 s of CPU), and no coursework question in the solutions
    sheet (another material's questions, cut to its variant, are typeset in the notes as
    variants beyond the coursework); each header records the command that regenerates it,
    ``--only`` included."""
    modules = sorted(p.stem for p in generated.glob("*.py"))
    assert modules == ["__init__", "gaussian_kl_pair_rho", "gaussian_kl_rho"], modules
    head = (generated / "gaussian_kl_rho.py").read_text().splitlines()[:4]
    assert any("--material derive.coursework --material klpkg --only klpkg" in line
               for line in head), head
    notes = (generated / "notes.tex").read_text()  # (the coursework's sheets: its own)
    assert "coupling" not in notes.lower() and r"\rho" in notes
    assert r"\section" not in (generated / "solutions.tex").read_text()


def test_the_document_and_the_listing_have_its_variant(generated, capsys):
    """The coursework's questions over parameterizations list it as a variant; the notes
    typeset each of them in its scale."""
    assert main(["list", *_BOTH]) == 0
    listing = capsys.readouterr().out
    for qid in ("2.3", "2.3c", "2.3n", "2.4", "2.3p", "2.3np", "2.4p"):
        block = listing.split(f"\n{qid} ", 1)[1].split("\n")[1]
        assert "variants: sigma, logvar, rho (default sigma)" in block, (qid, block)
    notes = (generated / "notes.tex").read_text()  # its variant alone (--only): no "in
    for qid in ("2.3", "2.3c", "2.3n", "2.4", "2.3p", "2.3np", "2.4p"):  # terms of rho"
        assert f"Question {qid}: " in notes, qid


def test_derive_test_checks_its_modules(generated, capsys):
    """``derive test`` with the coursework alongside and ``--only klpkg``: the
    parameterization's two modules through the battery (kl, kl_grad, estimators, float32,
    broadcasting, the learned prior's module), and nothing of the coursework's."""
    assert main(["test", *_BOTH, "--only", "klpkg", "--points", "5", "--jobs", "1"]) == 0, \
        capsys.readouterr()
    out, err = capsys.readouterr()
    assert "parameterization rho: kl, kl_grad against mpmath" in err
    rows = [re.split(r"\s{2,}", line) for line in out.splitlines()]
    subjects = {r[0] for r in rows[1:-1]}
    assert subjects == {"rho"}, out
    checks = {r[1] for r in rows if r[0] == "rho" and r[-1] == "ok"}
    assert {"kl", "kl_grad", "float32", "pair kl", "pair kl_grad"} <= checks, out
    assert out.splitlines()[-1].startswith("10 of 10 checks passed"), out


@pytest.mark.parametrize(("answer", "code"), [
    (r"KL_i = \frac{\mu_i^2}{2} + \frac{e^{2\rho_i}}{2} - \rho_i - \frac12", 0),
    (r"KL_i = \frac{\mu_i^2}{2} + \frac{e^{2\rho_i}}{2} - 2\rho_i - \frac12", 1)])
def test_derive_check_marks_an_answer_in_its_scale(generated, tmp_path, capsys, answer, code):
    """2.3 in the variant rho: an answer written in rho is read, right or wrong."""
    (tmp_path / "answer.tex").write_text(answer + "\n")
    assert main(["check", "2.3", str(tmp_path / "answer.tex"), "--variant", "rho",
                 *_BOTH]) == code
    out = capsys.readouterr().out
    assert ("verdict:  correct" if code == 0 else "verdict:  incorrect") in out, out


def test_alone_it_is_not_tested_and_says_what_to_load(generated, capsys):
    """Without a material whose questions range over parameterizations, no module is
    generated for it; the row says what to load."""
    assert main(["test", "--material", "klpkg", "--points", "3", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "no question generates its module gaussian_kl_rho; load a material whose " \
           "questions range over parameterizations beside it, e.g. --material " \
           "derive.coursework" in out


_REFUSED = {
    # a parameterization named like a shipped one
    "same": ('sigma = sp.Symbol("sigma", positive=True)\n'
             'MATERIAL = Material("same", parameterizations={"sigma": Parameterization(\n'
             '    "sigma", "gaussian_kl_mine", sigma, sigma, "sigma again")})',
             "material 'derive.coursework' and material 'same' both define parameterization "
             "'sigma'"),
    # its name is not its scale's
    "named": ('rho = sp.Symbol("rho", real=True)\n'
              'MATERIAL = Material("named", parameterizations={"log_sigma": Parameterization(\n'
              '    "log_sigma", "gaussian_kl_ls", rho, sp.exp(rho), "log sigma")})',
              "--material named: cannot import it (parameterization 'log_sigma': its scale is "
              "named 'rho', not 'log_sigma')"),
    # registered under another name
    "keyed": ('rho = sp.Symbol("rho", real=True)\n'
              'MATERIAL = Material("keyed", parameterizations={"log_sigma": Parameterization(\n'
              '    "rho", "gaussian_kl_rho", rho, sp.exp(rho), "log sigma")})',
              "--material keyed: cannot import it (material 'keyed': parameterization "
              "'log_sigma' is named 'rho'; register it under its name)"),
    # a module the coursework writes
    "clash": ('rho = sp.Symbol("rho", real=True)\n'
              'MATERIAL = Material("clash", parameterizations={"rho": Parameterization(\n'
              '    "rho", "gaussian_kl_logvar", rho, sp.exp(rho), "log sigma")})',
              "material 'derive.coursework+clash': parameterizations 'logvar' and 'rho' both "
              "write module 'gaussian_kl_logvar'"),
}


@pytest.mark.parametrize("name", _REFUSED)
def test_a_clashing_or_inconsistent_parameterization_is_refused_in_one_line(
        name, tmp_path, monkeypatch, capsys):
    source, message = _REFUSED[name]
    (tmp_path / f"{name}.py").write_text("import sympy as sp\nfrom derive.api import "
                                         f"Material, Parameterization\n{source}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    names = loader._names
    try:
        assert main(["list", "--material", "derive.coursework", "--material", name]) == 2
    finally:
        sys.modules.pop(name, None)
        loader.use(names)
    err = capsys.readouterr().err
    assert err == f"derive: error: {message}\n", err


@pytest.mark.parametrize(("argv", "message"), [
    (["--material", "klpkg", "--only", "klpkg"],
     "--only klpkg: it brings no question, and no question of the material in use ranges "
     "over what it brings"),
    (["--material", "derive.coursework", "--only", "klpkg"],
     "--only klpkg: not a --material of this run (expected one of: derive.coursework)")])
def test_only_what_brings_nothing_or_is_not_loaded_is_refused_in_one_line(
        generated, capsys, argv, message):
    """``generate --only``: a material alone whose parameterization no question ranges
    over, or one not given with --material, is one line, exit 2, nothing derived."""
    names = loader._names
    try:
        assert main(["generate", "--check", *argv]) == 2
    finally:
        loader.use(names)
    assert capsys.readouterr().err == f"derive: error: {message}\n"


_QOVER = '''
from derive.api import Derivation, Material, Question, Result, Section
SECTION = Section("", "Sigma of every scale", beyond=True)
def sigma(p):
    return Derivation("9.7", "Sigma", "", [], [Result("sigma", p.sigma, "")], variant=p.name)
MATERIAL = Material("qover", questions={"9.7": Question(
    "9.7", "Sigma", (), sigma, SECTION, over="parameterizations")}, sections={"s": SECTION})
'''

_BLOCKS_ONLY = '''
from derive.api import CouplingBlock, F, Material, x1, x2
MATERIAL = Material("blocksonly", blocks={"only_shift": CouplingBlock(
    "only_shift", "a shift block", x1 + F, x2)})
'''


def test_a_question_over_a_kind_its_own_package_does_not_bring(tmp_path, monkeypatch, capsys):
    """A package whose one question ranges over parameterizations it does not bring: beside
    the coursework it has the coursework's (it was refused when its package was built);
    alone, it is refused in one line when loaded."""
    (tmp_path / "qover.py").write_text(_QOVER)
    monkeypatch.syspath_prepend(str(tmp_path))
    names = loader._names
    try:
        assert main(["list", "--material", "derive.coursework", "--material", "qover"]) == 0
        listing = capsys.readouterr().out
        assert "9.7   Sigma\n      variants: sigma, logvar (default sigma)" in listing
        assert main(["list", "--material", "qover"]) == 2
    finally:
        sys.modules.pop("qover", None)
        loader.use(names)
    assert capsys.readouterr().err == ("derive: error: question 9.7 ranges over "
                                       "parameterizations, and no material given brings any "
                                       "(loaded: qover)\n")


def test_derive_test_only_of_a_material_that_brings_blocks_alone(tmp_path, monkeypatch,
                                                                 capsys):
    """``derive test --only`` of a package of one block: no question is cut for it (the
    coursework's 1.1-1.3n are its own blocks'), and the engine's kernels of the block are
    tested (it was refused: "it brings no question")."""
    (tmp_path / "blocksonly.py").write_text(_BLOCKS_ONLY)
    monkeypatch.syspath_prepend(str(tmp_path))
    names = loader._names
    try:
        code = main(["test", "--material", "derive.coursework", "--material", "blocksonly",
                     "--only", "blocksonly", "--points", "3", "--jobs", "1"])
    finally:
        sys.modules.pop("blocksonly", None)
        loader.use(names)
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[-1].startswith("7 of 7 checks passed"), out
