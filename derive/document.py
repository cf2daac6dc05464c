r"""The four sheets of the coursework, typeset: problems, solutions, notes, marking scheme.

The sections, their introductions, which question goes where and the points of each step
and result all come from the one registry, the material's (:func:`derive.loader.current`); a
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

from collections.abc import Callable, Mapping

from codegen.environment import environment, tex_escape
from codegen.latex import (
    CourseworkLatexPrinter,
    LatexOptions,
    latex,
    render_derivation,
    render_document,
    render_search,
    result_latex,
    shown_results,
    shown_steps,
)

from .derivation import Derivation, fill
from .loader import current, marking
from .material import Question, Section

__all__ = ["SHEETS", "KINDS", "sheet_document", "solutions_document", "question_parts",
           "part_kinds", "render_part", "deriving", "DocumentError"]

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
            "register each with a section (derive.api.Section)")
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
    material = current()
    if variant in material.parameterizations and len(q.variants) > 1:
        scale = latex(material.parameterizations[variant].scale, options=options)
        return f", in terms of ${scale}$"
    if material.is_block(variant) or len(q.variants) < 2:
        return ""
    return f", variant {tex_escape(variant)}"


def _heading(q: Question, variant: str, d: Derivation, options: LatexOptions,
             what: str = "") -> str:
    return (f"Question {d.qid}{what}: {tex_escape(d.title)}"
            + _variant_label(q, variant, d, options))


def _coursework(questions: Mapping[str, Question]) -> dict[Section, list[Question]]:
    return {s: qs for s, qs in _sections(questions).items()
            if all(q.coursework for q in qs)}


#: How a question's variant is typeset on the sheets: ``problem`` (its statement),
#: ``answer`` (the solutions' steps and results), ``aside`` (the notes' model checks and
#: the kernels' form: empty when it has none) and ``marking`` (its marking scheme), for a
#: coursework question's own variant; ``variant`` (the whole derivation, under a heading
#: that names the variant) for every other variant and every other question; ``search``
#: (the accuracy search's verdicts on its kernels, :mod:`derive.kernel_search`) for every
#: variant of a question that has kernels.
KINDS = ("problem", "answer", "aside", "marking", "variant", "search")

#: How a part is typeset: ``(question, variant, kind) -> LaTeX`` (:data:`KINDS`) and
#: ``section -> intro``; the derivation cache (:mod:`derive.files`) passes its own, which
#: derive only on a miss.
Rendered = Callable[[Question, str, str], str]
Intro = Callable[[Section], "dict[str, object] | None"]


def part_kinds(q: Question, variant: str) -> tuple[str, ...]:
    """The kinds (:data:`KINDS`) the sheets typeset of ``q``'s ``variant``."""
    search = ("search",) if q.kernels is not None else ()
    if q.coursework and variant == q.default:
        return KINDS[:4] + search
    return ("variant",) + search


def render_part(q: Question, variant: str, kind: str, d: Derivation,
                options: LatexOptions | None = None,
                questions: Mapping[str, Question] | None = None) -> str:
    """``q``'s ``variant`` (derived: ``d``) typeset as ``kind`` (:data:`KINDS`)."""
    options = options or LatexOptions()
    if kind == "problem":
        return render_derivation(d, options=options, problem=True, show_variant=False)
    if kind == "answer":
        return render_derivation(d, options=options, part="answer", show_variant=False)
    if kind == "aside":
        if any(s.aside for s in d.steps) or any(r.aside and r.typeset for r in d.results):
            return render_derivation(
                d, options=options, part="aside", show_variant=False,
                heading=_heading(q, variant, d, options, ", beyond the answer"))
        return ""
    if kind == "variant":
        return render_derivation(d, options=options, show_variant=False,
                                 heading=_heading(q, variant, d, options))
    if kind == "marking":
        return _marking_part(q, d, options, questions)
    if kind == "search":
        from .kernel_search import search_module

        module = q.kernels(variant)
        what = f", its kernels ({tex_escape(module.name)})"
        return render_search(search_module(module).verdicts,
                             _heading(q, variant, d, options, what), options, d.latex_names)
    raise DocumentError(f"unknown kind of part {kind!r}; one of: {', '.join(KINDS)}")


def _marking_part(q: Question, d: Derivation, options: LatexOptions,
                  questions: Mapping[str, Question] | None) -> str:
    printer = CourseworkLatexPrinter(options=options, names=d.latex_names)
    marks = {(m.kind, m.key): m.points for m in marking(q.qid, questions, derivation=d)}
    steps = [{"number": str(k), "points": marks[("step", str(k))],
              "reason": fill(step.reason,
                             lambda key, s=step, p=printer: f"${p.doprint(s.notes[int(key)])}$",
                             tex_escape)}
             for k, step in shown_steps(d, "answer")]
    results = [{"description": tex_escape(r.description),
                "points": marks[("result", r.name)],
                "latex": result_latex(r, printer)}
               for r in shown_results(d, "answer")]
    return environment().get_template("marking.tex.jinja").render(
        heading=f"Question {d.qid}: {tex_escape(d.title)}", steps=steps,
        results=results, total=sum(marks.values()))


