r"""The questions the engine answers, by id, each with its variants.

Example:
    >>> sorted(QUESTIONS)[:3]
    ['1.1', '1.2', '1.3']
    >>> build("1.3", "coupling_additive").result("log_abs_det")
    0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .blocks import BLOCKS, QUESTION_BLOCK
from .coupling import derive_arrangement, derive_determinant, derive_inverse, derive_jacobian
from .derivation import Derivation
from .free_energy import derive_free_energy, derive_kl_factorization
from .gaussian_kl import (
    PARAMETERIZATIONS,
    derive_gradient_estimators,
    derive_kl,
    derive_stable_kl,
)

__all__ = ["Question", "QUESTIONS", "UnknownQuestionError", "build", "all_derivations"]


class UnknownQuestionError(LookupError):
    """An unknown question id or variant; the message lists the known ones."""


@dataclass(frozen=True)
class Question:
    """A question id, its title, its variants (the first is the question's own)."""

    qid: str
    title: str
    variants: tuple[str, ...]
    derive: Callable[[str], Derivation]

    @property
    def default(self) -> str:
        return self.variants[0]


def _blocks() -> tuple[str, ...]:
    return (QUESTION_BLOCK,) + tuple(b for b in BLOCKS if b != QUESTION_BLOCK)


QUESTIONS: dict[str, Question] = {
    "1.1": Question("1.1", "Invert the coupling block", _blocks(),
                    lambda v: derive_inverse(BLOCKS[v])),
    "1.2": Question("1.2", "The Jacobian as a 2x2 block matrix", _blocks(),
                    lambda v: derive_jacobian(BLOCKS[v])),
    "1.3": Question("1.3", "The determinant; volume preservation", _blocks(),
                    lambda v: derive_determinant(BLOCKS[v])),
    "1.3n": Question("1.3n", "The coupling kernels arranged for floating point", _blocks(),
                     lambda v: derive_arrangement(BLOCKS[v])),
    "2.1": Question("2.1", "The free energy is log p(x) minus the KL to the posterior",
                    ("",), lambda v: derive_free_energy()),
    "2.2": Question("2.2", "The KL term decomposes over dimensions", ("",),
                    lambda v: derive_kl_factorization()),
    "2.3": Question("2.3", "The Gaussian KL in closed form", tuple(PARAMETERIZATIONS),
                    lambda v: derive_kl(PARAMETERIZATIONS[v])),
    "2.3n": Question("2.3n", "The KL and its gradient arranged for floating point",
                     tuple(PARAMETERIZATIONS), lambda v: derive_stable_kl(PARAMETERIZATIONS[v])),
    "2.4": Question("2.4", "Reparameterized and sticking-the-landing gradients",
                    tuple(PARAMETERIZATIONS),
                    lambda v: derive_gradient_estimators(PARAMETERIZATIONS[v])),
}


def build(qid: str, variant: str | None = None) -> Derivation:
    """The derivation of question ``qid`` (for ``variant``, default the question's own).

    Raises :class:`UnknownQuestionError` naming the known ids or variants.
    """
    question = QUESTIONS.get(qid)
    if question is None:
        raise UnknownQuestionError(
            f"unknown question {qid!r}; known questions: {', '.join(QUESTIONS)}")
    variant = variant or question.default
    if variant not in question.variants:
        known = ", ".join(v for v in question.variants if v)
        raise UnknownQuestionError(
            f"question {qid} has no variant {variant!r}; "
            + (f"known variants: {known}" if known else "it has no variants"))
    return question.derive(variant)


def all_derivations() -> list[Derivation]:
    """Every question in every variant, in a fixed order."""
    return [q.derive(v) for q in QUESTIONS.values() for v in q.variants]
