"""``derive check``: safe reading, the two-method decision, the sandbox and the command.

The corpus of answers is in tests/answers/ (tests/test_check_corpus.py); this file tests
the machinery: hostile inputs through the real sandbox, the reader's normalizations, the
undecided paths, and the command line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sympy as sp

from derive import build
from derive.check import (
    Limits,
    Unreadable,
    equivalence,
    mark,
    mark_batch,
    question_spec,
    read_answer,
)

from .conftest import ROOT

#: Inputs meant to hang, exhaust or escape the checker; each must be refused in time.
HOSTILE = {
    "power tower": r"10^{10^{10}}",
    "symbolic tower": r"\mu^{\mu^{\mu^{\mu}}}",
    "exponential tower": r"e^{e^{e^{\mu}}}",
    "huge exponent": r"\mu^{100000}",
    "powers of powers": r"((((2^{64})^{64})^{64})^{64})^{64}",
    "2000 nested parentheses": "(" * 2000 + r"\mu" + ")" * 2000,
    "1000 nested parentheses": "(" * 1000 + r"\mu" + ")" * 1000,
    "nested braces": "{" * 1000 + r"\mu" + "}" * 1000,
    "100k characters": r"\mu + " * 20000,
    "150 terms": "+".join([r"\mu"] * 150),
    "a 5000-digit number": "9" * 3900,
    "input": r"\input{/etc/passwd}",
    "include": r"\include{answers}",
    "def": r"\def\x{1}\x",
    "write18": r"\immediate\write18{rm -rf /}",
    "catcode": r"\catcode`\^=12",
    "null byte": "\\mu\x00",
    "python": r"__import__('os').system('ls')",
    "factorial": r"\mu!",
    "infinite sum": r"\sum_{i=1}^{\infty} \mu",
    "huge sum": r"\sum_{i=1}^{1000000000} \mu",
    "many sums": r"\sum_{i=1}^{n}" * 10 + r"\mu",
    "many lines": r"\mu \\ " * 500,
    "integral": r"\int_0^1 \mu d\mu",
    "expanding power": r"(\mu + \sigma + 1)^{64}",
}


def test_hostile_inputs_end_within_the_limit_with_a_message():
    start = time.monotonic()
    reports = mark_batch([("2.3", text, None) for text in HOSTILE.values()])
    elapsed = time.monotonic() - start
    for name, report in zip(HOSTILE, reports, strict=True):
        assert report["verdict"] in ("unreadable", "undecided"), (name, report)
        assert report["feedback"] and all(report["feedback"]), name
    assert elapsed < 15 * len(HOSTILE)


@pytest.mark.parametrize("name", ["power tower", "100k characters"])
def test_hostile_input_on_the_command_line_exits_2_in_time(name: str, tmp_path: Path):
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "derive", "check", "2.3", "-"], cwd=ROOT,
                         input=HOSTILE[name], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "unreadable" in run.stdout and "not read" in run.stdout or "at most" in run.stdout
    assert time.monotonic() - start < 15 + 10  # the limit, plus the interpreter's start
    assert list(tmp_path.iterdir()) == []


def test_the_wall_clock_limit_stops_a_decision_and_the_batch_goes_on():
    heavy = r"\frac{1}{2}(\mu^2 + \sigma^2 - \log\sigma^2 - 1)"
    reports = mark_batch([("2.3", heavy, None), ("2.3", r"\input{x}", None)],
                         Limits(wall_seconds=0.001))
    assert reports[0]["verdict"] == "undecided"
    assert "longer than 0.001 s" in reports[0]["feedback"][0]
    assert reports[1]["verdict"] in ("unreadable", "undecided")


def test_the_cpu_limit_stops_a_decision():
    report = mark_batch([("2.3", HOSTILE["expanding power"], None)],
                        Limits(cpu_seconds=1, wall_seconds=30))[0]
    assert report["verdict"] == "undecided"
    assert "CPU" in report["feedback"][0] or "simplify" in report["feedback"][-1]


def test_the_memory_limit_stops_a_decision(monkeypatch):
    if not Path("/proc/self/statm").exists():
        pytest.skip("no /proc/self/statm")
    # The cap is on the child's growth beyond the address space it inherits, so whether a
    # real decision outgrows it depends on how much free heap the parent happened to hand
    # down (in a full test session, with PyTorch and JAX loaded, a small one may not). A
    # decision that must allocate 256 MiB is stopped by a 2 MiB cap wherever it runs: the
    # child is forked, so it runs this patched ``mark``.
    from derive.check import marking

    def greedy(*_args, **_kwargs):
        block = bytearray(256 << 20)
        raise AssertionError(f"allocated {len(block)} bytes under a 2 MiB cap")

    monkeypatch.setattr(marking, "mark", greedy)
    report = mark_batch([("2.3", r"\mu", None)], Limits(memory_bytes=2 << 20))[0]
    assert report["verdict"] == "undecided", report
    assert "ran out of memory (2 MiB)" in report["feedback"][0], report


# --------------------------------------------------------------------------- reading

@pytest.mark.parametrize("written, same_as", [
    (r"\exp(s) \circ x_2", r"\exp(s) \cdot x_2"),
    (r"\exp(s) \odot x_2", r"\exp(s) \cdot x_2"),
    (r"\exp(s) \times x_2", r"\exp(s) \cdot x_2"),
    (r"e^{s}", r"\exp(s)"),
    (r"\mathrm{e}^{s}", r"\exp(s)"),
    (r"\sigma^2_i", r"\sigma_i^2"),
    (r"\sigma_i(1 - \mu)", r"\sigma_i \cdot (1 - \mu)"),
    (r"\sum_i s_i", r"\sum_{i=1}^{n} s_i"),
    (r"\sum s_i", r"\sum_{i=1}^{n} s_i"),
    (r"0.5 \mu", r"\frac{1}{2} \mu"),
    (r"\left( \mu \right)", r"(\mu)"),
])
def test_notation_is_normalized_before_parsing(written: str, same_as: str):
    spec = question_spec("2.3" if "mu" in written or "sigma" in written else "1.1")

    def tree(text: str) -> sp.Basic:
        return spec.resolve(read_answer(text).lines[0].sides[0][0])

    assert sp.srepr(tree(written)) == sp.srepr(tree(same_as))


def test_mathcal_keeps_the_rest_of_the_input():
    spec = question_spec("1.1")
    (line,) = read_answer(r"x_1 = (y_1 - \mathcal{F}(x_2)) \exp(-\mathcal{G}_i(x_2))",
                          spec.is_label).lines
    expr = spec.resolve(line.sides[0][0])
    assert expr == (spec.resolve(sp.Symbol("y_{1}")) - spec.resolve(
        sp.Function("F")(sp.Symbol("x_{2}")))) * sp.exp(-spec.resolve(
            sp.Function("G_{i}")(sp.Symbol("x_{2}"))))


@pytest.mark.parametrize("text, refused", [
    (r"\mu )", "cannot parse"),               # strict: no silent truncation
    (r"\text{mu}", r"\text"),
    (r"\operatorname{tr}(\mu)", r"\operatorname{tr}"),
    (r"\mu'", "prime"),
    (r"\sin(\mu)", r"\sin"),
    (r"\log_2 \mu", "base 2"),
])
def test_everything_else_is_refused_naming_what(text: str, refused: str):
    with pytest.raises(Unreadable, match=None) as err:
        spec = question_spec("2.3")
        for line in read_answer(text, spec.is_label).lines:
            for side in line.sides:
                for e in side:
                    spec.resolve(e)
    assert refused in str(err.value)


def test_the_checker_never_evaluates_text():
    for path in (ROOT / "derive" / "check").glob("*.py"):
        source = path.read_text()
        for call in ("sympify(", "parse_expr(", "eval(", "exec(", "S(str"):
            assert call not in source, f"{path.name} calls {call}"


# --------------------------------------------------------------------------- deciding

def test_references_come_from_the_derivations():
    assert question_spec("2.3").quantity("kl").references == (build("2.3").result("kl"),)
    assert question_spec("1.3").quantity("det").references == (build("1.3").result("det"),)
    x1 = question_spec("1.1", "coupling_additive").quantity("x1").references[0]
    assert x1 == build("1.1", "coupling_additive").result("x1")


def test_disagreement_between_the_methods_is_undecided(monkeypatch):
    mu = sp.Symbol("mu", real=True)
    assert equivalence.decide(sp.sin(mu) ** 2 + sp.cos(mu) ** 2, sp.Integer(1)).status == "equal"
    monkeypatch.setattr(equivalence, "_zero", lambda diff: False)
    monkeypatch.setattr(equivalence, "symbolic_zero", lambda pairs: False)
    assert equivalence.decide(sp.sin(mu) ** 2 + sp.cos(mu) ** 2,
                              sp.Integer(1)).status == "undecided"


def test_a_simplify_timeout_is_undecided():
    mu, sigma = sp.Symbol("mu", real=True), sp.Symbol("sigma", positive=True)
    decision = equivalence.decide((mu + sigma + 1) ** 40, sp.expand((mu + sigma + 1) ** 40),
                                  seconds=0.01)
    assert decision.status == "undecided"


def test_a_value_that_is_not_a_number_is_undecided():
    mu = sp.Symbol("mu", real=True)
    assert equivalence.decide(1 / (mu - mu), sp.Integer(1)).status == "undecided"


def test_the_seeds_restored_line_is_off_by_one():
    report = mark("2.3", r"\frac{1}{2}(\mu_i^2 + \sigma_i^2 - (\log(\sigma_i^2) - 1))")
    assert report.verdict == "incorrect"
    assert report.feedback == ["KL_i: off by the constant +1"]
    assert report.read_as == "KL_i = mu**2/2 + sigma**2/2 - log(sigma**2)/2 + 1/2"


def test_a_chain_names_its_first_false_step_and_lists_every_line():
    chain = (r"KL = \frac12(\mu^2 + \sigma^2 - \log\sigma^2 - 1) \\ = \frac12(\mu^2 + \sigma^2"
             r" - 1) - \log\sigma \\ = \frac12(\mu^2 + \sigma^2) - \log\sigma \\ = \frac12(\mu^2"
             r" + \sigma^2 - 1) - \log\sigma")
    report = mark("2.3", chain)
    assert report.verdict == "incorrect"
    assert "line 3 does not follow from line 2" in report.feedback
    assert report.steps == [{"line": 1, "ok": True}, {"line": 2, "ok": True},
                            {"line": 3, "ok": False}, {"line": 4, "ok": False}]


# --------------------------------------------------------------------------- command

def _check(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``derive check`` in this process (the sandbox still forks its own child)."""
    import contextlib
    import io

    from derive.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO((stdin or "").encode()))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(["check", *args])
            except SystemExit as exit_:
                code = exit_.code
    finally:
        sys.stdin = old_stdin
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_help_explains_exit_codes_and_notation():
    out = _check("--help").stdout
    for words in ("exit codes:", "0  correct", "1  incorrect", "2  unreadable", r"\odot",
                  r"\mathcal{F}", "pmatrix", r"\sum_i", "1 GiB", "15 s"):
        assert words in out, words


