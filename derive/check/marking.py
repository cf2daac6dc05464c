r"""Marking one answer: read it, check its chain step by step, decide and explain.

:func:`mark` runs in-process and trusts nothing it reads to be small or fast: call it
through :mod:`derive.check.sandbox` for untrusted input (``derive check`` does).

Example:
    >>> r = mark("2.3", r"\frac{1}{2}(\mu_i^2 + \sigma_i^2 - (\log(\sigma_i^2) - 1))")
    >>> r.verdict, r.read_as
    ('incorrect', 'KL_i = mu**2/2 + sigma**2/2 - log(sigma**2)/2 + 1/2')
    >>> r.feedback
    ['KL_i: off by the constant +1']
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import sympy as sp

from ..derivation import Step, StepCheckError, check_step
from ..vocabulary import FB, GB
from .diagnosis import name_mistake
from .display import show
from .equivalence import Timeout, budget, decide, instances, same
from .latex_reader import Unreadable, read_answer
from .prose import split_answer
from .quantities import (
    OUTSIDE,
    Quantity,
    QuestionSpec,
    UnknownSymbols,
    is_applied_at,
    question_spec,
)

__all__ = ["Report", "mark", "VERDICTS", "EXIT_CODES"]

VERDICTS = ("correct", "incorrect", "unreadable", "undecided")
EXIT_CODES = {"correct": 0, "incorrect": 1, "unreadable": 2, "undecided": 2}
STEP_SECONDS = 5.0
#: An answer file longer than this is not read (a whole document's math is far shorter).
MAX_TEXT = 64_000
#: Naming a mistake is a courtesy: it gets a budget, and the verdict never waits on it.
DIAGNOSIS_SECONDS = 4.0


@dataclass
class Report:
    """The outcome: verdict, what was read, feedback sentences, per-line step checks."""

    verdict: str
    read_as: str = ""
    feedback: list[str] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    #: Each part of the question (a result, or the verdict said in words) and its state:
    #: "correct", "incorrect", "undecided" or "missing"; the score counts the correct ones.
    parts: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "read_as": self.read_as,
                "feedback": list(self.feedback), "steps": list(self.steps),
                "parts": dict(self.parts)}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False)


#: Misreadings of handwriting seen in the hand-out's OCR, named with the feedback.
_OCR = {"o_g": r"\log", "o_S": r"\log", "M_i": r"\mu_i", "M": r"\mu"}


#: Stands for a quantity given two different values.
_CONFLICT = sp.Symbol("two_different_values")


@dataclass
class _Equation:
    label: str | None
    names: tuple[str, ...] | None
    entries: list[tuple[int, tuple[sp.Basic, ...] | None]]


def mark(qid: str, text: str, variant: str | None = None,
         spec: QuestionSpec | None = None) -> Report:
    """Mark ``text`` as an answer to question ``qid``."""
    spec = spec or question_spec(qid, variant)
    if len(text) > MAX_TEXT:
        return Report("unreadable", feedback=[f"the answer has {len(text)} characters; at "
                                              f"most {MAX_TEXT} are read"])
    said = split_answer(text)
    if spec.identity:  # 2.1, 2.2: an identity between KL divergences
        from .identities import mark_identity

        state, feedback = mark_identity(qid, said.math)
        part = spec.quantities[0].name
        verdict = {"missing": "unreadable"}.get(state, state)
        return Report(verdict, said.math.strip()[:200], feedback, [], {part: state})
    try:
        doc = read_answer(said.math, is_label=spec.is_label, tolerant=True)
    except Unreadable as err:
        return Report("unreadable", feedback=[str(err)])
    except RecursionError:
        return Report("unreadable", feedback=["the answer nests too deeply to read"])
    verdict_part = None
    if spec.condition is not None:
        doc, verdict_part = _verdict(doc, said.words, spec)
    equations, problems, skipped = _equations(doc, spec)
    outside = [p for p in problems if OUTSIDE in p]
    if outside:  # a sum over components that do not exist is wrong, not unreadable
        return Report("incorrect", feedback=outside,
                      parts={q.part or q.name: "incorrect" for q in spec.quantities})
    if problems:
        return Report("unreadable", feedback=problems)
    feedback: list[str] = list(skipped)
    steps, step_state = _check_chains(equations, spec, feedback)
    given, assign_state = _assign(equations, spec, feedback)
    read_as = "; ".join(_read_as(eq, spec) for eq in equations)
    states = [step_state, assign_state]
    parts: dict[str, str] = {}
    for q in spec.quantities:
        if q.name not in given:
            alternate = any(a.name in given for a in spec.alternates)
            if not alternate and not any(eq.names and q.name in eq.names for eq in equations):
                feedback.append(f"{q.display} is not given")
                states.append("incorrect")
                parts[q.part or q.name] = "missing"
            continue
        value = given.pop(q.name)
        states.append("incorrect" if value is _CONFLICT else _judge(q, value, spec, feedback))
        parts[q.part or q.name] = states[-1]
    for name, value in given.items():  # an alternate quantity, given under its own label
        alt = spec.quantity(name)
        states.append("incorrect" if value is _CONFLICT else _judge(alt, value, spec,
                                                                     feedback))
        parts[alt.part or alt.name] = states[-1]
    if verdict_part is not None:
        state, message = verdict_part
        parts["volume_condition"] = state
        feedback.append(message)
        if state != "missing":
            states.append(state)
    if assign_state != "correct" or step_state == "incorrect":
        # a value the answer contradicts, or a chain that breaks, earns nothing
        parts = {k: ("incorrect" if v == "correct" else v) for k, v in parts.items()}
    if "incorrect" in states:
        verdict = "incorrect"
    elif "undecided" in states:
        verdict = "undecided"
    else:
        verdict = "correct"
    return Report(verdict, read_as, feedback, steps, parts)


_NOT = re.compile(r"\b(?:not|never|no|isn't|doesn't|neq)\b", re.I)
_VOLUME = re.compile(r"volume[- ]?preserv|preserves?\s+(?:the\s+)?volume|volume\s+is\s+"
                     r"(?:not\s+)?preserved", re.I)


def _verdict(doc, words: str, spec: QuestionSpec) -> tuple[object, tuple[str, str]]:
    """1.3's verdict: volume preserving iff the condition holds, said in symbols (a line
    ``... = 0`` equal to the condition) or in words. Returns the document without the
    condition's lines, and the verdict part's state and feedback."""
    from dataclasses import replace

    cond = spec.condition
    shown = f"{show(cond)} = 0" if not isinstance(cond, bool) else ""
    kept, found = [], []
    for line in doc.lines:
        if line.label is None and len(line.sides) == 2 and all(
                len(side) == 1 for side in line.sides):
            try:
                a, b = (spec.resolve(side[0]) for side in line.sides)
            except Unreadable:
                kept.append(line)
                continue
            if sp.S.Zero in (a, b) or not (a.has(sp.exp) or b.has(sp.exp)):
                found.append((line.number, a - b))
                continue
        kept.append(line)
    doc = replace(doc, lines=tuple(kept)) if len(kept) < len(doc.lines) else doc
    negative = bool(_NOT.search(words)) and (bool(_VOLUME.search(words)) or "neq" in words)
    positive = bool(_VOLUME.search(words)) and not negative
    if cond is True:  # volume preserving everywhere
        if negative or found:
            return doc, ("incorrect", "verdict: wrong: the block preserves volume everywhere "
                                      "(det J = 1)")
        if positive:
            return doc, ("correct", "verdict: correct (volume preserving)")
        return doc, ("missing", "verdict: not given: say whether the block preserves volume")
    if cond is False:  # never volume preserving (glow: every scale is in (0, 1))
        if negative:
            return doc, ("correct", "verdict: correct (never volume preserving)")
        if positive or found:
            return doc, ("incorrect", "verdict: wrong: the block is never volume preserving "
                                      "(det J < 1 for every input)")
        return doc, ("missing", "verdict: not given: say whether the block preserves volume "
                                "(it never does)")
    for number, diff in found:
        if any(decide(diff, sign * cond, spec.index_form).status == "equal"
               for sign in (1, -1)):
            return doc, ("correct", f"verdict: correct (volume preserving iff {shown})")
        return doc, ("incorrect", f"verdict: the condition in line {number}, {show(diff)} = 0, "
                                  f"is not the condition for volume preservation, {shown}")
    if negative:
        return doc, ("correct", "verdict: correct (not volume preserving in general; it is "
                                f"where {shown})")
    if positive:
        return doc, ("incorrect", "verdict: wrong: the block is not volume preserving in "
                                  f"general, only where {shown}")
    return doc, ("missing", "verdict: not given: say whether the block preserves volume "
                            f"(it does exactly where {shown})")


def _equations(doc, spec: QuestionSpec) -> tuple[list[_Equation], list[str], list[str]]:
    """The equations written, the problems that make the answer unreadable, and notes on
    lines inside a chain that were skipped because they could not be read."""
    equations: list[_Equation] = []
    errors: dict[int, str] = {}
    for line in doc.lines:
        error = line.error
        values = []
        for side in () if error else line.sides:
            try:
                values.append(tuple(_at_x2(spec.resolve(e), spec) for e in side))
            except UnknownSymbols as err:
                named = [f"{u} (an OCR slip for {_OCR[u]}?)" if u in _OCR else u
                         for u in err.names]
                error = (f"unknown symbols: {', '.join(named)}; question {spec.qid} is "
                         f"written in {', '.join(spec.symbols)}")
                break
            except Unreadable as err:
                error = str(err)
                break
        if error:
            errors[line.number] = error
        entries = [(line.number, None)] if error else [(line.number, v) for v in values]
        if line.label == "" and equations:
            equations[-1].entries += entries
        else:
            label = line.label or None
            names = spec.classify(label) if label else None
            if label and names is None and not error:
                errors[line.number] = (f"the left-hand side {label!r} names none of the "
                                       f"quantities of question {spec.qid}")
                entries = [(line.number, None)]
            equations.append(_Equation(label, names, entries))
    problems, skipped = [], []
    prefix = len(doc.lines) > 1
    for eq in equations:
        for k, (number, value) in enumerate(eq.entries):
            if value is not None:
                continue
            message = (f"line {number}: " if prefix else "") + errors[number]
            if k == len(eq.entries) - 1:
                problems.append(message)
            else:
                skipped.append(f"{message}; the line is skipped and the next line is checked "
                               "against the last one read")
    return equations, problems, skipped


def _at_x2(value: sp.Basic, spec: QuestionSpec) -> sp.Basic:
    """``F(y2 * exp(-s))`` as ``F(x2)`` where that argument *is* x2 (decided by both
    methods); F at an argument that is not x2 stays a different function."""
    if spec.x2 is None:
        return value
    swap = {}
    for app in value.atoms(sp.core.function.AppliedUndef):
        if not is_applied_at(app):
            continue
        arg, index = app.args
        status = decide(arg, spec.x2, index_form=True).status
        base = FB if str(app.func) == "F_at" else GB
        if status == "equal":
            swap[app] = base[index]
        elif status == "undecided":  # named, and the answer left undecided, in _judge
            swap[app] = sp.Function(f"{str(app.func)[0]}_unsure")(arg, index)
    return value.xreplace(swap) if swap else value


def _read_as(eq: _Equation, spec: QuestionSpec) -> str:
    parts = ["(not read)" if v is None else show(v[0]) if len(v) == 1 else show(v)
             for _, v in eq.entries]
    if eq.names:
        shown = [spec.quantity(n).display for n in eq.names]
        parts.insert(0, shown[0] if len(shown) == 1 else "(" + ", ".join(shown) + ")")
    return " = ".join(parts)


def _step_holds(prev: sp.Basic, cur: sp.Basic, spec: QuestionSpec, seed: int,
                matrix: bool) -> bool | None:
    """The engine's own step check (symbolic, explicit models, numeric) on one step."""
    models = ()
    if spec.index_form:
        models = (lambda lhs, rhs: instances(lhs, rhs, True, reference_is_answer=True,
                                             matrix=matrix),)
    try:
        with budget(STEP_SECONDS):
            check_step(Step(prev, cur, "a step of the answer"), models, seed=seed)
        return True
    except StepCheckError as err:
        return None if "cannot decide" in str(err) else False
    except (Timeout, ValueError, TypeError, IndexError, ZeroDivisionError, RecursionError,
            NotImplementedError):
        return None


