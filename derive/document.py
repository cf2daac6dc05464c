r"""The four sheets of the coursework, typeset: problems, solutions, notes, marking scheme.

The sections, their introductions, which question goes where and the points of each step
and result all come from the one registry, :data:`derive.questions.QUESTIONS`; a
registered question without a place in the documents is an error, not a silent omission.

- ``problems``: the coursework's questions as handed out (sections' introductions and each
  question's statement), no answers.
- ``solutions``: the coursework's answers (each question's own variant), every step
  justified, without the asides (model checks, the kernels' arrangement).
- ``notes``: everything else: the asides, the other variants, the learned prior and the
  implementation notes; every heading distinct.
- ``marking``: the points of each step and each result, from the registry.

Example:
    >>> tex = sheet_document("solutions")
    >>> tex.count(r"\subsection*{Question")
    7
"""

from __future__ import annotations

from collections.abc import Mapping

from codegen.environment import environment, tex_escape
from codegen.latex import (
    CourseworkLatexPrinter,
    LatexOptions,
    latex,
    render_derivation,
    render_document,
    result_latex,
    shown_results,
    shown_steps,
)

from .blocks import BLOCKS
from .derivation import Derivation, fill
from .gaussian_kl import PARAMETERIZATIONS
from .questions import QUESTIONS, Question, Section, marking

__all__ = ["SHEETS", "sheet_document", "solutions_document", "question_parts",
           "DocumentError"]

#: The sheets, with their titles.
SHEETS: dict[str, str] = {"problems": "Problems", "solutions": "Solutions", "notes": "Notes",
                          "marking": "Marking scheme"}
#: How a section beyond the coursework is marked in its title.
_BEYOND = " (beyond the coursework)"


class DocumentError(ValueError):
    """The registry cannot be laid out as a document (a question without a section)."""


def _intro(section: Section, options: LatexOptions) -> dict[str, object] | None:
    """The section's displayed equations, printed from the registry's SymPy values."""
    if section.introduction is None:
        return None
    intro = section.introduction()
    printer = CourseworkLatexPrinter(options=options, names=intro.names)
    return {"text": fill(intro.text, lambda key: f"${printer.doprint(intro.notes[int(key)])}$",
                         tex_escape),
            "equations": [(latex(lhs, vector=vector, options=options, names=intro.names),
                           latex(rhs, vector=vector, options=options, names=intro.names))
                          for lhs, rhs, vector in intro.equations]}


def _sections(questions: Mapping[str, Question]) -> dict[Section, list[Question]]:
    """The sections in first-use order, each with its questions; raise where one has none."""
    unplaced = [q.qid for q in questions.values() if q.section is None]
    if unplaced:
        raise DocumentError(
            f"question{'s' if len(unplaced) > 1 else ''} {', '.join(unplaced)} "
            f"{'have' if len(unplaced) > 1 else 'has'} no place in the solutions document: "
            "register each with a section (derive.questions.Section)")
    sections: dict[Section, list[Question]] = {}
    for q in questions.values():
        sections.setdefault(q.section, []).append(q)
    # the implementation notes (every variant) after the questions' own sections
    return dict(sorted(sections.items(), key=lambda item: item[0].every_variant))


def _section(number: str, title: str, intro: dict[str, object] | None = None) -> str:
    return environment().get_template("section.tex.jinja").render(
        number=number, title=title, intro=intro)


def _variant_label(q: Question, variant: str, d: Derivation, options: LatexOptions) -> str:
    """What tells a variant's heading apart: the scale it is written in (the blocks' titles
    name their block already)."""
    if variant in PARAMETERIZATIONS and len(q.variants) > 1:
        scale = latex(PARAMETERIZATIONS[variant].scale, options=options)
        return f", in terms of ${scale}$"
    if variant in BLOCKS or len(q.variants) < 2:
        return ""
    return f", variant {tex_escape(variant)}"


def _heading(q: Question, variant: str, d: Derivation, options: LatexOptions,
             what: str = "") -> str:
    return (f"Question {d.qid}{what}: {tex_escape(d.title)}"
            + _variant_label(q, variant, d, options))


def _coursework(questions: Mapping[str, Question]) -> dict[Section, list[Question]]:
    return {s: qs for s, qs in _sections(questions).items()
            if all(q.coursework for q in qs)}


