r"""A worked example of material outside the engine, written against ``derive.api`` alone.

It adds three coupling blocks (:mod:`.blocks`): one with a shift vector of its own, one
that is monotone but not affine, and one bin of a rational-quadratic spline (monotone on
its bin only); and questions about them, each with its derivation, its
place in the solutions document, its kernels and (for E.1 and P.1) how ``derive check``
reads an answer. ``docs/adding-material.md`` walks through it. Generate it with::

    python -m derive generate --material examples.material --root OUT --package mykernels

Example:
    >>> sorted(MATERIAL.blocks)
    ['coupling_asinh', 'coupling_rq_bin', 'coupling_shifted']
    >>> MATERIAL.name, sorted(MATERIAL.questions)
    ('examples.material', ['E.1', 'E.2', 'P.1'])
"""

from __future__ import annotations

import sympy as sp

from derive.api import (
    Y1,
    Y2,
    Answers,
    F,
    G,
    Introduction,
    Material,
    Module,
    Quantity,
    Question,
    Section,
    coupling_kernels,
    derive_determinant,
    derive_inverse,
    i,
    s,
    to_vector,
    x1,
    x2,
)

from .blocks import BLOCKS
from .planar import OUTPUT, derive_planar, planar_module

__all__ = ["MATERIAL", "QUESTIONS", "SECTIONS"]

_NAMES = tuple(BLOCKS)


def _introduction() -> Introduction:
    """The section's opening: each block's equations, by component and as vectors."""
    equations = []
    for block in BLOCKS.values():
        equations += [(Y1[i], block.y1, False), (Y2[i], block.y2, False),
                      (to_vector(Y1[i]), to_vector(block.y1), True),
                      (to_vector(Y2[i]), to_vector(block.y2), True)]
    return Introduction("Two more coupling blocks: the first shifts the second half by a "
                        "parameter vector of its own, the second is monotone in the first "
                        "half but not affine. Component by component, and as vectors:",
                        tuple(equations))


def _kernels(variant: str) -> Module:
    """The kernels of a block: the engine's coupling kernels, its own parameters included."""
    return coupling_kernels(BLOCKS[variant], f"examples.material.blocks.BLOCKS[{variant!r}]",
                            package=None)


#: How ``derive check`` finds x1 and x2 in an answer's LaTeX (bold or not, indexed or not).
_X = r"(?:\\mathbf|\\boldsymbol|\\bm)?\{?x\}?_\{?"


def _inverse_answers(variant: str, d: object) -> Answers:
    """How ``derive check`` reads an answer to E.1: the two halves of the input."""
    return Answers("E.1", variant, (Quantity("x1", "the first half", (d.result("x1"),)),
                                    Quantity("x2", "the second half", (d.result("x2"),))), (),
                   ((_X + r"1(?:,?[ik])?\}?", ("x1",)), (_X + r"2(?:,?[ik])?\}?", ("x2",))),
                   index_form=True, x2=d.result("x2"),
                   symbols={"x_1": x1.base, "x_2": x2.base, "y_1": Y1, "y_2": Y2,
                            "s": s.base, "F(x_2)": F.base, "G(x_2)": G.base})


def _planar_answers(variant: str, d: object) -> Answers:
    """How ``derive check`` reads an answer to P.1: the Jacobian's entry (i, j) and the
    determinant. The symbols z, u, w, b need not be listed: the checker takes them from
    the results."""
    return Answers("P.1", variant, (
        Quantity("jacobian", "df_i/dz_j", (d.result("jacobian"),)),
        Quantity("det", "det(df/dz)", (d.result("det"),))), (),
        ((r"\\frac\{\\partialf_\{?i\}?\}\{\\partialz_\{?j\}?\}|J_\{?ij\}?", ("jacobian",)),
         (r"\\det.*", ("det",))),
        index_form=True)


#: The document's section for the example.
SECTIONS: dict[str, Section] = {
    "blocks": Section("E", "Two coupling blocks of an outside package", _introduction),
    "planar": Section("P", "The log-determinant of a planar flow", lambda: Introduction(
        "A planar flow maps each input to the vector whose i-th component is", (
            (sp.Indexed(sp.IndexedBase("f", real=True), i), OUTPUT, False),
            (to_vector(sp.Indexed(sp.IndexedBase("f", real=True), i)), to_vector(OUTPUT),
             True)))),
}

QUESTIONS: dict[str, Question] = {
    "E.1": Question("E.1", "Invert the example blocks", _NAMES,
                    lambda v: derive_inverse(BLOCKS[v]).numbered("E.1"), SECTIONS["blocks"],
                    points={"x2": 2, "x1": 3}, step_points=1, answers=_inverse_answers),
    "E.2": Question("E.2", "The example blocks' log-determinants", _NAMES,
                    lambda v: derive_determinant(BLOCKS[v]).numbered("E.2"),
                    SECTIONS["blocks"], kernels=_kernels,
                    points={"det": 2, "log_abs_det": 2, "volume_condition": 3}, step_points=1),
    "P.1": Question("P.1", "The log-determinant of a planar flow", ("",),
                    lambda v: derive_planar(), SECTIONS["planar"],
                    kernels=lambda v: planar_module(),
                    points={"jacobian": 2, "det": 3}, step_points=1, answers=_planar_answers),
}

#: What ``derive ... --material examples.material`` loads.
MATERIAL = Material("examples.material", blocks=BLOCKS, questions=QUESTIONS, sections=SECTIONS)
