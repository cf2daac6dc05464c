r"""Derivations as data: an ordered chain of checked equalities and named results.

A :class:`Derivation` is built from :class:`Step` values. Building it checks every step:
first symbolically (``simplify(lhs - rhs) == 0``); where SymPy cannot decide, in every
concrete *model* the derivation names (index notation expanded at ``n = 1, 2, 3``, or a
model in which every abstract term has a closed form); and where that too is undecided,
by evaluating both sides at random points. A step that fails raises
:class:`StepCheckError`, so a wrong derivation cannot be built.

Example:
    >>> import sympy as sp
    >>> a = sp.Symbol("a", positive=True)
    >>> d = Derivation("demo", "Logs", "Simplify a log.",
    ...                [Step(sp.log(a**2), 2 * sp.log(a), "log of a power")],
    ...                [Result("value", 2 * sp.log(a), "the simplified log")])
    >>> d.result("value")
    2*log(a)
    >>> Derivation("demo", "Logs", "A wrong step.",
    ...            [Step(sp.log(a**2), sp.log(a), "wrong")], [])
    Traceback (most recent call last):
    ...
    derive.derivation.StepCheckError: demo, step 1 ('wrong'): log(a**2) = log(a) is false
"""

from __future__ import annotations

import copy
import random
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import sympy as sp
from sympy.core.function import AppliedUndef

from . import verdicts
from .nodes import BlockMatrixSpec, is_opaque, plain, simplify
from .vocabulary import to_vector, uses_index_notation

__all__ = [
    "Step",
    "Result",
    "Derivation",
    "MatrixDisplay",
    "GraphNode",
    "ComputationGraph",
    "BackwardTable",
    "Edit",
    "kernel_forms",
    "StepCheckError",
    "Model",
    "check_step",
    "equal",
    "fill",
    "PLACEHOLDER",
    "VIEWS",
    "register_view",
]

#: A concrete model: maps the two sides of a step to pairs of explicit instances.
Model = Callable[[sp.Basic, sp.Basic], Iterable[tuple[sp.Basic, sp.Basic]]]

_NUMERIC_POINTS = 3
_NUMERIC_DIGITS = 30
_NUMERIC_TOL = 1e-12


#: A placeholder in prose: ``{0}`` (a step's note) or ``{name}`` (a derivation's result).
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def fill(template: str, math: Callable[[str], str], escape: Callable[[str], str] = str) -> str:
    """Fill ``{0}`` / ``{name}`` placeholders with ``math(key)``, escaping the prose between.

    Example:
        >>> fill("see {0} and {kl}", lambda k: f"<{k}>", str.upper)
        'SEE <0> AND <kl>'
    """
    parts = PLACEHOLDER.split(template)
    return "".join(escape(part) if k % 2 == 0 else math(part) for k, part in enumerate(parts))


class StepCheckError(ValueError):
    """A derivation step whose two sides are not equal."""


@dataclass(frozen=True)
class Step:
    """One equality ``lhs = rhs`` of a derivation, with the reason it holds.

    Arguments:
        lhs: the left-hand side (a SymPy expression).
        rhs: the right-hand side.
        reason: why the equality holds, in words ("solve the second equation for x2").
        given: substitutions the equality relies on, e.g. ``{y2: exp(s) * x2}``: the step
            is checked after replacing each key by its value.
        notes: expressions the reason refers to as ``{0}``, ``{1}``, ...; each renderer
            prints them as math, and every equality among them is checked like the step.
        models: models for this step alone, in place of the derivation's (a special case).
        aside: a check or an arrangement beyond the answer (a model check, the kernels'
            form): the notes show it, the solutions a student reads do not.
    """

    lhs: sp.Basic
    rhs: sp.Basic
    reason: str
    given: tuple[tuple[sp.Basic, sp.Basic], ...] = ()
    notes: tuple[sp.Basic, ...] = ()
    models: tuple[Model, ...] = ()
    aside: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.given, Mapping):
            object.__setattr__(self, "given", tuple(self.given.items()))
        object.__setattr__(self, "lhs", sp.sympify(self.lhs))
        object.__setattr__(self, "rhs", sp.sympify(self.rhs))
        object.__setattr__(self, "notes", tuple(sp.sympify(n) for n in self.notes))
        used = {int(k) for k in re.findall(r"\{(\d+)\}", self.reason)}
        if used != set(range(len(self.notes))):
            raise ValueError(f"reason {self.reason!r} refers to notes {sorted(used)}, "
                             f"but the step has {len(self.notes)}")