def _problems(questions: Mapping[str, Question], options: LatexOptions) -> list[str]:
    parts = []
    for section, members in _coursework(questions).items():
        parts.append(_section(section.number, section.title, _intro(section, options)))
        parts += [render_derivation(q.derive(q.default), options=options, problem=True,
                                    show_variant=False) for q in members]
    return parts


def _solutions(questions: Mapping[str, Question], options: LatexOptions) -> list[str]:
    parts = []
    for section, members in _coursework(questions).items():
        parts.append(_section(section.number, section.title, _intro(section, options)))
        parts += [render_derivation(q.derive(q.default), options=options, part="answer",
                                    show_variant=False) for q in members]
    return parts


def _notes(questions: Mapping[str, Question], options: LatexOptions) -> list[str]:
    coursework = [q for q in questions.values() if q.coursework]
    parts = [_section("", "Beyond the answers: model checks and the kernels' form")]
    for q in coursework:
        d = q.derive(q.default)
        if any(s.aside for s in d.steps) or any(r.aside and r.typeset for r in d.results):
            parts.append(render_derivation(
                d, options=options, part="aside", show_variant=False,
                heading=_heading(q, q.default, d, options, ", beyond the answer")))
    parts.append(_section("", "The coursework's questions for the other blocks and scales"))
    for q in coursework:
        for v in q.variants[1:]:
            d = q.derive(v)
            parts.append(render_derivation(d, options=options, show_variant=False,
                                           heading=_heading(q, v, d, options)))
    for section, members in _sections(questions).items():
        if all(q.coursework for q in members):
            continue
        parts.append(_section(section.number, section.title + (_BEYOND if section.beyond
                                                                 else ""),
                              _intro(section, options)))
        for q in members:
            for v in q.variants:
                d = q.derive(v)
                parts.append(render_derivation(d, options=options, show_variant=False,
                                               heading=_heading(q, v, d, options)))
    return parts


def _marking(questions: Mapping[str, Question], options: LatexOptions) -> list[str]:
    template = environment().get_template("marking.tex.jinja")
    parts = []
    for section, members in _coursework(questions).items():
        parts.append(_section(section.number, section.title))
        for q in members:
            d = q.derive(q.default)
            printer = CourseworkLatexPrinter(options=options,
                                             names=d.data.get("latex_names", {}))
            marks = {(m.kind, m.key): m.points for m in marking(q.qid, questions)}
            steps = [{"number": str(k), "points": marks[("step", str(k))],
                      "reason": fill(step.reason,
                                     lambda key, s=step, p=printer:
                                     f"${p.doprint(s.notes[int(key)])}$", tex_escape)}
                     for k, step in shown_steps(d, "answer")]
            results = [{"description": tex_escape(r.description),
                        "points": marks[("result", r.name)],
                        "latex": result_latex(r, printer)}
                       for r in shown_results(d, "answer")]
            parts.append(template.render(
                heading=f"Question {d.qid}: {tex_escape(d.title)}", steps=steps,
                results=results, total=sum(marks.values())))
    return parts


_BUILDERS = {"problems": _problems, "solutions": _solutions, "notes": _notes,
             "marking": _marking}


def question_parts(options: LatexOptions | None = None,
                   questions: Mapping[str, Question] | None = None,
                   sheet: str = "solutions") -> list[str]:
    """A sheet's body: its sections and questions, rendered."""
    if sheet not in SHEETS:
        raise DocumentError(f"unknown sheet {sheet!r}; one of: {', '.join(SHEETS)}")
    questions = QUESTIONS if questions is None else questions
    _sections(questions)  # every question has a place
    return _BUILDERS[sheet](questions, options or LatexOptions())


def sheet_document(sheet: str, options: LatexOptions | None = None, command: str = "",
                   questions: Mapping[str, Question] | None = None) -> str:
    """One sheet (:data:`SHEETS`) as a complete LaTeX document."""
    parts = question_parts(options, questions, sheet)
    return render_document(parts, title=SHEETS[sheet], options=options, command=command)


def solutions_document(options: LatexOptions | None = None, command: str = "",
                       questions: Mapping[str, Question] | None = None) -> str:
    """The solutions sheet: the coursework's answers."""
    return sheet_document("solutions", options, command, questions)

