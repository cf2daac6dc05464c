r"""The coupling blocks the engine ships: each is its two equations and nothing more.

To add a block, write its ``i``-th components with the symbols of
:mod:`derive.vocabulary` and add it to :data:`BLOCKS`; ``derive generate`` then derives
it and writes ``generated/<name>.py``.

Example:
    >>> sorted(BLOCKS)
    ['coupling', 'coupling_additive', 'coupling_affine', 'coupling_glow', 'coupling_soft_clamp']
"""

from __future__ import annotations

from sympy import Integer, atan, exp, pi

from derive.api import CouplingBlock, F, G, s, x1, x2

__all__ = ["BLOCKS", "QUESTION_BLOCK", "SOFT_CLAMP"]

#: FrEIA's clamp constant: the soft-clamped scale stays in (exp(-c), exp(c)).
SOFT_CLAMP = Integer(2)

_BLOCKS = [
    CouplingBlock(
        "coupling", "the question's affine coupling block",
        y1=exp(G) * x1 + F, y2=exp(s) * x2,
        summary="Equation (1) of question 1: an affine coupling with a learned scale exp(s) "
                "on x2.",
    ),
    CouplingBlock(
        "coupling_affine", "RealNVP's affine coupling block",
        y1=exp(G) * x1 + F, y2=x2,
        summary="The affine coupling of RealNVP (Dinh et al., 2017): x2 passes unchanged.",
    ),
    CouplingBlock(
        "coupling_additive", "NICE's additive coupling block",
        y1=x1 + F, y2=x2,
        summary="The additive coupling of NICE (Dinh et al., 2015): volume preserving.",
    ),
    CouplingBlock(
        "coupling_glow", "Glow's affine coupling block",
        y1=x1 / (1 + exp(-(G + 2))) + F, y2=x2,
        summary="The affine coupling of Glow (Kingma and Dhariwal, 2018) as its code has it: "
                "the scale is sigmoid(G + 2), in (0, 1).",
    ),
    CouplingBlock(
        "coupling_soft_clamp", "FrEIA's soft-clamped affine coupling block",
        y1=exp(SOFT_CLAMP * 2 / pi * atan(G / SOFT_CLAMP)) * x1 + F, y2=x2,
        summary="The affine coupling of FrEIA (Ardizzone et al.) with its soft clamp: the "
                "log-scale is c * 2/pi * atan(G/c), c = 2, so the scale stays in "
                "(exp(-c), exp(c)).",
    ),
]

#: Every shipped block, by name.
BLOCKS: dict[str, CouplingBlock] = {b.name: b for b in _BLOCKS}
#: The block question 1 asks about.
QUESTION_BLOCK = "coupling"