@dataclass(frozen=True)
class Result:
    """A named result of a derivation: an expression, what it is, and of what it is the value.

    ``lhs`` (optional) is the quantity the result gives, for display (``x2_i = ...``);
    ``typeset=False`` keeps a result meant for code generation out of the documents;
    ``vector`` is ``(lhs, expr)`` as element-wise vector expressions where the result is
    one component of a vector (filled in when the derivation is built); ``aside`` marks a
    result beyond the answer (the notes show it, the solutions do not); ``display`` is the
    form the documents print (the course's form), checked equal to ``expr`` when the
    derivation is built.
    """

    name: str
    expr: sp.Basic
    description: str = ""
    lhs: sp.Basic | None = None
    typeset: bool = True
    vector: tuple[sp.Basic | None, sp.Basic] | None = None
    aside: bool = False
    display: sp.Basic | None = None


@dataclass(frozen=True)
class Check:
    """How a step was verified: ``"symbolic"``, ``"explicit"`` or ``"numeric"``."""

    method: str
    detail: str = ""


def _numeric_value(expr: sp.Basic, rng: random.Random) -> sp.Basic:
    """``expr`` evaluated at one random point, undefined functions made concrete."""

    def concrete(app: AppliedUndef) -> sp.Expr:
        # A smooth non-element-wise function of all its arguments, fixed by its name so
        # both sides of a step see the same function.
        frng = random.Random(zlib.crc32(str(app.func).encode()))
        lin = sum(sp.Float(frng.uniform(-1, 1), 20) * a for a in app.args)
        return sp.sin(lin + sp.Float(frng.uniform(-1, 1), 20)) + sp.Float(frng.uniform(-1, 1), 20)

    e = expr.replace(lambda x: isinstance(x, AppliedUndef), concrete).doit()
    values: dict[sp.Symbol, sp.Float] = {}
    for sym in sorted(e.free_symbols, key=sp.default_sort_key):
        if sym.is_positive or sym.is_nonnegative:
            values[sym] = sp.Float(rng.uniform(0.3, 2.0), 20)
        else:
            values[sym] = sp.Float(rng.uniform(-1.5, 1.5), 20)
    return e.subs(values).evalf(_NUMERIC_DIGITS)


def _log_of_factors(log: sp.log) -> sp.Expr:
    """``log|prod b_k**e_k|`` as ``sum e_k log|b_k|`` (``|ab| = |a||b|`` and
    ``|b**e| = |b|**e`` for integer ``e``), and ``log(prod b_k**e_k)`` as ``sum e_k log b_k``
    where every ``b_k > 0``; anything else unchanged."""
    arg = log.args[0]
    absolute = isinstance(arg, sp.Abs)
    inner = arg.args[0] if absolute else arg
    out = []
    for factor in sp.Mul.make_args(inner):
        base, exp = factor.as_base_exp()
        if (base.is_positive or isinstance(base, sp.Abs)) and exp.is_real:
            # |b| >= 0: log(|a| |b|**e) = log|a| + e log|b| (both -oo where b = 0)
            out.append(exp * sp.log(base))
        elif absolute and exp.is_integer:
            out.append(exp * sp.log(sp.Abs(base)))
        else:
            return log
    return sp.Add(*out)


def _is_zero_symbolic(diff: sp.Basic) -> bool:
    """``diff == 0`` decided symbolically: remembered (:mod:`derive.verdicts`) or
    decided by :func:`_decide_zero_symbolic`."""
    if isinstance(diff, sp.MatrixBase):
        return all(_is_zero_symbolic(e) for e in diff)
    if diff == 0:
        return True
    key, verdict = verdicts.recall(diff)
    if verdict is not None:
        return verdict
    start = time.perf_counter()
    verdict = _decide_zero_symbolic(diff)
    seconds = time.perf_counter() - start
    if seconds >= _REMEMBER_AFTER:
        verdicts.remember(key, verdict, seconds)
    return verdict