def _check_chains(equations: list[_Equation], spec: QuestionSpec,
                  feedback: list[str]) -> tuple[list[dict], str]:
    by_line: dict[int, bool | None] = {}
    state = "correct"
    matrix = any(q.matrix for q in spec.quantities)
    for eq in equations:
        last: tuple[int, tuple[sp.Basic, ...]] | None = None
        for n_cur, cur in eq.entries:
            by_line.setdefault(n_cur, True)
            if cur is None:
                by_line[n_cur] = None
                continue
            if last is None:
                last = (n_cur, cur)
                continue
            n_prev, prev = last
            last = (n_cur, cur)
            if len(prev) != len(cur):
                ok: bool | None = False
            else:
                results = [_step_holds(a, b, spec, n_cur, matrix)
                           for a, b in zip(prev, cur, strict=True)]
                ok = False if False in results else None if None in results else True
            if ok is not True and by_line.get(n_cur) is not False:
                by_line[n_cur] = ok
            where = (f"line {n_cur} does not follow from line {n_prev}" if n_cur != n_prev
                     else f"in line {n_cur}, {show(prev[0])} = {show(cur[0])} does not hold")
            if ok is False:
                if state != "incorrect":  # the first false step is the one to name
                    feedback.append(where)
                state = "incorrect"
            elif ok is None:
                feedback.append(where.replace("does not follow from", "could not be checked "
                                              "against").replace("does not hold",
                                                                 "could not be checked"))
                state = "undecided" if state == "correct" else state
    steps = [{"line": k, "ok": v} for k, v in sorted(by_line.items())]
    return steps, state


