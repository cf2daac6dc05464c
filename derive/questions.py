r"""The one registry of questions: each entry says everything the engine needs about it.

A :class:`Question` carries its variants, how to derive each, where it sits in the
solutions document (a :class:`Section`, which carries the section's introduction), and
which kernel module it produces per variant. ``derive/files.py`` (which modules to write),
``derive/document.py`` and ``derive/notebook.py`` read this registry and nothing else, so
a question registered here appears everywhere or the build says why it cannot.

Example:
    >>> sorted(QUESTIONS)[:3]
    ['1.1', '1.2', '1.3']
    >>> build("1.3", "coupling_additive").result("log_abs_det")
    0
    >>> [m.name for m in kernel_modules()][:2]
    ['coupling', 'coupling_affine']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sympy as sp

from .blocks import BLOCKS, QUESTION_BLOCK
from .coupling import derive_arrangement, derive_determinant, derive_inverse, derive_jacobian
from .derivation import Derivation
from .free_energy import derive_free_energy, derive_kl_factorization
from .gaussian_kl import (
    PARAMETERIZATIONS,
    derive_chain_factors,
    derive_gradient_estimators,
    derive_kl,
    derive_stable_kl,
    derive_stable_kl_pair,
    learned_prior,
)
from .kernels import coupling_module, gaussian_kl_module, gaussian_kl_pair_module
from .spec import Module
from .vocabulary import Y1, Y2, i, n, to_vector

__all__ = ["Question", "QUESTIONS", "Section", "SECTIONS", "Introduction", "Mark",
           "UnknownQuestionError", "build", "resolve", "all_derivations", "kernel_modules",
           "marking", "is_block"]


class UnknownQuestionError(LookupError):
    """An unknown question id or variant; the message lists the known ones."""


@dataclass(frozen=True)
class Introduction:
    r"""The sentence and displayed equations that open a section.

    ``equations`` are ``(lhs, rhs, vector)`` triples of SymPy values; ``vector`` asks for
    the element-wise vector notation; ``names`` maps symbol names to LaTeX (``mu_p`` to
    ``\mu_{p,i}``), as a derivation's ``latex_names`` do.
    """

    text: str
    equations: tuple[tuple[sp.Basic, sp.Basic, bool], ...]
    names: Mapping[str, str] | None = None
    #: expressions the text refers to as ``{0}``, ``{1}``, ... (printed as math)
    notes: tuple[sp.Basic, ...] = ()


@dataclass(frozen=True)
class Section:
    """A section of the solutions document.

    Arguments:
        number: the question number it shows ("1"), or "" for an unnumbered section.
        title: its title.
        introduction: what opens it, built on demand (None: nothing).
        every_variant: show every variant of its questions here (the implementation notes),
            rather than the question's own variant here and the others in the appendix.
        beyond: marks a section beyond the coursework.
    """

    number: str
    title: str
    introduction: Callable[[], Introduction] | None = None
    every_variant: bool = False
    beyond: bool = False


@dataclass(frozen=True)
class Question:
    """A question: id, title, variants (the first is the question's own), how to derive
    each, its place in the document, and the kernel module it produces per variant."""

    qid: str
    title: str
    variants: tuple[str, ...]
    derive: Callable[[str], Derivation]
    section: Section | None = None
    kernels: Callable[[str], Module] | None = None
    #: The marking scheme, the one place it is defined: points per result of the answer
    #: (by result name; every result the solutions show has an entry) ...
    points: Mapping[str, int] = field(default_factory=dict)
    #: ... and points per step of the answer (each step the solutions show).
    step_points: int = 0

    @property
    def default(self) -> str:
        return self.variants[0]

    @property
    def coursework(self) -> bool:
        """Whether the question is part of the coursework (a numbered section's own)."""
        return (self.section is not None and bool(self.section.number)
                and not self.section.every_variant and not self.section.beyond)


@dataclass(frozen=True)
class Mark:
    """One line of the marking scheme: a step (``kind="step"``, ``key`` its number in the
    derivation) or a result (``kind="result"``, ``key`` its name), and its points."""

    kind: str
    key: str
    points: int


def marking(qid: str, questions: Mapping[str, Question] | None = None,
            derivation: Derivation | None = None) -> list[Mark]:
    """The marking scheme of a question's own variant: each step of the answer (the steps
    the solutions show: no asides), then each result, with its points from the registry
    (``derivation``: the own variant's, when already derived).

    The one place points are defined: the marking sheet and ``derive check`` (its scores,
    partial credit and ``--gradescope``, :func:`derive.check.batch.points`) read them.

    Example:
        >>> [(m.kind, m.key, m.points) for m in marking("1.1")]
        [('step', '1', 1), ('step', '2', 1), ('result', 'x2', 2), ('result', 'x1', 3)]
    """
    questions = QUESTIONS if questions is None else questions
    q = questions[qid]
    d = build(qid, questions=questions) if derivation is None else derivation
    marks = [Mark("step", str(k), q.step_points)
             for k, step in enumerate(d.steps, start=1) if not step.aside]
    shown = [r.name for r in d.results if r.typeset and not r.aside]
    missing = [name for name in shown if name not in q.points]
    unknown = [name for name in q.points if name not in shown]
    if missing or unknown:
        raise ValueError(f"question {qid}: points for results {unknown} it does not show"
                         if unknown else f"question {qid}: no points for results {missing}")
    return marks + [Mark("result", name, q.points[name]) for name in shown]


def _coupling_introduction() -> Introduction:
    block = BLOCKS[QUESTION_BLOCK]
    return Introduction(
        "The block, for vectors of length {0}, with two arbitrary differentiable functions of "
        "the second input (not element-wise in general) and a parameter vector. Component "
        "by component, and as vectors:",
        ((Y1[i], block.y1, False), (Y2[i], block.y2, False),
         (to_vector(Y1[i]), to_vector(block.y1), True),
         (to_vector(Y2[i]), to_vector(block.y2), True)), notes=(n,))


def _vae_introduction() -> Introduction:
    first = derive_free_energy().steps[0]
    return Introduction(
        "The free energy that training a VAE maximizes, with a standard normal prior and a "
        "fully factorized Gaussian posterior approximation:",
        ((first.lhs, first.rhs, False),))


def _prior_introduction() -> Introduction:
    kl = derive_kl(PARAMETERIZATIONS["sigma"], learned_prior(PARAMETERIZATIONS["sigma"]))
    log_prior = kl.steps[1].notes[1]  # the prior's log-density, as 2.3p states it
    return Introduction(
        "Conditional and hierarchical VAEs learn the prior too: each of its factors is a "
        "Gaussian with a mean and a scale of its own. Questions 2.3 and 2.4 again, for the "
        "prior factor", ((log_prior.lhs, log_prior.rhs, False),), kl.data["latex_names"])


#: The document's sections, in order (the appendix of other variants follows them).
SECTIONS: dict[str, Section] = {
    "coupling": Section("1", "A reversible affine coupling block", _coupling_introduction),
    "vae": Section("2", "The variational free energy of a VAE", _vae_introduction),
    "prior": Section("", "A learned Gaussian prior", _prior_introduction, beyond=True),
    "notes": Section("", "Implementation notes: the kernels in floating point",
                     every_variant=True),
}


def is_block(variant: str) -> bool:
    """Whether ``variant`` names a coupling block (its derivations' titles name it).

    The sheets ask here rather than import the blocks: a cached part's key holds the
    variant's block by value (``derive/files.py``), so this answer is in the key."""
    return variant in BLOCKS


def _blocks() -> tuple[str, ...]:
    return (QUESTION_BLOCK,) + tuple(b for b in BLOCKS if b != QUESTION_BLOCK)


def _coupling_kernels(variant: str) -> Module:
    return coupling_module(BLOCKS[variant])


def _kl_kernels(variant: str) -> Module:
    return gaussian_kl_module(PARAMETERIZATIONS[variant])


def _kl_pair_kernels(variant: str) -> Module:
    return gaussian_kl_pair_module(PARAMETERIZATIONS[variant])


QUESTIONS: dict[str, Question] = {
    "1.1": Question("1.1", "Invert the coupling block", _blocks(),
                    lambda v: derive_inverse(BLOCKS[v]), SECTIONS["coupling"],
                    points={"x2": 2, "x1": 3}, step_points=1),
    "1.2": Question("1.2", "The Jacobian as a 2x2 block matrix", _blocks(),
                    lambda v: derive_jacobian(BLOCKS[v]), SECTIONS["coupling"],
                    points={"dy1_dx1": 1, "dy1_dx2": 2, "dy2_dx1": 1, "dy2_dx2": 1,
                            "dy1_dx2_elementwise": 1}, step_points=1),
    "1.3": Question("1.3", "The determinant; volume preservation", _blocks(),
                    lambda v: derive_determinant(BLOCKS[v]), SECTIONS["coupling"],
                    kernels=_coupling_kernels,
                    points={"det": 2, "log_abs_det": 2, "volume_condition": 3}, step_points=1),
    "1.3n": Question("1.3n", "The coupling kernels arranged for floating point", _blocks(),
                     lambda v: derive_arrangement(BLOCKS[v]), SECTIONS["notes"]),
    "2.1": Question("2.1", "The free energy is log p(x) minus the KL to the posterior",
                    ("",), lambda v: derive_free_energy(), SECTIONS["vae"],
                    points={"identity": 4}, step_points=1),
    "2.2": Question("2.2", "The KL term decomposes over dimensions", ("",),
                    lambda v: derive_kl_factorization(), SECTIONS["vae"],
                    points={"decomposition": 4}, step_points=1),
    "2.3": Question("2.3", "The Gaussian KL in closed form", tuple(PARAMETERIZATIONS),
                    lambda v: derive_kl(PARAMETERIZATIONS[v]), SECTIONS["vae"],
                    points={"kl": 5}, step_points=1),
    "2.3c": Question("2.3c", "The standard deviation and its derivatives in floating point",
                     tuple(PARAMETERIZATIONS),
                     lambda v: derive_chain_factors(PARAMETERIZATIONS[v]), SECTIONS["notes"]),
    "2.3n": Question("2.3n", "The KL and its gradient arranged for floating point",
                     tuple(PARAMETERIZATIONS), lambda v: derive_stable_kl(PARAMETERIZATIONS[v]),
                     SECTIONS["notes"]),
    "2.4": Question("2.4", "Reparameterized and sticking-the-landing gradients",
                    tuple(PARAMETERIZATIONS),
                    lambda v: derive_gradient_estimators(PARAMETERIZATIONS[v]),
                    SECTIONS["vae"], kernels=_kl_kernels,
                    points={"grad_mu": 3, "grad_sigma": 3, "stl_mu": 2, "stl_sigma": 2,
                            "var_mu": 1, "var_sigma": 1, "var_stl_mu": 1, "var_stl_sigma": 1},
                    step_points=1),
    "2.3p": Question("2.3p", "The Gaussian KL from a learned prior", tuple(PARAMETERIZATIONS),
                     lambda v: derive_kl(PARAMETERIZATIONS[v],
                                         learned_prior(PARAMETERIZATIONS[v])),
                     SECTIONS["prior"]),
    "2.3np": Question("2.3np", "The KL from a learned prior in floating point",
                      tuple(PARAMETERIZATIONS),
                      lambda v: derive_stable_kl_pair(PARAMETERIZATIONS[v]), SECTIONS["prior"]),
    "2.4p": Question("2.4p", "Gradients of the KL from a learned prior",
                     tuple(PARAMETERIZATIONS),
                     lambda v: derive_gradient_estimators(PARAMETERIZATIONS[v],
                                                          learned_prior(PARAMETERIZATIONS[v])),
                     SECTIONS["prior"], kernels=_kl_pair_kernels),
}


def build(qid: str, variant: str | None = None,
          questions: Mapping[str, Question] | None = None) -> Derivation:
    """The derivation of question ``qid`` (for ``variant``, default the question's own).

    Raises :class:`UnknownQuestionError` naming the known ids or variants.
    """
    question, variant = resolve(qid, variant, questions)
    return question.derive(variant)


def resolve(qid: str, variant: str | None = None,
            questions: Mapping[str, Question] | None = None) -> tuple[Question, str]:
    """The question ``qid`` and its ``variant`` (default the question's own), derived
    nothing; raises :class:`UnknownQuestionError` as :func:`build` does."""
    questions = QUESTIONS if questions is None else questions
    question = questions.get(qid)
    if question is None:
        raise UnknownQuestionError(
            f"unknown question {qid!r}; known questions: {', '.join(questions)}")
    variant = variant or question.default
    if variant not in question.variants:
        known = ", ".join(v for v in question.variants if v)
        raise UnknownQuestionError(
            f"question {qid} has no variant {variant!r}; "
            + (f"known variants: {known}" if known else "it has no variants"))
    return question, variant


def all_derivations(questions: Mapping[str, Question] | None = None) -> list[Derivation]:
    """Every question in every variant, in a fixed order."""
    questions = QUESTIONS if questions is None else questions
    return [q.derive(v) for q in questions.values() for v in q.variants]


def kernel_modules(questions: Mapping[str, Question] | None = None) -> list[Module]:
    """The kernel module of every question that produces one, per variant, in order."""
    questions = QUESTIONS if questions is None else questions
    return [q.kernels(v) for q in questions.values() if q.kernels for v in q.variants]

