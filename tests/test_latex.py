"""The LaTeX: it compiles with a real TeX engine, and its results parse back to the derivation."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import sympy as sp

from codegen.latex import LatexOptions, latex, render_derivation
from derive import build
from derive.coursework.questions import QUESTIONS
from derive.document import solutions_document
from derive.pdf import INSTALL_HINT

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


def _preamble_and_body(tex: str) -> tuple[str, str]:
    head, rest = tex.split("\\begin{document}\n", 1)
    body, tail = rest.rsplit("\\end{document}", 1)
    assert tail.strip() == ""
    return re.sub(r"\\title\{[^\n]*\}\n", "", head), body


@needs_tex
def test_every_standalone_fragment_compiles(tmp_path):
    """Every question's standalone fragment, in every variant: each one's preamble is the
    same but for its title, so one document holds the first preamble and every body, page
    by page (one TeX run: compiling 36 documents took 18 s of the suite)."""
    fragments = [render_derivation(q.derive(v), standalone=True)
                 for q in QUESTIONS.values() for v in q.variants]
    parts = [_preamble_and_body(tex) for tex in fragments]
    assert len({head for head, _ in parts}) == 1, "the fragments' preambles differ"
    first = fragments[0].split("\\begin{document}\n", 1)[0]
    _compile(first + "\\begin{document}\n"
             + "\\clearpage\n".join(body for _, body in parts) + "\\end{document}\n",
             tmp_path)


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
    from derive.coursework.blocks import BLOCKS

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
    (re.compile(r"\\log (\\?\w+(?:_\w)?(?:\^\{\d+\})?)"), r"\\log(\1)"),  # log sigma^2
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
    lhs = latex(next(r.lhs for r in d.results if r.name == name), names=d.latex_names)
    boxed = [_one_line(b) for b in re.findall(r"\\boxed\{(.*)\}", render_derivation(d))]
    tex = next(b for b in boxed if b.startswith(lhs + " = "))[len(lhs) + 3:]
    try:
        parsed = _parse(tex)
    except ImportError as err:  # the antlr4 runtime must be 4.11 for SymPy 1.14
        pytest.skip(f"parse_latex unavailable: {err}")
    difference = sp.expand_log(_names(parsed) - _names(expr), force=True)  # log sigma^2
    assert sp.simplify(difference) == 0, (tex, parsed)


# --- the four sheets (issue 22) ---------------------------------------------------------

SHEET_NAMES = ("problems", "solutions", "notes", "marking")


def _sheet(name: str) -> str:
    return (ROOT / "generated" / f"{name}.tex").read_text()


@needs_tex
@pytest.mark.parametrize("name", SHEET_NAMES)
def test_each_sheet_compiles_without_overfull_boxes(name, tmp_path):
    log = _compile(_sheet(name), tmp_path)
    overfull = [line for line in log.splitlines() if line.startswith("Overfull \\hbox")]
    assert not overfull, overfull
    pages = int(re.search(r"Output written on doc\.pdf \((\d+) pages?", log).group(1))
    if name == "solutions":
        assert pages <= 15, pages


def test_the_solutions_are_the_coursework_only_without_tool_internals():
    tex = _sheet("solutions")
    headings = re.findall(r"\\subsection\*\{Question ([\d.]+\w*)", tex)
    assert headings == ["1.1", "1.2", "1.3", "2.1", "2.2", "2.3", "2.4"]
    for phrase in ("Variant:", "Generated by the derive engine", "sympy", "SymPy",
                   "for the kernels", "linear-Gaussian model", r"\epsilon_i \sigma_i + \mu_i &= "
                   r"\epsilon_i \sigma_i + \mu_i"):
        assert phrase not in tex, phrase
    # human term order and the course's form of 2.3
    assert r"\left(y_{1,i} - \mathcal{F}_{i}(x_2)\right)" in tex
    assert r"- \mu_i + z_i" not in tex and r"\left(z_i - \mu_i\right)^{2}" in tex
    assert (r"\frac{1}{2} \left(\mu_i^{2} + \sigma_i^{2} - 1 - \log \sigma_i^{2}\right)"
            in tex)


def test_the_problems_hold_no_answers():
    tex = _sheet("problems")
    assert tex.count(r"\subsection*{Question") == 7
    for needle in (r"\boxed", "Answer", "Results", r"\intertext"):
        assert needle not in tex, needle
    for qid in ("1.1", "1.3", "2.3"):  # none of the result formulas
        d = build(qid)
        for r in d.results:
            assert latex(r.expr, names=d.latex_names) not in tex, (qid, r.name)


def test_the_notes_hold_the_rest_under_distinct_headings():
    tex = _sheet("notes")
    headings = re.findall(r"\\subsection\*\{(.*)\}", tex)
    assert len(headings) == len(set(headings)), [h for h in headings if headings.count(h) > 1]
    for qid in ("1.3n", "2.3n", "2.3c", "2.3p", "2.4p", "2.1, beyond the answer",
                "2.4, beyond the answer"):
        assert f"Question {qid}" in tex, qid
    assert "linear-Gaussian model" in tex  # 2.1's model check lives here


def test_the_marking_scheme_gives_the_registry_points():
    from derive.loader import marking

    tex = _sheet("marking")
    for qid in ("1.1", "1.2", "1.3", "2.1", "2.2", "2.3", "2.4"):
        total = sum(m.points for m in marking(qid))
        assert total > 0 and f"Total: {total} points." in tex, qid


# --- the engine-level printing defects (issue 22) ----------------------------------------

def test_a_sum_prints_its_own_bounds():
    i, n = sp.Symbol("i", integer=True), sp.Symbol("n", integer=True, positive=True)
    s = sp.IndexedBase("s")
    # components are numbered from 0 in the engine, from 1 in coursework
    assert latex(sp.Sum(s[i], (i, 0, n - 1))) == r"\sum_{i=1}^{n} s_{i}"
    assert latex(sp.Sum(s[i], (i, n, 2 * n - 1))) == r"\sum_{i=n + 1}^{2 n} s_{i}"
    assert r"\prod_{i=n + 1}^{2 n}" in latex(sp.Product(s[i], (i, n, 2 * n - 1)))


def test_the_derivative_of_a_sum_is_parenthesized():
    a, b, x = sp.symbols("a b x")
    assert latex(sp.Derivative(a + b, x)) == r"\frac{\partial}{\partial x}\left(a + b\right)"
    assert latex(sp.Derivative(a, x)) == r"\frac{\partial a}{\partial x}"


def test_an_element_wise_quotient_keeps_its_denominator_whole():
    from derive.vocabulary import G

    u = sp.exp(-sp.Abs(G + 2))
    printed = latex(u / (1 + u), vector=True)
    assert printed.startswith(r"\frac{") and "} / " not in printed, printed
    assert r"+ 1}" in printed or r"1 + " in printed


def test_the_bar_goes_over_the_letter_not_its_subscript():
    names = {"t": "t_i", "mu_p": r"\mu_{p,i}"}
    assert latex(sp.Symbol("t_stl"), names=names) == r"\bar{t}_{i}^{\mathrm{STL}}"
    assert latex(sp.Symbol("mu_p_bar"), names=names) == r"\bar{\mu}_{p,i}"
    tex = _sheet("solutions")
    assert r"\bar{t_i}" not in tex and r"\bar{t}_{i}^{\mathrm{STL}}" in tex


def test_a_bar_in_prose_is_a_bar_not_a_dash():
    from codegen.environment import tex_escape

    assert tex_escape("p(z|x) and ||") == r"p(z\textbar{}x) and \textbar{}\textbar{}"
    for name in SHEET_NAMES:
        assert "p(z|x)" not in _sheet(name)


def test_human_term_order():
    from derive.vocabulary import F, y1

    assert latex(y1 - F).startswith("y_{1,i} - ")
    mu, z, sigma = sp.symbols("mu z sigma", positive=True)
    assert latex((z - mu) ** 2) == r"\left(z - \mu\right)^{2}"
    assert latex(mu**2 + sigma**2 - 1 - sp.log(sigma**2)) == (
        r"\mu^{2} + \sigma^{2} - 1 - \log \sigma^{2}")


def test_a_short_right_hand_side_stays_with_its_relation_in_a_sentence():
    q13 = render_derivation(build("1.3"))
    assert r"=\nobreak 0$" in q13


def _prose(tex: str) -> list[str]:
    """The lines of a sheet's prose: displayed and inline math, TikZ pictures, comments,
    commands and possessives removed."""
    tex = re.sub(r"\\begin\{(align\*?|equation\*?|gather\*?|tikzpicture)\}.*?\\end\{\1\}", "",
                 tex, flags=re.S)
    tex = re.sub(r"\\\[.*?\\\]", "", tex, flags=re.S)
    tex = re.sub(r"\$[^$]*\$", "", tex)
    lines = []
    for line in tex.splitlines():
        if line.lstrip().startswith("%"):
            continue
        line = re.sub(r"\\[a-zA-Z]+(\[[^]]*\])?(\{[^}]*\})?", "", line)
        lines.append(re.sub(r"'s\b", "", line.replace("\u2019s", "")))
    return lines


@pytest.mark.parametrize("sheet", ["problems", "solutions", "notes", "marking"])
def test_no_bare_identifier_in_a_sheets_prose(sheet):
    """A symbol in prose is typeset as math: "from $q$ to the posterior", never "from q to"
    (a one-letter word other than "a", "A" or "I", or a Greek letter's name, outside math)."""
    from .conftest import ROOT

    bare = re.compile(r"(?<![\w\\.])([b-zB-HJ-Z]|sigma|mu|logvar|rho|lambda)(?![\w])")
    lines = _prose((ROOT / "generated" / f"{sheet}.tex").read_text())
    found = [line.strip() for line in lines if bare.search(line)]
    assert not found, f"{sheet}.tex: bare identifiers in prose: {found[:5]}"


def test_bare_identifiers_are_found_where_they_are():
    """The check above can fail: an identifier outside math is found, one inside is not."""
    assert _prose("over q, the KL")[0] == "over q, the KL"
    bare = re.compile(r"(?<![\w\\.])([b-zB-HJ-Z])(?![\w])")
    assert bare.search(_prose("over q, the KL")[0])
    assert not bare.search(_prose("over $q$, the KL's value")[0])


def test_a_statement_types_its_notes_as_math_and_refuses_a_missing_note():
    from derive.api import Derivation, Result

    q = sp.Symbol("q")
    d = Derivation("9.9", "Notes", "Minimize over {0}.", [], [Result("v", q)],
                   conclusion="{v} is the value at {0}.", notes=(q,))
    assert "Minimize over $q$." in render_derivation(d)
    assert "Minimize over q." in str(d)
    with pytest.raises(ValueError, match="statement refers to notes"):
        Derivation("9.9", "Notes", "Minimize over {1}.", [], [Result("v", q)], notes=(q,))
