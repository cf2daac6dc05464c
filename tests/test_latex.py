"""The LaTeX: it compiles with a real TeX engine, and its results parse back to the derivation."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import sympy as sp

from codegen.latex import LatexOptions, latex, render_derivation
from derive import build
from derive.document import solutions_document
from derive.pdf import INSTALL_HINT
from derive.questions import QUESTIONS

from .conftest import ROOT

PDFLATEX = shutil.which("pdflatex")
needs_tex = pytest.mark.skipif(PDFLATEX is None, reason=f"skipped, {INSTALL_HINT}")


def _compile(tex: str, folder) -> str:
    source = folder / "doc.tex"
    source.write_text(tex)
    run = subprocess.run([PDFLATEX, "-halt-on-error", "-interaction=nonstopmode", "doc.tex"],
                         cwd=folder, capture_output=True, text=True, timeout=300)
    log = run.stdout
    errors = [line for line in log.splitlines() if line.startswith("!")]
    assert run.returncode == 0, "\n".join(errors)
    assert "Undefined control sequence" not in log
    assert (folder / "doc.pdf").stat().st_size > 1000
    return log


@needs_tex
def test_solutions_document_compiles(tmp_path):
    _compile((ROOT / "generated" / "solutions.tex").read_text(), tmp_path)


@needs_tex
def test_every_standalone_fragment_compiles(tmp_path):
    for q in QUESTIONS.values():
        for variant in q.variants:
            folder = tmp_path / f"{q.qid}-{variant or 'default'}"
            folder.mkdir()
            _compile(render_derivation(q.derive(variant), standalone=True), folder)


def test_the_document_is_what_generate_writes():
    from derive.files import COMMAND

    on_disk = (ROOT / "generated" / "solutions.tex").read_text()
    assert solutions_document(command=COMMAND) == on_disk


def test_coursework_notation():
    tex = (ROOT / "generated" / "solutions.tex").read_text()
    for needle in (r"\circ", r"\operatorname{diag}", r"\begin{bmatrix}", r"\exp\left(",
                   r"\mathbb{E}_{q}", r"D_{\mathrm{KL}}", r"\mu_i", r"\sigma_i", r"\epsilon_i",
                   r"\begin{tikzpicture}", r"\boxed{", r"\intertext{", r"\sum_{i=1}^{n}"):
        assert needle in tex, needle
    for raw in ("epsilon_i", "mu0", "sigma_0", "log_p", "KL_i", "x1_", "_bar", "_stl"):
        assert raw not in tex.replace(r"\epsilon_i", "").replace(r"\log p", ""), raw
    # no code identifier in the prose: an escaped underscore appears only in variant names
    from derive.blocks import BLOCKS

    for name in BLOCKS:
        tex = tex.replace(r"\texttt{" + name.replace("_", r"\_") + "}", "")
    prose_underscores = re.findall(r"\w*\\_\w*", tex)
    assert not prose_underscores, prose_underscores


def test_odot_option():
    d = build("1.2")
    assert r"\odot" in render_derivation(d, options=LatexOptions(hadamard=r"\odot"))
    assert r"\odot" not in render_derivation(d)


def test_volume_verdict_and_estimator_statements_are_typeset():
    q13 = render_derivation(build("1.3"))
    assert "Not volume preserving in general" in q13
    assert r"\sum_{i=1}^{n} \left(\mathcal{G}_{i}(x_2) + s_{i}\right) = 0" in q13  # one sum
    glow = render_derivation(build("1.3", "coupling_glow"))
    assert "Never volume preserving" in glow and r"\operatorname{softplus}" in glow
    assert "product of exponentials" not in glow and "product of exponentials" in q13
    q24 = render_derivation(build("2.4"))
    assert "unbiased" in q24 and r"\operatorname{Var}_{\epsilon_i}" in q24


def test_repr_latex_is_one_mathjax_display():
    out = build("1.2")._repr_latex_()
    assert out.startswith("$$\\begin{aligned}") and out.endswith("\\end{aligned}$$")
    assert "\\boxed{" in out


# --- parse the emitted LaTeX of every scalar result back -------------------------------

# Notation that parse_latex's grammar does not know, mapped to what it does; nothing else
# is changed.
_PARSEABLE = [
    (re.compile(r"\\mathcal\{(\w)\}_\{(\w)\}\(x_2\)"), r"\1_{\2}"),
    # a symbol before a parenthesized group is a product; parse_latex reads a call
    (re.compile(r"(\\[a-zA-Z]+_i) \\left\("), r"\1 \\cdot \\left("),
    (re.compile(r"\\log (\\?\w+(?:_\w)?)"), r"\\log(\1)"),
]


def _one_line(boxed: str) -> str:
    """A boxed result broken over aligned lines, put back on one line."""
    for old, new in ((r"\begin{aligned}", ""), (r"\end{aligned}", ""), (r" \\ &\quad ", " "),
                     (" &= ", " = ")):
        boxed = boxed.replace(old, new)
    return boxed


def _parse(tex: str) -> sp.Expr:
    from sympy.parsing.latex import parse_latex

    for pattern, repl in _PARSEABLE:
        tex = pattern.sub(repl, tex)
    return parse_latex(tex)


def _names(expr: sp.Expr) -> sp.Expr:
    """Map parsed symbols (mu_i, G_{i}, ...) and the derivation's (mu, G[i]) to one naming."""
    def key(name: str) -> str:
        return re.sub(r"[\\{}]", "", name).replace("_i", "").replace("lambda", "logvar") \
            .replace("epsilon", "eps")

    expr = expr.replace(lambda e: isinstance(e, sp.Indexed),
                        lambda e: sp.Symbol(str(e.base.label)))
    i, n = sp.Symbol("i"), sp.Symbol("n")
    expr = expr.replace(lambda e: isinstance(e, (sp.Sum, sp.Product)),
                        lambda e: e.func(e.function.xreplace({e.limits[0][0]: i}), (i, 1, n)))
    return expr.xreplace({s: sp.Symbol(key(s.name)) for s in expr.free_symbols})


@pytest.mark.parametrize("qid, variant, name", [
    ("2.3", "sigma", "kl"), ("2.3", "logvar", "kl"),
    ("2.4", "sigma", "grad_mu"), ("2.4", "sigma", "grad_sigma"),
    ("2.4", "logvar", "grad_logvar"), ("2.4", "sigma", "stl_sigma"),
    ("1.3", "coupling", "log_abs_det"), ("1.3", "coupling_affine", "log_abs_det"),
])
def test_scalar_results_parse_back(qid, variant, name):
    d = build(qid, variant)
    expr = d.result(name)
    # The boxed result exactly as the document prints it, right-hand side only.
    lhs = latex(next(r.lhs for r in d.results if r.name == name), names=d.data.get("latex_names"))
    boxed = [_one_line(b) for b in re.findall(r"\\boxed\{(.*)\}", render_derivation(d))]
    tex = next(b for b in boxed if b.startswith(lhs + " = "))[len(lhs) + 3:]
    try:
        parsed = _parse(tex)
    except ImportError as err:  # the antlr4 runtime must be 4.11 for SymPy 1.14
        pytest.skip(f"parse_latex unavailable: {err}")
    assert sp.simplify(_names(parsed) - _names(expr)) == 0, (tex, parsed)