def deriving(options: LatexOptions | None = None,
             questions: Mapping[str, Question] | None = None) -> Rendered:
    """A :data:`Rendered` that derives each question's variant once (however many kinds
    and sheets typeset it) and typesets it with ``options``."""
    derived: dict[tuple[str, str], Derivation] = {}

    def rendered(q: Question, variant: str, kind: str) -> str:
        if (q.qid, variant) not in derived:
            derived[q.qid, variant] = q.derive(variant)
        return render_part(q, variant, kind, derived[q.qid, variant], options, questions)

    return rendered


def _problems(questions: Mapping[str, Question], rendered: Rendered,
              intro: Intro) -> list[str]:
    parts = []
    for section, members in _coursework(questions).items():
        parts.append(_section(section.number, section.title, intro(section)))
        parts += [rendered(q, q.default, "problem") for q in members]
    return parts


def _solutions(questions: Mapping[str, Question], rendered: Rendered,
               intro: Intro) -> list[str]:
    parts = []
    for section, members in _coursework(questions).items():
        parts.append(_section(section.number, section.title, intro(section)))
        parts += [rendered(q, q.default, "answer") for q in members]
    return parts


def _notes(questions: Mapping[str, Question], rendered: Rendered, intro: Intro) -> list[str]:
    coursework = [q for q in questions.values() if q.coursework]
    parts = [_section("", "Beyond the answers: model checks and the kernels' form")]
    parts += [text for q in coursework if (text := rendered(q, q.default, "aside"))]
    parts.append(_section("", "The coursework's questions for the other blocks and scales"))
    for q in coursework:
        parts += [rendered(q, v, "variant") for v in q.variants[1:]]
    for section, members in _sections(questions).items():
        if all(q.coursework for q in members):
            continue
        parts.append(_section(section.number, section.title + (_BEYOND if section.beyond
                                                                 else ""),
                              intro(section)))
        for q in members:
            parts += [rendered(q, v, "variant") for v in q.variants]
    searched = [q for q in questions.values() if q.kernels is not None]
    if searched:
        parts.append(_section("", "The accuracy search at generate time"))
        for q in searched:
            parts += [rendered(q, v, "search") for v in q.variants]
    return parts


def _marking(questions: Mapping[str, Question], rendered: Rendered,
             intro: Intro) -> list[str]:
    parts = []
    for section, members in _coursework(questions).items():
        parts.append(_section(section.number, section.title))
        parts += [rendered(q, q.default, "marking") for q in members]
    return parts


_BUILDERS = {"problems": _problems, "solutions": _solutions, "notes": _notes,
             "marking": _marking}


def question_parts(options: LatexOptions | None = None,
                   questions: Mapping[str, Question] | None = None,
                   sheet: str = "solutions", rendered: Rendered | None = None,
                   intro: Intro | None = None) -> list[str]:
    """A sheet's body: its sections and questions, rendered.

    ``rendered`` and ``intro`` typeset a question's variant as a kind of part
    (:data:`KINDS`) and a section's introduction (default: derive and typeset with
    ``options``, each variant derived once: :func:`deriving`)."""
    if sheet not in SHEETS:
        raise DocumentError(f"unknown sheet {sheet!r}; one of: {', '.join(SHEETS)}")
    questions = current().questions if questions is None else questions
    _sections(questions)  # every question has a place
    options = options or LatexOptions()
    rendered = rendered or deriving(options, questions)
    intro = intro or (lambda section: _intro(section, options))
    return _BUILDERS[sheet](questions, rendered, intro)


def sheet_document(sheet: str, options: LatexOptions | None = None, command: str = "",
                   questions: Mapping[str, Question] | None = None,
                   rendered: Rendered | None = None, intro: Intro | None = None) -> str:
    """One sheet (:data:`SHEETS`) as a complete LaTeX document; ``rendered`` and ``intro``
    as for :func:`question_parts`."""
    parts = question_parts(options, questions, sheet, rendered, intro)
    return render_document(parts, title=SHEETS[sheet], options=options, command=command,
                           source=f"the questions of the material {current().name}")


def solutions_document(options: LatexOptions | None = None, command: str = "",
                       questions: Mapping[str, Question] | None = None,
                       rendered: Rendered | None = None, intro: Intro | None = None) -> str:
    """The solutions sheet: the coursework's answers."""
    return sheet_document("solutions", options, command, questions, rendered, intro)

