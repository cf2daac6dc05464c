r"""The question registry's types, and :class:`Material`: what a material package exposes.

A :class:`Question` carries its variants, how to derive each, where it sits in the
solutions document (a :class:`Section`, which carries the section's introduction), and
which kernel module it produces per variant. A :class:`Material` gathers a package's
blocks, parameterizations, questions and sections under one name; the engine reads the
registry from the materials it loads (:mod:`derive.loader`), and nothing else, so a
question registered there appears everywhere or the build says why it cannot.

This module is the derivation layer's: the material (``derive/coursework/``, or any
package written against :mod:`derive.api`) builds these values, the engine reads them.

Example:
    >>> import sympy as sp
    >>> from derive.derivation import Result, Step
    >>> a = sp.Symbol("a", positive=True)
    >>> demo = Derivation("9.1", "Logs", "Simplify.",
    ...                   [Step(sp.log(a**2), 2 * sp.log(a), "power")],
    ...                   [Result("value", 2 * sp.log(a), "the log")])
    >>> q = Question("9.1", "Simplify a log", ("",), lambda v: demo, points={"value": 2},
    ...              step_points=1)
    >>> build("9.1", questions={"9.1": q}).result("value")
    2*log(a)
    >>> [(m.kind, m.key, m.points) for m in marking("9.1", {"9.1": q})]
    [('step', '1', 1), ('result', 'value', 2)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import sympy as sp

from .answers import Answers
from .coupling import CouplingBlock
from .derivation import Derivation
from .parameterization import Parameterization
from .spec import Module

__all__ = ["Material", "MaterialError", "Question", "Section", "Introduction", "Mark",
           "UnknownQuestionError", "build", "resolve", "all_derivations", "kernel_modules",
           "marking"]


class MaterialError(ValueError):
    """Material that cannot be used: two materials defining one name, a module that is not
    material; the message is one line."""


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
    each, its place in the document, and the kernel module it produces per variant.

    A question may range over a kind of the material (``over="parameterizations"`` or
    ``over="blocks"``): every entry of that kind in the material it is loaded with, its
    own package's or any other's, is then a variant of it (after its own ``variants``,
    which must be entries too), and ``derive``, ``kernels`` and ``answers`` receive the
    entry itself (a :class:`~derive.parameterization.Parameterization`, a
    :class:`~derive.coupling.CouplingBlock`) in place of its name. The
    :class:`Material` holding it binds it (:attr:`Material.questions`): the bound
    question's callables take the variant's name, as every other question's do.

    Example:
        >>> import sympy as sp
        >>> from derive.derivation import Derivation, Result
        >>> rho = sp.Symbol("rho", real=True)
        >>> mine = Parameterization("rho", "gaussian_kl_rho", rho, sp.exp(rho), "rho")
        >>> q = Question("9.2", "Sigma", (), lambda p: Derivation(
        ...     "9.2", "Sigma", "", [], [Result("sigma", p.sigma, "")], variant=p.name),
        ...     over="parameterizations")
        >>> bound = Material("m", parameterizations={"rho": mine}, questions={"9.2": q})
        >>> bound.questions["9.2"].variants
        ('rho',)
        >>> build("9.2", "rho", questions=bound.questions).result("sigma")
        exp(rho)
        >>> theirs = Parameterization("tau", "gaussian_kl_tau", sp.Symbol("tau", real=True),
        ...                           sp.Symbol("tau", real=True)**2 + 1, "tau")
        >>> both = Material.combine([bound, Material("t", parameterizations={"tau": theirs})])
        >>> both.questions["9.2"].variants, build("9.2", "tau", questions=both.questions
        ...                                       ).result("sigma")
        (('rho', 'tau'), tau**2 + 1)
    """

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
    #: How ``derive check`` reads an answer to it: a function of the variant and its
    #: derivation giving the :class:`~derive.answers.Answers` (None: not marked).
    answers: Callable[[str, Derivation], Answers] | None = None
    #: The kind of the material the question ranges over (``"parameterizations"``,
    #: ``"blocks"``), or None: its variants are its own.
    over: str | None = None

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


def marking(qid: str, questions: Mapping[str, Question],
            derivation: Derivation | None = None) -> list[Mark]:
    """The marking scheme of a question's own variant: each step of the answer (the steps
    the solutions show: no asides), then each result, with its points from the registry
    (``derivation``: the own variant's, when already derived).

    The one place points are defined: the marking sheet and ``derive check`` (its scores,
    partial credit and ``--gradescope``, :func:`derive.check.batch.points`) read them.

    """
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


