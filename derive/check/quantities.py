r"""What each supported question asks for, its references from the derivations, and how a
parsed answer's symbols map onto the engine's.

A :class:`QuestionSpec` lists the quantities an answer must give (``x1`` and ``x2`` for
1.1), each with the derived expressions it may equal (:class:`Quantity`), taken from
``build(qid, variant)`` and never typed in. ``resolve`` turns a parsed tree into the
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
from collections.abc import Callable
from dataclasses import dataclass, field

import sympy as sp
from sympy.core.function import AppliedUndef

from ..loader import build, current
from ..vocabulary import FB, GB, JFB, JGB, X1, X2, Y1, Y2, S, i, n
from .latex_reader import Unreadable, label_tokens

__all__ = ["Quantity", "QuestionSpec", "UnknownSymbols", "applied_at", "is_applied_at",
           "question_spec", "SUPPORTED", "DIAG", "JACOBIAN_NAMES", "OUTSIDE"]

#: The questions ``derive check`` marks.
SUPPORTED = ("1.1", "1.2", "1.3", "2.1", "2.2", "2.3", "2.4")

#: Feedback on a sum over indices that do not exist (the answer is then incorrect).
OUTSIDE = "outside the components 1..n"
#: ``diag(v)``, kept in the order written (matrix products do not commute).
DIAG = sp.Function("diag", commutative=False)
#: The Jacobians of F and G as opaque matrices, in the order written.
JACOBIAN_NAMES = {"F": sp.Symbol("J_F", commutative=False),
                  "G": sp.Symbol("J_G", commutative=False)}
IDENTITY = sp.Symbol("I", commutative=False)


@dataclass(frozen=True)
class Quantity:
    """One thing an answer gives: its name, how it is shown, what it may equal.

    ``references`` are the derived expressions an answer may equal (an estimator and its
    expectation, say); ``kinds`` names each ("the estimate", ...), for feedback.
    """

    name: str
    display: str
    references: tuple[sp.Expr, ...]
    kinds: tuple[str, ...] = ()
    matrix: bool = False
    #: The part of the marking scheme it scores for (default: its name).
    part: str = ""


@dataclass(frozen=True)
class QuestionSpec:
    """What question ``qid`` asks for and how its answers are read."""

    qid: str
    variant: str
    quantities: tuple[Quantity, ...]
    alternates: tuple[Quantity, ...]
    labels: tuple[tuple[str, tuple[str, ...]], ...]
    index_form: bool
    symbols: dict[str, sp.Basic] = field(default_factory=dict)
    substitutions: dict[sp.Symbol, sp.Expr] = field(default_factory=dict)
    #: x2 in terms of the outputs, where the answer may write F(x2) as F of it (1.1).
    x2: sp.Expr | None = None
    #: 1.3: where the block preserves volume (``expr = 0``), True (everywhere) or False
    #: (nowhere: the glow block's scale sigmoid(G + 2) is in (0, 1), so det J < 1).
    condition: sp.Expr | bool | None = None
    #: 2.1, 2.2: the result is an identity between KL divergences (:mod:`.identities`).
    identity: bool = False

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
            found = _component(base, sub, bound)
            if found is not None:
                return found
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


def _component(base: str, sub: str, bound: dict[str, sp.Symbol]) -> sp.Expr | None:
    """``x_{1}``, ``x_{1i}``, ``s``, ``s_k``, ``G_i`` as the engine's i-th component."""
    if base == "J" and sub in ("F", "G"):
        return JACOBIAN_NAMES[sub]
    number, letter = re.fullmatch(r"([12]?)([A-Za-z]?)", sub).groups() if re.fullmatch(
        r"[12]?[A-Za-z]?", sub) else (None, None)
    if number is None:
        return None
    vector = _BASES.get((base, number))
    if vector is None:
        return None
    if letter and letter in bound:
        return vector[bound[letter]]
    if letter and letter not in ("i", "j", "k"):
        return None
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


# --------------------------------------------------------------------------- questions

_X = r"(?:\\mathbf|\\boldsymbol|\\bm)?\{?x\}?_\{?"
_Y = r"\{?y\}?_\{?"