def test_check_text_output_and_exit_codes(tmp_path: Path):
    answer = tmp_path / "answer.tex"
    answer.write_text(r"\frac{1}{2}(\mu_i^2 + \sigma_i^2 - (\log(\sigma_i^2) - 1))")
    run = _check("2.3", str(answer))
    assert run.returncode == 1
    assert run.stdout.splitlines()[:5] == [
        "question 2.3",
        "read as:  KL_i = mu**2/2 + sigma**2/2 - log(sigma**2)/2 + 1/2",
        "verdict:  incorrect",
        "score:    0 of 5 points",
        "  - KL_i: off by the constant +1"]
    assert _check("2.3", "-", stdin=r"\frac12(\mu^2 + \sigma^2 - 1) - \log\sigma").returncode == 0
    logvar = _check("2.3", "-", "--variant", "logvar", stdin=r"\frac12(\mu^2 + e^\lambda"
                    r" - \lambda - 1)")
    assert logvar.returncode == 0, logvar.stdout


def test_a_comment_is_never_read():
    report = mark("2.3", "\\mu % \\input{x}\n")
    assert report.read_as == "KL_i = mu" and report.verdict == "incorrect"


def test_check_json_is_one_array():
    run = _check("1.3", "-", "--json", stdin=r"\det J = \sum_i (G_i(x_2) + s_i)")
    assert run.returncode == 1
    (report,) = json.loads(run.stdout)
    assert set(report) == {"file", "question", "verdict", "score", "max_score", "read_as",
                           "feedback", "steps"}
    assert report["verdict"] == "incorrect"
    assert "this is log|det J| but it is labelled det J" in report["feedback"][0]
    assert report["steps"] == [{"line": 1, "ok": True}]