@dataclass(frozen=True)
class Material:
    """A package's material: its blocks, parameterizations, questions and sections, by name.

    Arguments:
        name: the material's name (its module's, as ``--material`` names it).
        blocks: coupling blocks by name (each also a variant of the questions over blocks).
        parameterizations: scale parameterizations by name (each also a variant of the
            questions over parameterizations, :attr:`Question.over`).
        questions: the questions by id, in the documents' order.
        sections: the document's sections by key, in order.
        blocks_module: the module defining ``blocks``, when the derivation cache may key a
            block's parts by its value rather than by that module's source (see
            :mod:`derive.files`); ``None``: keyed by source like the rest.

    Example:
        >>> q = Question("9.1", "A question", ("",), lambda v: None)
        >>> one, two = Material("one", questions={"9.1": q}), Material("two")
        >>> sorted(Material.combine([one, two]).questions)
        ['9.1']
        >>> Material.combine([one, Material("3", questions={"9.1": q})])
        Traceback (most recent call last):
        ...
        derive.material.MaterialError: material 'one' and material '3' both define question '9.1'
    """

    name: str
    blocks: Mapping[str, CouplingBlock] = field(default_factory=dict)
    parameterizations: Mapping[str, Parameterization] = field(default_factory=dict)
    questions: Mapping[str, Question] = field(default_factory=dict)
    sections: Mapping[str, Section] = field(default_factory=dict)
    blocks_module: str | None = None

    def __post_init__(self) -> None:
        """Check that each parameterization is registered under its own name and writes
        modules no other does, and bind each question that ranges over a kind of the
        material (:attr:`Question.over`) to this material's entries of that kind.
        Raises :class:`MaterialError` in one line."""
        modules: dict[str, str] = {}
        for key, p in self.parameterizations.items():
            if not isinstance(p, Parameterization):
                raise MaterialError(f"material {self.name!r}: parameterization {key!r} is a "
                                    f"{type(p).__name__}, expected a derive.api."
                                    "Parameterization")
            if p.name != key:
                raise MaterialError(f"material {self.name!r}: parameterization {key!r} is "
                                    f"named {p.name!r}; register it under its name")
            if p.module == p.pair_module:
                raise MaterialError(
                    f"material {self.name!r}: parameterization {key!r} writes module "
                    f"{p.module!r}, which must contain 'gaussian_kl' (its learned prior's "
                    "module replaces it by 'gaussian_kl_pair')")
            for module in (p.module, p.pair_module):
                if module in modules:
                    raise MaterialError(
                        f"material {self.name!r}: parameterizations {modules[module]!r} and "
                        f"{key!r} both write module {module!r}")
                modules[module] = key
        object.__setattr__(self, "questions", {
            qid: _bound(q, self) for qid, q in self.questions.items()})

    @staticmethod
    def combine(materials: Iterable[Material]) -> Material:
        """One material holding every name of ``materials`` (one material: itself).

        Raises :class:`MaterialError`, in one line, when two of them define the same block,
        parameterization, question or section name."""
        materials = list(materials)
        if len(materials) == 1:
            return materials[0]
        merged: dict[str, dict] = {kind: {} for kind in _KINDS}
        owner: dict[tuple[str, str], str] = {}
        for m in materials:
            for kind, label in _KINDS.items():
                for key, value in getattr(m, kind).items():
                    if (kind, key) in owner:
                        raise MaterialError(f"material {owner[kind, key]!r} and material "
                                            f"{m.name!r} both define {label} {key!r}")
                    owner[kind, key] = m.name
                    merged[kind][key] = value
        modules = [m.blocks_module for m in materials if m.blocks_module]
        return Material("+".join(m.name for m in materials), **merged,
                        blocks_module=modules[0] if len(modules) == 1 else None)

    def only(self, parts: Iterable[Material], empty: bool = False) -> Material:
        """This material cut to what ``parts`` (materials combined into it) bring: their
        own questions, in every variant, and each question over a kind
        (:attr:`Question.over`) in the variants that are their entries, those alone; the
        sections those questions sit in. What ``derive generate --only`` writes: an outside
        parameterization's kernels and document without the rest of the coursework.

        Raises :class:`MaterialError`, in one line, when that leaves no question (unless
        ``empty``: ``derive test --only`` of a material that brings blocks alone tests
        the engine's kernels of each).

        Example:
            >>> import sympy as sp
            >>> from derive.derivation import Derivation, Result
            >>> def sigma(p):
            ...     return Derivation("9.2", "Sigma", "", [], [Result("s", p.sigma, "")])
            >>> rho, tau = sp.Symbol("rho", real=True), sp.Symbol("tau", real=True)
            >>> mine = Material("m", parameterizations={"rho": Parameterization(
            ...     "rho", "gaussian_kl_rho", rho, sp.exp(rho), "rho")}, questions={
            ...     "9.2": Question("9.2", "Sigma", ("rho",), sigma, over="parameterizations")})
            >>> theirs = Material("t", parameterizations={"tau": Parameterization(
            ...     "tau", "gaussian_kl_tau", tau, tau**2 + 1, "tau")})
            >>> both = Material.combine([mine, theirs])
            >>> both.only([theirs]).questions["9.2"].variants
            ('tau',)
        """
        parts = list(parts)
        own = {qid for m in parts for qid in m.questions}
        kept: dict[str, Question] = {}
        # another material's question, cut to these entries, is not its coursework: its
        # marking scheme is for its own variant, which is not among them
        beyond: dict[int, Section] = {}
        for qid, q in self.questions.items():
            if qid in own:
                kept[qid] = q
            elif q.over is not None:
                theirs = tuple(v for v in q.variants
                               if any(v in getattr(m, q.over) for m in parts))
                if theirs:  # bound already: its callables take the names
                    section = q.section
                    if section is not None and not section.beyond:
                        section = beyond.setdefault(id(section), replace(section, beyond=True))
                    kept[qid] = replace(q, variants=theirs, over=None, section=section)
        if not kept and not empty:
            names = ", ".join(m.name for m in parts)
            raise MaterialError(f"--only {names}: it brings no question, and no question of "
                                "the material in use ranges over what it brings")
        used = [q.section for q in kept.values()]
        sections = {k: beyond.get(id(s), s) for k, s in self.sections.items()}
        return Material(self.name, self.blocks, self.parameterizations, kept,
                        {k: s for k, s in sections.items() if s in used}, self.blocks_module)

    def is_block(self, variant: str) -> bool:
        """Whether ``variant`` names a coupling block of this material."""
        return variant in self.blocks