#: The seconds a symbolic check must take for its verdict to be remembered.
_REMEMBER_AFTER = 0.02


def _decide_zero_symbolic(diff: sp.Basic) -> bool:
    if sp.expand(diff) == 0:
        return True
    # a grouping kept for floating point (UnevaluatedExpr) is no part of the value: without
    # it a product of exponentials (exp(u/2) exp(v/2) exp(u/2) exp(v/2) against
    # exp(u + v)) cancels when expanded, where simplify took a second
    if diff.has(sp.UnevaluatedExpr) and not diff.has(sp.Piecewise):
        grouped_not = plain(diff)
        if sp.expand(grouped_not) == 0 or sp.expand(grouped_not.rewrite(sp.exp)) == 0:
            return True
    if diff.has(sp.Piecewise):
        return _is_zero_by_pieces(diff)
    # Logs of absolute values (a log-determinant taken factor by factor): the log of a
    # product of positive numbers is the sum of their logs, so expanding them is sound
    # where every log's argument is nonnegative; far cheaper than simplify,
    # and than expanding the logs' arguments written out in exp (seconds at n = 3).
    # A difference of sums over the same range vanishes where the summands' does.
    terms = [t.as_coeff_Mul() for t in sp.Add.make_args(diff)]
    if all(isinstance(t, sp.Sum) for _, t in terms) and len({t.limits for _, t in terms}) == 1:
        body = sp.Add(*(c * t.function for c, t in terms))
    else:
        body = diff
    # (|ab| is written |a||b| by SymPy: a log of a product of absolute values splits too)
    logs = body.atoms(sp.log)
    if logs and all(isinstance(log.args[0], sp.Abs) or log.args[0].is_positive
                    or all(isinstance(f.as_base_exp()[0], sp.Abs) or f.is_positive
                           for f in sp.Mul.make_args(log.args[0])) for log in logs):
        if sp.expand(body.replace(lambda e: isinstance(e, sp.log), _log_of_factors)) == 0:
            return True
        if _logs_of_a_product_of_one(body):
            return True
    # A rewrite written with a function defined through exp (softplus, sigmoid, expm1)
    # usually cancels term by term once the function is written out: cheaper than simplify.
    written_out = diff.rewrite(sp.exp)
    if written_out != diff and sp.expand(written_out) == 0:
        return True
    # and a rational function of the exponentials is 0 when its numerator cancels
    # (sigmoid(G) against (1 + tanh(G/2))/2 in 0.1 s, where simplify takes 5)
    if written_out != diff and not written_out.has(sp.Sum, sp.Derivative) and _cancels(
            written_out):
        return True
    try:
        if simplify(diff) == 0:
            return True
        # Functions SymPy does not simplify (expm1, expm1mx) are identities in exp.
        rewritten = diff.rewrite(sp.exp)
        return rewritten != diff and simplify(rewritten) == 0
    except (TypeError, NotImplementedError, ValueError, RecursionError):  # pragma: no cover
        return False


def _cancels(expr: sp.Basic) -> bool:
    """``expr`` is 0 as a rational function (its generators the exponentials, logs and
    other functions in it)."""
    try:
        return sp.cancel(sp.together(expr)) == 0
    except (TypeError, NotImplementedError, ValueError, RecursionError,
            sp.PolynomialError):  # pragma: no cover
        return False


def _logs_of_a_product_of_one(body: sp.Basic) -> bool:
    """``sum c_k log a_k = 0`` because ``prod u_k**c_k`` is 1 as a rational function of
    the exponentials (``cancel`` after writing every function out in exp), where each
    ``a_k`` is ``|u_k|`` with an integer ``c_k`` (then ``prod |u_k|**c_k = |1|``) or a
    positive ``u_k``: ``log|(1 + tanh(G/2))/2| - log sigmoid(G)`` in 0.1 s, where
    simplify takes 7."""
    factors = []
    for term in sp.Add.make_args(body):
        c, rest = term.as_coeff_Mul()
        if not isinstance(rest, sp.log) or not c.is_Rational:
            return False
        arg = rest.args[0]
        if isinstance(arg, sp.Abs) and c.is_Integer:
            arg = arg.args[0]
        elif not arg.is_positive:
            return False
        factors.append(arg**c)
    if len(factors) < 2:
        return False
    try:
        return sp.cancel(sp.together(sp.Mul(*factors).rewrite(sp.exp))) == 1
    except (TypeError, NotImplementedError, ValueError, RecursionError,
            sp.PolynomialError):  # pragma: no cover
        return False


