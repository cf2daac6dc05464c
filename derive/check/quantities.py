r"""What each supported question asks for, its references from the derivations, and how a
parsed answer's symbols map onto the engine's.

A :class:`QuestionSpec` lists the quantities an answer must give (``x1`` and ``x2`` for
1.1), each with the derived expressions it may equal (:class:`Quantity`): the question's
registry entry gives them (:attr:`~derive.material.Question.answers`, an
:class:`~derive.answers.Answers` built from its derivation, never typed in); this module
keeps no table of questions of its own. ``resolve`` turns a parsed tree into the
engine's vocabulary: for question 1 the index notation of :mod:`derive.vocabulary`
(``x_1`` and ``x_{1,i}`` both read as ``x1[i]``, ``\mathcal{G}_i(x_2)`` as ``G[i]``;
sums run over ``i = 1..n``), for question 2 the symbols of the 2.3/2.4 results.

Example:
    >>> spec = question_spec("2.3")
    >>> [q.name for q in spec.quantities], spec.quantities[0].references
    (['kl'], (mu**2/2 + sigma**2/2 - log(sigma) - 1/2,))
    >>> import sympy as sp
    >>> spec.resolve(sp.Symbol("sigma_{i}")**2)
    sigma**2
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

import sympy as sp
from sympy.core.function import AppliedUndef

from ..answers import DIAG, IDENTITY, Answers, Quantity
from ..loader import current, resolve
from ..vocabulary import FB, GB, RESERVED, X1, X2, Y1, Y2, S, i, j, n
from .latex_reader import Unreadable, label_tokens

__all__ = ["Quantity", "QuestionSpec", "UnknownSymbols", "applied_at", "is_applied_at",
           "question_spec", "supported", "SUPPORTED", "DIAG", "IDENTITY", "JACOBIAN_NAMES",
           "OUTSIDE"]

#: The questions ``derive check`` marks in the default material (the coursework): see
#: :func:`supported` for the material in use.
SUPPORTED: tuple[str, ...] = tuple(qid for qid, q in current().questions.items()
                                   if q.answers is not None)

#: Feedback on a sum over indices that do not exist (the answer is then incorrect).
OUTSIDE = "outside the components 1..n"
#: The Jacobians of F and G as opaque matrices, in the order written.
JACOBIAN_NAMES = {"F": sp.Symbol("J_F", commutative=False),
                  "G": sp.Symbol("J_G", commutative=False)}


@dataclass(frozen=True)
class QuestionSpec(Answers):
    """What question ``qid`` asks for and how its answers are read: the registry's
    :class:`~derive.answers.Answers`, with the reading of a parsed answer."""

    def quantity(self, name: str) -> Quantity:
        for q in self.quantities + self.alternates:
            if q.name == name:
                return q
        raise KeyError(name)

    def classify(self, label: str) -> tuple[str, ...] | None:
        """The quantities a left-hand side names, in order; ``None`` if none."""
        try:
            compact = label_tokens(label)
        except Unreadable:
            return None
        for pattern, names in self.labels:
            if re.fullmatch(pattern, compact):
                return names
        return None

    def is_label(self, text: str) -> bool | None:
        """For the reader: a left-hand side naming a quantity is kept as text."""
        return True if self.classify(text) is not None else None

    @property
    def two_indices(self) -> bool:
        """Whether a result is an entry with two free indices (``df_i/dz_j``): then an
        answer's ``_j`` is the engine's ``j`` and ``\\delta_{ij}`` the Kronecker delta."""
        return any(not q.matrix and any(r.has(j) for r in q.references)
                   for q in self.quantities + self.alternates)

    def resolve(self, tree: sp.Basic) -> sp.Expr:
        """A parsed tree in the engine's symbols; unknown symbols raise ``Unreadable``."""
        unknown: list[str] = []
        expr = _Resolver(self, unknown).walk(tree, {})
        if unknown:
            raise UnknownSymbols(tuple(dict.fromkeys(unknown)), tuple(self.symbols))
        if self.substitutions:
            expr = expr.xreplace(self.substitutions)
        return expr


