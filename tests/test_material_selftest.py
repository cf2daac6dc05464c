"""``derive test``: the tests that come free with material from outside the repository.

A material package is written into a temporary folder as a user would write it (text
files importing ``derive.api`` and SymPy only): a block with a parameter vector of its own
and a monotone block that is not affine, with a question that generates their kernels.
``derive test --material`` passes on it (exit 0); with one of its generated kernels made
wrong by a few hundred ulp it fails (exit 1) naming the block, the kernel, the point and
the error. The parameterization and generic batteries are run on small modules in memory,
right and wrong.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import sympy as sp

from derive import loader, selftest
from derive.cli import main

_MATERIAL = r'''
"""Two coupling blocks, as material outside the engine: derive.api and SymPy only."""
import sympy as sp
from derive.api import (CouplingBlock, Material, Question, Section, F, G, coupling_kernels,
                        derive_determinant, param_vector, x1, x2)

t = param_vector("t")
BLOCKS = {b.name: b for b in (
    CouplingBlock("free_shifted", "a block with a shift vector of its own",
                  y1=sp.exp(G) * x1 + F, y2=x2 + t),
    CouplingBlock("free_asinh", "a monotone block that is not affine",
                  y1=sp.asinh(x1) + F, y2=x2),
)}
SECTION = Section("", "Two free blocks", beyond=True)
QUESTION = Question("F.1", "The free blocks' log-determinants", tuple(BLOCKS),
                    lambda v: derive_determinant(BLOCKS[v]), SECTION,
                    kernels=lambda v: coupling_kernels(BLOCKS[v], f"freemat.BLOCKS[{v!r}]",
                                                       package=None))
MATERIAL = Material("freemat", blocks=BLOCKS, questions={"F.1": QUESTION},
                    sections={"free": SECTION})
'''


@pytest.fixture(autouse=True)
def _material_restored():
    """Every test here runs ``derive test --material ...``, which makes that material the
    engine's: afterwards the material in use before is chosen again through
    :func:`derive.loader.use`, which also resets the cache's material files (restoring the
    loader's two variables by hand left those of the test's material in the cache keys)."""
    names = loader._names
    yield
    loader.use(names)


@pytest.fixture
def outside(tmp_path, monkeypatch):
    """The package ``freemat`` in a folder outside the repository, on sys.path."""
    folder = tmp_path / "outside"
    (folder / "freemat").mkdir(parents=True)
    (folder / "freemat" / "__init__.py").write_text(_MATERIAL)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("freemat", None)
    importlib.invalidate_caches()


_ARGS = ["test", "--material", "freemat", "--points", "5", "--jobs", "1"]


def test_outside_material_passes_its_free_tests(outside, capsys):
    """Every block, the non-affine one included, through the whole battery: exit 0, a row
    per check, progress on standard error."""
    assert main(_ARGS) == 0, capsys.readouterr()
    out, err = capsys.readouterr()
    assert "derive test: block free_asinh" in err and "derive test: block free_shifted" in err
    rows = [re.split(r"\s{2,}", line) for line in out.splitlines()]
    checks = {(r[0], r[1]) for r in rows if r[0].startswith("free_") and r[-1] == "ok"}
    for block in ("free_shifted", "free_asinh"):
        for check in ("forward y1, y2", "inverse (round trip)", "log_det_jacobian",
                      "float32", "batch broadcast", "jacobian vs differences"):
            assert (block, check) in checks, (block, check, out)
    assert "FAILED" not in out and out.splitlines()[-1].startswith("14 of 14 checks passed")


def test_a_kernel_a_few_hundred_ulp_off_fails_naming_block_kernel_point_and_error(
        outside, capsys, monkeypatch):
    """The same material with free_asinh's generated forward made 300 ulp wrong in y1
    (as a bad arrangement would): exit 1, and each failure line names the block, the
    kernel, the point and the error in ulp."""
    real = selftest._import

    def wrong(root, name):
        module = real(root, name)
        if name != "free_asinh":
            return module
        forward = module.forward

        def off(*args, **kwargs):
            y1, y2 = forward(*args, **kwargs)
            return y1 * (1 + 300 * np.finfo(np.float64).eps), y2
        return SimpleNamespace(**{**vars(module), "forward": off})

    monkeypatch.setattr(selftest, "_import", wrong)
    assert main(_ARGS) == 1
    out = capsys.readouterr().out
    fails = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert fails and all(line.startswith("FAIL free_asinh: ") for line in fails)
    assert fails[0].startswith("FAIL free_asinh: forward y1 at x1=")
    assert "G=" in fails[0] and "F=" in fails[0] and " ulp)" in fails[0]
    assert any(line.startswith("free_asinh") and "FAILED" in line for line in out.splitlines())
    assert not any(line.startswith("free_shifted") and "FAILED" in line
                   for line in out.splitlines())
    # forward's y1, the round trip through it, and float32 (the factor is a float64 scalar:
    # float32's y1 comes back float64, which the battery names too)
    failed = {re.split(r"\s{2,}", line)[1] for line in out.splitlines() if "FAILED (" in line}
    assert failed == {"forward y1, y2", "inverse (round trip)", "float32"}, out
    assert out.splitlines()[-1].endswith("; 3 failed")


def test_a_material_of_blocks_alone_is_tested_through_the_engine_s_kernels(tmp_path, capsys,
                                                                        monkeypatch):
    """No question generates the block's kernels: derive test renders the engine's coupling
    kernels for it. (generate wrote an __init__.py that did not parse, `from . import `,
    for a material without kernel modules.)"""
    (tmp_path / "blocksonly.py").write_text(
        "from derive.api import CouplingBlock, Material, F, x1, x2\n"
        "MATERIAL = Material('blocksonly', blocks={'only_shift': CouplingBlock(\n"
        "    'only_shift', 'a shift', x1 + F, x2)})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["test", "--material", "blocksonly", "--points", "3", "--jobs", "1"]) == 0
    sys.modules.pop("blocksonly", None)
    out, err = capsys.readouterr()
    assert "rendering the coupling kernels of block only_shift" in err
    assert out.splitlines()[-1].startswith("7 of 7 checks passed")


def test_a_question_s_own_module_named_like_its_block_is_tested_beside_the_engine_s(
        tmp_path, capsys, monkeypatch):
    """tests/test_material_cli.py's material: its question writes a module my_shift (forward,
    log_det_jacobian and log1p_square, no inverse) named like its block. The block battery
    runs on the engine's coupling kernels, rendered as my_shift_coupling, and the question's
    module gets the generic checks (its kernels on random inputs, float32, a batch equal to
    its entries alone, with element-wise F and G: a dense layer rounds a batch and a row
    differently, which failed the check once)."""
    from .test_material_cli import _MATERIAL as SHIFT_MATERIAL

    (tmp_path / "mymat").mkdir()
    (tmp_path / "mymat" / "__init__.py").write_text(SHIFT_MATERIAL)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["test", "--material", "mymat", "--points", "3", "--jobs", "1"]) == 0
    sys.modules.pop("mymat", None)
    out, err = capsys.readouterr()
    assert "rendering the coupling kernels of block my_shift" in err
    assert "derive test: module my_shift: finite, float32, batches" in err
    checks = {tuple(re.split(r"\s{2,}", line)[:2]) for line in out.splitlines()}
    assert {("my_shift", "inverse (round trip)"), ("my_shift", "log1p_square")} <= checks
    assert out.splitlines()[-1].startswith("10 of 10 checks passed"), out


def test_bad_arguments_are_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as done:  # argparse's usage error, as for every command
        main(["test", "--points", "2"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith("derive test: error: argument --points: expected a whole number from "
                        "3 to 400, got '2'\n")
    assert main(["test", "--material", "no_such_module_here"]) == 2
    assert capsys.readouterr().err == ("derive: error: --material no_such_module_here: cannot "
                                       "import it (No module named 'no_such_module_here')\n")


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as done:
        main(["test", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "derive test --material mymat" in out and "exit codes" in out


# --- the parameterization battery: a shipped module, and the same module made wrong -----------


def test_parameterization_battery_passes_a_shipped_module_and_fails_a_wrong_one():
    from derive.coursework import MATERIAL
    from generated import gaussian_kl_logvar as module

    p = MATERIAL.parameterizations["logvar"]
    rows = selftest.check_parameterization(p, module, points=4)
    assert all(r.ok for r in rows) and rows[0].points > 50 and rows[0].worst <= 4
    off = SimpleNamespace(kl=lambda mu, lv, **k: module.kl(mu, lv, **k) * (1 + 40 * 2.0**-52),
                          kl_grad=module.kl_grad)
    rows = selftest.check_parameterization(p, off, points=4)
    assert not rows[0].ok and rows[0].failures[0].startswith("kl at mu=")
    assert rows[1].ok


@pytest.mark.parametrize("wrong", ["kl_grad_reparam", "kl_grad_stl", "float32", "broadcast"])
def test_each_row_of_the_parameterization_battery_fails_on_its_own_defect(wrong):
    """The estimators' rows, the float32 row and the broadcasting row each fail on a module
    wrong in that respect alone, the other rows passing (the review: only kl was ever made
    wrong)."""
    from derive.coursework import MATERIAL
    from generated import gaussian_kl_logvar as module

    def estimator(name):
        def off(mu, lv, eps, **k):
            a, b = getattr(module, name)(mu, lv, eps, **k)
            return a, b * (1 + 1e-6)
        return off

    def kl(mu, lv, **k):
        out = module.kl(mu, lv, **k)
        if wrong == "float32":
            return out.astype(np.float64)
        if wrong == "broadcast":
            return np.broadcast_to(out, np.shape(out)).ravel()[:1] if np.ndim(out) > 1 else out
        return out

    fns = {"kl": kl, "kl_grad": module.kl_grad, "kl_grad_reparam": module.kl_grad_reparam,
           "kl_grad_stl": module.kl_grad_stl}
    if wrong.startswith("kl_grad_"):
        fns[wrong] = estimator(wrong)
    rows = selftest.check_parameterization(MATERIAL.parameterizations["logvar"],
                                           SimpleNamespace(**fns), points=4)
    failed = [r.check for r in rows if not r.ok]
    assert len(failed) == 1 and failed[0].startswith(wrong), [(r.check, r.ok) for r in rows]


def test_pair_battery_passes_the_shipped_learned_prior_and_fails_a_wrong_gradient():
    from derive.coursework import MATERIAL
    from generated import gaussian_kl_pair as module

    p = MATERIAL.parameterizations["sigma"]
    rows = selftest.check_pair(p, module)
    assert all(r.ok for r in rows) and rows[0].points > 100 and rows[1].points > 200

    def kl_grad(*args, **kwargs):
        d_mu_q, d_q, d_mu_p, d_p = module.kl_grad(*args, **kwargs)
        return d_mu_q, d_q, d_mu_p, -d_p  # the prior's side with the wrong sign

    rows = selftest.check_pair(p, SimpleNamespace(kl=module.kl, kl_grad=kl_grad))
    assert rows[0].ok and rows[1].failures[0].startswith("pair kl_grad d_p at mu_q=")


# --- the generic battery: a kernel with a declared gradient ------------------------------------


def _module(grad_factor: int) -> tuple[object, SimpleNamespace]:
    from codegen.backends import render_numpy
    from derive.api import Arg, Kernel, Module, Output

    u = sp.Symbol("u", real=True)
    value = sp.log(1 + u**2)
    args = (Arg("u", "elementwise", "the input."),)
    spec = Module("bump", "A test module.", "log(1 + u**2) and its gradient.", (
        Kernel("f", args, (Output("v", value, "log(1 + u**2)."),), "The value.",
               gradient="f_grad"),
        Kernel("f_grad", args, (Output("d_u", grad_factor * sp.diff(value, u) / 2,
                                       "its derivative."),), "Its gradient.")),
        "tests", "elementwise")
    namespace: dict = {}
    exec(render_numpy(spec, "test"), namespace)  # noqa: S102
    return spec, SimpleNamespace(**namespace)


def test_generic_battery_checks_a_declared_gradient_and_fails_a_wrong_one():
    spec, module = _module(2)
    rows = selftest.check_kernels(spec, module, points=3)
    assert [r.check for r in rows] == ["f", "f_grad"] and all(r.ok for r in rows), rows
    spec, module = _module(3)  # 3/2 of the derivative
    rows = selftest.check_kernels(spec, module, points=3)
    assert rows[0].failures and rows[0].failures[0].startswith(
        "f_grad: d/du differs from central differences of f")


@pytest.mark.skipif(os.environ.get("DERIVE_SLOW_TESTS", "") in ("", "0"), reason=(
    "generates the worked example (about 30 s of CPU without the derivation cache) for this "
    "test alone: run with DERIVE_SLOW_TESTS=1"))
def test_the_worked_example_passes_its_free_tests(capsys):
    """derive test on examples.material: its three blocks (the spline bin on its interval)
    and the planar flow's kernels, every check passing (measured: 23 checks, 6.9 s of CPU
    with the cache warm)."""
    assert main(["test", "--material", "examples.material", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    for subject in ("coupling_shifted", "coupling_asinh", "coupling_rq_bin", "planar_flow"):
        assert any(line.startswith(subject) for line in out.splitlines()), subject
    assert out.splitlines()[-1].startswith("23 of 23 checks passed")


def test_a_material_whose_question_raises_is_one_line_naming_its_file(tmp_path, capsys,
                                                                       monkeypatch):
    """A question's derivation that raises in the material's own code (here 1/0): one line
    naming the material, its file and line and the error, exit 2; no traceback (it was
    ZeroDivisionError's whole traceback)."""
    (tmp_path / "raisemat.py").write_text(
        "from derive.api import Material, Question, Section\n"
        "S = Section('', 's', beyond=True)\n"
        "MATERIAL = Material('raisemat', questions={'Z.1': Question(\n"
        "    'Z.1', 't', ('',), lambda v: 1 / 0, S)}, sections={'s': S})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["test", "--material", "raisemat", "--jobs", "1"]) == 2
    sys.modules.pop("raisemat", None)
    err = capsys.readouterr().err
    assert ("derive: error: --material raisemat: raisemat.py:4 in <lambda>: "
            "ZeroDivisionError: division by zero") in err
    assert "Traceback" not in err


def test_an_installed_material_whose_question_raises_is_one_line_too(tmp_path, capsys,
                                                                     monkeypatch):
    """The same material where pip would put it (under sys.prefix, as in site-packages):
    recognised by the folder it was loaded from, one line and exit 2 (the error escaped as a
    traceback: every frame under the prefix was taken for an installed library's)."""
    site = tmp_path / "lib" / "site-packages"
    site.mkdir(parents=True)
    (site / "raisemat2.py").write_text(
        "from derive.api import Material, Question, Section\n"
        "S = Section('', 's', beyond=True)\n"
        "MATERIAL = Material('raisemat2', questions={'Z.2': Question(\n"
        "    'Z.2', 't', ('',), lambda v: 1 / 0, S)}, sections={'s': S})\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    try:
        assert main(["test", "--material", "raisemat2", "--jobs", "1"]) == 2
    finally:
        sys.modules.pop("raisemat2", None)
    err = capsys.readouterr().err
    assert ("derive: error: --material raisemat2: raisemat2.py:4 in <lambda>: "
            "ZeroDivisionError: division by zero") in err
    assert "Traceback" not in err