def _is_zero_by_pieces(diff: sp.Basic) -> bool:
    """A piecewise difference vanishes where each piece does under its own condition (and
    not the earlier ones); each piece is refined by its condition (``|u| = -u`` where
    ``u < 0``) and simplified alone, which is faster than simplifying the whole."""
    folded = sp.piecewise_fold(diff)
    if not isinstance(folded, sp.Piecewise):
        return False
    earlier: list[sp.Basic] = []
    for expr, cond in folded.args:
        where = sp.And(cond, *(sp.Not(c) for c in earlier))
        earlier.append(cond)
        if where is sp.false:
            continue
        try:
            piece = _refine_signs(expr.rewrite(sp.exp), where)
            if piece.has(sp.Piecewise):
                return False
            if sp.expand(plain(piece)) == 0:  # a product of exponentials: cheaper than simplify
                continue
            if _surely_nonzero(piece) or simplify(piece) != 0:
                return False
        except (TypeError, NotImplementedError, ValueError, RecursionError):  # pragma: no cover
            return False
    return True


def _refine_signs(expr: sp.Basic, where: sp.Basic) -> sp.Basic:
    """``expr`` with ``|u|`` written ``u`` or ``-u`` and ``sign(u)`` as ``1`` or ``-1``
    where a conjunct of ``where`` says ``u`` (up to a constant factor) is positive or
    negative: the one refinement a piece's condition gives its value here. (SymPy's
    ``refine`` did the same through its assumption queries, which took 10-22 s a piece
    over a cubic block's cube roots.)

    Example:
        >>> u, v = sp.symbols("u v", real=True)
        >>> _refine_signs(sp.Abs(u - v) + sp.sign(2*v - 2*u), sp.And(u - v < 0, v > 1))
        -u + v + 1
    """
    facts: list[tuple[sp.Expr, int]] = []  # (d, +1): d > 0 (or >= 0 for |.|); (d, -1): d < 0
    for c in sp.And.make_args(where):
        if isinstance(c, sp.Not) and isinstance(c.args[0], sp.core.relational.Relational):
            c = c.args[0].negated
        if isinstance(c, (sp.StrictGreaterThan, sp.GreaterThan)):
            d, sense = c.lhs - c.rhs, 1
        elif isinstance(c, (sp.StrictLessThan, sp.LessThan)):
            d, sense = c.lhs - c.rhs, -1
        else:
            continue
        strict = isinstance(c, (sp.StrictGreaterThan, sp.StrictLessThan))
        facts.append((d, sense if strict else 2 * sense))

    def sign_of(u: sp.Expr, need_strict: bool) -> int:
        for d, sense in facts:
            if need_strict and abs(sense) == 2:
                continue
            if not (u.free_symbols and u.free_symbols == d.free_symbols):
                continue
            ratio = sp.cancel(u / d)
            if ratio.is_Number and ratio != 0:
                return (1 if sense > 0 else -1) * (1 if ratio > 0 else -1)
        return 0

    def abs_of(e: sp.Abs) -> sp.Basic:
        k = sign_of(e.args[0], need_strict=False)
        return k * e.args[0] if k else e

    def sign(e: sp.Basic) -> sp.Basic:
        k = sign_of(e.args[0], need_strict=True)
        return sp.Integer(k) if k else e

    if not facts or not expr.has(sp.Abs, sp.sign):
        return expr
    return expr.replace(lambda e: isinstance(e, sp.Abs), abs_of).replace(
        lambda e: isinstance(e, sp.sign), sign)