def _spec_11(variant: str) -> QuestionSpec:
    d = build("1.1", variant)
    quantities = (Quantity("x1", "x1", (d.result("x1"),)),
                  Quantity("x2", "x2", (d.result("x2"),)))
    labels = (
        (_X + r"1(?:,?[ik])?\}?(?:\(y\))?", ("x1",)),
        (_X + r"2(?:,?[ik])?\}?(?:\(y\))?", ("x2",)),
        (r"\(" + _X + r"1\}?," + _X + r"2\}?\)", ("x1", "x2")),
        (r"\(" + _X + r"2\}?," + _X + r"1\}?\)", ("x2", "x1")),
        (r"\\begin" + _X + r"1\}?\\\\" + _X + r"2\}?\\end", ("x1", "x2")),
        (r"\\begin" + _X + r"2\}?\\\\" + _X + r"1\}?\\end", ("x2", "x1")),
    )
    return QuestionSpec("1.1", variant, quantities, (), labels, index_form=True,
                        symbols={"x_1": X1, "x_2": X2, "y_1": Y1, "y_2": Y2, "s": S,
                                 "F(x_2)": FB, "G(x_2)": GB}, x2=d.result("x2"))


def _spec_12(variant: str) -> QuestionSpec:
    d = build("1.2", variant)
    names = [("y1", "x1"), ("y1", "x2"), ("y2", "x1"), ("y2", "x2")]
    quantities = tuple(
        Quantity(f"d{a}_d{b}", f"d{a}/d{b}", (d.result(f"d{a}_d{b}"),), matrix=True)
        for a, b in names)
    alternates = (Quantity("dy1_dx2_elementwise", "dy1/dx2 (F, G element-wise)",
                           (d.result("dy1_dx2_elementwise"),), matrix=True,
                           part="dy1_dx2"),)
    def part(v: str) -> str:
        return r"\\partial\{?" + v + r"\}?"

    labels = tuple(
        ((r"\\frac\{?" + part(_Y + a[1] + r"\}?") + r"\}?\{?"
          + part(_X + b[1] + r"\}?") + r"\}?"), (f"d{a}_d{b}",))
        for a, b in names)
    labels += tuple((rf"J_\{{?{a[1]}{b[1]}\}}?", (f"d{a}_d{b}",)) for a, b in names)
    labels += ((r"J|\\frac\{?\\partialy\}?\{?\\partialx\}?",
                tuple(f"d{a}_d{b}" for a, b in names)),)
    return QuestionSpec("1.2", variant, quantities, alternates, labels, index_form=True,
                        symbols={"x_1": X1, "x_2": X2, "s": S, "F(x_2)": FB, "G(x_2)": GB,
                                 "J_F(x_2)": JFB, "J_G(x_2)": JGB, "diag": DIAG, "I": IDENTITY})


def _spec_13(variant: str) -> QuestionSpec:
    d = build("1.3", variant)
    det = Quantity("det", "det J", (d.result("det"),))
    log_det = Quantity("log_abs_det", "log|det J|", (d.result("log_abs_det"),), part="det")
    jac = r"(?:J|\\frac\{?\\partialy\}?\{?\\partialx\}?|\(J\)|\(\\frac.*\))"
    labels = (
        (r"(?:\\log|\\ln)\(?(?:\||\\left\||\\vert|\\lvert)?(?:\\det" + jac + r"|\|" + jac
         + r"\|)(?:\||\\vert|\\rvert)?\)?", ("log_abs_det",)),
        (r"\\det" + jac + r"|\|" + jac + r"\||\\det|\|\\det" + jac + r"\|", ("det",)),
    )
    volume = d.result("volume_condition")
    if volume in (sp.true, sp.false) or isinstance(volume, bool):
        condition: sp.Expr | bool = bool(volume)
    else:
        condition = volume.lhs - volume.rhs
    return QuestionSpec("1.3", variant, (det,), (log_det,), labels, index_form=True,
                        symbols={"s_i": S, "G_i(x_2)": GB, "n": n, "d": 2 * n},
                        condition=condition)


def _spec_identity(qid: str) -> Callable[[str], QuestionSpec]:
    """2.1 and 2.2: one result, the identity, marked by :mod:`.identities`."""
    def spec(variant: str) -> QuestionSpec:
        d = build(qid, variant)
        name = d.results[0].name  # "identity" (2.1), "decomposition" (2.2)
        display = "the identity"
        return QuestionSpec(qid, variant, (Quantity(name, display, (d.result(name),)),), (),
                            (), index_form=False, identity=True)
    return spec