def _assign(equations: list[_Equation], spec: QuestionSpec,
            feedback: list[str]) -> tuple[dict[str, sp.Basic], str]:
    """Which quantity each equation's final value gives."""
    given: dict[str, sp.Basic] = {}
    where: dict[str, int] = {}
    conflicting: set[str] = set()
    state = "correct"
    order = [q.name for q in spec.quantities]
    unlabelled: list[tuple[_Equation, sp.Basic]] = []

    def give(names: tuple[str, ...], values: tuple[sp.Basic, ...], line: int) -> None:
        nonlocal state
        for name, value in zip(names, values, strict=True):
            q = spec.quantity(name)
            if name in given and not same(value, given[name], spec.index_form, q.matrix):
                feedback.append(f"{q.display} is given two different values, in line "
                                f"{where[name]} ({show(given[name])}) and in line {line} "
                                f"({show(value)}): which one is the answer?")
                state = "incorrect"
                conflicting.add(name)
            given[name], where[name] = value, line

    for eq in equations:
        if not eq.entries:
            continue
        line, final = eq.entries[-1]
        if eq.names:
            if len(eq.names) != len(final):
                feedback.append(f"{', '.join(eq.names)}: expected {len(eq.names)} "
                                f"component(s), got {len(final)}")
                state = "incorrect"
                continue
            give(eq.names, final, line)
        elif len(final) > 1:
            if len(final) != len(order):
                feedback.append(f"a vector of {len(final)} components, but question "
                                f"{spec.qid} asks for {len(order)}")
                state = "incorrect"
                continue
            give(tuple(order), final, line)
            eq.names = tuple(order)
        else:
            unlabelled.append((eq, final[0]))
    for eq, value in unlabelled:
        free = [q for q in spec.quantities if q.name not in given] or list(spec.quantities)
        match = next((q for q in free for ref in q.references
                      if same(value, ref, spec.index_form, q.matrix)), None)
        if match is None:
            symbols = value.free_symbols | {a for a in value.atoms(sp.Indexed)}
            match = max(free, key=lambda q: len(symbols & (
                q.references[0].free_symbols | q.references[0].atoms(sp.Indexed))))
        give((match.name,), (value,), eq.entries[-1][0])
        eq.names = (match.name,)
    for name in conflicting:  # judged wrong already; its last value is not judged again
        given[name] = _CONFLICT
    return given, state