def _surely_nonzero(expr: sp.Basic) -> bool:
    """Whether ``expr`` is nonzero at a random point its symbols' assumptions allow: then
    no simplification makes it 0, and the search for one is skipped (a series piece that
    approximates, ``1/softplus(r) ~ exp(-r + exp(r)/2)`` below r = -20, took simplify 10
    s to give up on). Only symbols whose assumptions the random points respect (real,
    positive, nonnegative) are sampled; with any other, it is not decided here."""
    for sym in expr.free_symbols:
        if any(getattr(sym, f"is_{a}") for a in ("negative", "nonpositive", "integer",
                                                   "zero", "imaginary")):
            return False
    try:
        return _is_zero_numeric(expr, seed=0) is False
    except (TypeError, ValueError, ZeroDivisionError, RecursionError):  # pragma: no cover
        return False


def _explicit_derivatives(expr: sp.Basic) -> sp.Basic:
    """Evaluate derivatives of explicit expressions (plain-symbol variables, no components).

    Derivatives with respect to components (``x2[j]``) stay: there, dependence hides in
    symbols like ``F[i]``, and only a model can evaluate them.
    """
    return expr.replace(
        lambda e: isinstance(e, sp.Derivative) and not e.atoms(sp.Indexed)
        and all(isinstance(v, sp.Symbol) for v in e.variables),
        lambda e: e.doit())


def _series_check(lhs: sp.Basic, rhs: sp.Basic) -> bool:
    """``lhs = P + O(x**N)``: the series of ``lhs - P`` vanishes to that order."""
    order = rhs.getO()
    (var,), point = order.variables, order.point[0]
    n = sp.Poly(order.expr, var).degree()
    diff = (lhs - rhs.removeO()).rewrite(sp.exp)
    return sp.series(diff, var, point, n).removeO() == 0


def _is_zero_numeric(diff: sp.Basic, seed: int) -> bool | None:
    """True/False where every point evaluates to a number, None where one cannot."""
    if isinstance(diff, sp.MatrixBase):
        verdicts = [_is_zero_numeric(e, seed) for e in diff]
        if any(v is False for v in verdicts):
            return False
        return None if any(v is None for v in verdicts) else True
    rng = random.Random(seed)
    for _ in range(_NUMERIC_POINTS):
        value = _numeric_value(diff, rng)
        if not value.is_number or value.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
            return None
        if abs(complex(value)) > _NUMERIC_TOL:
            return False
    return True


def equal(lhs: sp.Basic, rhs: sp.Basic, seed: int = 0) -> Check | None:
    """Decide ``lhs == rhs`` symbolically, else numerically; ``None`` when they differ.

    Raises ``StepCheckError`` when neither method can decide.
    """
    diff = lhs - rhs
    if _is_zero_symbolic(diff):
        return Check("symbolic")
    verdict = _is_zero_numeric(diff, seed)
    if verdict is None:
        raise StepCheckError(f"cannot decide {lhs} = {rhs}: it does not evaluate to numbers")
    return Check("numeric", f"{_NUMERIC_POINTS} random points") if verdict else None


def _substitute(expr: sp.Basic, given: Sequence[tuple[sp.Basic, sp.Basic]]) -> sp.Basic:
    return expr.xreplace(dict(given)) if given else expr


def check_step(step: Step, models: Sequence[Model] = (), seed: int = 0) -> Check:
    """Verify one step and its equality notes; return how, or raise :class:`StepCheckError`."""
    models = step.models or models
    for k, note in enumerate(step.notes):
        if isinstance(note, sp.Equality):
            try:
                _check_equality(Step(note.lhs, note.rhs, "note", step.given), models, seed)
            except StepCheckError as err:
                raise StepCheckError(f"note {{{k}}} of the reason: {err}") from None
    return _check_equality(step, models, seed)


def _check_equality(step: Step, models: Sequence[Model], seed: int) -> Check:
    lhs = _explicit_derivatives(_substitute(step.lhs, step.given))
    rhs = _explicit_derivatives(_substitute(step.rhs, step.given))
    if isinstance(rhs, sp.Expr) and rhs.getO() is not None:
        if _series_check(lhs, rhs):
            return Check("symbolic", "series")
        raise StepCheckError(f"{sp.sstr(step.lhs)} = {sp.sstr(step.rhs)} is false as a series")
    if not is_opaque(lhs - rhs) and _is_zero_symbolic(lhs - rhs):
        return Check("symbolic")
    instances: list[tuple[sp.Basic, sp.Basic]] = []
    for model in models:
        instances.extend(model(lhs, rhs))
    if not instances:
        instances = [(lhs, rhs)]
    methods = set()
    for k, (a, b) in enumerate(instances):
        verdict = equal(a, b, seed=seed + k)
        if verdict is None:
            raise StepCheckError(
                f"{sp.sstr(step.lhs)} = {sp.sstr(step.rhs)} is false"
                + (f" (in model instance {k}: {sp.sstr(a)} != {sp.sstr(b)})" if models else "")
            )
        methods.add(verdict.method)
    method = "numeric" if "numeric" in methods else "symbolic"
    if models:
        return Check("explicit", f"{len(instances)} explicit instances, {method}")
    return Check(method)