_KINDS = {"blocks": "block", "parameterizations": "parameterization", "questions": "question",
          "sections": "section"}

#: The kinds of the material a question may range over (:attr:`Question.over`).
_OVER = ("blocks", "parameterizations")


class _OfEntry:
    """A question's callable, given the entry (block, parameterization) a variant names:
    called with the variant's name (and the rest of its arguments), it calls ``function``
    with ``entries[name]`` in place of the name."""

    __slots__ = ("function", "entries")

    def __init__(self, function: Callable[..., Any], entries: Mapping[str, object]) -> None:
        self.function, self.entries = function, entries

    def __call__(self, variant: str, *rest: object) -> Any:
        return self.function(self.entries[variant], *rest)

    @classmethod
    def bind(cls, function: Callable[..., Any] | None,
             entries: Mapping[str, object]) -> Callable[..., Any] | None:
        """``function`` given the entries (bound again if it was bound: to ``entries``)."""
        if function is None:
            return None
        return cls(function.function if isinstance(function, cls) else function, entries)


def _bound(q: Question, material: Material) -> Question:
    """``q`` with every entry of ``material`` of the kind it ranges over as a variant (its
    own first), its callables given the entry (:class:`_OfEntry`); ``q`` itself when it
    ranges over nothing."""
    if q.over is None:
        return q
    if q.over not in _OVER:
        raise MaterialError(f"material {material.name!r}: question {q.qid} ranges over "
                            f"{q.over!r}; expected one of {', '.join(map(repr, _OVER))}")
    entries = getattr(material, q.over)
    strange = [v for v in q.variants if v not in entries]
    if strange:
        raise MaterialError(f"material {material.name!r}: question {q.qid} ranges over "
                            f"{q.over}, but its variant {strange[0]!r} is not one of them")
    # (none yet is no error: the material it is combined with may bring them;
    # derive.loader.load refuses a question left with none)
    variants = tuple(q.variants) + tuple(k for k in entries if k not in q.variants)
    return replace(q, variants=variants, derive=_OfEntry.bind(q.derive, entries),
                   kernels=_OfEntry.bind(q.kernels, entries),
                   answers=_OfEntry.bind(q.answers, entries))


def build(qid: str, variant: str | None = None, *,
          questions: Mapping[str, Question]) -> Derivation:
    """The derivation of question ``qid`` (for ``variant``, default the question's own).

    Raises :class:`UnknownQuestionError` naming the known ids or variants.
    """
    question, variant = resolve(qid, variant, questions=questions)
    return question.derive(variant)


def resolve(qid: str, variant: str | None = None, *,
            questions: Mapping[str, Question]) -> tuple[Question, str]:
    """The question ``qid`` and its ``variant`` (default the question's own), derived
    nothing; raises :class:`UnknownQuestionError` as :func:`build` does."""
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


def all_derivations(questions: Mapping[str, Question]) -> list[Derivation]:
    """Every question in every variant, in a fixed order."""
    return [q.derive(v) for q in questions.values() for v in q.variants]


def kernel_modules(questions: Mapping[str, Question]) -> list[Module]:
    """The kernel module of every question that produces one, per variant, in order."""
    return [q.kernels(v) for q in questions.values() if q.kernels for v in q.variants]