@pytest.mark.parametrize("args, message", [
    (("2.3n", "-"), "not marked by derive check"),
    (("2.3", "/nonexistent/answer.tex"), "FILE: /nonexistent/answer.tex cannot be read"),
    (("2.3", "-", "--variant", "nope"), "no variant 'nope'"),
])
def test_check_usage_errors_exit_2(args: tuple[str, ...], message: str):
    run = _check(*args, stdin="")
    assert run.returncode == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("page", ["docs/checking.md", "README.md"])
def test_the_documented_examples_are_what_the_command_prints(page: str):
    import re
    import shlex

    text = (ROOT / page).read_text()
    blocks = [b for b in re.findall(r"```console\n(.*?)```", text, re.S) if "derive check" in b]
    assert blocks, f"{page} shows no derive check example"
    runs = [r for b in blocks for r in re.split(r"^\$ ", b, flags=re.M)[1:]]
    assert runs
    for run in runs:
        command, _, expected = run.partition("\n")
        echo, _, derive = command.partition(" | ")
        answer = shlex.split(echo)[1]
        args = shlex.split(derive)[2:]
        assert _check(*args, stdin=answer + "\n").stdout == expected, command


def test_an_empty_file_name_is_one_line():
    run = subprocess.run([sys.executable, "-m", "derive", "check", "2.3", ""],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2
    assert run.stderr.strip() == ("derive: error: FILE: expected a file name or - for standard "
                                  "input, got an empty string")