class UnknownSymbols(Unreadable):
    """Symbols the question does not use (an OCR slip such as ``o_g`` for ``log``)."""

    def __init__(self, names: tuple[str, ...], known: tuple[str, ...]) -> None:
        self.names, self.known = names, known
        super().__init__(f"unknown symbols: {', '.join(names)} (the question is written in "
                         f"{', '.join(known)})")


def applied_at(name: str, arg: sp.Expr, index: sp.Expr) -> sp.Expr:
    """``F`` (or ``G``) at an argument other than ``x2``: component ``index`` of ``F(arg)``."""
    return sp.Function(f"{name}_at")(arg, index)


def is_applied_at(e: sp.Basic) -> bool:
    return isinstance(e, AppliedUndef) and str(e.func) in ("F_at", "G_at")


_NAME = re.compile(r"^\\?([A-Za-z]+)(?:_\{(.*)\})?$")


class _Resolver:
    """Maps raw parsed names to the question's symbols, walking the tree once."""

    def __init__(self, spec: QuestionSpec, unknown: list[str]) -> None:
        self.spec, self.unknown = spec, unknown

    def walk(self, e: sp.Basic, bound: dict[str, sp.Symbol]) -> sp.Basic:
        if isinstance(e, sp.Symbol):
            return self.symbol(str(e), bound)
        if isinstance(e, sp.Add):
            e = _bind_terms(e)
        if isinstance(e, (sp.Sum, sp.Product)):
            split = _split_repeated(e)
            if split is not None:
                return self.walk(split, bound)
            (var, lo, hi), = e.args[1:]
            name = str(var)
            index = sp.Symbol(name, integer=True)
            inner = {**bound, name: index}
            lo, hi = self.limit(lo), self.limit(hi)
            if self.spec.index_form and _outside(lo, hi):
                what = "sum" if isinstance(e, sp.Sum) else "product"
                bounds = f"{name} = {_plain(lo)}, ..., {_plain(hi)}"
                raise Unreadable(f"the {what} runs over {bounds}, {OUTSIDE}: the "
                                 "vectors have n components, numbered 1, ..., n")
            return type(e)(self.walk(e.args[0], inner), (index, lo, hi))
        if isinstance(e, AppliedUndef):
            return self.call(e, bound)
        if isinstance(e, sp.log) and len(e.args) == 2:
            if e.args[1] != sp.E:
                raise Unreadable(f"a logarithm to base {e.args[1]} is not read; write \\log")
            return sp.log(self.walk(e.args[0], bound))
        if not e.args:
            return e
        return e.func(*[self.walk(a, bound) for a in e.args])

    def limit(self, bound: sp.Expr) -> sp.Expr:
        return bound.xreplace({sp.Symbol("n"): n, sp.Symbol("d"): 2 * n,
                               sp.Symbol("D"): 2 * n})

    def symbol(self, raw: str, bound: dict[str, sp.Symbol]) -> sp.Basic:
        if raw == "e":
            return sp.E
        if raw == "pi":
            return sp.pi
        if raw in bound:
            return bound[raw]
        m = _NAME.match(raw)
        base, sub = (m.group(1), _clean(m.group(2))) if m else (raw, "")
        if self.spec.index_form:
            two = self.spec.two_indices
            found = _component(base, sub, bound, self.spec.symbols, two)
            if found is not None:
                return found
            own = self.spec.symbols.get(base)
            if not sub and type(own) is sp.Symbol and str(own) == base:
                return own  # a material's own scalar (the planar flow's b)
            if base == "delta" and two and re.fullmatch(r"[ij]{2}", sub) and sub[0] != sub[1]:
                return sp.KroneckerDelta(i, j)
            if raw == "n":
                return n
            if raw in ("d", "D"):
                return 2 * n
            if raw == "I" and self.spec.qid == "1.2":
                return IDENTITY
        else:
            if sub in ("", "i") and base in self.spec.symbols:
                return self.spec.symbols[base]
        self.unknown.append(_display_name(base, sub))
        return sp.Symbol(raw)

    def call(self, e: AppliedUndef, bound: dict[str, sp.Symbol]) -> sp.Basic:
        raw = str(e.func)
        m = _NAME.match(raw)
        base, sub = (m.group(1), _clean(m.group(2))) if m else (raw, "")
        if not self.spec.index_form:
            self.unknown.append(_display_name(base, sub) + "(...)")
            return sp.Symbol(raw)
        if base == "F" and sub == "diag" and len(e.args) == 1:
            if self.spec.qid != "1.2":  # diag(v) y is v * y, component by component
                return self.walk(e.args[0], bound)
            return DIAG(self.walk(e.args[0], bound))
        if base == "J" and sub in ("F", "G") and len(e.args) == 1:
            if self.walk(e.args[0], bound) != X2[i]:
                raise Unreadable(f"J_{sub} is read only at x_2, as J_{sub}(x_2)")
            return JACOBIAN_NAMES[sub]
        if base in ("F", "G") and len(e.args) == 1:
            arg = self.walk(e.args[0], {})  # the argument is the whole vector x2
            comp = _component(base, sub, bound)
            if comp is not None and arg != X2[i]:
                # F at another argument: marking replaces it by F where the argument
                # equals x2 (F(y2 * exp(-s)) in 1.1); otherwise it stays a different function.
                return applied_at(base, arg, comp.indices[0])
            if comp is not None:
                return comp
        self.unknown.append(_display_name(base, sub) + "(...)")
        return sp.Symbol(raw)


