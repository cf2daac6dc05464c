"""``--material MODULE``: material from outside the repository, generated into a package
of its own (``--root``, ``--package``), and the one-line refusals of a bad one."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import mpmath
import numpy as np
import pytest

from derive import loader
from derive.cli import main

from .conftest import ROOT

#: A material package as an outside user writes it: derive.api and SymPy only. One block
#: (a shift: y1 = x1 + F), the engine's derivations of it, and a kernel module of two
#: kernels built from the arranged results.
_MATERIAL = r'''
"""A shift block, as material outside the engine."""
import sympy as sp
from derive.api import (Answers, Arg, CouplingBlock, Kernel, Material, Module, Output,
                        Quantity, Question, Section, F, Y1, Y2, derive_arrangement,
                        derive_inverse, to_vector, x1, x2)

SHIFT = CouplingBlock("my_shift", "a shift block", x1 + F, x2, summary="A shift by F(x2).")
_ARGS = (Arg("x1", "batch", "first half, shape (..., n)."),
         Arg("x2", "batch", "second half, shape (..., n)."),
         Arg("s", "param", "unused parameter, shape (n,)."),
         Arg("F", "function", "callable (..., n) -> (..., n)."),
         Arg("G", "function", "callable (..., n) -> (..., n); unused."))


def _kernels(variant):
    arranged = derive_arrangement(SHIFT)
    return Module(
        "my_shift", "Kernels of a shift block.", "y1 = x1 + F(x2), y2 = x2.",
        (Kernel("forward", _ARGS,
                (Output("y1", to_vector(arranged.result("y1")), "y1, shape (..., n)."),
                 Output("y2", to_vector(arranged.result("y2")), "y2, shape (..., n).")),
                "Apply the shift."),
         Kernel("log_det_jacobian", _ARGS,
                (Output("log_det", to_vector(arranged.result("log_abs_det")),
                        "log|det|, shape (...,).", reduced=True),), "Its log-determinant."),
         # typed as a user would: it overflows past |x1| = 1.3e154 unless the accuracy
         # search at generate time rewrites it (derive.kernel_search)
         Kernel("log1p_square", _ARGS,
                (Output("v", sp.log(1 + sp.Symbol("x1", real=True) ** 2),
                        "log(1 + x1**2), shape (..., n)."),), "log(1 + x1**2).")),
        "mymat.SHIFT", "coupling")


_X = r"(?:\\mathbf|\\boldsymbol|\\bm)?\{?x\}?_\{?"


def _answers(variant, d):
    """How derive check reads an answer: x1 and x2, in index notation."""
    return Answers("9.1", variant, (Quantity("x1", "x1", (d.result("x1"),)),
                                    Quantity("x2", "x2", (d.result("x2"),))), (),
                   ((_X + r"1(?:,?[ik])?\}?", ("x1",)), (_X + r"2(?:,?[ik])?\}?", ("x2",))),
                   index_form=True, x2=d.result("x2"),
                   symbols={"x_1": x1.base, "x_2": x2.base, "y_1": Y1, "y_2": Y2,
                            "F(x_2)": F.base})


SECTION = Section("", "A shift block", beyond=True)
QUESTION = Question("9.1", "Invert the shift block", ("my_shift",),
                    lambda variant: derive_inverse(SHIFT), SECTION, kernels=_kernels,
                    answers=_answers)
MATERIAL = Material("mymat", blocks={"my_shift": SHIFT}, questions={"9.1": QUESTION},
                    sections={"shift": SECTION})
'''


@pytest.fixture
def outside(tmp_path, monkeypatch):
    """A folder outside the repository holding the material package ``mymat`` (and some
    broken ones), on sys.path; the loader's choice restored afterwards."""
    folder = tmp_path / "outside"
    (folder / "mymat").mkdir(parents=True)
    (folder / "mymat" / "__init__.py").write_text(_MATERIAL)
    (folder / "nomaterial.py").write_text("VALUE = 1\n")
    (folder / "wrongtype.py").write_text("MATERIAL = {'blocks': {}}\n")
    (folder / "broken.py").write_text("raise RuntimeError('this module fails on import')\n")
    (folder / "clash.py").write_text(
        "from derive.api import Material, Question\n"
        "MATERIAL = Material('clash', questions={'1.1': Question('1.1', 'again', ('',), "
        "lambda v: None)})\n")
    monkeypatch.syspath_prepend(str(folder))
    saved = loader._current, loader._names
    yield folder
    loader._current, loader._names = saved
    for name in ("mymat", "nomaterial", "wrongtype", "broken", "clash"):
        sys.modules.pop(name, None)
    importlib.invalidate_caches()