def _with_vector_form(r: Result) -> Result:
    """``r`` with its vector form, where it is the ``i``-th component of a vector."""
    expr = r.expr
    if (r.vector is not None or not r.typeset or not uses_index_notation(expr)
            or isinstance(expr, sp.Eq) or expr.has(sp.Sum, sp.Product)):
        return r
    try:
        vector = (to_vector(r.lhs) if r.lhs is not None else None, to_vector(expr))
    except (ValueError, KeyError):
        return r
    return replace(r, vector=vector)


# --- what a derivation shows besides its steps (typed, read by the typesetting) --------


@dataclass(frozen=True)
class MatrixDisplay:
    """A block matrix a derivation shows: ``lhs = matrix``, introduced by ``caption`` (the
    typesetting adds which vectors its rows and columns belong to).

    Example:
        >>> from derive.nodes import BlockMatrixSpec, BlockSpec
        >>> zero = BlockSpec("y1", "x1", ())
        >>> shown = MatrixDisplay(BlockMatrixSpec(((zero, zero), (zero, zero))),
        ...                       sp.Symbol("J"), "The zero matrix")
        >>> shown.matrix.rows, shown.caption
        ((y1, y1), 'The zero matrix')
    """

    matrix: BlockMatrixSpec
    lhs: sp.Basic
    caption: str


@dataclass(frozen=True)
class GraphNode:
    """A node of a computation graph: its symbol, its expression in its parents, its role.

    ``role`` is ``"noise"``, ``"parameter"``, ``"intermediate"`` or ``"output"``;
    ``score_of`` lists the parameters whose direct edges into this node carry the score
    term (the edges sticking-the-landing cuts).

    Example:
        >>> GraphNode(sp.Symbol("u"), None, "parameter", "the input").name
        'u'
    """

    symbol: sp.Symbol
    expr: sp.Expr | None
    role: str
    description: str
    score_of: tuple[sp.Symbol, ...] = ()

    @property
    def name(self) -> str:
        return self.symbol.name


@dataclass(frozen=True)
class ComputationGraph:
    """A computation graph, nodes in topological order; the last node is the output.

    Example:
        >>> u, v = sp.symbols("u v", real=True)
        >>> g = ComputationGraph((GraphNode(u, None, "parameter", "the input"),
        ...                       GraphNode(v, sp.exp(u), "output", "its exponential")))
        >>> g.edges, g.in_leaves(v)
        ([('u', 'v')], exp(u))
    """

    nodes: tuple[GraphNode, ...]

    @property
    def output(self) -> GraphNode:
        return self.nodes[-1]

    def parents(self, node: GraphNode) -> list[GraphNode]:
        if node.expr is None:
            return []
        return [n for n in self.nodes if node.expr.has(n.symbol)]

    def children(self, node: GraphNode) -> list[GraphNode]:
        return [n for n in self.nodes if n.expr is not None and n.expr.has(node.symbol)]

    @property
    def edges(self) -> list[tuple[str, str]]:
        """``(parent, child)`` name pairs, in a fixed order (for drawing)."""
        return [(p.name, n.name) for n in self.nodes for p in self.parents(n)]

    def in_leaves(self, expr: sp.Expr) -> sp.Expr:
        """``expr`` with every non-leaf node replaced by its expression in the leaves."""
        for n in reversed(self.nodes):
            if n.expr is not None:
                expr = expr.xreplace({n.symbol: n.expr})
        return expr

    def descendants(self, node: GraphNode) -> list[GraphNode]:
        out: list[GraphNode] = []
        frontier = [node]
        while frontier:
            for child in self.children(frontier.pop()):
                if child not in out:
                    out.append(child)
                    frontier.append(child)
        return out


