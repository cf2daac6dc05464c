r"""The solutions document: every question's derivation, typeset, in one LaTeX file.

Example:
    >>> tex = solutions_document()
    >>> tex.count(r"\subsection*{Question") >= 8
    True
"""

from __future__ import annotations

import sympy as sp

from codegen.environment import environment
from codegen.latex import LatexOptions, latex, render_derivation, render_document

from .blocks import BLOCKS, QUESTION_BLOCK
from .free_energy import derive_free_energy
from .questions import QUESTIONS
from .vocabulary import Y1, Y2, i, to_vector

__all__ = ["solutions_document", "question_parts"]

_SECTIONS = {
    "1": ("A reversible affine coupling block", ["1.1", "1.2", "1.3"]),
    "2": ("The variational free energy of a VAE", ["2.1", "2.2", "2.3", "2.4"]),
}
_NOTES = ["1.3n", "2.3n"]


def _intro(section: str, options: LatexOptions) -> dict[str, object]:
    """The displayed equations that open a section, all from specifications."""

    def pair(lhs: sp.Basic, rhs: sp.Basic, vector: bool = False) -> tuple[str, str]:
        return (latex(lhs, vector=vector, options=options),
                latex(rhs, vector=vector, options=options))

    if section == "1":
        block = BLOCKS[QUESTION_BLOCK]
        return {
            "text": "The block, for vectors of length n, with two arbitrary differentiable "
                    "functions of the second input (not element-wise in general) and a "
                    "parameter vector. Component by component, and as vectors:",
            "equations": [
                pair(Y1[i], block.y1), pair(Y2[i], block.y2),
                pair(to_vector(Y1[i]), to_vector(block.y1), vector=True),
                pair(to_vector(Y2[i]), to_vector(block.y2), vector=True),
            ],
        }
    first = derive_free_energy().steps[0]
    return {
        "text": "The free energy that training a VAE maximizes, with a standard normal prior "
                "and a fully factorized Gaussian posterior approximation:",
        "equations": [pair(first.lhs, first.rhs)],
    }


def question_parts(options: LatexOptions | None = None) -> list[str]:
    """The document's body: sections, then the implementation notes and the variants."""
    options = options or LatexOptions()
    env = environment()
    parts = []
    for number, (title, qids) in _SECTIONS.items():
        parts.append(env.get_template("section.tex.jinja").render(
            number=number, title=title, intro=_intro(number, options)))
        for qid in qids:
            q = QUESTIONS[qid]
            parts.append(render_derivation(q.derive(q.default), options=options))
    parts.append(env.get_template("section.tex.jinja").render(
        number="", title="Implementation notes: the kernels in floating point", intro=None))
    for qid in _NOTES:
        q = QUESTIONS[qid]
        parts += [render_derivation(q.derive(v), options=options) for v in q.variants]
    parts.append(env.get_template("section.tex.jinja").render(
        number="", title="Appendix: the other variants", intro=None))
    for q in QUESTIONS.values():
        if q.qid in _NOTES:
            continue
        parts += [render_derivation(q.derive(v), options=options) for v in q.variants[1:]]
    return parts


def solutions_document(options: LatexOptions | None = None, command: str = "") -> str:
    """The complete solutions document."""
    return render_document(question_parts(options), title="Solutions", options=options,
                           command=command)
