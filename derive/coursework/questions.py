r"""The coursework's questions: each entry says everything the engine needs about it.

A :class:`~derive.api.Question` carries its variants, how to derive each, where it sits in
the solutions document (a :class:`~derive.api.Section`, which carries the section's
introduction), and which kernel module it produces per variant. The engine reads this
registry only through the :class:`~derive.api.Material` the package exposes
(:data:`derive.coursework.MATERIAL`, loaded by :mod:`derive.loader`), so a question
registered here appears everywhere or the build says why it cannot.

Example:
    >>> from derive.api import build, kernel_modules
    >>> sorted(QUESTIONS)[:3]
    ['1.1', '1.2', '1.3']
    >>> build("1.3", "coupling_additive", questions=QUESTIONS).result("log_abs_det")
    0
    >>> [m.name for m in kernel_modules(QUESTIONS)][:2]
    ['coupling', 'coupling_affine']
"""

from __future__ import annotations

from derive.api import (
    Y1,
    Y2,
    Introduction,
    Material,
    Module,
    Question,
    Section,
    derive_arrangement,
    derive_determinant,
    derive_inverse,
    derive_jacobian,
    i,
    n,
    to_vector,
)

from .answers import (
    answers_11,
    answers_12,
    answers_13,
    answers_23,
    answers_24,
    answers_identity,
)
from .blocks import BLOCKS, QUESTION_BLOCK
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

__all__ = ["QUESTIONS", "SECTIONS", "MATERIAL"]


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
        "prior factor", ((log_prior.lhs, log_prior.rhs, False),), kl.latex_names)


#: The document's sections, in order (the appendix of other variants follows them).
SECTIONS: dict[str, Section] = {
    "coupling": Section("1", "A reversible affine coupling block", _coupling_introduction),
    "vae": Section("2", "The variational free energy of a VAE", _vae_introduction),
    "prior": Section("", "A learned Gaussian prior", _prior_introduction, beyond=True),
    "notes": Section("", "Implementation notes: the kernels in floating point",
                     every_variant=True),
}


def _blocks() -> tuple[str, ...]:
    return (QUESTION_BLOCK,) + tuple(b for b in BLOCKS if b != QUESTION_BLOCK)


def _coupling_kernels(variant: str) -> Module:
    return coupling_module(BLOCKS[variant])


#: The coursework's own parameterizations: the variants of 2.3 to 2.4p, in this order.
_SCALES = tuple(PARAMETERIZATIONS)

_QUESTIONS: dict[str, Question] = {
    "1.1": Question("1.1", "Invert the coupling block", _blocks(),
                    lambda v: derive_inverse(BLOCKS[v]), SECTIONS["coupling"],
                    points={"x2": 2, "x1": 3}, step_points=1, answers=answers_11),
    "1.2": Question("1.2", "The Jacobian as a 2x2 block matrix", _blocks(),
                    lambda v: derive_jacobian(BLOCKS[v]), SECTIONS["coupling"],
                    points={"dy1_dx1": 1, "dy1_dx2": 2, "dy2_dx1": 1, "dy2_dx2": 1,
                            "dy1_dx2_elementwise": 1}, step_points=1, answers=answers_12),
    "1.3": Question("1.3", "The determinant; volume preservation", _blocks(),
                    lambda v: derive_determinant(BLOCKS[v]), SECTIONS["coupling"],
                    kernels=_coupling_kernels,
                    points={"det": 2, "log_abs_det": 2, "volume_condition": 3}, step_points=1,
                    answers=answers_13),
    "1.3n": Question("1.3n", "The coupling kernels arranged for floating point", _blocks(),
                     lambda v: derive_arrangement(BLOCKS[v]), SECTIONS["notes"]),
    "2.1": Question("2.1", "The free energy is log p(x) minus the KL to the posterior",
                    ("",), lambda v: derive_free_energy(), SECTIONS["vae"],
                    points={"identity": 4}, step_points=1, answers=answers_identity),
    "2.2": Question("2.2", "The KL term decomposes over dimensions", ("",),
                    lambda v: derive_kl_factorization(), SECTIONS["vae"],
                    points={"decomposition": 4}, step_points=1, answers=answers_identity),
    # questions 2.3 to 2.4p range over the parameterizations: the coursework's, and any
    # other material's loaded beside it; each callable receives the Parameterization
    "2.3": Question("2.3", "The Gaussian KL in closed form", _SCALES, derive_kl,
                    SECTIONS["vae"], points={"kl": 5}, step_points=1, answers=answers_23,
                    over="parameterizations"),
    "2.3c": Question("2.3c", "The standard deviation and its derivatives in floating point",
                     _SCALES, derive_chain_factors, SECTIONS["notes"],
                     over="parameterizations"),
    "2.3n": Question("2.3n", "The KL and its gradient arranged for floating point",
                     _SCALES, derive_stable_kl, SECTIONS["notes"], over="parameterizations"),
    "2.4": Question("2.4", "Reparameterized and sticking-the-landing gradients", _SCALES,
                    derive_gradient_estimators, SECTIONS["vae"], kernels=gaussian_kl_module,
                    points={"grad_mu": 3, "grad_sigma": 3, "stl_mu": 2, "stl_sigma": 2,
                            "var_mu": 1, "var_sigma": 1, "var_stl_mu": 1, "var_stl_sigma": 1},
                    step_points=1, answers=answers_24, over="parameterizations"),
    "2.3p": Question("2.3p", "The Gaussian KL from a learned prior", _SCALES,
                     lambda p: derive_kl(p, learned_prior(p)), SECTIONS["prior"],
                     over="parameterizations"),
    "2.3np": Question("2.3np", "The KL from a learned prior in floating point", _SCALES,
                      derive_stable_kl_pair, SECTIONS["prior"], over="parameterizations"),
    "2.4p": Question("2.4p", "Gradients of the KL from a learned prior", _SCALES,
                     lambda p: derive_gradient_estimators(p, learned_prior(p)),
                     SECTIONS["prior"], kernels=gaussian_kl_pair_module,
                     over="parameterizations"),
}


#: The coursework as material: what ``derive.loader`` loads by default. Its questions as
#: the material binds them (2.3 to 2.4p take a parameterization's name, as the others do)
#: are :data:`QUESTIONS`.
MATERIAL = Material("derive.coursework", blocks=BLOCKS, parameterizations=PARAMETERIZATIONS,
                    questions=_QUESTIONS, sections=SECTIONS,
                    blocks_module="derive.coursework.blocks")
QUESTIONS: dict[str, Question] = dict(MATERIAL.questions)