@dataclass(frozen=True)
class BackwardTable:
    """A backward pass shown as a table: a title, then one row per adjoint, in the order
    they are computed: ``(adjoint, its accumulation over the children, its value)``.

    Example:
        >>> t_bar = sp.Symbol("t_bar")
        >>> BackwardTable("Backward pass", ((t_bar, sp.S.One, sp.S.One),)).rows[0][0]
        t_bar
    """

    title: str
    rows: tuple[tuple[sp.Basic, sp.Basic, sp.Basic], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(tuple(row) for row in self.rows))


@dataclass(frozen=True)
class Derivation:
    r"""An ordered chain of checked steps and its named results.

    Arguments:
        qid: the question id, e.g. ``"1.2"``.
        title: a short title.
        statement: the question, in the project's own words.
        steps: the chain of equalities; each is checked when the derivation is built.
        results: the named results.
        conclusion: a sentence stating the answer in words (optional).
        models: concrete models in which steps SymPy cannot decide abstractly are checked.
        variant: which block or parameterization the derivation is for.
        notes: expressions the statement and the conclusion refer to as ``{0}``, ``{1}``,
            ... (typeset as math: a symbol in prose is never a bare identifier).
        latex_names: how the typesetting names symbols in this derivation, by symbol name
            (``{"mu": r"\mu_i"}``), over the printer's own names.
        block_matrix: a block matrix the derivation shows after its steps.
        graph: a computation graph the derivation draws after its statement.
        backward: backward passes through that graph, each shown as a table.
    """

    qid: str
    title: str
    statement: str
    steps: Sequence[Step]
    results: Sequence[Result]
    conclusion: str = ""
    models: Sequence[Model] = ()
    variant: str = ""
    checks: tuple[Check, ...] = field(default=(), compare=False)
    notes: tuple[sp.Basic, ...] = ()
    latex_names: Mapping[str, str] = field(default_factory=dict, compare=False)
    block_matrix: MatrixDisplay | None = field(default=None, compare=False)
    graph: ComputationGraph | None = field(default=None, compare=False)
    backward: tuple[BackwardTable, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "results", tuple(_with_vector_form(r) for r in self.results))
        object.__setattr__(self, "models", tuple(self.models))
        names = [r.name for r in self.results]
        if len(set(names)) != len(names):
            raise ValueError(f"derivation {self.qid}: result names repeat: {names}")
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "backward", tuple(self.backward))
        numbered = {str(k) for k in range(len(self.notes))}
        unknown = set(PLACEHOLDER.findall(self.conclusion)) - set(names) - numbered
        if unknown:
            raise ValueError(f"derivation {self.qid}: the conclusion refers to unknown results "
                             f"{sorted(unknown)}")
        unknown = set(PLACEHOLDER.findall(self.statement)) - numbered
        if unknown:
            raise ValueError(f"derivation {self.qid}: the statement refers to notes "
                             f"{sorted(unknown)}, but it has {len(self.notes)}")
        for r in self.results:
            if r.display is not None and equal(r.display, r.expr) is None:
                raise StepCheckError(f"{self.qid}: the displayed form of {r.name} is not "
                                     f"equal to it: {r.display} != {r.expr}")
        checks = []
        for k, step in enumerate(self.steps, start=1):
            try:
                checks.append(check_step(step, self.models, seed=k))
            except StepCheckError as err:
                raise StepCheckError(f"{self.qid}, step {k} ({step.reason!r}): {err}") from None
        object.__setattr__(self, "checks", tuple(checks))

    def result(self, name: str) -> sp.Basic:
        """The expression of the result called ``name``."""
        for r in self.results:
            if r.name == name:
                return r.expr
        known = ", ".join(r.name for r in self.results)
        raise KeyError(f"derivation {self.qid} has no result {name!r}; it has: {known}")

    def numbered(self, qid: str) -> Derivation:
        """The same derivation under another question id, its checks kept (not re-run):
        material that asks the engine's questions about its own blocks numbers them.

        Example:
            >>> a = sp.Symbol("a", positive=True)
            >>> d = Derivation("9.1", "Logs", "Simplify.", [Step(sp.log(a**2), 2 * sp.log(a),
            ...                "power")], [Result("value", 2 * sp.log(a), "the log")])
            >>> d.numbered("E.1").qid, d.numbered("E.1").checks == d.checks
            ('E.1', True)
        """
        other = copy.copy(self)
        object.__setattr__(other, "qid", qid)
        return other

    def chain(self) -> Iterator[tuple[int, Step, bool]]:
        """``(number, step, continues)``: ``continues`` where the step's left-hand side is
        the previous right-hand side, so renderers write ``= rhs`` under it."""
        previous = None
        for k, step in enumerate(self.steps, start=1):
            yield k, step, previous is not None and step.lhs == previous
            previous = step.rhs

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __str__(self) -> str:
        """The derivation as plain text, by the registered ``"text/plain"`` view
        (:mod:`derive.text`); without one, its first line."""
        view = VIEWS.get("text/plain")
        if view is None:
            return f"{self.qid}  {self.title}" + (f"  [{self.variant}]" if self.variant else "")
        return view(self)

    def _repr_latex_(self) -> str | None:
        """The derivation as one MathJax display (Jupyter shows it typeset), by the
        registered ``"text/latex"`` view (:mod:`codegen.latex`); without one, ``None``."""
        view = VIEWS.get("text/latex")
        return view(self) if view is not None else None


