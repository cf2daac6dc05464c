r"""The solutions document: every question's derivation, typeset, in one LaTeX file.

The sections, their introductions and which question goes where all come from the one
registry, :data:`derive.questions.QUESTIONS`; a registered question without a place in the
document is an error, not a silent omission.

Example:
    >>> tex = solutions_document()
    >>> tex.count(r"\subsection*{Question") >= 8
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from codegen.environment import environment
from codegen.latex import LatexOptions, latex, render_derivation, render_document

from .questions import QUESTIONS, Question, Section

__all__ = ["solutions_document", "question_parts", "DocumentError"]

#: How a section beyond the coursework is marked in its title.
_BEYOND = " (beyond the coursework)"


class DocumentError(ValueError):
    """The registry cannot be laid out as a document (a question without a section)."""


#: How a part is typeset: ``(question, variant) -> LaTeX`` and ``section -> intro``; the
#: derivation cache (:mod:`derive.files`) passes its own, which derive only on a miss.
Rendered = Callable[[Question, str], str]
Intro = Callable[[Section], "dict[str, object] | None"]


def _intro(section: Section, options: LatexOptions) -> dict[str, object] | None:
    """The section's displayed equations, printed from the registry's SymPy values."""
    if section.introduction is None:
        return None
    intro = section.introduction()
    return {"text": intro.text,
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


def question_parts(options: LatexOptions | None = None,
                   questions: Mapping[str, Question] | None = None,
                   rendered: Rendered | None = None, intro: Intro | None = None) -> list[str]:
    """The document's body: sections, then the implementation notes and the variants.

    ``rendered`` and ``intro`` typeset a derivation and a section's introduction (default:
    derive and typeset with ``options``)."""
    options = options or LatexOptions()
    questions = QUESTIONS if questions is None else questions
    rendered = rendered or (lambda q, v: render_derivation(q.derive(v), options=options))
    intro = intro or (lambda section: _intro(section, options))
    template = environment().get_template("section.tex.jinja")
    parts = []
    for section, members in _sections(questions).items():
        parts.append(template.render(number=section.number,
                                     title=section.title + (_BEYOND if section.beyond else ""),
                                     intro=intro(section)))
        for q in members:
            variants = q.variants if section.every_variant else q.variants[:1]
            parts += [rendered(q, v) for v in variants]
    parts.append(template.render(number="", title="Appendix: the other variants", intro=None))
    for q in questions.values():
        if not q.section.every_variant:
            parts += [rendered(q, v) for v in q.variants[1:]]
    return parts


def solutions_document(options: LatexOptions | None = None, command: str = "",
                       questions: Mapping[str, Question] | None = None,
                       rendered: Rendered | None = None, intro: Intro | None = None) -> str:
    """The complete solutions document (of ``questions``, by default the registry);
    ``rendered`` and ``intro`` as for :func:`question_parts`."""
    return render_document(question_parts(options, questions, rendered, intro),
                           title="Solutions",
                           options=options, command=command)
