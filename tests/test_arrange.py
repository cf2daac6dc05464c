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


def _held_out(expr: str, over: list[str], found: search.Found, n: int = 400
              ) -> tuple[search.Measure, search.Measure]:
    """The typed and the arranged form measured on a sample the search did not see."""
    names = [search.parse_over(o) for o in over]
    variables = tuple(sp.Symbol(name, real=True) for name, _, _ in names)
    box = {v: (lo, hi) for v, (_, lo, hi) in zip(variables, names, strict=True)}
    typed = search.parse_expression(expr, [v.name for v in variables])
    points = search.sample_box(box, n, np.random.default_rng(12345))
    true = reference(typed, variables, points)
    keep = ~np.isnan(true)
    points, true = points[keep], true[keep]
    cols = [points[:, k].copy() for k in range(len(variables))]
    out = []
    for form in (typed, found.expr.xreplace({v: v for v in variables})):
        got = search.float_function(form, variables)(*cols)
        out.append(search.measure(ulp_error(got, true), got, true))
    return out[0], out[1]


def test_a_rewrite_that_loses_on_the_held_out_sample_is_not_kept() -> None:
    """The Gaussian log-density over wide domains: expanding (x - mu)**2 gains at the
    search's worst points (185 -> 130 ulp) and loses elsewhere (mean 0.36 against 0.32 ulp
    on the held-out sample; 2 against 1 ulp at most on the bench's sample, 111 on another):
    the typed form is kept, so nothing is worse than typed."""
    expr = "-(x - mu)**2/(2*sigma**2) - log(sigma) - log(2*pi)/2"
    over = ["x in [-1e150, 1e150]", "mu in [-1e150, 1e150]", "sigma in [1e-150, 1e150]"]
    found = arrange(expr, over, samples=400)
    assert not found.derivation.steps and found.expr == found.original
    typed, ours = _held_out(expr, over, found)
    assert ours.max_ulp <= typed.max_ulp and ours.mean_ulp <= typed.mean_ulp


def test_cosine_of_a_sum_is_taken_through_the_exact_sum() -> None:
    """cos(x + eps) - cos(x) over every float (NMSE 3.3.5): the sum-to-product form with
    the sum x + eps/2 split exactly (TwoSum) and the addition formula; tens of ulp at most
    on a sample the search did not see, where the form without the split was 9.2e18 (as
    typed: 9.2e18)."""
    expr = "cos(x + eps) - cos(x)"
    over = ["x in [-1e300, 1e300]", "eps in [-1e300, 1e300]"]
    found = arrange(expr, over, samples=400)
    typed, ours = _held_out(expr, over, found)
    assert typed.max_ulp > 1e18 and ours.max_ulp < 100 and ours.nonfinite == 0