#: One edit of a derived value for a kernel: its name, the value as derived, the form the
#: kernel computes, why that form (a reason) and the definitions it relies on (given).
Edit = tuple[str, sp.Basic, sp.Basic, str, dict[sp.Basic, sp.Basic]]


def kernel_forms(qid: str, title: str, edits: list[Edit]) -> Derivation:
    """The derivation of the kernels' forms of derived values: for each edit, the checked
    step ``value as derived = form the kernel computes`` given the definitions of the names
    the kernel computes once, and the form as a result of that name. A form that is not
    equal to the value is refused (:class:`StepCheckError`). It is an aside of
    code generation: no document shows it.

    Example:
        >>> lv, sg = sp.Symbol("logvar", real=True), sp.Symbol("sigma", positive=True)
        >>> forms = kernel_forms("9.9k", "demo", [(
        ...     "grad", sp.exp(lv) / 2, sg**2 / 2, "sigma computed once", {sg: sp.exp(lv / 2)})])
        >>> forms.result("grad")
        sigma**2/2
        >>> kernel_forms("9.9k", "demo", [(
        ...     "grad", sp.exp(lv) / 2, sg / 2, "wrong", {sg: sp.exp(lv / 2)})])
        Traceback (most recent call last):
        ...
        derive.derivation.StepCheckError: 9.9k, step 1 ('wrong'): exp(logvar)/2 = sigma/2 is false
    """
    return Derivation(
        qid, f"{title}: the kernels' forms",
        "Write each derived value in the form the kernels compute it.",
        [Step(value, form, reason, given=given, aside=True)
         for _, value, form, reason, given in edits],
        [Result(name, form, f"{name} as the kernels compute it", typeset=False)
         for name, _, form, _, _ in edits])


#: How a derivation shows itself, by MIME type: ``"text/plain"`` for ``str`` and
#: ``"text/latex"`` for Jupyter. The typesetting layer registers them
#: (:mod:`derive.text`, :mod:`codegen.latex`), and the package's front door ``derive``
#: loads both, so a derivation is shown typeset without this layer importing typesetting.
VIEWS: dict[str, Callable[[Derivation], str]] = {}


def register_view(mime: str, render: Callable[[Derivation], str]) -> None:
    """Show every derivation as ``render(derivation)`` for ``mime`` (see :data:`VIEWS`).

    Example:
        >>> a = sp.Symbol("a")
        >>> d = Derivation("0.0", "Nothing", "Nothing.", [], [Result("a", a)])
        >>> saved = dict(VIEWS)
        >>> register_view("text/plain", lambda d: f"<{d.qid}>")
        >>> str(d)
        '<0.0>'
        >>> VIEWS.clear(); VIEWS.update(saved)
    """
    VIEWS[mime] = render
