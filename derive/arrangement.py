r"""Floating-point arrangement: rewrites of derived expressions, each a proved identity.

A :class:`Rewrite` is a named general identity (``log(1 + exp(u)) = softplus(u)``) and
the function that applies it wherever it matches. :func:`arrange` applies a list of them
in order and returns the arranged expression and one :class:`~derive.derivation.Step`
per rewrite that changed something: the step shows the expression before and after, its
reason shows the identity as a note, and the derivation it joins checks both. The
rewrites of :mod:`sympy.codegen.rewriting` (``expm1``, ``log1p``, ``logaddexp``) are used
as they are, after the softplus rewrite (``log1p`` alone would turn ``log(1 + exp(u))``
into ``log1p(exp(u))``, which overflows); :class:`~derive.nodes.softplus` and
:class:`~derive.nodes.sigmoid` are this project's nodes, which every printer knows.

Example:
    >>> import sympy as sp
    >>> u = sp.Symbol("u", real=True)
    >>> arranged, steps = arrange(sp.log(1 + sp.exp(u)) + sp.exp(u) - 1, KERNEL_REWRITES)
    >>> arranged
    expm1(u) + softplus(u)
    >>> [step.notes[0] for step in steps]
    [Eq(log(exp(u) + 1), softplus(u)), Eq(exp(u) - 1, expm1(u))]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p
from sympy.codegen.numpy_nodes import logaddexp
from sympy.codegen.rewriting import expm1_opt, log1p_opt, logaddexp_opt, optimize

from .derivation import Step
from .nodes import cbrt, sigmoid, softplus
from .nodes import identity as _identity

__all__ = ["Rewrite", "arrange", "LOG_REWRITES", "KERNEL_REWRITES", "is_exponential",
           "SCALED_SQUARES", "vanishing_factors_apart", "expm1_as_sinh", "log1p_as_log"]

_u = sp.Symbol("u", real=True)
_v = sp.Symbol("v", real=True)
_k = sp.Symbol("k", integer=True)
_b = sp.Symbol("b", positive=True)
_k2 = sp.Symbol("a", positive=True)


@dataclass(frozen=True)
class Rewrite:
    """A rewrite: where it applies, what it gives, and the identity that proves it.

    Arguments:
        name: a short name (``"softplus"``).
        reason: the step's reason; ``{0}``, ``{1}``, ... are the notes, printed as math.
        notes: the general identities (and conditions) the reason shows; each identity is
            checked with the step.
        query: whether a node is one the rewrite applies to.
        value: the node rewritten.
        whole: rewrite the whole expression at once instead (SymPy's own optimizations).
    """

    name: str
    reason: str
    notes: tuple[sp.Basic, ...]
    query: Callable[[sp.Basic], bool] = lambda e: False  # noqa: E731
    value: Callable[[sp.Basic], sp.Basic] = lambda e: e  # noqa: E731
    whole: Callable[[sp.Basic], sp.Basic] | None = None

    def __call__(self, expr: sp.Basic) -> sp.Basic:
        if self.whole is not None:
            return self.whole(expr)
        return expr.replace(self.query, self.value)


def arrange(expr: sp.Basic, rewrites: Sequence[Rewrite],
            given: dict[sp.Basic, sp.Basic] | None = None) -> tuple[sp.Basic, list[Step]]:
    """``expr`` rewritten by each of ``rewrites`` in turn, and one step per change.

    ``given`` is passed to each step (substitutions its check relies on).
    """
    steps = []
    for rewrite in rewrites:
        new = rewrite(expr)
        if new != expr:
            steps.append(Step(expr, new, rewrite.reason, given=given or {},
                              notes=rewrite.notes))
            expr = new
    return expr, steps


def is_exponential(expr: sp.Basic) -> bool:
    """Whether ``expr`` is ``exp(u)`` (or ``exp(u)`` to an integer power)."""
    return isinstance(expr, sp.exp) or (expr.is_Pow and isinstance(expr.base, sp.exp))


# --- the logs of determinants (derivation 1.3) -------------------------------------------


def _abs_arg(e: sp.Basic) -> sp.Basic | None:
    """The argument of ``log|a|`` (``a``), of ``log a`` (``a``), else None."""
    if not isinstance(e, sp.log):
        return None
    arg = e.args[0]
    return arg.args[0] if isinstance(arg, sp.Abs) else arg


def _log_abs(a: sp.Basic) -> sp.Basic:
    """``log|a|``, unevaluated where ``a`` may be negative, ``log a`` where it is positive."""
    if a.is_positive:
        return sp.log(a, evaluate=False)
    return sp.log(sp.Abs(a, evaluate=False), evaluate=False)


_LOG_OF_PRODUCT = Rewrite(
    "log of a product",
    "the log of a product is the sum of the logs of its factors",
    (),
    lambda e: (a := _abs_arg(e)) is not None and a.is_Mul,
    lambda e: sp.Add(*(_log_abs(f) for f in _abs_arg(e).args)),
)
_LOG_OF_POWER = Rewrite(
    "log of a power",
    "the log of a power: {0}",
    (_identity(sp.log(sp.Abs(_u ** _k, evaluate=False), evaluate=False),
               _k * sp.log(sp.Abs(_u))),),
    lambda e: (a := _abs_arg(e)) is not None and a.is_Pow and a.exp.is_integer,
    lambda e: _abs_arg(e).exp * _log_abs(_abs_arg(e).base),
)
_LOG_OF_EXP = Rewrite(
    "log of exp",
    "{0} for real {1}: no exponential is ever formed",
    (_identity(sp.log(sp.Abs(sp.exp(_u), evaluate=False), evaluate=False), _u), _u),
    lambda e: isinstance(_abs_arg(e), sp.exp),
    lambda e: _abs_arg(e).args[0],
)
_POSITIVE = Rewrite(
    "positive",
    "the argument is positive: {0}",
    (_identity(sp.log(sp.Abs(_b, evaluate=False), evaluate=False), sp.log(_b)),),
    lambda e: isinstance(e, sp.log) and isinstance(e.args[0], sp.Abs)
    and bool(e.args[0].args[0].is_positive),
    lambda e: sp.log(e.args[0].args[0]),
)


def _one_plus_exp(e: sp.Basic) -> sp.Basic | None:
    """``u`` where ``e`` is ``1 + exp(u)``, else None."""
    if e.is_Add and len(e.args) == 2 and sp.S.One in e.args:
        other = e.args[0] if e.args[1] == 1 else e.args[1]
        if isinstance(other, sp.exp):
            return other.args[0]
    return None


_SOFTPLUS = Rewrite(
    "softplus",
    "{0}, which never forms the exponential: it is finite for every finite {1}",
    (_identity(sp.log(1 + sp.exp(_u)), softplus(_u)), _u),
    lambda e: isinstance(e, sp.log) and _one_plus_exp(e.args[0]) is not None,
    lambda e: softplus(_one_plus_exp(e.args[0])),
)
_LOG_SIGMOID = Rewrite(
    "log sigmoid",
    "{0}: the log of a sigmoid without forming it",
    (_identity(sp.log(sigmoid(_u)), -softplus(-_u)),),
    lambda e: isinstance(e, sp.log) and isinstance(e.args[0], sigmoid),
    lambda e: -softplus(-e.args[0].args[0]),
)


# --- the kernels' expressions (derivation 1.3n) ------------------------------------------


def _cancels(m: sp.Basic) -> bool:
    """``exp(a) * (... + c exp(b) + ...)`` where ``exp(a + b)`` simplifies: distributing
    cancels the exponentials before either is formed (no ``inf * 0``, no ``inf / inf``)."""
    if not m.is_Mul:
        return False
    exps = [f for f in m.args if isinstance(f, sp.exp)]
    sums = [f for f in m.args if f.is_Add]
    for e in exps:
        for s in sums:
            for term in s.args:
                for f in sp.Mul.make_args(term):
                    if isinstance(f, sp.exp) and (e.args[0] + f.args[0]).is_number:
                        return True
    return False


def _distribute(m: sp.Basic) -> sp.Basic:
    """Multiply the exponential into the sum, exponents added first; terms that end with
    the same exponential are collected, and a factor they all share is taken out."""
    exps = [f for f in m.args if isinstance(f, sp.exp)]
    (e, total), = [(e, s) for e in exps for s in m.args if s.is_Add and _cancels(e * s)][:1]
    groups: dict[sp.Basic, list[sp.Basic]] = {}
    for term in total.args:
        inner = [f for f in sp.Mul.make_args(term) if isinstance(f, sp.exp)]
        rest = sp.Mul(*(f for f in sp.Mul.make_args(term) if not isinstance(f, sp.exp)))
        combined = sp.exp(sp.expand(sp.Add(e.args[0], *(f.args[0] for f in inner))))
        groups.setdefault(combined, []).append(rest)
    values = {k: sp.Add(*v) for k, v in groups.items()}
    shared = set(values.values())
    if len(shared) == 1:
        result = shared.pop() * sp.Add(*values)
    else:
        result = sp.Add(*(k * v for k, v in values.items()))
    others = list(m.args)
    others.remove(e)
    others.remove(total)
    return sp.Mul(*others) * result


_CANCEL = Rewrite(
    "cancel exponentials",
    "multiply the exponential into the sum: {0} cancels before either factor is formed, "
    "so no overflow makes it an infinity times 0",
    (_identity(sp.Mul(sp.exp(_u), sp.exp(-_u), evaluate=False), 1, evaluate=False),),
    _cancels,
    _distribute,
)


def _sigmoid_power(e: sp.Basic) -> bool:
    return (e.is_Pow and e.exp.is_integer and e.exp.is_negative
            and _one_plus_exp(e.base) is not None)


_SIGMOID = Rewrite(
    "sigmoid",
    "{0}, named so that its log and its value can be taken without overflow",
    (_identity(1 / (1 + sp.exp(-_u)), sigmoid(_u)),),
    _sigmoid_power,
    lambda e: sigmoid(-_one_plus_exp(e.base)) ** (-e.exp),
)


def _constant_plus(e: sp.Basic) -> tuple[sp.Basic, sp.Basic, sp.Basic] | None:
    """``(a, c, f)`` where ``e`` is the sum ``a + c f`` of two terms, ``a`` and ``c``
    nonzero numbers, else None."""
    if not (e.is_Add and len(e.args) == 2):
        return None
    a, other = e.as_coeff_Add()
    c, f = other.as_coeff_Mul()
    if a.is_Number and a != 0 and not f.is_Number:
        return a, c, f
    return None


def _tanh_square(e: sp.Basic) -> tuple[sp.Basic, sp.Basic] | None:
    """``(a, u)`` where ``e`` is ``a (1 - tanh(u)**2)`` (what SymPy's ``diff`` gives, the
    factor ``a`` perhaps distributed), else None."""
    parts = _constant_plus(e)
    if parts is not None:
        a, c, f = parts
        if c == -a and f.is_Pow and f.exp == 2 and isinstance(f.base, sp.tanh):
            return a, f.base.args[0]
    return None


_TANH_DERIVATIVE = Rewrite(
    "tanh derivative",
    "{0}: the difference of two numbers near 1 is never formed (it rounds to 0 where "
    "{1}, and the product of sigmoids keeps every digit)",
    (_identity(1 - sp.tanh(_u) ** 2, 4 * sigmoid(2 * _u) * sigmoid(-2 * _u)),
     sp.Gt(sp.Abs(_u), 19)),
    lambda e: _tanh_square(e) is not None,
    lambda e: 4 * _tanh_square(e)[0] * sigmoid(2 * _tanh_square(e)[1])
    * sigmoid(-2 * _tanh_square(e)[1]),
)


def _one_plus_tanh(e: sp.Basic) -> tuple[sp.Basic, sp.Basic, int] | None:
    """``(a, u, sign)`` where ``e`` is ``a (1 + sign tanh(u))``, else None."""
    parts = _constant_plus(e)
    if parts is not None:
        a, c, f = parts
        if abs(c) == abs(a) and isinstance(f, sp.tanh):
            return a, f.args[0], int(c / a)
    return None


_TANH_SIGMOID = Rewrite(
    "tanh sigmoid",
    "{0} and {1}: a sum that cancels where {2} is large becomes a sigmoid, whose value and "
    "log are taken without cancellation",
    (_identity(1 + sp.tanh(_u), 2 * sigmoid(2 * _u)),
     _identity(1 - sp.tanh(_u), 2 * sigmoid(-2 * _u)),
     _u),
    lambda e: _one_plus_tanh(e) is not None,
    lambda e: 2 * _one_plus_tanh(e)[0] * sigmoid(2 * _one_plus_tanh(e)[2]
                                                * _one_plus_tanh(e)[1]),
)


def _softplus_minus_argument(e: sp.Basic) -> sp.Basic | None:
    """``e`` with ``c softplus(u) - c u`` replaced by ``c softplus(-u)``, else None."""
    if not e.is_Add:
        return None
    terms = set(e.args)
    for term in e.args:
        c, f = term.as_coeff_Mul()
        if not isinstance(f, softplus):
            continue
        u = f.args[0]
        minus = set(sp.Add.make_args(sp.expand(-c * u)))
        if minus <= terms - {term}:
            return sp.Add(*(terms - {term} - minus)) + c * softplus(-u)
    return None


_SOFTPLUS_REFLECTION = Rewrite(
    "softplus reflection",
    "{0}: the difference of two large numbers is never formed where {1} is large",
    (_identity(softplus(_u) - _u, softplus(-_u)), _u),
    lambda e: _softplus_minus_argument(e) is not None,
    lambda e: _softplus_minus_argument(e),
)


def _exp_difference(e: sp.Basic) -> sp.Basic | None:
    """``u`` where ``e`` is ``exp(u) - exp(-u)``, else None."""
    if not (e.is_Add and len(e.args) == 2):
        return None
    for a, b in (e.args, e.args[::-1]):
        c, neg = b.as_coeff_Mul()
        if (isinstance(a, sp.exp) and c == -1 and isinstance(neg, sp.exp)
                and sp.expand(a.args[0] + neg.args[0]) == 0):
            return a.args[0]
    return None


_SINH = Rewrite(
    "sinh",
    "{0}: the difference of two numbers near 1 is never formed where {1} is near 0",
    (_identity(sp.exp(_u) - sp.exp(-_u), 2 * sp.sinh(_u)), _u),
    lambda e: _exp_difference(e) is not None,
    lambda e: 2 * sp.sinh(_exp_difference(e)),
)


def _exp_sigmoid_pair(m: sp.Basic) -> tuple[sp.Basic, sp.Basic, int, int] | None:
    """``(exp(k v), sigmoid(-v), k, m)`` in a product ``exp(k v) sigmoid(-v)**m``,
    ``1 <= k <= m`` an integer, else None."""
    if not m.is_Mul:
        return None
    for f in m.args:
        if not isinstance(f, sp.exp):
            continue
        for g in m.args:
            base, power = (g.base, g.exp) if g.is_Pow else (g, sp.S.One)
            if isinstance(base, sigmoid) and power.is_Integer and power > 0:
                k = sp.simplify(f.args[0] / -base.args[0])
                if k.is_Integer and 1 <= k <= power:
                    return f, base, int(k), int(power)
    return None


def _merge_exp_sigmoid(m: sp.Basic) -> sp.Basic:
    f, base, k, power = _exp_sigmoid_pair(m)
    rest = [g for g in m.args if g != f and g != base and not (g.is_Pow and g.base == base)]
    return sp.Mul(*rest) * sigmoid(-base.args[0]) ** k * base ** (power - k)


_EXP_SIGMOID = Rewrite(
    "exp times sigmoid",
    "{0}, factor by factor: neither factor overflows",
    (_identity(sp.exp(-_u) * sigmoid(_u), sigmoid(-_u)),),
    lambda e: _exp_sigmoid_pair(e) is not None,
    _merge_exp_sigmoid,
)


def _sigmoid_polynomial(e: sp.Basic) -> tuple[sp.Basic, sp.Basic] | None:
    """``(sigmoid(u), the sum rewritten)`` where a sum holds ``c s - c s**2`` in
    ``s = sigmoid(u)``: ``c s (1 - s)``, with ``1 - s = sigmoid(-u)``; else None."""
    if not e.is_Add:
        return None
    for sig in sorted(e.atoms(sigmoid), key=sp.default_sort_key):
        t = sp.Dummy("t")
        with_t = [a for a in e.xreplace({sig: t}).args if a.has(t)]
        if len(with_t) < 2:
            continue
        factored = sp.factor_terms(sp.Add(*with_t))
        other = sigmoid(-sig.args[0])
        complement = factored.xreplace({1 - t: other, t - 1: -other})
        if complement != factored and not any(a.is_Add and a.has(t)
                                              for a in sp.preorder_traversal(complement)):
            rest = [a for a in e.xreplace({sig: t}).args if not a.has(t)]
            return sig, (sp.Add(*rest) + complement).xreplace({t: sig})
    return None


_SIGMOID_COMPLEMENT = Rewrite(
    "sigmoid complement",
    "factor, and {0}: the difference of two numbers near 1 is never formed",
    (_identity(1 - sigmoid(_u), sigmoid(-_u)),),
    lambda e: _sigmoid_polynomial(e) is not None,
    lambda e: _sigmoid_polynomial(e)[1],
)


def _sympy_rewrite(name: str, optim: Callable[[sp.Basic], sp.Basic],
                   notes: tuple[sp.Basic, ...], reason: str) -> Rewrite:
    """A rewrite of :mod:`sympy.codegen.rewriting`, with the identity it relies on."""
    return Rewrite(name, reason, notes, whole=lambda e: optimize(e, [optim]))


_LOGADDEXP = _sympy_rewrite(
    "logaddexp", logaddexp_opt, (_identity(sp.log(sp.exp(_u) + sp.exp(_v)), logaddexp(_u, _v)),),
    "{0} (the logaddexp of SymPy's code generation): no exponential overflows")
_EXPM1 = _sympy_rewrite(
    "expm1", expm1_opt, (_identity(sp.exp(_u) - 1, expm1(_u)), _u),
    "{0} (from SymPy's code generation): no cancellation where {1} is near 0")
def _one_minus_part(e: sp.Basic) -> sp.Basic | None:
    """``(Q - P)/Q`` where ``e`` is ``1 - P/Q`` and ``P`` is a term of the sum ``Q`` (so
    that ``Q - P`` is the sum of the other terms: no subtraction), else None."""
    if not (e.is_Add and len(e.args) == 2 and sp.S.One in e.args):
        return None
    part = -(e.args[0] if e.args[1] == 1 else e.args[1])
    inverses = [f for f in sp.Mul.make_args(part) if f.is_Pow and f.exp == -1 and f.base.is_Add]
    if len(inverses) != 1:
        return None
    denom = inverses[0].base
    numer = part * denom  # the factors but the inverse, as written (no exp(-u) moved)
    if numer not in denom.args:
        return None
    return (denom - numer) / denom


#: ``1 - P/(P + R) = R/(P + R)``: the difference of two numbers near 1 is never formed
#: (``(log sigma)'`` of ``exp(rho) + 1000`` from ``rho = 0`` up: it cancelled, 222 eps).
_ONE_MINUS_PART = Rewrite(
    "one minus a part",
    "{0}: where {1} is near 1 the difference is never formed",
    (_identity(1 - _u / (_u + _b), _b / (_u + _b)), _u / (_u + _b)),
    lambda e: _one_minus_part(e) is not None,
    _one_minus_part,
)


def _scaled_exp_plus(e: sp.Basic) -> tuple[sp.Basic, sp.Basic, sp.Basic] | None:
    """``(a, u, b)`` where ``e`` is ``log(a exp(u) + b)``, ``a`` and ``b`` positive numbers
    (not both 1: that is a softplus), ``u`` not a number; else None."""
    if not (isinstance(e, sp.log) and e.args[0].is_Add and len(e.args[0].args) == 2):
        return None
    b, term = e.args[0].as_coeff_Add()
    a, power = term.as_coeff_Mul()
    if not (b.is_positive and a.is_positive and isinstance(power, sp.exp)
            and power.args[0].free_symbols) or a == b == 1:
        return None
    return a, power.args[0], b


def _log_exp_plus_pieces(e: sp.Basic) -> sp.Basic:
    a, u, b = _scaled_exp_plus(e)
    # the first piece as it was (the log1p rewrite arranges it next); the second forms
    # exp(-u), at most b/a where it is used
    return sp.Piecewise((e, u < 0), (u + sp.log(a) + log1p(b / a * sp.exp(-u)), True))


#: ``log(a exp(u) + b)`` for ``u >= 0``: the exponential ``exp(u)`` overflows from 709.78
#: where the log is finite.
_LOG_EXP_PLUS = Rewrite(
    "log of an exponential plus a constant",
    "{0} overflows where {1} though {2} is finite; where {3}, {4}: it forms {5}, at most "
    "{6} there; the first form serves below (it is evaluated in two pieces)",
    (sp.exp(_u), _u > sp.Float("709.78", 5), sp.log(_k2 * sp.exp(_u) + _b), _u >= 0,
     _identity(sp.log(_k2 * sp.exp(_u) + _b),
           _u + sp.log(_k2) + log1p(_b / _k2 * sp.exp(-_u))),
     sp.exp(-_u), _b / _k2),
    lambda e: _scaled_exp_plus(e) is not None,
    _log_exp_plus_pieces,
)


def _log1p_where_it_applies(expr: sp.Basic) -> sp.Basic:
    """SymPy's ``log1p`` optimization, kept where it gives a ``log1p`` (it factors and
    expands the log's argument first: a log it does not rewrite keeps its arranged form,
    a spline bin's sum of positive terms)."""
    optimized = optimize(expr, [log1p_opt])
    return optimized if optimized.has(log1p) else expr


_LOG1P = Rewrite("log1p", "{0} (from SymPy's code generation): {1} is not rounded where {2} "
                 "is tiny", (_identity(sp.log(1 + _u), log1p(_u)), 1 + _u, _u),
                 whole=_log1p_where_it_applies)


def _one_plus(e: sp.Basic) -> sp.Basic | None:
    """``x`` where ``e`` is ``log|1 + x|`` (``1 + x`` not known to be positive), else None."""
    if not (isinstance(e, sp.log) and isinstance(e.args[0], sp.Abs)):
        return None
    inner = e.args[0].args[0]
    if not inner.is_Add or inner.is_positive:
        return None
    one, x = inner.as_coeff_Add()
    return x if one == 1 and x.free_symbols else None


def _log_abs_one_plus(e: sp.Basic) -> sp.Basic:
    x = _one_plus(e)
    return log1p(sp.Max(x, -2 - x))


_LOG1P_ABS = Rewrite(
    "log1p of an absolute value",
    "{0} rounds {1} away where {1} is tiny ({2} is rounded before its log); {3}, because "
    "{4} is {1} where {5} and {6} where {7}: one expression, accurate for every real {1}",
    (sp.log(sp.Abs(1 + _u)), _u, 1 + _u,
     _identity(sp.log(sp.Abs(1 + _u)), log1p(sp.Max(_u, -2 - _u))),
     sp.Abs(1 + _u) - 1, _u >= -1, -2 - _u, _u < -1),
    lambda e: _one_plus(e) is not None,
    _log_abs_one_plus,
)


def _sigmoid_pair(m: sp.Basic) -> sp.Basic | None:
    """``u`` where the product ``m`` has the factors ``sigmoid(u)`` and ``sigmoid(-u)``
    (each to the first power), else None."""
    if not m.is_Mul:
        return None
    factors = [f for f in m.args if isinstance(f, sigmoid)]
    for f in factors:
        if sigmoid(-f.args[0]) in factors:
            return f.args[0]
    return None


def _sigmoid_pair_merged(m: sp.Basic) -> sp.Basic:
    u = _sigmoid_pair(m)
    rest = [f for f in m.args if f not in (sigmoid(u), sigmoid(-u))]
    small = sp.exp(-sp.Abs(u))
    return sp.Mul(*rest) * small / (1 + small) ** 2


#: sigmoid(u) sigmoid(-u), the sigmoid's derivative (Glow's Jacobian entry): one
#: expression in exp(-|u|) for every u, which the product with an exponential halves
#: (the two sigmoids in pieces each, one of them underflowing, gave 0 at G = -800 where
#: x1 sigmoid'(G + 2) is 1e-247 for x1 = 1e100).
_SIGMOID_PRODUCT = Rewrite(
    "product of sigmoids",
    "{0}: one expression for every real {1}, in {2}, which never overflows; the smaller "
    "sigmoid's exponential is a factor of its own, so that its product with the rest is "
    "formed without underflow (a later step)",
    (_identity(sigmoid(_u) * sigmoid(-_u), sp.exp(-sp.Abs(_u)) / (1 + sp.exp(-sp.Abs(_u))) ** 2),
     _u, sp.exp(-sp.Abs(_u))),
    lambda e: _sigmoid_pair(e) is not None,
    _sigmoid_pair_merged,
)


def _sigmoid_pieces(e: sp.Basic) -> sp.Basic:
    u = e.args[0]
    small = sp.exp(-sp.Abs(u))
    return sp.Piecewise((small / (1 + small), u < 0), (1 / (1 + small), True))


_SIGMOID_PIECES = Rewrite(
    "sigmoid pieces",
    "no one expression of the sigmoid is accurate for every real number ({0} overflows "
    "where {1}, and {2} where {3}); in terms of {4}, which never overflows, each piece is "
    "accurate where it is used",
    (1 / (1 + sp.exp(-_u)), _u < -709, sp.exp(_u) / (1 + sp.exp(_u)), _u > 709,
     sp.exp(-sp.Abs(_u))),
    lambda e: isinstance(e, sigmoid),
    _sigmoid_pieces,
)

def _linear_in(e: sp.Basic, power: sp.Basic) -> tuple[sp.Basic, sp.Basic] | None:
    """``(a, b)`` where ``e = a power + b`` with neither ``a`` nor ``b`` holding an
    exponential, else None."""
    a = sp.expand(e).coeff(power)
    b = sp.expand(e - a * power)
    if a == 0 or b == 0 or a.has(sp.exp) or b.has(sp.exp):
        return None
    return a, b


def _exp_ratio(m: sp.Basic) -> tuple[sp.Basic, sp.Basic, sp.Basic] | None:
    """``(p, q, exp(u))`` where ``m`` has the factors ``p / q``, ``q = c exp(u) + d`` and
    ``p = a exp(u) + b`` (or no ``p``, ``p = 1``), else None."""
    if not m.is_Mul:
        return None
    for q in m.args:
        if not (q.is_Pow and q.exp == -1 and q.base.is_Add):
            continue
        for power in sorted(q.base.atoms(sp.exp), key=sp.default_sort_key):
            if _linear_in(q.base, power) is None:
                continue
            ps = [f for f in m.args if f.is_Add and _linear_in(f, power) is not None]
            return (ps[0] if ps else sp.S.One), q.base, power
    return None


def _exp_ratio_pieces(m: sp.Basic) -> sp.Basic:
    p, q, power = _exp_ratio(m)
    u = power.args[0]
    small = sp.exp(-sp.Abs(u))
    (c, d), ab = _linear_in(q, power), _linear_in(p, power) if p != 1 else (0, 1)
    a, b = ab
    pieces = sp.Piecewise(((a * small + b) / (c * small + d), u < 0),
                          ((a + b * small) / (c + d * small), True))
    rest = list(m.args)
    rest.remove(q ** -1)
    if p != 1:
        rest.remove(p)
    return sp.Mul(*rest) * pieces


_EXP_RATIO = Rewrite(
    "exp ratio",
    "a ratio of two sums in {0} is an infinity over an infinity where {1} is large; where "
    "{2}, numerator and denominator are multiplied by {3}, so that only {4}, which never "
    "overflows, is formed: no one expression is accurate for every real number, so it is "
    "evaluated in two pieces",
    (sp.exp(_u), _u, _u > 0, sp.exp(-_u), sp.exp(-sp.Abs(_u))),
    lambda e: _exp_ratio(e) is not None,
    _exp_ratio_pieces,
)

#: Below this argument, log(softplus(u)) is evaluated as its series in exp(u).
LOG_SOFTPLUS_SERIES_BELOW = -20


def _log_softplus_pieces(e: sp.Basic) -> sp.Basic:
    u = e.args[0].args[0]
    return sp.Piecewise((sp.log(softplus(u)), u >= LOG_SOFTPLUS_SERIES_BELOW),
                        (u - sp.exp(-sp.Abs(u)) / 2, True))


_t = sp.Symbol("t", positive=True)
_LOG_SOFTPLUS = Rewrite(
    "log softplus",
    "where {0}, the softplus underflows to 0 long before its log does; there {1}, and {2} "
    "in powers of {3}, which is {4}: the next term is below 1e-17 of the value; no one "
    "expression of the log is accurate for every real number, so it is evaluated in two "
    "pieces",
    (sp.Lt(_u, LOG_SOFTPLUS_SERIES_BELOW),
     _identity(sp.log(softplus(_u)), _u + sp.log(log1p(sp.exp(_u)) * sp.exp(-_u))),
     _identity(sp.log(sp.log(1 + _t) / _t), -_t / 2 + sp.O(_t**2), evaluate=False),
     _t, sp.exp(_u)),
    lambda e: isinstance(e, sp.log) and isinstance(e.args[0], softplus),
    _log_softplus_pieces,
)

#: Below this ``|u|``, ``log(cosh(u))`` is ``log1p(2 sinh(u/2)**2)``; above, ``|u|`` plus a
#: small correction (no ``cosh`` is formed: it overflows past 710).
LOG_COSH_SPLIT = 20


def _log_cosh_pieces(e: sp.Basic) -> sp.Basic:
    u = e.args[0].args[0]
    return sp.Piecewise(
        (log1p(2 * sp.sinh(u / 2) ** 2), sp.Abs(u) < LOG_COSH_SPLIT),
        (sp.Abs(u) + log1p(sp.exp(-2 * sp.Abs(u))) - sp.log(2), True))


_LOG_COSH = Rewrite(
    "log cosh",
    "no one expression of {0} is accurate for every real {1}: {2} rounds {0} away where {1} "
    "is near 0 and overflows where {3}; {4} and {5} are each accurate where they are used, "
    "so it is evaluated in two pieces",
    (sp.log(sp.cosh(_u)), _u, sp.cosh(_u), sp.Abs(_u) > 710,
     _identity(sp.log(sp.cosh(_u)), log1p(2 * sp.sinh(_u / 2) ** 2)),
     _identity(sp.log(sp.cosh(_u)), sp.Abs(_u) + log1p(sp.exp(-2 * sp.Abs(_u))) - sp.log(2))),
    lambda e: isinstance(e, sp.log) and isinstance(e.args[0], sp.cosh),
    _log_cosh_pieces,
)


def _log1p_square_pieces(e: sp.Basic) -> sp.Basic:
    u = e.args[0].base
    # the last piece may be evaluated everywhere (NumPy): it forms no square, no log(0)
    # and no 1/0 for any u
    w = 1 / (1 + sp.Abs(u))
    return sp.Piecewise((log1p(u**2), sp.Abs(u) < 1),
                        (2 * log1p(sp.Abs(u)) + log1p(-2 * w * (1 - w)), True))


_LOG1P_SQUARE = Rewrite(
    "log1p of a square",
    "{0} overflows where {1}, though {2} is finite; there {3}: no square is formed, and the "
    "argument of the second log1p is in [-1/2, 0); where {4} the first form keeps every "
    "digit, so it is evaluated in two pieces",
    (_u**2, sp.Abs(_u) > sp.Float("1.3e154", 2), log1p(_u**2),
     _identity(log1p(_u**2), 2 * log1p(sp.Abs(_u))
           + log1p(-2 * (1 - 1 / (1 + sp.Abs(_u))) / (1 + sp.Abs(_u)))),
     sp.Abs(_u) < 1),
    lambda e: isinstance(e, log1p) and e.args[0].is_Pow and e.args[0].exp == 2,
    _log1p_square_pieces,
)


def _conjugate(e: sp.Basic) -> tuple[sp.Basic, sp.Basic, sp.Basic] | None:
    """``(k sqrt(P), R, c)`` where ``e`` is ``k sqrt(P) + R`` with ``k**2 P - R**2 = c`` a
    positive number (so ``k sqrt(P) > |R|``), else None."""
    if not e.is_Add:
        return None
    for term in e.args:
        k, root = term.as_coeff_Mul()
        if not (root.is_Pow and root.exp == sp.S.Half and k.is_positive):
            continue
        rest = e - term
        if not rest.free_symbols:
            continue
        c = sp.expand(k**2 * root.base - rest**2)
        if c.is_number and c.is_positive:
            return term, rest, c
    return None


def _conjugate_pieces(e: sp.Basic) -> sp.Basic:
    root, rest, c = _conjugate(e)
    return sp.Piecewise((c / (root - rest), rest < 0), (root + rest, True))


_CONJUGATE = Rewrite(
    "conjugate",
    "{0} cancels where {1} is large and negative; there it is {2}, a sum of two positive "
    "numbers: it is evaluated in two pieces",
    (sp.sqrt(_u**2 + _b) + _u, _u,
     _identity(sp.sqrt(_u**2 + _b) + _u, _b / (sp.sqrt(_u**2 + _b) - _u))),
    lambda e: _conjugate(e) is not None,
    _conjugate_pieces,
)


def _unbounded_exponent(u: sp.Basic) -> bool:
    """Whether ``exp(u)`` over- or underflows for some finite array entry: ``u`` is linear
    in one array entry ``g`` (``-g - 2``), or plus or minus the absolute value of such a
    function (``-|g + 2|``).

    Example:
        >>> g = sp.IndexedBase("G", real=True)[sp.Symbol("i", integer=True)]
        >>> [_unbounded_exponent(u) for u in (g, -g - 2, -sp.Abs(g + 2), sp.tanh(g), g**2)]
        [True, True, True, False, False]
    """
    entries = u.atoms(sp.Indexed)
    if len(entries) != 1:
        return False
    (g,) = entries
    if len(g.indices) != 1:
        return False
    t = sp.Dummy("t", real=True)
    w = u.xreplace({g: t})
    if w.free_symbols != {t}:
        return False
    if isinstance(-w, sp.Abs):
        w = (-w).args[0]
    elif isinstance(w, sp.Abs):
        w = w.args[0]
    return bool(w.is_polynomial(t)) and sp.degree(w, t) == 1


def _scale_factors(m: sp.Basic, *skip: sp.Basic) -> list[sp.Basic]:
    """The factors of the product ``m`` (other than ``skip``) that are array entries or
    sums of them (not a Jacobian's entry, a Kronecker delta or a piecewise value)."""
    return [f for f in m.args if not any(f is k for k in skip) and f.free_symbols
            and not f.has(sp.KroneckerDelta, sp.UnevaluatedExpr, sp.Piecewise)
            and all(len(x.indices) == 1 for x in f.atoms(sp.Indexed))]


def _split_scaled(m: sp.Basic, special: Callable[[sp.Basic], bool],
                  keeps: Callable[[list[sp.Basic]], bool] = bool,
                  ) -> tuple[sp.Basic, sp.Basic, sp.Basic] | None:
    """``(a, f, rest)`` where ``m`` is ``rest * a * f``, ``f`` its one factor that is
    ``special``, ``a`` the product of its factors that are array entries or sums of them
    (:func:`_scale_factors`) where ``keeps`` takes them, else None."""
    if not m.is_Mul:
        return None
    found = [f for f in m.args if special(f)]
    if len(found) != 1:
        return None
    scale = _scale_factors(m, found[0])
    if not keeps(scale):
        return None
    rest = [f for f in m.args if f is not found[0] and f not in scale]
    return sp.Mul(*scale), found[0], sp.Mul(*rest)


def _scaled_exponential(m: sp.Basic) -> tuple[sp.Basic, sp.Basic, sp.Basic] | None:
    """``(a, exp(u), rest)`` where ``m`` is ``rest * a * exp(u)``, ``exp(u)`` one that over-
    or underflows (:func:`_unbounded_exponent`), ``a`` the product of the factors that are
    array entries or sums of them (not a Jacobian's entry or a Kronecker delta, kept in
    ``rest``), else None."""
    # with no unbounded factor in the scale there is nothing to keep finite
    return _split_scaled(
        m, lambda f: isinstance(f, sp.exp) and _unbounded_exponent(f.args[0]),
        lambda scale: not all(f.has(sp.exp) for f in scale))


def _exponential_plus(f: sp.Basic) -> tuple[sp.Basic, sp.Basic] | None:
    """``(exp(u), c)`` where ``f`` is ``exp(u) + c``, ``c`` a positive number and
    ``exp(u)`` one that over- or underflows, else None."""
    if not f.is_Add or len(f.args) != 2:
        return None
    c, power = f.as_coeff_Add()
    if not (c.is_positive and isinstance(power, sp.exp) and _unbounded_exponent(power.args[0])):
        return None
    return power, c


def _scaled_exponential_sum(m: sp.Basic) -> tuple[sp.Basic, sp.Basic, sp.Basic] | None:
    """``(a, exp(u) + c, rest)`` where ``m`` is ``rest * a * (exp(u) + c)`` (as
    :func:`_exponential_plus`), ``a`` as in :func:`_scaled_exponential`, else None."""
    return _split_scaled(m, lambda f: _exponential_plus(f) is not None)


def _distributed_exponential_sum(m: sp.Basic) -> sp.Basic:
    a, total, rest = _scaled_exponential_sum(m)
    power, c = _exponential_plus(total)
    return rest * (a * power + c * a)


_EXP_SUM_PRODUCT = Rewrite(
    "product with an exponential plus a constant",
    "{0} overflows where {1} is large, though {2} is finite where {3} is small: {4}, so "
    "that the product with the exponential can be formed without overflow (next step)",
    (sp.exp(_u) + _b, _u, _v * (sp.exp(_u) + _b), sp.Abs(_v),
     _identity(_v * (sp.exp(_u) + _b), _v * sp.exp(_u) + _b * _v, evaluate=False)),
    lambda e: _scaled_exponential_sum(e) is not None,
    _distributed_exponential_sum,
)


def _piecewise_scaled(m: sp.Basic) -> tuple[sp.Basic, sp.Piecewise, sp.Basic] | None:
    """``(a, P, rest)`` where ``m`` is ``rest * a * P``, ``P`` its one piecewise factor, a
    piece of which holds an exponential that over- or underflows, ``a`` as in
    :func:`_scaled_exponential`, else None."""
    if not m.is_Mul or sum(isinstance(f, sp.Piecewise) for f in m.args) != 1:
        return None
    return _split_scaled(m, lambda f: isinstance(f, sp.Piecewise) and any(
        _unbounded_exponent(p.args[0]) for p in f.atoms(sp.exp)))


def _product_into_pieces(m: sp.Basic) -> sp.Basic:
    a, pw, rest = _piecewise_scaled(m)
    return rest * sp.Piecewise(*((a * value, cond) for value, cond in pw.args))


_c = sp.Symbol("c")
_PRODUCT_INTO_PIECES = Rewrite(
    "product into pieces",
    "a piece holds {0}, which over- or underflows where {1} is large, though its product "
    "with {2} is finite: {3}, so that each piece forms its own product (next step)",
    (sp.exp(_u), sp.Abs(_u), _v,
     _identity(_v * sp.Piecewise((sp.exp(_u), _c > 0), (1, True)),
           sp.Piecewise((_v * sp.exp(_u), _c > 0), (_v, True)), evaluate=False)),
    lambda e: _piecewise_scaled(e) is not None,
    _product_into_pieces,
)


def _halved_exponential(m: sp.Basic) -> sp.Basic:
    a, power, rest = _scaled_exponential(m)
    half = sp.exp(power.args[0] / 2)
    return rest * sp.UnevaluatedExpr(a * half) * half


_EXP_PRODUCT = Rewrite(
    "product with an exponential",
    "{0} overflows where {1} (float32: {2}), though {3} is finite where {4} is small, and "
    "0 times infinity is not a number; it underflows to 0 where {8}, though {3} is not 0 "
    "where {4} is large; {5}: the first product is formed first, so no infinity is formed "
    "where the value is finite, for {6} (float32: {7}), and no 0 where the value is a "
    "normal number",
    (sp.exp(_u), _u > sp.Float("709.78", 5), _u > sp.Float("88.72", 4), _v * sp.exp(_u),
     sp.Abs(_v),
     _identity(_v * sp.exp(_u), sp.UnevaluatedExpr(_v * sp.exp(_u / 2)) * sp.exp(_u / 2),
           evaluate=False),
     _u < sp.Float("1419.5", 5), _u < sp.Float("177.4", 4), _u < sp.Float("-745.13", 5)),
    lambda e: _scaled_exponential(e) is not None,
    _halved_exponential,
)

#: Where ``|v|`` reaches this, ``exp(u) sinh(v)`` and ``exp(u) cosh(v)`` are formed from
#: exponentials of halves (``exp(-2|v|)`` is below float64's eps there).
HYPERBOLIC_PRODUCT_SPLIT = 20


def _hyperbolic_scaled(m: sp.Basic) -> tuple[sp.Basic, sp.Basic, sp.Basic] | None:
    """``(exp(u), h(v), rest)`` where ``m`` is ``rest * exp(u) * h(v)``, ``h`` sinh or
    cosh, ``exp(u)`` one that over- or underflows and ``v`` linear in one array entry
    (:func:`_unbounded_exponent`), else None."""
    if not m.is_Mul:
        return None
    powers = [f for f in m.args if isinstance(f, sp.exp) and _unbounded_exponent(f.args[0])]
    hyperbolic = [f for f in m.args if isinstance(f, (sp.sinh, sp.cosh))
                  and _unbounded_exponent(f.args[0])]
    if len(powers) != 1 or len(hyperbolic) != 1:
        return None
    rest = [f for f in m.args if f is not powers[0] and f is not hyperbolic[0]]
    return powers[0], hyperbolic[0], sp.Mul(*rest)


def _half_product(w: sp.Basic, u: sp.Basic) -> sp.Basic:
    """``exp(w/2) exp(u/2)``, kept a product of two exponentials (SymPy would add the
    exponents, whose rounding the exponential magnifies by their size)."""
    return sp.UnevaluatedExpr(sp.Mul(sp.exp(w / 2), sp.exp(u / 2), evaluate=False))


def _hyperbolic_far(h: type, w: sp.Basic, u: sp.Basic) -> sp.Basic:
    """``exp(u) h(w)`` for ``w > 0``: ``(P (P/2)) (1 -+ exp(-2w))``, ``P = exp(w/2) exp(u/2)``
    (``exp(-2w)`` is below eps where ``w >= 20``: no cancellation)."""
    tail = 1 - sp.exp(-2 * w) if h is sp.sinh else 1 + sp.exp(-2 * w)
    half = sp.UnevaluatedExpr(sp.Mul(sp.Rational(1, 2), sp.exp(w / 2), sp.exp(u / 2),
                                     evaluate=False))
    # grouped as a whole too: the printers would spread a product with a minus sign
    return sp.UnevaluatedExpr(_half_product(w, u) * half) * tail


def _hyperbolic_signed(h: type, v: sp.Basic, u: sp.Basic) -> sp.Basic:
    """``exp(u) h(v)`` for ``v != 0`` from :func:`_hyperbolic_far` at ``|v|``: times
    ``sign(v)`` for the odd sinh."""
    far = _hyperbolic_far(h, sp.Abs(v), u)
    return sp.sign(v) * far if h is sp.sinh else far


def _hyperbolic_pieces(m: sp.Basic) -> sp.Basic:
    power, hyp, rest = _hyperbolic_scaled(m)
    u, v, h = power.args[0], hyp.args[0], type(hyp)
    # one far piece in |v| (its sign apart for sinh): one condition to evaluate, and a last
    # piece finite wherever a kernel evaluates it (where |v| < 20 too), as the gather of
    # kernel_runtime needs of the piece it may evaluate everywhere
    return rest * sp.Piecewise((power * hyp, sp.Abs(v) < HYPERBOLIC_PRODUCT_SPLIT),
                               (_hyperbolic_signed(h, v, u), True))


_HYPERBOLIC_PRODUCT = Rewrite(
    "product of an exponential and a hyperbolic function",
    "{0} overflows where {1} passes 710 (float32: 89), though its product with {2} is "
    "finite where {3} is negative enough; {4} and {5} for {6}, with {7} where P is "
    "{8}: no exponential of more than half of either argument is formed, and each factor "
    "is correctly rounded (no sum of the arguments is rounded and then magnified by the "
    "exponential); the odd sinh takes the sign of {10} ({11}); where {9} the product is "
    "formed as derived, so it is evaluated in two pieces",
    (sp.sinh(_v), sp.Abs(_v), sp.exp(_u), _u,
     _identity(sp.exp(_u) * sp.sinh(_b), _hyperbolic_signed(sp.sinh, _b, _u), evaluate=False),
     _identity(sp.exp(_u) * sp.cosh(_b), _hyperbolic_signed(sp.cosh, _b, _u), evaluate=False),
     _b > 0, sp.Symbol("P") * sp.Symbol("P") / 2,
     _half_product(sp.Abs(_v), _u),
     sp.Abs(_v) < HYPERBOLIC_PRODUCT_SPLIT, _v,
     _identity(sp.sinh(_v), sp.sign(_v) * sp.sinh(sp.Abs(_v)), evaluate=False)),
    lambda e: _hyperbolic_scaled(e) is not None,
    _hyperbolic_pieces,
)

#: Where ``log|a| + u`` passes this, ``asinh(a exp(u))`` is formed from ``log|a| + u``.
ASINH_PRODUCT_ABOVE = 690


def _asinh_scaled(e: sp.Basic) -> tuple[sp.Basic, sp.Basic] | None:
    """``(a, u)`` where ``e`` is ``asinh(a exp(u))``, ``exp(u)`` one that over- or
    underflows, ``a`` a product of array entries or sums of them and numbers, else None."""
    if not isinstance(e, sp.asinh):
        return None
    found = _scaled_exponential(e.args[0])
    if found is None or not found[2].is_number:
        return None
    a, power, rest = found
    return rest * a, power.args[0]


def _asinh_of_exp(w: sp.Basic) -> sp.Basic:
    """``asinh(exp(w))`` for ``w > 0``: ``w + log(1 + sqrt(1 + exp(-2|w|)))`` (``|w|``,
    so that it never overflows, whatever ``w`` a kernel evaluates it at)."""
    return w + sp.log(1 + sp.sqrt(1 + sp.exp(-2 * sp.Abs(w))))


#: Below this ``|a|``, the pieces of :func:`_asinh_pieces` take this instead (no log of
#: 0), and ``asinh(a exp(u))`` is taken as derived.
_ASINH_TINY = sp.Float("1e-300", 3)


def _asinh_pieces(e: sp.Basic) -> sp.Basic:
    a, u = _asinh_scaled(e)
    log_z = sp.log(sp.Max(sp.Abs(a), _ASINH_TINY)) + u  # log|a exp(u)| where |a| > tiny
    far = _asinh_of_exp(log_z)
    # as derived first; the last piece is finite wherever a kernel evaluates it
    return sp.Piecewise((e, sp.Or(sp.Abs(a) <= _ASINH_TINY, log_z <= ASINH_PRODUCT_ABOVE)),
                        (far, a > 0), (-far, True))


_l = sp.Symbol("l", positive=True)
_ASINH_PRODUCT = Rewrite(
    "asinh of a product with an exponential",
    "{0} overflows where {1} passes 709.78, though {2} is finite (about {1}); {3}, and "
    "{4} for {5}: where {6} (and {7}), {2} is evaluated from {1}, and its odd part "
    "{8} where the product is negative (the sum {1} is large, so its rounding is small "
    "beside it); elsewhere as derived, so it is evaluated in three pieces",
    (_v * sp.exp(_u), sp.log(sp.Abs(_v)) + _u, sp.asinh(_v * sp.exp(_u)),
     _identity(sp.log(_b * sp.exp(_u)), sp.log(_b) + _u),
     _identity(sp.asinh(sp.exp(_l)), _asinh_of_exp(_l), evaluate=False), _l > 0,
     sp.log(sp.Abs(_v)) + _u > ASINH_PRODUCT_ABOVE, sp.Abs(_v) > _ASINH_TINY,
     _identity(sp.asinh(-_b * sp.exp(_u)), -sp.asinh(_b * sp.exp(_u)))),
    lambda e: _asinh_scaled(e) is not None,
    _asinh_pieces,
)

#: Below this ``u``, ``softplus(u)`` is subnormal or 0 in float64 (``exp(-708.4)`` is the
#: smallest normal number); there a product with it is formed through ``exp(u)``.
SOFTPLUS_PRODUCT_BELOW = -708


def _softplus_power(f: sp.Basic) -> tuple[sp.Basic, int] | None:
    """``(u, k)`` where ``f`` is ``softplus(u)**k``, ``k`` 1 or -1 and ``u`` linear in one
    array entry, else None."""
    base, k = f.as_base_exp()
    if isinstance(base, softplus) and k in (1, -1) and _unbounded_exponent(base.args[0]):
        return base.args[0], int(k)
    return None


def _softplus_scaled(m: sp.Basic) -> tuple[sp.Basic, sp.Basic, sp.Basic] | None:
    """``(a, softplus(u)**k, rest)`` where ``m`` is ``rest * a * softplus(u)**k`` (as
    :func:`_softplus_power`), ``a`` as in :func:`_scaled_exponential`, else None."""
    return _split_scaled(m, lambda f: _softplus_power(f) is not None)


def _softplus_far(a: sp.Basic, u: sp.Basic, k: int) -> sp.Basic:
    """``a softplus(u)**k`` where ``exp(u)`` is below 1e-307: ``a exp(k u)`` (the first
    term of its series; the rule's notes check it as a series)."""
    return a * sp.exp(k * u)


def _softplus_pieces(m: sp.Basic) -> sp.Basic:
    a, power, rest = _softplus_scaled(m)
    u, k = _softplus_power(power)
    # the piece as derived last: it is finite wherever a kernel evaluates it
    return rest * sp.Piecewise((_softplus_far(a, u, k), u < SOFTPLUS_PRODUCT_BELOW),
                               (a * power, True))


_SOFTPLUS_PRODUCT = Rewrite(
    "product with a softplus that underflows",
    "where {0}, {1} is subnormal or 0 though its product with {2} (or {2} divided by it) is "
    "a normal number where {3} is large (small); there {4} and {5} in powers of {6}, which "
    "is below 1e-307: the next term is below 1e-307 of the value, so the product (the "
    "quotient) is its first term, formed without underflow (next step); elsewhere as "
    "derived, so it is evaluated in two pieces",
    (sp.Lt(_u, SOFTPLUS_PRODUCT_BELOW), softplus(_u), _v, sp.Abs(_v),
     *(_identity(_v * softplus(sp.log(_t))**k / _softplus_far(_v, sp.log(_t), k), 1 + sp.O(_t),
             evaluate=False) for k in (1, -1)), _t),
    lambda e: _softplus_scaled(e) is not None,
    _softplus_pieces,
)

#: Where ``|z|`` reaches this, ``sinh(asinh(z)/3)`` is evaluated through cube roots.
SINH_THIRD_SPLIT = 2


def _sinh_third_of(e: sp.Basic) -> sp.Basic | None:
    """``z`` where ``e`` is ``sinh(asinh(z)/3)`` (a monotone cubic's real root), else None."""
    if not isinstance(e, sp.sinh):
        return None
    third, inner = e.args[0].as_coeff_Mul()
    if third != sp.Rational(1, 3) or not isinstance(inner, sp.asinh):
        return None
    return inner.args[0]


def _sinh_third_scaled(z: sp.Basic) -> sp.Basic:
    """``sinh(asinh(z)/3)`` for ``z > 0`` as ``(c - 1/c)/2``, ``c = cbrt(z + sqrt(z**2 +
    1))`` scaled by ``z`` so that no square is formed."""
    c = cbrt(z) * cbrt(1 + sp.sqrt(1 + z**-2))
    return (c - 1 / c) / 2


def _sinh_third_pieces(e: sp.Basic) -> sp.Basic:
    z = _sinh_third_of(e)
    return sp.Piecewise((e, sp.Abs(z) < SINH_THIRD_SPLIT), (_sinh_third_scaled(z), z > 0),
                        (-_sinh_third_scaled(-z), True))


_SINH_THIRD = Rewrite(
    "sinh of a third of asinh",
    "{0} takes the log of {1} and then its exponential, whose relative error grows with "
    "{2} (about 200 ulp where {1} is 1e300); {3} for {4}, since {5}: cube roots of a "
    "number near {1} and of one in (2, 2.12], with no square formed; its odd part, {6}, "
    "gives the negative {1}; where {7} the first form keeps every digit, so it is "
    "evaluated in three pieces",
    (sp.sinh(sp.asinh(_u) / 3), _u, sp.asinh(_u) / 3,
     _identity(sp.sinh(sp.asinh(_b) / 3), _sinh_third_scaled(_b)), _b > 0,
     _identity(sp.exp(sp.asinh(_b)), _b * (1 + sp.sqrt(1 + _b**-2))),
     _identity(sp.sinh(sp.asinh(-_b) / 3), -sp.sinh(sp.asinh(_b) / 3)),
     sp.Abs(_u) < SINH_THIRD_SPLIT),
    lambda e: _sinh_third_of(e) is not None,
    _sinh_third_pieces,
)

#: The rewrites that take ``log|det|`` to a sum that never forms an exponential (sigmoids
#: are recognized first, however written, so that their logs become softplus terms).
LOG_REWRITES = (_TANH_SIGMOID, _SIGMOID, _EXP_SIGMOID, _LOG_OF_PRODUCT, _LOG_OF_POWER,
                _LOG_OF_EXP, _POSITIVE, _SOFTPLUS, _LOG_SIGMOID)

#: The rewrites a coupling kernel's expressions go through before printing, in order.
KERNEL_REWRITES: tuple[Rewrite, ...] = (
    _CANCEL, _ONE_MINUS_PART, _TANH_DERIVATIVE, _TANH_SIGMOID, _SINH, _SIGMOID, _EXP_SIGMOID,
    _SIGMOID_COMPLEMENT, _LOG_SIGMOID, _SOFTPLUS, _SOFTPLUS_REFLECTION, _LOGADDEXP,
    _LOG_EXP_PLUS, _EXPM1, _LOG1P, _LOG1P_ABS, _LOG_SOFTPLUS, _EXP_RATIO, _SIGMOID_PRODUCT,
    _SIGMOID_PIECES, _LOG_COSH, _LOG1P_SQUARE, _CONJUGATE, _HYPERBOLIC_PRODUCT,
    _SOFTPLUS_PRODUCT, _ASINH_PRODUCT, _PRODUCT_INTO_PIECES, _EXP_SUM_PRODUCT, _EXP_PRODUCT,
    _SINH_THIRD)


# --- rules that take data: the arrangements near an optimum (derivations 2.3n, 2.4) -----


def _vanishing_apart(expr: sp.Basic, scale: sp.Symbol,
                     optimum: Sequence[sp.Basic]) -> sp.Basic:
    """``expr`` factored, the factors that vanish where ``scale`` is ``optimum[0]`` kept
    apart, the rest expanded over its denominator; then ``expm1`` and ``log1p``."""
    if not expr.has(scale):
        return optimize(sp.factor(expr), [expm1_opt, log1p_opt])
    numer, denom = sp.fraction(sp.factor(expr))
    factors = sp.Mul.make_args(numer)
    vanishing = [f for f in factors
                 if optimum and f.free_symbols and f.xreplace({scale: optimum[0]}) == 0]
    rest = sp.Mul(*[f for f in factors if f not in vanishing]) / denom
    arranged = sp.Mul(*vanishing) * sp.expand(rest) if vanishing else sp.factor(expr)
    return optimize(arranged, [expm1_opt, log1p_opt])


def vanishing_factors_apart(scale: sp.Symbol, optimum: Sequence[sp.Basic]) -> Rewrite:
    """The rule that arranges an expression in ``scale`` so that nothing cancels near the
    optimum (``scale`` in ``optimum``; empty where it is never reached) and nothing
    overflows early: factor it; keep the factors that vanish at the optimum apart, where
    they are computed exactly (``sigma - 1``, ``expm1(logvar)``); expand what is left over
    the denominator (``(sigma + 1) / sigma -> 1 + 1/sigma``), so that it cannot overflow.

    Example:
        >>> sigma = sp.Symbol("sigma", positive=True)
        >>> rule = vanishing_factors_apart(sigma, [1])
        >>> rule(sigma**2 - 1), rule(sigma - 1 / sigma)
        ((sigma - 1)*(sigma + 1), (1 + 1/sigma)*(sigma - 1))
    """
    reason = ("factor; the factors that vanish where {0} is {1} are computed apart, "
              "exactly, and the rest expanded over its denominator" if optimum else
              "factor, and expand over the denominator")
    return Rewrite("vanishing factors apart", reason,
                   (scale, optimum[0]) if optimum else (),
                   whole=lambda e: _vanishing_apart(e, scale, tuple(optimum)))


def expm1_as_sinh(half: sp.Basic) -> Rewrite:
    """The rule ``expm1(a) = 2 exp(a/2) sinh(a/2)`` where ``exp(a/2)`` is ``half`` (a
    standard deviation, computed anyway).

    Both are exact at ``a = 0`` (``sinh(0) = 0``), but ``expm1(a)`` overflows before a
    division by ``half`` brings it back into range, and ``0 * expm1(a)`` is NaN where it
    overflows; ``exp(a/2)`` and ``sinh(a/2)`` stay finite twice as far.

    Example:
        >>> lv = sp.Symbol("logvar", real=True)
        >>> expm1_as_sinh(sp.exp(lv / 2))(expm1(lv) / 2)
        exp(logvar/2)*sinh(logvar/2)
    """
    def rewrite(e: sp.Basic) -> sp.Basic:
        exp_half = sp.exp(e.args[0] / 2)
        return 2 * exp_half * sp.sinh(e.args[0] / 2) if sp.simplify(exp_half - half) == 0 \
            else e

    return Rewrite("expm1 as sinh", "{0}, with {1} computed once: it overflows later",
                   (_identity(expm1(2 * _u), 2 * sp.exp(_u) * sp.sinh(_u), evaluate=False), half),
                   lambda e: isinstance(e, expm1), rewrite)


def _halved_square(term: sp.Basic) -> sp.Basic:
    coeff, rest = term.as_coeff_Mul()
    if isinstance(rest, sp.Pow) and rest.exp == 2:
        base = rest.base
    elif isinstance(rest, sp.exp):
        base = sp.exp(rest.args[0] / 2)
    else:
        return term
    return 4 * coeff * sp.UnevaluatedExpr(base / 2) ** 2


#: Every term ``c a**2`` written ``4c (a/2)**2``: halve, then square. Halving and doubling
#: are exact in binary floating point, so the value is the same to the last bit, but
#: ``a**2`` overflows from ``|a| ~ 1.3e154`` (float64) where ``a**2/2`` is still finite.
#: ``exp(2b)`` counts as the square of ``exp(b)``. The halved base is an unevaluated
#: expression, so that SymPy keeps the arrangement.
SCALED_SQUARES = Rewrite(
    "scaled squares", "{0}: halve, then square, so that the square overflows later",
    (_identity(_u**2, 4 * sp.UnevaluatedExpr(_u / 2) ** 2, evaluate=False),),
    whole=lambda e: sp.Add(*(_halved_square(t) for t in sp.Add.make_args(sp.expand(e)))))


#: ``1 + u`` as written (the sum rounded once, whose rounding the correction recovers)
_w1 = sp.UnevaluatedExpr(1 + _u)


def log1p_as_log(expr: sp.Basic, w: sp.Symbol) -> tuple[sp.Basic, Step] | None:
    """``expr`` with its ``log1p(u)`` written ``log(w) - ((w - 1) - u)/w``, ``w = 1 + u``,
    and the step that proves it (``given`` holds ``w``'s definition); None where ``expr``
    holds no ``log1p``, or more than one.

    The correction is 0 in real arithmetic. In floating point ``w = 1 + u`` is rounded;
    ``w - 1`` and its difference from ``u`` are exact (Sterbenz, for ``|u| <= 1/2``) and are
    that rounding, so the form keeps ``log1p``'s accuracy to about an ulp of the logarithm
    (a classic correction): one ``log`` serves where a choice between ``log1p`` and ``log``
    would call the C library's once per entry (code generation takes the logarithm of
    every entry at once, issue 24). The groupings are kept (unevaluated).

    Example:
        >>> u, w = sp.Symbol("u", real=True), sp.Symbol("w", positive=True)
        >>> form, step = log1p_as_log(2 * log1p(u), w)
        >>> form
        2*(log(w) - (-u + (w - 1))/w)
        >>> step.given
        ((w, 1 + u),)
        >>> step.given[0][1].has(sp.UnevaluatedExpr)  # 1 + u as written, not merged
        True
        >>> from .derivation import check_step
        >>> check_step(step).method in ("symbolic", "numeric")
        True
        >>> wrong = Step(step.lhs, step.rhs.xreplace({sp.log(w): sp.log(w - 1)}), "wrong",
        ...              given=step.given)
        >>> check_step(wrong)
        Traceback (most recent call last):
        ...
        derive.derivation.StepCheckError: ...
    """
    found = expr.atoms(log1p)
    if len(found) != 1:
        return None
    (app,) = found
    u = sp.UnevaluatedExpr(app.args[0])
    form = expr.xreplace({app: sp.log(w) - sp.UnevaluatedExpr(sp.UnevaluatedExpr(w - 1) - u) / w})
    step = Step(expr, form,
                "{0} with {1}: the correction is 0 in real arithmetic; in floating point {2} "
                "and its difference from {3} are exact and are the rounding of {1}, so that "
                "a logarithm serves where log1p would",
                given={w: 1 + u},
                notes=(_identity(log1p(_u), sp.log(_w1) - sp.UnevaluatedExpr(
                    sp.UnevaluatedExpr(_w1 - 1) - _u) / _w1), 1 + app.args[0], w - 1,
                    app.args[0]))
    return form, step
