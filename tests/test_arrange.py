"""``derive arrange`` and :mod:`derive.search`: the search reaches a few ulp on classic
cases (measured against mpmath), a rewrite that is not an identity is refused by its check,
the written file is an importable kernel module, and bad input is one line, exit 2."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

from derive import search
from derive.cli import main
from derive.derivation import StepCheckError
from derive.search import Candidate, arrange, reference, ulp_error

from .conftest import ROOT

x = sp.Symbol("x", real=True)


@pytest.mark.parametrize(("expr", "over"), [
    ("exp(x) - 1", "x in [-1, 1]"),
    ("sqrt(x + 1) - sqrt(x)", "x in [0, 1e300]"),
    ("log(1 - exp(-x))", "x in [1e-300, 700]"),
    ("log(1 + x**2)", "x in [-1e300, 1e300]"),
    ("log(abs(sinh(x)))", "x in [1e-3, 1e4]"),
    ("log(1 + exp(x))", "x in [-700, 700]"),
])
def test_search_reaches_a_few_ulp(expr: str, over: str) -> None:
    found = arrange(expr, [over], samples=150)
    assert found.after.max_ulp <= 4 < found.before.max_ulp
    assert found.after.nonfinite == 0
    # the arranged expression, checked afresh against mpmath at points the search never saw
    lo, hi = search.parse_over(over)[1:]
    points = search.sample_box({x: (lo, hi)}, 200, np.random.default_rng(99))
    true = reference(found.original, [x], points)
    keep = ~np.isnan(true)
    computed = search.float_function(found.expr, [x])(points[keep, 0])
    assert ulp_error(computed, true[keep]).max() <= 4


def test_every_kept_rewrite_is_a_checked_step() -> None:
    found = arrange("log(1 - exp(-x))", ["x in [1e-300, 700]"], samples=80)
    assert found.derivation.steps
    assert str(found.derivation.steps[0].lhs) == str(found.original)
    assert str(found.derivation.result("f")) == str(found.expr)


def test_a_wrong_rewrite_is_refused_by_its_check() -> None:
    # x is a better value of exp(x) - 1 than exp(x) - 1 itself near 0, but not equal to it
    wrong = Candidate(x, "wrong: exp(x) - 1 is x")
    with pytest.raises(StepCheckError, match="is false"):
        search._check(sp.exp(x) - 1, wrong)


def test_the_search_keeps_no_wrong_rewrite(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1/(2 sqrt(x)) is within an ulp of sqrt(x + 1) - sqrt(x) for x > 1e17, so it lowers the
    # error the search measures; it is not an identity, so its check refuses it
    wrong = search._whole("wrong", lambda e: 1 / (2 * sp.sqrt(x)), "the leading term alone")
    monkeypatch.setattr(search, "RULES", (wrong,))
    found = arrange("sqrt(x + 1) - sqrt(x)", ["x in [1e17, 1e300]"], samples=100)
    assert [reason for reason, _ in found.refused] == ["the leading term alone"]
    # what is kept instead (the arrangement's own conjugate rule, if any) is an identity
    assert found.expr != 1 / (2 * sp.sqrt(x))
    assert sp.simplify(found.expr - found.original) == 0


def test_cli_writes_an_importable_kernel(tmp_path, capsys) -> None:
    out = tmp_path / "f.py"
    assert main(["arrange", "sqrt(x + 1) - sqrt(x)", "--over", "x in [0, 1e300]",
                 "--samples", "200", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "as typed: max" in printed and "the written kernel f: max" in printed
    spec = importlib.util.spec_from_file_location("arranged_f", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    value = module.f(np.array([0.0, 1e300]))
    assert value.tolist() == [1.0, 5e-151]
    assert module.f(np.float32([1e6])).dtype == np.float32


@pytest.mark.parametrize(("args", "message"), [
    (["x.__class__", "--over", "x in [0, 1]"], "EXPR: expected numbers"),
    (["__import__('os')", "--over", "x in [0, 1]"], "EXPR: expected numbers"),
    (["exp(x) +", "--over", "x in [0, 1]"], "EXPR: expected"),
    (["exp(y)", "--over", "x in [0, 1]"], "EXPR: expected numbers"),
    (["x**10**10", "--over", "x in [0, 1]"], "EXPR: expected exponents"),
    (["x", "--over", "x in [1, 0]"], "--over: expected finite bounds"),
    (["x", "--over", "x from 0 to 1"], "--over: expected 'NAME in [LOW, HIGH]'"),
    (["x", "--over", "exp in [0, 1]"], "--over: expected a variable name"),
    (["sqrt(x)", "--over", "x in [-2, -1]"], "--over: sqrt(x) is not real"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], message: str, capsys) -> None:
    assert main(["arrange", *args, "--samples", "50"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_no_traceback_reaches_the_user() -> None:
    run = subprocess.run([sys.executable, "-m", "derive", "arrange", "(x", "--over",
                          "x in [0, 1]"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("derive: error: EXPR: expected")