def _judge(q: Quantity, value: sp.Basic, spec: QuestionSpec, feedback: list[str]) -> str:
    pending = [app for app in value.atoms(sp.core.function.AppliedUndef)
               if str(app.func) in ("F_unsure", "G_unsure")]
    if pending:
        feedback.append(f"{q.display}: undecided: {show(pending[0])} could not be "
                        "compared with F(x2); write F(x_2)")
        return "undecided"
    decisions = [decide(value, ref, spec.index_form, matrix=q.matrix) for ref in q.references]
    if any(d.status == "equal" for d in decisions):
        k = next(k for k, d in enumerate(decisions) if d.status == "equal")
        kind = f" ({q.kinds[k]})" if len(q.kinds) > 1 else ""
        feedback.append(f"{q.display}: correct{kind}")
        return "correct"
    if any(d.status == "undecided" for d in decisions):
        reason = next(d.detail for d in decisions if d.status == "undecided")
        feedback.append(f"{q.display}: undecided: {reason}")
        return "undecided"
    for other in spec.quantities + spec.alternates:
        if other.name != q.name and not q.matrix and any(
                same(value, ref, spec.index_form, other.matrix) for ref in other.references):
            feedback.append(f"{q.display}: this is {other.display} but it is labelled "
                            f"{q.display}")
            return "incorrect"
    for ref in q.references:
        try:
            with budget(DIAGNOSIS_SECONDS):
                named = name_mistake(value, ref, spec.index_form, q.matrix)
        except Timeout:
            named = []
        if named:
            feedback += [f"{q.display}: {m}" for m in named]
            break
    else:
        expected = " or ".join(show(r) for r in q.references)
        feedback.append(f"{q.display}: not equal to the derived result {expected}")
    return "incorrect"
