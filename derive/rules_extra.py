r"""More rewrites for the search of :mod:`derive.search` (issue 23): each is a general
identity, checked as a step (piecewise ones inside each piece) when the search keeps it.

- cube roots as :class:`~derive.nodes.cbrt` (no power with the exponent 1/3 rounded);
- a root of a quadratic, ``p + sqrt(b**2 - k a c)``, in the form that does not cancel
  (the conjugate where ``p`` and the root have opposite signs), its discriminant scaled
  by ``|b|`` or by ``sqrt|k a c|``, so that neither ``b**2`` nor ``a c`` is formed;
- ``U log U - V log V`` as ``(U - V) log U + V log1p((U - V)/V)``;
- ``log(n/d)`` as ``log1p((n - d)/d)`` where ``n - d`` is shorter than ``n``;
- ``u**p - v**p`` as ``v**p expm1(p log1p((u - v)/v))``;
- ``k u**2 - k c**2`` as ``k (u - c)(u + c)`` or ``k (2 c d + d**2)``, ``d = u - c``;
- two terms of a sum added first (one alternative per pair);
- ``expm1(f g)`` as ``expm1(p) + exp(p) expm1(q)``, ``p + q = f g`` exactly (Dekker);
- ``sqrt(exp(u) + c)`` as ``exp(u/2) sqrt(1 + c exp(-u))`` where ``u > 0`` (no overflow
  of ``exp(u)`` where the root is finite);
- ``(v + d)**(1/w) - v**(1/w)`` as ``v**(1/w) expm1(L)`` (``w < 0``) or
  ``(v + d)**(1/w) (-expm1(-L))`` (``w > 0``), ``L = log1p(d/v)/w``, each power without
  the rounding of ``1/w`` (``pow(v, fl(1/w))`` times a factor near 1, Dekker's
  TwoProduct) and ``v + d`` exact (Knuth's TwoSum).

Every rule is ``(name, function, reason, notes)`` as :data:`derive.search.RULES`.

Example:
    >>> x = sp.Symbol("x", nonnegative=True)
    >>> _cube_roots(1/(x**sp.Rational(2, 3) + 1))
    1/(cbrt(x)**2 + 1)
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from .nodes import cbrt, plain
from .nodes import identity as _identity

__all__ = ["EXTRA_RULES", "Grouped", "trig_of_exact_sum", "two_terms"]

_a = sp.Symbol("a", real=True)
_b = sp.Symbol("b", real=True)
_c = sp.Symbol("c", real=True)
_u = sp.Symbol("u", real=True)
_p = sp.Symbol("u", positive=True)


def _cube_roots(e: sp.Basic) -> sp.Basic:
    """Powers ``v**(k/3)`` of a nonnegative ``v`` as ``cbrt(v)**k``."""

    def query(t: sp.Basic) -> bool:
        return (t.is_Pow and t.exp.is_Rational and t.exp.q == 3
                and bool(t.base.is_nonnegative))

    return e.replace(query, lambda t: cbrt(t.base) ** t.exp.p)


def _discriminant(d: sp.Basic) -> tuple[sp.Basic, sp.Basic, sp.Basic, sp.Basic] | None:
    """``(b, k, a, c)`` where ``d = b**2 - k a c`` (``k`` a number, ``a, c`` factors)."""
    d = sp.expand(d)
    if not (d.is_Add and len(d.args) == 2):
        return None
    for sq, prod in (d.args, d.args[::-1]):
        if sq.is_Pow and sq.exp == 2 and not sq.base.is_number:
            coeff, rest = (-prod).as_coeff_Mul()
            factors = rest.as_ordered_factors()
            if len(factors) == 2 and all(f.free_symbols for f in factors) \
                    and sq.base not in factors:
                return sq.base, coeff, factors[0], factors[1]
    return None


def _scaled_root(b: sp.Basic, k: sp.Basic, a: sp.Basic, c: sp.Basic) -> sp.Basic:
    """``sqrt(b**2 - k a c)`` without forming ``b**2`` or ``a c``: with
    ``s = sqrt|k| sqrt|a| sqrt|c|`` and ``g = sign(k a c)``, ``|b| sqrt(1 - g (s/b)**2)``
    where ``|b| >= s``, ``s sqrt((b/s)**2 - g)`` elsewhere."""
    s = sp.sqrt(sp.Abs(k)) * sp.sqrt(sp.Abs(a)) * sp.sqrt(sp.Abs(c))
    g = sp.sign(k) * sp.sign(a) * sp.sign(c)
    # the ratios kept as ratios: SymPy would otherwise expand (s/b)**2 into 4|a||c|/b**2
    return sp.Piecewise((sp.Abs(b) * sp.sqrt(1 - g * sp.UnevaluatedExpr(s / b) ** 2),
                         sp.Abs(b) >= s),
                        (s * sp.sqrt(sp.UnevaluatedExpr(b / s) ** 2 - g), True))


def _quadratic_root(e: sp.Basic) -> sp.Basic:
    """``p + t sqrt(D)`` (``t = 1`` or ``-1``, ``D`` a discriminant) as the conjugate
    ``(p**2 - D)/(p - t sqrt(D))`` where ``t p < 0`` (there the sum cancels), and the
    root scaled (:func:`_scaled_root`) everywhere."""
    roots = [t for t in sp.preorder_traversal(e)
             if t.is_Pow and t.exp == sp.S.Half and _discriminant(t.base) is not None]
    if not roots:
        return e
    root = roots[0]
    d = root.base
    scaled = _scaled_root(*_discriminant(d))

    def query(t: sp.Basic) -> bool:
        return t.is_Add and any(arg in (root, -root) for arg in t.args)

    def value(t: sp.Basic) -> sp.Basic:
        sign = 1 if root in t.args else -1
        p = t - sign * root
        conj = sp.expand(p ** 2 - d) / (p - sign * scaled)
        return sp.Piecewise((conj, sign * p < 0), (p + sign * scaled, True))

    out = e.replace(query, value).xreplace({root: scaled})
    return sp.piecewise_fold(out)


def _x_log_x_difference(e: sp.Basic) -> sp.Basic:
    """``U log U - V log V`` (in a sum) as ``(U - V) log U + V log1p((U - V)/V)``."""
    if not e.is_Add:
        return e
    terms = list(e.args)

    def xlogx(t: sp.Basic) -> tuple[int, sp.Basic] | None:
        sign = -1 if t.could_extract_minus_sign() else 1
        m = sign * t
        if m.is_Mul and len(m.args) == 2:
            for f, g in (m.args, m.args[::-1]):
                if isinstance(g, sp.log) and g.args[0] == f:
                    return sign, f
        return None

    found = [(t, xlogx(t)) for t in terms]
    plus = [(t, u) for t, m in found if m is not None and m[0] == 1 for u in (m[1],)]
    minus = [(t, v) for t, m in found if m is not None and m[0] == -1 for v in (m[1],)]
    for tu, u in plus:
        for tv, v in minus:
            diff = sp.expand(u - v)
            if diff.free_symbols and len(diff.free_symbols) >= len(u.free_symbols):
                continue
            rest = [t for t in terms if t is not tu and t is not tv]
            return sp.Add(*rest, diff * sp.log(u) + v * log1p(diff / v))
    return e


def _log_of_ratio(e: sp.Basic) -> sp.Basic:
    """``log(n/d)`` as ``log1p((n - d)/d)`` where ``n - d`` is shorter than ``n``: the log of
    a ratio near 1 through the small difference (``log((1 - u)/(1 + u))`` as
    ``log1p(-2u/(1 + u))``)."""

    def parts(t: sp.Basic) -> tuple[sp.Basic, sp.Basic] | None:
        if not isinstance(t, sp.log):
            return None
        n, d = sp.fraction(sp.together(t.args[0]))
        if d == 1 or not n.free_symbols:
            return None
        diff = sp.expand(n - d)
        if diff != n and (len(sp.Add.make_args(diff)) < len(sp.Add.make_args(n))
                          or sp.count_ops(diff) <= sp.count_ops(n)):
            return diff, d
        return None

    def value(t: sp.Basic) -> sp.Basic:
        diff, d = parts(t)
        return log1p(diff / d)

    return e.replace(lambda t: parts(t) is not None, value)


def _root_of_exp(e: sp.Basic) -> sp.Basic:
    """``sqrt(exp(u) + c)`` (``c`` a number) as ``exp(u/2) sqrt(1 + c exp(-u))`` where
    ``u > 0``."""

    def arg(t: sp.Basic) -> tuple[sp.Basic, sp.Basic] | None:
        if t.is_Pow and t.exp == sp.S.Half and t.base.is_Add and len(t.base.args) == 2:
            c, x = t.base.as_coeff_Add()
            if c != 0 and isinstance(x, sp.exp):
                return x.args[0], c
        return None

    def value(t: sp.Basic) -> sp.Basic:
        u, c = arg(t)
        return sp.Piecewise((sp.exp(u / 2) * sp.sqrt(1 + c * sp.exp(-u)), u > 0), (t, True))

    return e.replace(lambda t: arg(t) is not None, value)


def _powers_apart(t: sp.Basic, exponent: Callable[[sp.Basic], bool]
                  ) -> tuple[sp.Basic, sp.Basic, sp.Basic] | None:
    """``(v, d, p)`` where ``t = (v + d)**p - v**p`` (``v >= 0``, ``d`` the expanded
    difference of the bases) and ``exponent(p)``; else None. The difference of powers the
    rules 'power difference' and 'reciprocal power difference' rewrite."""
    two = two_terms(t)
    if two is None:
        return None
    a, b = two
    if not (a.is_Pow and b.is_Pow and a.exp == b.exp and exponent(a.exp)
            and b.base.is_nonnegative):
        return None
    return b.base, sp.expand(a.base - b.base), a.exp


def _power_difference(e: sp.Basic) -> sp.Basic:
    """``u**p - v**p`` (``p`` a rational, not an integer) as ``v**p expm1(p log1p((u - v)/v))``
    where ``u - v`` is shorter than ``u``: the small relative difference is formed first."""

    def parts(t: sp.Basic) -> tuple[sp.Basic, sp.Basic, sp.Basic] | None:
        found = _powers_apart(t, lambda p: p.is_Rational and not p.is_Integer)
        if found is None:
            return None
        v, d, p = found
        if v == 0 or len(sp.Add.make_args(d)) >= len(sp.Add.make_args(sp.expand(v + d))):
            return None
        return v, d, p

    def value(t: sp.Basic) -> sp.Basic:
        v, d, p = parts(t)
        return v ** p * expm1(p * log1p(d / v))

    return e.replace(lambda t: parts(t) is not None, value)


def _difference_of_squares(e: sp.Basic) -> tuple[sp.Basic, ...]:
    """``k u**2 - k c**2`` (terms of a sum, ``c`` a rational) as ``k (u - c)(u + c)``:
    where ``u`` is near ``c`` the small factor is formed first (exactly, by Sterbenz's
    lemma, for ``c/2 <= u <= 2c``), not as the difference of two close squares. One
    alternative for each square the sum holds (the search measures which helps)."""
    sums = [t for t in sp.preorder_traversal(e) if t.is_Add and t.as_coeff_Add()[0] != 0]
    out = []
    for t in sums:
        const = t.as_coeff_Add()[0]
        for term in t.args:
            k, rest = term.as_coeff_Mul()
            if rest.is_Pow and rest.exp == 2 and not rest.base.is_number:
                c = sp.sqrt(-const / k)
                if c.is_Rational and c > 0:
                    u = rest.base
                    others = t - term - const
                    d = sp.UnevaluatedExpr(u - c)
                    out.append(e.xreplace({t: others + k * sp.UnevaluatedExpr((u - c) * (u + c))}))
                    # the same around c: k (2 c d + d**2), d = u - c
                    out.append(e.xreplace({t: others + 2 * c * k * d + k * d**2}))
    return tuple(out)


def _pair_first(e: sp.Basic) -> tuple[sp.Basic, ...]:
    """A sum of three to six terms with two of them added first (one alternative per pair):
    the two that cancel, added before the others are, lose nothing (Sterbenz's lemma)."""
    out = []
    for t in sp.preorder_traversal(e):
        if t.is_Add and 3 <= len(t.args) <= 6:
            args = list(t.args)
            for i in range(len(args)):
                for j in range(i + 1, len(args)):
                    rest = [a for k, a in enumerate(args) if k not in (i, j)]
                    grouped = sp.UnevaluatedExpr(sp.Add(args[i], args[j]))
                    out.append(e.xreplace({t: sp.Add(grouped, *rest)}))
    return tuple(out)


class Grouped(sp.UnevaluatedExpr):
    """An operation kept in its place and printed in parentheses by every printer (an
    :class:`~sympy.UnevaluatedExpr` whose sum starts with a minus sign loses it when printed
    as a term of another sum: SymPy's printers take the leading ``-`` for the term's)."""

    def _grouped(self, printer: object) -> str:
        return "(" + printer._print(self.args[0]) + ")"

    _numpycode = _kernelcode = _pythoncode = _sympystr = _grouped

    def _latex(self, printer: object) -> str:
        return r"\left(" + printer._print(self.args[0]) + r"\right)"


class Rounded(Grouped):
    """A rounded operation whose rounding error the rewrite carries in a remainder:
    TwoSum's sum, TwoProduct's product, Veltkamp's scaled factor, a quotient whose
    remainder is formed. In the reals its remainder is 0, so an identity check cannot see
    whether the remainder is used right; :func:`derive.search.check_carried` perturbs each
    such operation and requires the rewrite to stay equal to first order. Printed as
    :class:`Grouped`."""


_U = Grouped
#: Veltkamp's splitting constant for float64, 2**27 + 1.
_SPLITTER = sp.Integer(2**27 + 1)
#: Beyond this magnitude a factor's split overflows (the splitter times it).
_SPLIT_LIMIT = sp.Float("1e290", 3)


def _two_sum(a: sp.Basic, b: sp.Basic) -> tuple[sp.Basic, sp.Basic]:
    """Knuth's TwoSum: ``(s, r)`` with ``s = fl(a + b)`` and ``s + r = a + b`` exactly in
    float64 (each operation kept in its order by :class:`~sympy.UnevaluatedExpr`; in the
    reals ``r`` is 0)."""
    s = Rounded(a + b)
    bb = _U(s - a)
    return s, _U(_U(a - _U(s - bb)) + _U(b - bb))


def _split(a: sp.Basic) -> tuple[sp.Basic, sp.Basic]:
    """Veltkamp's split: ``a = hi + lo`` exactly, each half 26 bits."""
    c = Rounded(_SPLITTER * a)
    hi = _U(c - _U(c - a))
    return hi, _U(a - hi)


def _two_product(a: sp.Basic, b: sp.Basic) -> tuple[sp.Basic, sp.Basic]:
    """Dekker's TwoProduct: ``(p, q)`` with ``p = fl(a b)`` and ``p + q = a b`` exactly in
    float64 (no overflow or underflow in between)."""
    p = Rounded(a * b)
    ah, al = _split(a)
    bh, bl = _split(b)
    q = _U(_U(_U(_U(_U(ah * bh) - p) + _U(ah * bl)) + _U(al * bh)) + _U(al * bl))
    return p, q


def _exact_parts(f: sp.Basic) -> tuple[sp.Basic, sp.Basic] | None:
    """``f`` as ``hi + lo`` exactly: a variable as itself, a sum of two as TwoSum."""
    if f.is_Symbol:
        return f, sp.S.Zero
    if f.is_Add and len(f.args) == 2 and all(a.is_Symbol for a in f.args):
        return _two_sum(*f.args)
    return None


def _exact_product_parts(u: sp.Basic) -> tuple[sp.Basic, sp.Basic, sp.Basic] | None:
    """``u = f g`` (two factors, each a variable or a sum of two) as ``(hi, lo, cond)``:
    ``hi + lo`` equals ``f g`` to twice float64's precision where ``cond`` (no factor so
    large that its split overflows)."""
    if not u.is_Mul:
        return None
    coeff, rest = u.as_coeff_Mul()
    factors = rest.as_ordered_factors()
    if coeff not in (1, -1) or len(factors) != 2:
        return None
    parts = [_exact_parts(f) for f in factors]
    if any(p is None for p in parts):
        return None
    (h1, l1), (h2, l2) = parts
    p, q = _two_product(h1, h2)
    lo = q + h1 * l2 + l1 * h2
    cond = sp.And(*[sp.Abs(h) < _SPLIT_LIMIT for h in (h1, h2)])
    return coeff * p, coeff * lo, cond


def _exp_of_exact_product(e: sp.Basic) -> sp.Basic:
    """``expm1(f g)`` as ``expm1(p) + exp(p) expm1(q)`` and ``exp(f g)`` as
    ``exp(p) exp(q)``, with ``p + q = f g`` to twice float64's precision (Dekker's
    TwoProduct, TwoSum for a factor that is a sum): the rounding of the product, which
    the exponential magnifies by ``|f g|``, is carried in ``q``."""

    def arg(t: sp.Basic) -> sp.Basic | None:
        if isinstance(t, (expm1, sp.exp)) and _exact_product_parts(t.args[0]) is not None:
            return t.args[0]
        return None

    def value(t: sp.Basic) -> sp.Basic:
        u = arg(t)
        hi, lo, cond = _exact_product_parts(u)
        if isinstance(t, expm1):
            # beyond 709 exp(p) overflows (and expm1 too): expm1(u) as it was there
            return sp.Piecewise((expm1(hi) + sp.exp(hi) * expm1(lo), sp.And(cond, u < 709)),
                                (t, True))
        return sp.Piecewise((sp.exp(hi) * sp.exp(lo), cond), (t, True))

    return e.replace(lambda t: arg(t) is not None, value)


def _expm1_ratio(e: sp.Basic) -> sp.Basic:
    """``c expm1(V + W)/(expm1(V) expm1(W))`` as ``c/expm1(V) + c/expm1(W) + c`` (as
    ``expm1(V + W) = expm1(V) + expm1(W) + expm1(V) expm1(W)``), with ``1/expm1(u) + 1``
    written ``-1/expm1(-u)``, so that where V and W share a sign no term cancels another
    and no exponential overflows; where their signs differ and they nearly cancel
    (``|V + W| < |V|/2``) the quotient as it was (its numerator formed from the small sum),
    unless an exponential overflows there."""

    def parts(t: sp.Basic) -> tuple[sp.Basic, sp.Basic, sp.Basic] | None:
        if not t.is_Mul:
            return None
        num = [f for f in t.args if isinstance(f, expm1)]
        den = [f.base for f in t.args if f.is_Pow and f.exp == -1 and isinstance(f.base, expm1)]
        if len(num) != 1 or len(den) != 2:
            return None
        v, w = den[0].args[0], den[1].args[0]
        if sp.expand(num[0].args[0] - v - w) != 0:
            return None
        c = t / num[0] * den[0] * den[1]
        return c, v, w

    def value(t: sp.Basic) -> sp.Basic:
        c, v, w = parts(t)
        both_pos = sp.expand(c / expm1(v) + c / expm1(w) + c)
        both_neg = sp.expand(-c / expm1(-v) + c / expm1(w))
        v_pos = sp.expand(c / expm1(v) - c / expm1(-w))
        w_pos = sp.expand(c / expm1(w) - c / expm1(-v))
        big = sp.Integer(709)
        return sp.Piecewise((both_pos, sp.And(v > 0, w > 0)), (both_neg, sp.And(v < 0, w < 0)),
                            (t, sp.And(sp.Abs(v + w) < sp.Abs(v) / 2, sp.Abs(v) < big,
                                       sp.Abs(w) < big)),
                            (v_pos, v > 0), (w_pos, True))

    # the grouping kept for floating point dropped, exp(x) - 1 read as expm1(x)
    e = plain(e)
    e = e.replace(lambda a: a.is_Add and len(a.args) == 2 and sp.S.NegativeOne in a.args
                  and any(isinstance(x, sp.exp) for x in a.args),
                  lambda a: expm1(next(x for x in a.args if isinstance(x, sp.exp)).args[0]))
    return e.replace(lambda t: parts(t) is not None, value)


def _over_expm1_of_product(e: sp.Basic) -> sp.Basic:
    """``c/expm1(c y)`` (``c`` a factor of the product) as ``g(c y)/y`` with
    ``g(u) = u/expm1(u)`` (1 at ``u = 0``): where ``c y`` underflows the quotient of two
    tiny numbers is not formed; ``g`` is near 1 there."""

    def parts(t: sp.Basic) -> tuple[sp.Basic, sp.Basic] | None:
        if not t.is_Mul:
            return None
        for f in t.args:
            if f.is_Pow and f.exp == -1 and isinstance(f.base, expm1):
                u = f.base.args[0]
                rest = t / f
                for c in rest.as_ordered_factors():
                    if c.is_Symbol and u.is_Mul and c in u.args:
                        return u, (t / f / c) / (u / c)
        return None

    def value(t: sp.Basic) -> sp.Basic:
        u, k = parts(t)
        return k * sp.Piecewise((u / expm1(u), sp.Ne(u, 0)), (1, True))

    return e.replace(lambda t: parts(t) is not None, value)


#: Beyond this magnitude of an exponent, exp and pow are 0 or infinite in float64 (745.1
#: and 709.8 are the limits), so a correction factor there is dropped: it would multiply
#: an infinity by a 0.
_EXP_LIMIT = sp.Integer(750)
#: Below this magnitude of ``w``, ``q = fl(1/w)`` is not split (its split overflows in
#: float32 below 1e-30, in float64 below 1e-290), and not needed: ``|q| > 1e20``, so
#: ``|q log v| > 750`` for every float ``v != 1`` (``|log v| >= 1.1e-16``) and
#: ``pow(v, q)`` is 0, 1 or infinite.
_RECIPROCAL_LIMIT = sp.Float("1e-20", 3)
#: 2**80: a quotient's remainder taken in numbers scaled by it is formed without
#: underflow (in float64 the split's partial products of subnormal u and w lose nothing
#: the remainder needs), and without overflow in float32 (the split of 2**80 w, w up to
#: 1e3, stays below 3.4e38).
_SCALE = sp.Float(2.0**80, 17)


def _reciprocal_power(v: sp.Basic, w: sp.Basic, hi: sp.Basic = sp.S.Zero,
                      lo: sp.Basic = sp.S.Zero, less_one: bool = False) -> sp.Basic:
    """``v**(1/w) exp(hi + lo)`` (``v >= 0`` a float, ``hi + lo`` a small exponent split in
    two), without the rounding of ``1/w``: with ``q = fl(1/w)`` and ``r = 1/w - q`` (exact
    through Dekker's TwoProduct of ``q w``), ``pow(v, q)``, which the C library rounds
    once, times ``exp(r log v)``, near 1. Where ``pow(v, q)`` is 0 or infinite (or ``w``
    so small that ``q`` does not split, where ``r`` is taken as 0) the factors near 1 are
    dropped. With ``less_one``, the power is ``v**(1/w - 1)`` (``q - 1`` by TwoSum, its
    remainder in the factor near 1): a power that does not overflow where ``v**(1/w)``
    does and ``v**(1/w - 1)`` times a number near ``v`` does not."""
    q = Rounded(1 / w)
    p, e = _two_product(q, w)
    # 0 where q does not split (there pow(v, q) is 0, 1 or infinite: v = 1 or far from it)
    r = sp.Piecewise((Grouped(Grouped(Grouped(1 - p) - e) / w), sp.Abs(w) > _RECIPROCAL_LIMIT),
                     (0, True))
    # |q log v| >= 750 written |w| <= |log v|/750 (the same up to the rounding of q, where
    # either side is safe): a condition whose threshold the planner finds a point beyond
    beyond = sp.Abs(w) <= sp.Abs(sp.log(v)) / _EXP_LIMIT
    if less_one:
        # (q - 1) log v >= 750 where q log v >= 1500 (log v is at most 710)
        beyond = sp.Abs(w) <= sp.Abs(sp.log(v)) / (2 * _EXP_LIMIT)
        q, e1 = _two_sum(q, -1)
        r = r + e1
    base = v ** q
    if hi == 0 and lo == 0:
        return sp.Piecewise((base * sp.exp(r * sp.log(v)), sp.Not(beyond)), (base, True))
    # where |hi| is large (v = 1: pow and log are exact, and exp(hi) is 0 or infinite), lo
    # is dropped: it would be an infinity (or a NaN, where hi does not split)
    lo = sp.Piecewise((lo, sp.Abs(hi) < _EXP_LIMIT), (0, True))
    return sp.Piecewise((base, beyond),
                        (base * sp.exp(r * sp.log(v)) * sp.exp(hi) * sp.exp(lo), True))


def _reciprocal_power_difference(e: sp.Basic) -> sp.Basic:
    """``(v + d)**(1/w) - v**(1/w)`` (``d > 0`` a number, ``v >= 0``, ``w`` a variable) with
    ``L = log((v + d)/v)/w`` formed from the small ratio: ``v**(1/w) expm1(L)`` where
    ``w < 0``, ``(v + d)**(1/w) (-expm1(-L))`` where ``w > 0`` (each factor well
    conditioned: no cancellation, whatever the size of L). Each power is taken without
    the rounding of ``1/w`` (:func:`_reciprocal_power`), ``v + d`` exactly as ``s + t``
    (TwoSum), its remainder carried as ``exp(log1p(t/s)/w)`` to twice float64's precision;
    where ``(v + d)**(1/w)`` overflows and the difference need not, as
    ``(v + d)**(1/w - 1) ((v + d) (-expm1(-L)))``."""

    def parts(t: sp.Basic) -> tuple[sp.Basic, sp.Basic, sp.Basic] | None:
        found = _powers_apart(t, lambda p: p.is_Pow and p.exp == -1 and p.base.is_Symbol)
        if found is None or not (found[1].is_number and found[1].is_positive):
            return None
        v, d, p = found
        return v, d, p.base

    def value(t: sp.Basic) -> sp.Basic:
        v, d, w = parts(t)
        s, tt = _two_sum(v, d)
        u = Rounded(tt / s)
        pu, eu = _two_product(u, s)
        # the quotient's remainder, needed where s is near 1 (elsewhere u/w is below 1e-13
        # wherever the power is finite): not formed beyond 2, where the split of s
        # overflows in float32
        ulo = sp.Piecewise((Grouped(Grouped(Grouped(tt - pu) - eu) / s), s < 2), (0, True))
        hi = Rounded(u / w)
        # log1p(t/s)/w = (u + ulo)/w - u**2/(2 w) + ..., u below 2**-52; the remainder of
        # the quotient u/w found exactly by TwoProduct with u and w scaled by 2**80 (no
        # product of the split underflows, where u and w are subnormal)
        ph, eh = _two_product(hi, Grouped(_SCALE * w))
        lo = (Grouped(Grouped(Grouped(Grouped(Grouped(_SCALE * u) - ph) - eh)
                              + Grouped(_SCALE * ulo)) / Grouped(_SCALE * w))
              - hi * (u / 2))
        log_ratio = sp.Piecewise((log1p(v / d) - sp.log(v / d), v < d),
                                 (log1p(d / v), True))
        big_l = log_ratio / w
        g = -expm1(-big_l)
        # where 1/w > 1, (v + d)**(1/w - 1) ((v + d) g): finite where the difference is,
        # also where (v + d)**(1/w) overflows (in float64 or float32 alike); not below the
        # limit, where 1/w - 1 is not split (there the power is 1 or infinite)
        upper = sp.Piecewise((_reciprocal_power(s, w, hi, lo, less_one=True) * Grouped(s * g),
                              sp.And(w < 1, w > _RECIPROCAL_LIMIT)),
                             (_reciprocal_power(s, w, hi, lo) * g, True))
        return sp.Piecewise((upper, w > 0), (_reciprocal_power(v, w) * expm1(big_l), True))

    return e.replace(lambda t: parts(t) is not None, value)


def trig_of_exact_sum(e: sp.Basic) -> sp.Basic:
    """``sin(a + b)`` and ``cos(a + b)`` (a sum of two terms) with the sum split exactly,
    ``a + b = s + t`` (Knuth's TwoSum), and the addition formulas: ``sin(s) cos(t) +
    cos(s) sin(t)`` and ``cos(s) cos(t) - sin(s) sin(t)``: the rounding of the sum, which
    moves a large argument by many periods' worth of digits, is carried in ``t``."""

    def arg(t: sp.Basic) -> tuple[sp.Basic, sp.Basic] | None:
        if isinstance(t, (sp.sin, sp.cos)) and t.args[0].is_Add and len(t.args[0].args) == 2:
            a, b = t.args[0].args
            if a.free_symbols and b.free_symbols:
                return a, b
        return None

    def value(t: sp.Basic) -> sp.Basic:
        s, r = _two_sum(*arg(t))
        if isinstance(t, sp.sin):
            return sp.sin(s) * sp.cos(r) + sp.cos(s) * sp.sin(r)
        return sp.cos(s) * sp.cos(r) - sp.sin(s) * sp.sin(r)

    return e.replace(lambda t: arg(t) is not None, value)


def two_terms(e: sp.Basic) -> tuple[sp.Basic, sp.Basic] | None:
    """``(A, B)`` where ``e = A - B`` is a sum of two terms, B's sign extracted (the
    search's differences use it too).

    Example:
        >>> u, v = sp.symbols("u v")
        >>> two_terms(u - v), two_terms(u + v)
        ((u, v), None)
    """
    if not (e.is_Add and len(e.args) == 2):
        return None
    p, q = e.args
    if q.could_extract_minus_sign():
        return p, -q
    if p.could_extract_minus_sign():
        return q, -p
    return None


def _rule(name: str, fn: Callable[[sp.Basic], sp.Basic], reason: str,
          notes: tuple[sp.Basic, ...] = ()) -> tuple[str, Callable[[sp.Basic], sp.Basic], str,
                                                     tuple[sp.Basic, ...]]:
    return name, fn, reason, notes


#: The rules of this module, in the form of :data:`derive.search.RULES`.
EXTRA_RULES = (
    _rule("cube root", _cube_roots,
          "{0}: the real cube root, not a power whose exponent 1/3 is rounded",
          (_identity(_p ** sp.Rational(1, 3), cbrt(_p)),)),
    _rule("quadratic root", _quadratic_root,
          "{0} where the sum would cancel, and the root of the discriminant scaled: {1} "
          "where {2} (neither b**2 nor a c is formed, so neither overflows)",
          (_identity(-_b + sp.sqrt(_b ** 2 - 4 * _a * _c),
                 -4 * _a * _c / (_b + sp.sqrt(_b ** 2 - 4 * _a * _c))),
           _identity(sp.sqrt(_b ** 2 - 4 * _a * _c),
                 sp.Abs(_b) * sp.sqrt(1 - 4 * _a * _c / _b ** 2)),
           sp.Abs(_b) >= 2 * sp.sqrt(sp.Abs(_a * _c)))),
    _rule("x log x difference", _x_log_x_difference,
          "{0}: the difference of the logs formed as a log1p of a small ratio",
          (_identity((_p + 1) * sp.log(_p + 1) - _p * sp.log(_p),
                 sp.log(_p + 1) + _p * log1p(1 / _p)),)),
    _rule("log of a ratio", _log_of_ratio,
          "{0}: the log of a ratio near 1 through the small difference of its terms",
          (_identity(sp.log((1 - _u) / (1 + _u)), log1p(-2 * _u / (1 + _u))),)),
    _rule("power difference", _power_difference,
          "{0}: the small relative difference of the bases formed first, no cancellation",
          (_identity((_p + 1) ** sp.Rational(1, 3) - _p ** sp.Rational(1, 3),
                 _p ** sp.Rational(1, 3) * expm1(log1p(1 / _p) / 3)),)),
    _rule("difference of squares", _difference_of_squares,
          "{0}: the small factor formed first where the square is near the constant",
          (_identity(_u ** 2 / 2 - sp.Rational(1, 2), (_u - 1) * (_u + 1) / 2),)),
    _rule("pair first", _pair_first,
          "{0}: two terms of a sum added before the others (measured: the pair that "
          "cancels, added first, loses nothing)",
          (_identity(_a + _b + _c, sp.UnevaluatedExpr(_a + _c) + _b, evaluate=False),)),
    _rule("exp of an exact product", _exp_of_exact_product,
          "{0}, with {1} equal to the product to twice float64's precision (Dekker's "
          "TwoProduct, Knuth's TwoSum for a factor that is a sum): the product's rounding, "
          "which the exponential magnifies by the product's size, is carried in b",
          (_identity(expm1(_a + _b), expm1(_a) + sp.exp(_a) * expm1(_b)), _a + _b)),
    _rule("expm1 ratio", _expm1_ratio,
          "{0}: where V and W share a sign, a sum whose terms share theirs (with {1}), and "
          "no exponential that overflows",
          (_identity(expm1(_a + _b) / (expm1(_a) * expm1(_b)), 1 / expm1(_a) + 1 / expm1(_b) + 1),
           _identity(1 / expm1(_u) + 1, -1 / expm1(-_u)))),
    _rule("over expm1 of a product", _over_expm1_of_product,
          "{0}: no quotient of two numbers that underflow together",
          (_identity(_a / expm1(_a * _b), sp.Mul(_a * _b / expm1(_a * _b), 1 / _b,
                                             evaluate=False), evaluate=False),)),
    _rule("reciprocal power difference", _reciprocal_power_difference,
          "{0}, the ratio of the powers formed from the small ratio of their bases, and each "
          "power without the rounding of 1/w (pow(v, fl(1/w)) times a factor near 1 for the "
          "rest, found exactly by Dekker's TwoProduct; the sum v + d exactly by Knuth's "
          "TwoSum): no cancellation, and no exponent rounded where the exponential "
          "magnifies it",
          (_identity((_p + 1) ** (1 / _b) - _p ** (1 / _b),
                     -(_p + 1) ** (1 / _b) * expm1(-log1p(1 / _p) / _b)),)),
    _rule("trig of an exact sum", trig_of_exact_sum,
          "{0}, with a + b = s + t exactly (Knuth's TwoSum): the rounding of the sum, which "
          "a large argument's sine or cosine magnifies, carried in t",
          (_identity(sp.sin(_a + _b), sp.sin(_a) * sp.cos(_b) + sp.cos(_a) * sp.sin(_b)),)),
    _rule("root of exp", _root_of_exp,
          "{0} where {1}: the exponential of half the argument, so that no exponential "
          "overflows where the root does not",
          (_identity(sp.sqrt(sp.exp(_u) + 1), sp.exp(_u / 2) * sp.sqrt(1 + sp.exp(-_u))), _u > 0)),
)