_BASES = {("x", "1"): X1, ("x", "2"): X2, ("y", "1"): Y1, ("y", "2"): Y2, ("s", ""): S,
          ("F", ""): FB, ("G", ""): GB}


def _component(base: str, sub: str, bound: dict[str, sp.Symbol],
               symbols: Mapping[str, sp.Basic] | None = None,
               two_indices: bool = False) -> sp.Expr | None:
    """``x_{1}``, ``x_{1i}``, ``s``, ``s_k``, ``G_i`` as the engine's i-th component; also
    a material's own parameter vector, an indexed base among the question's ``symbols``
    under its own name (``t``, ``t_i``); with ``two_indices``, ``w_j`` is the ``j``-th."""
    if base == "J" and sub in ("F", "G"):
        return JACOBIAN_NAMES[sub]
    number, letter = re.fullmatch(r"([12]?)([A-Za-z]?)", sub).groups() if re.fullmatch(
        r"[12]?[A-Za-z]?", sub) else (None, None)
    if number is None:
        return None
    vector = _BASES.get((base, number))
    own = (symbols or {}).get(base)
    if vector is None and not number and isinstance(own, sp.IndexedBase) \
            and own not in _BASES.values() and str(own.label) == base:
        vector = own
    if vector is None:
        return None
    if letter and letter in bound:
        return vector[bound[letter]]
    if letter and letter not in ("i", "j", "k"):
        return None
    if letter == "j" and two_indices:
        return vector[j]
    # Outside any sum, the component is the engine's free index i; inside a sum over a
    # letter, an unsubscripted vector is that sum's component.
    if not letter and bound:
        return vector[next(reversed(bound.values()))]
    return vector[i]


def _plain(e: sp.Expr) -> str:
    return str(e).replace("*", "").replace(" ", "")


def _outside(lo: sp.Expr, hi: sp.Expr) -> bool:
    """Whether ``lo..hi`` reaches past the components ``1..n`` (``0..n-1`` is the same
    range counted from 0; a range of numbers alone is taken at its word)."""
    if not (lo.has(n) or hi.has(n)):
        return bool(lo.is_number and lo < 0)
    count = sp.simplify(hi - lo + 1 - n)
    return bool(lo.is_negative or (lo - n).is_nonnegative and lo.has(n)
                or (hi - n).is_positive or count.is_positive)


def _uses_index(e: sp.Basic, letter: str) -> bool:
    """Whether a parsed tree writes a component with index ``letter`` (``s_i``, ``G_i(x)``)."""
    names = [str(s) for s in e.free_symbols] + [str(f.func) for f in e.atoms(AppliedUndef)]
    return any(_subscript(name).endswith(letter) for name in names)