def test_outside_material_is_generated_into_its_own_package_and_runs(outside, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(outside), str(ROOT)]))
    done = subprocess.run([sys.executable, "-m", "derive", "generate", "--material", "mymat",
                           "--root", str(out), "--package", "mykernels"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "changed: mykernels/__init__.py" in done.stdout
    module = (out / "mykernels" / "my_shift.py").read_text()
    command = f"python -m derive generate --material mymat --root {out} --package mykernels"
    assert f"# Regenerate with: {command}\n" in module
    assert f"Regenerate with: {command}" in (out / "mykernels" / "notes.tex").read_text()
    assert sorted(p.name for p in (out / "mykernels").iterdir()) == [
        "MANIFEST", "__init__.py", "derivations.ipynb", "marking.tex", "my_shift.py",
        "notes.tex", "problems.tex", "solutions.tex"]
    # the generated module, imported and called
    code = ("import numpy as np; from mykernels import my_shift as m; "
            "x1, x2, s = np.array([0.5, -1.0]), np.array([0.2, 0.3]), np.zeros(2); "
            "y1, y2 = m.forward(x1, x2, s, np.tanh, np.sin); "
            "assert np.allclose(y1, x1 + np.tanh(x2)) and np.allclose(y2, x2), (y1, y2); "
            "assert m.log_det_jacobian(x1, x2, s, np.tanh, np.sin) == 0; "
            "v = m.log1p_square(np.array([[1e200], [-3e300], [0.5]]), np.zeros((3, 1)), "
            "np.zeros(1), np.tanh, np.sin); print(repr(v.ravel().tolist()))")
    run = subprocess.run([sys.executable, "-c", code], cwd=out, capture_output=True,
                         text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(out), str(ROOT)])))
    # the search's rewrite at generate time: finite and accurate where log(1 + x1**2) as
    # typed overflows (inf at 1e200); the truth from mpmath
    assert run.returncode == 0 and run.stdout.startswith("["), run.stderr
    got = [float(t) for t in run.stdout.strip()[1:-1].split(",")]
    with mpmath.workprec(300):
        true = [float(mpmath.log(1 + mpmath.mpf(x) ** 2)) for x in (1e200, -3e300, 0.5)]
    assert all(abs(g - t) <= 4 * np.spacing(abs(t))
               for g, t in zip(got, true, strict=True)), (got, true)
    notes = (out / "mykernels" / "notes.tex").read_text()
    assert "The accuracy search at generate time" in notes
    line = next(x for x in notes.splitlines() if r"log1p\_square.v" in x)
    assert "after the steps kept" in line and "NaN" not in line.split("ulp as derived")[1], line
    # the notebook shows the same verdicts and the steps kept (it showed no search before)
    cells = json.loads((out / "mykernels" / "derivations.ipynb").read_text())["cells"]
    search = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"
              and "- `log1p_square.v`" in "".join(c["source"])]
    assert len(search) == 1, search
    item = search[0].split("- `log1p_square.v`")[1].split("\n- ")[0]
    assert "after the steps kept" in item and "$$" in item and "(1) " in item, item
    assert r"\operatorname{log1p}" in item or "log1p" in item, item
    # and --check with the same options finds it up to date
    again = subprocess.run([sys.executable, "-m", "derive", "generate", "--check", "--material",
                            "mymat", "--root", str(out), "--package", "mykernels"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "mykernels/ is up to date" in again.stdout


def test_list_show_and_latex_take_material(outside, capsys):
    assert main(["list", "--material", "mymat"]) == 0
    assert capsys.readouterr().out.startswith("9.1   Invert the shift block\n")
    assert main(["show", "9.1", "--material", "mymat"]) == 0
    assert "Inverting a shift block  [my_shift]" in capsys.readouterr().out
    assert main(["latex", "9.1", "--material", "mymat", "--standalone"]) == 0
    assert "python -m derive latex --material mymat 9.1 --standalone" in capsys.readouterr().out


def test_check_marks_a_material_s_question_from_its_registry_entry(outside, tmp_path,
                                                                  capsys):
    """No per-question table in the checker: 9.1's answers read as its registry says."""
    right, wrong = tmp_path / "right.tex", tmp_path / "wrong.tex"
    right.write_text("x_2 = y_2, \\quad x_1 = y_1 - F(x_2)\n")
    wrong.write_text("x_2 = y_2, \\quad x_1 = y_1 + F(x_2)\n")
    assert main(["check", "9.1", str(right), "--material", "mymat"]) == 0, capsys.readouterr()
    assert "correct" in capsys.readouterr().out
    assert main(["check", "9.1", str(wrong), "--material", "mymat"]) == 1
    assert main(["check", "9.1", str(right)]) == 2  # not a question of the coursework
    assert "is not marked by derive check" in capsys.readouterr().err


def test_several_materials_combine(outside, capsys):
    assert main(["list", "--material", "derive.coursework", "--material", "mymat"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1.1 ") and "9.1   Invert the shift block" in out


@pytest.mark.parametrize("argv, message", [
    (["--material", "nosuchmodule"],
     "--material nosuchmodule: cannot import it (No module named 'nosuchmodule')"),
    (["--material", "broken"], "--material broken: cannot import it (this module fails on "
                               "import)"),
    (["--material", "nomaterial"], "--material nomaterial: the module has no MATERIAL "
                                   "(expected a derive.api.Material named MATERIAL)"),
    (["--material", "wrongtype"], "--material wrongtype: MATERIAL is a dict, expected a "
                                  "derive.api.Material"),
    (["--material", "mymat", "--material", "mymat"], "--material mymat: given more than once"),
    (["--material", "derive.coursework", "--material", "clash"],
     "material 'derive.coursework' and material 'clash' both define question '1.1'"),
])
@pytest.mark.parametrize("command", ["list", "generate --check", "check 1.1 -"])
def test_a_bad_material_is_one_line_and_exit_2(outside, capsys, argv, message, command):
    assert main([*command.split(), *argv]) == 2
    err = capsys.readouterr().err
    assert err == f"derive: error: {message}\n"


def test_package_must_be_an_identifier(outside, capsys, tmp_path):
    assert main(["generate", "--root", str(tmp_path), "--package", "my-kernels"]) == 2
    assert capsys.readouterr().err == (
        "derive: error: --package: expected a Python identifier, got 'my-kernels'\n")


def test_an_installed_entry_point_is_loaded_by_name(outside, monkeypatch):
    from importlib.metadata import EntryPoint

    point = EntryPoint("shift", "mymat:MATERIAL", loader.ENTRY_POINTS)
    monkeypatch.setattr(loader, "_entry_point", lambda name: point if name == "shift" else None)
    assert sorted(loader.load(["shift"]).blocks) == ["my_shift"]


def test_the_default_command_s_header_is_unchanged():
    text = (ROOT / "generated" / "coupling.py").read_text()
    assert "# Regenerate with: python -m derive generate\n" in text


_TWICE = '''
from derive.api import (CouplingBlock, Material, Question, Section, F, coupling_kernels,
                        derive_determinant, derive_inverse, x1, x2)
SHIFT = CouplingBlock("twice_shift", "a shift block", x1 + F, x2)
SECTION = Section("", "A shift block", beyond=True)
def _kernels(variant):
    return coupling_kernels(SHIFT, "twicemat.SHIFT", package=None)
MATERIAL = Material("twicemat", blocks={"twice_shift": SHIFT}, questions={
    "9.1": Question("9.1", "Invert it", ("twice_shift",), lambda v: derive_inverse(SHIFT),
                    SECTION, kernels=_kernels),
    "9.2": Question("9.2", "Its determinant", ("twice_shift",),
                    lambda v: derive_determinant(SHIFT), SECTION, kernels=_kernels)},
    sections={"shift": SECTION})
'''


def test_two_questions_writing_one_module_are_refused_in_one_line(tmp_path, monkeypatch,
                                                                   capsys):
    """Two questions whose kernels are one module name: the second file would replace the
    first silently; generate says so in one line, exit 2, and writes nothing."""
    (tmp_path / "twicemat.py").write_text(_TWICE)
    monkeypatch.syspath_prepend(str(tmp_path))
    names = loader._names
    try:
        code = main(["generate", "--material", "twicemat", "--root", str(tmp_path),
                     "--package", "k", "--no-cache", "--jobs", "1"])
    finally:
        sys.modules.pop("twicemat", None)
        loader.use(names)
    err = capsys.readouterr().err
    assert code == 2 and err == ("derive: error: question 9.1 (twice_shift) and question 9.2 "
                                 "(twice_shift) both write the kernel module 'twice_shift'; "
                                 "give one of them another module name\n"), err
    assert not (tmp_path / "k").exists()