def _kl_symbols(expr: sp.Basic) -> dict[str, sp.Basic]:
    by_name = {str(s): s for s in expr.free_symbols}
    names = {"mu": "mu", "sigma": "sigma", "lambda": "logvar", "epsilon": "eps"}
    return {written: by_name[engine] for written, engine in names.items()
            if engine in by_name}


def _sigma_substitution(variant: str, symbols: dict[str, sp.Basic]) -> dict:
    """Under the logvar variant an answer may still use sigma = exp(logvar / 2)."""
    param = current().parameterizations[variant]
    if param.scale.name == "sigma":
        return {}
    sigma = sp.Symbol("sigma", positive=True)
    symbols["sigma"] = sigma
    return {sigma: param.sigma}


def _sample(variant: str, symbols: dict[str, sp.Basic], subs: dict) -> None:
    """The question's sample ``z_i = mu_i + sigma_i eps_i`` may be written by its name."""
    if not {"mu", "epsilon"} <= set(symbols):
        return
    param = current().parameterizations[variant]
    z = sp.Symbol("z", real=True)
    symbols["z"] = z
    subs[z] = symbols["mu"] + param.sigma * symbols["epsilon"]


def _spec_23(variant: str) -> QuestionSpec:
    d = build("2.3", variant)
    kl = d.result("kl")
    symbols = _kl_symbols(kl)
    subs = _sigma_substitution(d.variant, symbols)
    labels = ((r"(?:D_\{?KL\}?|KL|D|\\mathrm\{?KL\}?|KL_\{?i\}?).*", ("kl",)),)
    return QuestionSpec("2.3", d.variant, (Quantity("kl", "KL_i", (kl,)),), (), labels,
                        index_form=False, symbols=symbols, substitutions=subs)


def _spec_24(variant: str) -> QuestionSpec:
    d = build("2.4", variant)
    names = [r.name for r in d.results if r.name.startswith("grad_")]
    quantities = []
    every: dict[str, sp.Basic] = {}
    for name in names:
        estimate = d.result(name)
        # the step "its expectation is the exact gradient": the expectation of the
        # estimate, written as is or as its adjoint symbol given the estimate
        expected = [st.rhs for st in d.steps
                    if getattr(st.lhs, "args", ()) and type(st.lhs).__name__ == "Expectation"
                    and (st.lhs.args[0] == estimate
                         or dict(st.given).get(st.lhs.args[0]) == estimate)]
        refs = (estimate, *expected[:1])
        kinds = ("the one-sample estimate", "its expectation, the exact gradient")[:len(refs)]
        par = name.removeprefix("grad_")
        quantities.append(Quantity(name, f"d KL / d {par}", refs, kinds))
        for r in refs:
            every.update(_kl_symbols(r))
    subs = _sigma_substitution(d.variant, every)
    _sample(d.variant, every, subs)
    pars = [name.removeprefix("grad_") for name in names]
    written = {"mu": r"\\mu", "sigma": r"\\sigma", "logvar": r"\\lambda"}
    labels = []
    for name, par in zip(names, pars, strict=True):
        p = written.get(par, par)
        labels.append((r"(?:\\bar|\\overline)\{?" + p + r"(?:_\{?i\}?)?\}?(?:_\{?i\}?)?",
                       (name,)))
        labels.append((r"(?:\\nabla_\{?" + p + r"(?:_\{?i\}?)?\}?|\\frac\{?\\partial.*\}?\{?"
                       r"\\partial" + p + r"(?:_\{?i\}?)?\}?).*", (name,)))
    labels.append((r"(?:\\nabla|\\hat|\\bar|g|\\overline).*", tuple(names)))
    return QuestionSpec("2.4", d.variant, tuple(quantities), (), tuple(labels),
                        index_form=False, symbols=every, substitutions=subs)


_SPECS: dict[str, Callable[[str], QuestionSpec]] = {
    "1.1": _spec_11, "1.2": _spec_12, "1.3": _spec_13, "2.1": _spec_identity("2.1"),
    "2.2": _spec_identity("2.2"), "2.3": _spec_23, "2.4": _spec_24}


def question_spec(qid: str, variant: str | None = None) -> QuestionSpec:
    """The spec of question ``qid``; raises ``KeyError`` for a question not marked."""
    if qid not in _SPECS:
        raise KeyError(f"question {qid!r} is not marked by derive check; it marks "
                       f"{', '.join(SUPPORTED)}")
    if variant is None:
        variant = current().questions[qid].default
    return _SPECS[qid](variant)