def _subscript(name: str) -> str:
    m = _NAME.match(name)
    return _clean(m.group(2)) if m else ""


def _bind_terms(e: sp.Add) -> sp.Basic:
    r"""``\sum_i a_i + b_i`` read as ``\sum_i (a_i + b_i)``: a term written after a sum
    that uses the sum's index belongs to it (a free index there means nothing)."""
    sums = [a for a in e.args if isinstance(a, sp.Sum)]
    if len(sums) != 1:
        return e
    (total,) = sums
    letter = str(total.args[1][0])
    inside = [a for a in e.args if a is not total and _uses_index(a, letter)
              and not a.has(sp.Sum, sp.Product)]
    if not inside:
        return e
    rest = [a for a in e.args if a is not total and a not in inside]
    body = sp.Add(total.args[0], *inside, evaluate=False)
    return sp.Add(sp.Sum(body, total.args[1]), *rest, evaluate=False) if rest else sp.Sum(
        body, total.args[1])


def _split_repeated(e: sp.Basic) -> sp.Basic | None:
    r"""``\prod_i a_i \prod_i b_i`` as two products: the parser nests the second in the
    first, where it would reuse the index."""
    body, limits = e.args[0], e.args[1]
    if not isinstance(body, sp.Mul):
        return None
    inner = [a for a in body.args if type(a) is type(e) and a.args[1][0] == limits[0]]
    if not inner:
        return None
    rest = [a for a in body.args if a not in inner]
    outer = type(e)(sp.Mul(*rest, evaluate=False), limits) if rest else sp.Integer(1)
    return sp.Mul(outer, *inner, evaluate=False)


def _clean(sub: str | None) -> str:
    """A parsed subscript as written: ``1*i`` and ``di*(a*g)`` back to ``1i``, ``diag``."""
    return re.sub(r"[^A-Za-z0-9]", "", sub or "")


def _display_name(base: str, sub: str) -> str:
    sub = sub.replace("*", "")
    return f"{base}_{sub}" if sub else base


def supported() -> tuple[str, ...]:
    """The questions of the material in use that ``derive check`` marks: those whose
    registry entry says how their answers read (:attr:`~derive.material.Question.answers`)."""
    return tuple(qid for qid, q in current().questions.items() if q.answers is not None)


def question_spec(qid: str, variant: str | None = None) -> QuestionSpec:
    """The spec of question ``qid``, from the registry's
    :attr:`~derive.material.Question.answers`; raises ``KeyError`` for a question not
    marked."""
    question = current().questions.get(qid)
    if question is None or question.answers is None:
        raise KeyError(f"question {qid!r} is not marked by derive check; it marks "
                       f"{', '.join(supported())}")
    question, variant = resolve(qid, variant)  # an unknown variant: UnknownQuestionError
    answers = question.answers(variant, question.derive(variant))
    values = {f.name: getattr(answers, f.name) for f in fields(answers)}
    if answers.index_form:
        values["symbols"] = _own_symbols(answers)
    return QuestionSpec(**values)


def _own_symbols(answers: Answers) -> dict[str, sp.Basic]:
    """The symbols an answer may write: those the question lists, then the material's own
    vectors and scalars its results use, under their own names (the planar flow's ``z``,
    ``u``, ``w``, ``b``), so a material need not list them."""
    symbols = dict(answers.symbols)
    listed = set(symbols.values())
    found: list[sp.Basic] = []
    for q in answers.quantities + answers.alternates:
        for ref in q.references:
            bases = {a.base for a in ref.atoms(sp.Indexed)}
            labels = {b.label for b in bases}
            found += [b for b in bases if b not in _BASES.values()]
            found += [x for x in ref.atoms(sp.Symbol) if type(x) is sp.Symbol
                      and x not in labels and x not in (i, j, n)]
    for x in sorted(set(found) - listed, key=sp.default_sort_key):
        name = str(x.label) if isinstance(x, sp.IndexedBase) else str(x)
        if name not in RESERVED:  # the engine's own (the Jacobians' entries dF, dG)
            symbols.setdefault(name, x)
    return symbols
