"""The command line: each subcommand's success path and its error path."""

from __future__ import annotations

import os
import subprocess
import sys

from derive.cli import main

from .conftest import ROOT


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "derive", *args], cwd=ROOT,
                          capture_output=True, text=True)


def test_help_explains_every_subcommand():
    out = run("--help")
    assert out.returncode == 0
    for word in ("list", "show", "latex", "generate", "examples:"):
        assert word in out.stdout
    assert "--check" in run("generate", "--help").stdout


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "1.1" in out and "coupling_additive" in out


def test_show(capsys):
    assert main(["show", "1.2"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "chain rule" in out and "[checked:" in out and "JF(x2)_ij" in out


def test_show_variant(capsys):
    assert main(["show", "1.3", "--variant", "coupling_additive"]) == 0
    assert "Volume preserving" in capsys.readouterr().out


def test_unknown_question_is_one_line_and_exit_2():
    out = run("show", "9.9")
    assert out.returncode == 2
    assert out.stderr.startswith("derive: error: unknown question '9.9'; known questions: 1.1")
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_unknown_variant(capsys):
    assert main(["latex", "1.1", "--variant", "nope"]) == 2
    assert "known variants: coupling" in capsys.readouterr().err


def test_missing_subcommand_is_a_usage_error():
    out = run()
    assert out.returncode == 2 and "usage: derive" in out.stderr


def test_latex_to_stdout_and_file(tmp_path, capsys):
    assert main(["latex", "1.3"]) == 0
    assert r"\det\left(\frac{\partial y}{\partial x}\right)" in capsys.readouterr().out
    target = tmp_path / "sub" / "q13.tex"
    assert main(["latex", "1.3", "-o", str(target), "--standalone"]) == 0
    text = target.read_text()
    assert text.startswith("%") and r"\begin{document}" in text


def test_latex_odot(capsys):
    assert main(["latex", "1.1", "--odot"]) == 0
    assert r"\odot" in capsys.readouterr().out


def test_latex_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["latex", "1.3", "-o", str(blocker / "q.tex")]) == 2
    err = capsys.readouterr().err
    assert "--output:" in err and "Not a directory" in err and "Traceback" not in err


def test_generate_check_passes_on_this_checkout():
    """The run's first test: derives the shipped material from cold into the run's cache
    (which every later generate, show, latex and check reads), under another hash seed than
    the suite's own, and compares it with generated/ on disk."""
    out = subprocess.run([sys.executable, "-m", "derive", "generate", "--check"], cwd=ROOT,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert out.returncode == 0, out.stderr
    assert "up to date" in out.stdout


def test_generate_into_a_root_and_check_stale(tmp_path, capsys):
    assert main(["generate", "--root", str(tmp_path)]) == 0
    assert "changed: generated/__init__.py" in capsys.readouterr().out
    assert main(["generate", "--check", "--root", str(tmp_path)]) == 0
    (tmp_path / "generated" / "coupling_affine.py").write_text("# edited by hand\n")
    assert main(["generate", "--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "generated/ is stale: generated/coupling_affine.py" in err
    assert "+++ generated/coupling_affine.py (derived)" in err


def test_generate_bad_root(tmp_path, capsys):
    assert main(["generate", "--root", str(tmp_path / "missing")]) == 2
    assert "--root:" in capsys.readouterr().err


def test_generate_unwritable_root(tmp_path, capsys):
    (tmp_path / "generated").write_text("a file where the folder should be\n")
    assert main(["generate", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "cannot write under" in err and "Traceback" not in err


def test_a_refused_block_is_one_line(monkeypatch, capsys):
    """A block that is not invertible, met by any command (as material imported by the
    command would be), is one line on standard error, exit 2: no traceback."""
    import sympy as sp

    import derive.cli as cli
    from derive.coupling import CouplingBlock
    from derive.vocabulary import F, G, x1, x2

    for y1, why in ((sp.sinh(G) * x1 + F, "is 0 where G[i] = 0"),
                    (x1 + sp.tanh(x1) / 2 + F, "finds no closed-form inverse")):
        def run(args, y1=y1):
            CouplingBlock("user_block", "a user's block", y1=y1, y2=x2)
            return "", 0

        monkeypatch.setattr(cli, "_run", run)
        assert main(["list"]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith("derive: error: refused: user_block: y1 = " if "G" in why
                                       else "derive: error: refused: user_block: solving ")
        assert why in captured.err and captured.err.count("\n") == 1, captured.err
