r"""Question 1: coupling blocks as specifications, and what the engine derives from them.

A :class:`CouplingBlock` is the ``i``-th component of its two output equations, written
with the symbols of :mod:`derive.vocabulary`. From it the engine derives, by solving and
differentiating (never by looking an answer up):

* :func:`derive_inverse` (1.1): ``x2`` from the second equation, then ``x1`` from the first
  (for a block that is not affine in ``x1``, such as ``x1 + x1**3/3 + F``, the solution
  that is real for real inputs, see :func:`_solve_unique`);
* :func:`derive_jacobian` (1.2): the four ``n x n`` blocks of ``dy/dx`` by the chain rule,
  for ``F, G`` that are *not* element-wise;
* :func:`derive_determinant` (1.3): the determinant from the block-triangular structure,
  the log-determinant (taken factor by factor, :data:`~derive.arrangement.LOG_REWRITES`),
  and whether the block preserves volume;
* :func:`derive_arrangement` (1.3n): every expression a kernel evaluates, rewritten for
  floating point by :data:`~derive.arrangement.KERNEL_REWRITES`, each rewrite a step.

Every step is checked in index notation and, where SymPy cannot decide it there, with
explicit ``2n x 2n`` matrices at ``n = 1, 2, 3``.

A block that is not invertible is refused when it is written, in one line
(:class:`SpecificationError`): a slope ``dy1/dx1`` that can be 0 or change sign
(``sinh(G)*x1 + F``), a piecewise equation, or one SymPy finds no closed-form inverse for
(``x1 + tanh(x1)/2 + F``).

Example:
    >>> import sympy as sp
    >>> from derive.vocabulary import x1, x2, s, F, G
    >>> block = CouplingBlock("demo", "A demo block", y1=sp.exp(G) * x1 + F, y2=sp.exp(s) * x2)
    >>> derive_determinant(block).result("log_abs_det")
    Sum(G[i], (i, 0, n - 1)) + Sum(s[i], (i, 0, n - 1))
    >>> glow = CouplingBlock("glow", "A sigmoid block", y1=x1 / (1 + sp.exp(-G)) + F, y2=x2)
    >>> derive_arrangement(glow).result("log_abs_det")
    Sum(-softplus(-G[i]), (i, 0, n - 1))
    >>> derive_inverse(CouplingBlock("sinh", "A block not affine", y1=sp.sinh(x1) * sp.exp(G) + F,
    ...                              y2=x2)).result("x1")
    -asinh((F[i] - y1[i])*exp(-G[i]))
    >>> try:
    ...     CouplingBlock("bad", "A scale that can be 0", y1=sp.sinh(G) * x1 + F, y2=x2)
    ... except SpecificationError as error:
    ...     print(str(error).split(": its slope ")[1].split(";")[0])
    dy1/dx1 = sinh(G[i]) is 0 where G[i] = 0
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import sympy as sp
from sympy.matrices.utilities import dotprodsimp

from .arrangement import KERNEL_REWRITES, LOG_REWRITES, arrange, is_exponential
from .derivation import Derivation, MatrixDisplay, Result, Step
from .nodes import IDENTITY, BlockMatrixSpec, BlockSpec, Opaque, Term
from .spec import Arg, Kernel, Module, Output
from .vocabulary import (
    DERIVATIVES,
    FB,
    FUNCTIONS,
    GB,
    JACOBIANS,
    RESERVED,
    X1,
    X2,
    Y1,
    Y2,
    DetBlock,
    DetJacobian,
    S,
    i,
    index_model,
    index_values,
    instantiate,
    j,
    n,
    to_vector,
    vector_call,
)

__all__ = [
    "CouplingBlock",
    "derive_inverse",
    "derive_jacobian",
    "derive_determinant",
    "derive_arrangement",
    "jacobian_blocks",
    "arranged_blocks",
    "coupling_kernels",
]

_INPUT_BASES = (X1, X2, S, FB, GB)
_MODELS = (index_model((1, 2, 3)),)


class InDomain(Opaque, sp.Expr):
    """``x``, known to lie in ``[lower, upper]``: a statement that holds only there (the
    root of a spline bin's quadratic) is checked by a model that puts ``x`` inside, never
    on the whole real line. Typeset as ``x``."""

    is_commutative = True
    is_real = True

    def __new__(cls, x: sp.Expr, lower: sp.Expr, upper: sp.Expr) -> InDomain:
        return sp.Expr.__new__(cls, sp.sympify(x), sp.sympify(lower), sp.sympify(upper))

    def _latex(self, printer: object) -> str:
        return printer._print(self.args[0])  # type: ignore[attr-defined]

    def _sympystr(self, printer: object) -> str:
        return printer._print(self.args[0])  # type: ignore[attr-defined]


def exact_domain_model(domain: tuple[sp.Expr, sp.Expr], sizes: tuple[int, ...] = (1, 2, 3),
                       points: int = 3):
    """A model for a statement about ``x1`` in ``domain`` that SymPy cannot decide in
    symbols (a root written with a square root of a perfect square): at each size,
    ``points`` exact rational assignments of the parameters with ``x1_k`` at a fraction of
    its interval (edges included), ``x2``, ``s``, ``F``, ``G`` left symbolic, so each
    instance is decided exactly.

    Example:
        >>> from derive.vocabulary import param_vector, x1
        >>> xk, xk1 = param_vector("xk"), param_vector("xk1")
        >>> [pair for pair in exact_domain_model((xk, xk1), (1,), 2)(
        ...     InDomain(x1, xk, xk1), xk + (xk1 - xk) / 2)]
        [(-11/4, -11/8), (1/3, 1/2)]
    """
    lower, upper = domain
    own = _own_upper(domain)

    def model(lhs: sp.Basic, rhs: sp.Basic):
        lhs, rhs = (e.replace(lambda x: isinstance(x, InDomain), lambda x: x.args[0])
                    for e in (lhs, rhs))
        uses_i, uses_j = lhs.has(i) or rhs.has(i), lhs.has(j) or rhs.has(j)
        for size in sizes:
            for a in range(size) if uses_i else [0]:
                for b in range(size) if uses_j else [0]:
                    with dotprodsimp(False):  # determinants of ratios: not expanded
                        pair = [instantiate(e, size, index_values(a, b))
                                for e in (lhs, rhs)]
                    params = sorted(set().union(*(e.free_symbols for e in pair)),
                                    key=sp.default_sort_key)
                    for m in range(points):
                        inside: dict[sp.Basic, sp.Basic] = {}
                        for k in range(size):
                            at = index_values(k)
                            x1_k = instantiate(X1[i], size, at)
                            low = instantiate(lower, size, at)
                            high = instantiate(upper, size, at)
                            syms = [v for v in (low.free_symbols | high.free_symbols)
                                    if own is None or v != high]
                            point = _sample_points(sorted(syms, key=sp.default_sort_key),
                                                   m + k + 1)[-1]
                            inside.update(point)
                            low_v = low.xreplace(point)
                            if own is not None:
                                inside[high] = low_v + _POSITIVE_SAMPLES[(m + k) % 7]
                            high_v = high.xreplace(inside)
                            inside[x1_k] = low_v + (high_v - low_v) * _DOMAIN_FRACTIONS[
                                (2 * m + k) % len(_DOMAIN_FRACTIONS)]
                        rest = [v for v in params if v not in inside and v.is_Symbol
                                and str(v).split("_")[0] not in ("x2", "s")]
                        for v, value in _sample_points(rest, m + 1)[-1].items():
                            inside[v] = value
                        yield tuple(e.xreplace(inside) for e in pair)

    return model


def _models(block: CouplingBlock, sizes: tuple[int, ...] = (1, 2, 3)) -> tuple:
    """How a block's steps are checked: explicit instances at ``sizes``, inside the
    block's domain where it has one."""
    if block.domain is None:
        return _MODELS if sizes == (1, 2, 3) else (index_model(sizes),)
    # at exact rational points inside the bin, n = 3 included: its 6 x 6 determinants of
    # ratios of polynomials cost about 2 s of CPU more than n = 1, 2 for a spline bin
    # (measured: the bin's four derivations, 10.3 s against 8.2 s, verdict cache off)
    return (exact_domain_model(block.domain, sizes),)


class SpecificationError(ValueError):
    """A coupling specification the engine cannot derive from, and why."""


@dataclass(frozen=True)
class CouplingBlock:
    """A coupling block: the ``i``-th components of ``y1`` and ``y2``.

    Arguments:
        name: the block's name, also its generated module's (``coupling_affine``).
        title: a one-line title.
        y1: ``y1_i`` in ``x1, x2, s, F, G`` (component ``i`` of each).
        y2: ``y2_i`` in ``x2`` and ``s`` only, so that the block is triangular.
        summary: a sentence on where the block comes from.
        domain: ``(lower, upper)``, the interval of ``x1_i`` on which the block is defined
            (one bin of a spline), in the block's parameters, ``x2``, ``s``, ``F``, ``G``;
            None (the default) for the whole real line. ``upper`` is a parameter of its
            own (then the derivations take it above ``lower``) or provably above it. The
            block need only be monotone there, and its inverse is the root in the interval.
    """

    name: str
    title: str
    y1: sp.Expr
    y2: sp.Expr
    summary: str = ""
    domain: tuple[sp.Expr, sp.Expr] | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise SpecificationError(f"name: expected a Python identifier, got {self.name!r}")
        if self.domain is not None:
            object.__setattr__(self, "domain", _check_domain(self.name, self.domain))
        for label, expr in (("y1", self.y1), ("y2", self.y2)) + (
                (("the domain of x1", sp.Tuple(*self.domain)),) if self.domain else ()):
            for atom in sp.sympify(expr).atoms(sp.Indexed):
                own = str(atom.base.label) not in RESERVED
                if not (atom.base in _INPUT_BASES or own) or atom.indices != (i,):
                    raise SpecificationError(
                        f"{self.name}: {label} may use only the i-th components of "
                        f"x1, x2, s, F, G and of its own parameter vectors; it uses {atom}"
                    )
                if own and not atom.is_real:
                    raise SpecificationError(
                        f"{self.name}: {label} uses the parameter vector {atom.base}, which is "
                        f"not declared real; expected param_vector({str(atom.base)!r})")
            for sym in _scalars(sp.sympify(expr)):
                if str(sym) in RESERVED or not sym.is_real:
                    raise SpecificationError(
                        f"{self.name}: {label} uses the symbol {sym}; expected the vocabulary's "
                        f"components or a real scalar parameter with a new name, "
                        f"param_scalar({str(sym)!r})")
        names = [name for name, _ in self.parameters]
        if len(set(names)) != len(names):
            raise SpecificationError(
                f"{self.name}: a parameter vector and a scalar share a name "
                f"({', '.join(sorted(n_ for n_ in names if names.count(n_) > 1))})")
        bad = {a.base for a in sp.sympify(self.y2).atoms(sp.Indexed)} & {X1, FB, GB}
        if bad:
            names = ", ".join(sorted(str(b) for b in bad))
            raise SpecificationError(
                f"{self.name}: y2 must not depend on {names}; the engine derives triangular "
                "coupling blocks, where y2 is a function of x2 and s alone"
            )
        for label, expr in (("y1", self.y1), ("y2", self.y2)):
            if sp.sympify(expr).has(sp.Piecewise):
                raise SpecificationError(
                    f"{self.name}: {label} = {expr} is piecewise; the engine derives blocks "
                    "given by one expression on the whole real line")
        if not sp.sympify(self.y1).has(X1[i]):
            raise SpecificationError(f"{self.name}: y1 does not depend on x1; not invertible")
        _check_monotone(self.name, "y1", sp.sympify(self.y1), X1[i], self.domain)
        _check_monotone(self.name, "y2", sp.sympify(self.y2), X2[i])
        for expr, unknown, out, domain in ((self.y1, X1[i], Y1[i], self.domain),
                                           (self.y2, X2[i], Y2[i], None)):
            if sp.diff(expr, unknown, 2) != 0:
                # not affine: whether a closed-form real inverse exists is decided now,
                # in a second or so, not when the derivations reach it
                _solve_unique(self.name, sp.Eq(out, sp.sympify(expr)), unknown, domain)

    @property
    def given(self) -> dict[sp.Indexed, sp.Expr]:
        """The block's equations as substitutions ``{y1_i: ..., y2_i: ...}``."""
        return {Y1[i]: self.y1, Y2[i]: self.y2}

    @property
    def outputs(self) -> dict[str, sp.Expr]:
        return {"y1": self.y1, "y2": self.y2}

    @property
    def parameters(self) -> tuple[tuple[str, str], ...]:
        """The block's own parameters beyond ``s``, each ``(name, kind)``: its parameter
        vectors (kind ``"param"``, shape ``(n,)``) by name, then its scalars (``"scalar"``);
        those assumed positive are of kind ``"positive_param"`` and ``"positive_scalar"``.

        Example:
            >>> from derive.vocabulary import F, param_scalar, param_vector, x1, x2
            >>> t, c = param_vector("t"), param_scalar("c")
            >>> CouplingBlock("shifted", "A shift", x1 + c * F, x2 + t).parameters
            (('t', 'param'), ('c', 'scalar'))
            >>> h = param_vector("h", positive=True)
            >>> CouplingBlock("scaled", "A scale", h * x1 + F, x2).parameters
            (('h', 'positive_param'),)
        """
        exprs = [sp.sympify(self.y1), sp.sympify(self.y2)] + (
            [sp.sympify(bound) for bound in self.domain] if self.domain else [])
        vectors = {str(a.base.label): "positive_param" if a.is_positive else "param"
                   for e in exprs for a in e.atoms(sp.Indexed) if a.base not in _INPUT_BASES}
        scalars = {str(sym): "positive_scalar" if sym.is_positive else "scalar"
                   for e in exprs for sym in _scalars(e)}
        return (tuple((name, vectors[name]) for name in sorted(vectors))
                + tuple((name, scalars[name]) for name in sorted(scalars)))


def _scalars(expr: sp.Expr) -> set[sp.Symbol]:
    """The plain symbols of ``expr``: neither an index, ``n``, nor an indexed base's label."""
    labels = {a.base.label for a in expr.atoms(sp.Indexed)}
    return {sym for sym in expr.atoms(sp.Symbol) if sym not in labels and sym not in (i, j, n)}


def _unknowns(expr: sp.Expr) -> list[sp.Basic]:
    """What a sample point assigns in ``expr``: its components and its scalars, sorted."""
    return sorted(expr.atoms(sp.Indexed) | _scalars(expr), key=sp.default_sort_key)


#: Deterministic sample values for the numeric parts of the specification checks.
_SAMPLES = tuple(sp.Rational(v) for v in ("-11/4", "-1", "-3/8", "0", "1/2", "5/4", "7/2"))


#: The same for a symbol assumed positive (a width, a height, a slope).
_POSITIVE_SAMPLES = tuple(sp.Rational(v) for v in ("11/4", "1", "3/8", "2", "1/2", "5/4",
                                                    "7/2"))
#: Where in its domain ``x1`` is sampled: both edges, and inside.
_DOMAIN_FRACTIONS = tuple(sp.Rational(v) for v in ("0", "1/16", "1/3", "1/2", "7/8", "1"))


def _sample_points(symbols: list[sp.Basic], count: int = 24) -> list[dict[sp.Basic, sp.Rational]]:
    """``count`` assignments of :data:`_SAMPLES` to ``symbols`` (of
    :data:`_POSITIVE_SAMPLES` to a positive one), the same on every run."""
    points = []
    for k in range(count):
        points.append({sym: (_POSITIVE_SAMPLES if sym.is_positive else _SAMPLES)[
            (k * (3 + 2 * m) + m) % len(_SAMPLES)] for m, sym in enumerate(symbols)})
    return points


def _own_upper(domain: tuple[sp.Expr, sp.Expr]) -> sp.Basic | None:
    """The domain's upper end where it is a parameter of its own (a knot ``xk1[i]``, not
    in the lower end): the derivations then take it above the lower end."""
    lower, upper = domain
    if (isinstance(upper, (sp.Indexed, sp.Symbol)) and not lower.has(upper)
            and (not isinstance(upper, sp.Indexed) or upper.base not in _INPUT_BASES)):
        return upper
    return None


def _check_domain(name: str, domain: object) -> tuple[sp.Expr, sp.Expr]:
    """``domain`` as a pair of SymPy expressions, or a one-line refusal saying why not."""
    where = f"{name}: the domain of x1, {domain!r},"
    try:
        lower, upper = (sp.sympify(bound) for bound in domain)  # type: ignore[union-attr]
    except (TypeError, ValueError, sp.SympifyError):
        raise SpecificationError(f"{where} is not a pair (lower, upper) of expressions; "
                                 "expected e.g. domain=(xk, xk1)") from None
    for bound in (lower, upper):
        if bound.has(sp.oo, -sp.oo, sp.zoo, sp.nan) or bound.has(X1, Y1, Y2):
            raise SpecificationError(
                f"{where} has the end {bound}; each end must be finite and not depend on "
                "x1, y1 or y2 (a bin of a spline: its knots)")
        if bound.is_real is False or bound.is_extended_real is False:
            raise SpecificationError(f"{where} has the end {bound}, which is not real")
    width = sp.simplify(upper - lower)
    if width.is_nonpositive:
        raise SpecificationError(f"{where} is empty: its upper end is not above its lower "
                                 f"end ({upper} - ({lower}) = {width})")
    if not width.is_positive and _own_upper((lower, upper)) is None:
        raise SpecificationError(
            f"{where} may be empty: {upper} - ({lower}) is not positive for every value of "
            "its symbols; make the upper end a parameter of its own (the derivations take "
            "it above the lower end) or the lower end plus a positive width "
            "(param_vector(..., positive=True))")
    return (lower, upper)


def _domain_points(symbols: list[sp.Basic], domain: tuple[sp.Expr, sp.Expr] | None,
                   unknown: sp.Indexed) -> list[dict[sp.Basic, sp.Rational]]:
    """Sample points of ``symbols``; with a domain, ``unknown`` runs over it (edges
    included) and an upper end of its own is put above the lower end."""
    if domain is None:
        return _sample_points(symbols)
    lower, upper = domain
    own = _own_upper(domain)
    rest = [sym for sym in symbols if sym not in (unknown, own)]
    rest += [sym for sym in _unknowns(lower) + _unknowns(upper)
             if sym not in rest and sym not in (unknown, own)]
    points = []
    for k, point in enumerate(_sample_points(rest, 8)):
        low = sp.sympify(lower).xreplace(point)
        if own is not None:
            point = {**point, own: low + _POSITIVE_SAMPLES[k % len(_POSITIVE_SAMPLES)]}
        high = sp.sympify(upper).xreplace(point)
        for fraction in _DOMAIN_FRACTIONS:
            points.append({**point, unknown: low + (high - low) * fraction})
    return points


def _check_monotone(name: str, label: str, expr: sp.Expr, unknown: sp.Indexed,
                    domain: tuple[sp.Expr, sp.Expr] | None = None) -> None:
    """Refuse ``label = expr`` unless its slope in ``unknown`` keeps one sign and is never 0
    (on ``domain``, where given): proved from SymPy's assumptions, or else not contradicted
    at any sample point (where a sample shows a zero or a change of sign, the block is not
    invertible there)."""
    slope = sp.diff(expr, unknown)
    if slope.is_positive or slope.is_negative:
        return
    symbols = _unknowns(slope)
    signs: dict[int, dict[sp.Basic, sp.Rational]] = {}
    for point in _domain_points(symbols, domain, unknown):
        value = sp.N(slope.xreplace(point), 30)
        if not (value.is_number and value.is_real) or value.has(sp.nan, sp.zoo):
            continue
        sign = 0 if abs(value) < 1e-25 else (1 if value > 0 else -1)
        signs.setdefault(sign, point)
        if sign == 0 or len(signs) > 1:
            def at(where: dict[sp.Basic, sp.Rational]) -> str:
                return ", ".join(f"{k} = {v}" for k, v in where.items())

            why = (("is 0 where " + at(point) if point else "is 0") if sign == 0
                   else f"changes sign (it is {'negative' if sign > 0 else 'positive'} where "
                        f"{at(signs[-sign])} and {'positive' if sign > 0 else 'negative'} "
                        f"where {at(point)})")
            raise SpecificationError(
                f"{name}: {label} = {expr} is not invertible for {unknown}"
                + (f" on its domain ({domain[0]}, {domain[1]})" if domain else "")
                + f": its slope d{label}/d{unknown.base} = {slope} {why}; a coupling block "
                "needs a slope that is never 0")


def _is_real_at(expr: sp.Expr, point: dict[sp.Basic, sp.Rational]) -> bool:
    value = sp.N(expr.xreplace(point), 30)
    if not value.is_number or value.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
        return False
    re_, im_ = value.as_real_imag()
    return abs(im_) <= 1e-20 * (1 + abs(re_))


def _real_roots(eq: sp.Eq, unknown: sp.Indexed, roots: list[sp.Expr],
                domain: tuple[sp.Expr, sp.Expr] | None = None) -> list[sp.Expr]:
    """The roots of ``eq`` that are real, and solve it, at every sample point: the one
    that inverts the block on the reals (the others are complex or spurious). With a
    domain, the root that gives back each ``unknown`` of the domain (edges included)
    from the output there: the root in the interval."""
    if domain is not None:
        return [root for root in roots if _inverts_on(eq, unknown, root, domain)]
    symbols = [u for u in _unknowns(eq.lhs - eq.rhs) if u != unknown]
    kept = []
    for root in roots:
        ok = True
        for point in _sample_points(symbols):
            if not _is_real_at(root, point):
                ok = False
                break
            residual = sp.N((eq.lhs - eq.rhs).xreplace({unknown: root}).xreplace(point), 30)
            scale = 1 + abs(sp.N(eq.lhs.xreplace(point), 30))
            if abs(residual) > 1e-20 * scale:
                ok = False
                break
        if ok:
            kept.append(root)
    return kept


def _inverts_on(eq: sp.Eq, unknown: sp.Indexed, root: sp.Expr,
                domain: tuple[sp.Expr, sp.Expr]) -> bool:
    """Whether ``root`` (in ``eq.lhs``, the output) gives back ``unknown`` at every sample
    point of the domain, edges included."""
    symbols = [u for u in _unknowns(eq.rhs) if u != unknown]
    for point in _domain_points(symbols + [unknown], domain, unknown):
        output = eq.rhs.xreplace(point)
        value = root.xreplace({eq.lhs: output}).xreplace(point)
        if not _is_real_at(value, {}):
            return False
        want = point[unknown]
        if abs(sp.N(value, 30) - want) > 1e-20 * (1 + abs(want)):
            return False
    return True


def _quadratic_in_domain(eq: sp.Eq, unknown: sp.Indexed,
                         domain: tuple[sp.Expr, sp.Expr]) -> dict[str, sp.Expr] | None:
    """Where ``eq`` (output = a ratio of polynomials in ``unknown``) is, once its
    denominator is cleared, a quadratic in the fraction ``u = (unknown - lower)/(upper -
    lower)`` of the domain: the offset ``r`` of the output from its value at the lower
    end, and the coefficients ``a, b, c`` of ``a u**2 + b u + c = 0`` collected in ``r``
    (as a spline bin's are written: no cancelling sum of products); else None."""
    lower, upper = domain
    frac, width, offset = (sp.Dummy(name, real=True) for name in ("u", "w", "r"))
    at_lower = sp.simplify(eq.rhs.xreplace({unknown: lower}))
    if at_lower.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
        return None
    inside = eq.rhs.xreplace({unknown: lower + width * frac})
    if _own_upper(domain) is not None:
        inside = inside.xreplace({upper: lower + width})
    else:
        inside = inside.xreplace({upper - lower: width})
    numerator, _ = sp.fraction(sp.together(inside - (at_lower + offset)))
    try:
        poly = sp.Poly(sp.expand(numerator), frac)
    except sp.PolynomialError:
        return None
    if poly.degree() != 2 or not all(c.free_symbols.isdisjoint({unknown})
                                     for c in poly.all_coeffs()):
        return None
    coeffs = [sp.collect(sp.expand(c), offset, sp.factor) for c in poly.all_coeffs()]
    values = {offset: eq.lhs - at_lower, width: upper - lower}
    return {"a": coeffs[0].xreplace(values), "b": coeffs[1].xreplace(values),
            "c": coeffs[2].xreplace(values), "lower": lower, "width": upper - lower}


def _quadratic_roots(quad: dict[str, sp.Expr]) -> list[sp.Expr]:
    """Both roots of the quadratic of :func:`_quadratic_in_domain`, as ``unknown``, in the
    form that does not cancel where ``c`` is small (``2c/(-b -+ sqrt(b**2 - 4ac))``, Durkan
    et al. 2019), ``-`` first."""
    a, b, c = quad["a"], quad["b"], quad["c"]
    root = sp.sqrt(b**2 - 4 * a * c)
    return [quad["lower"] + quad["width"] * 2 * c / (-b - root),
            quad["lower"] + quad["width"] * 2 * c / (-b + root)]


def _monotone_cubic_root(eq: sp.Eq, unknown: sp.Indexed) -> sp.Expr | None:
    """The real root of ``eq`` where it is a cubic in ``unknown`` that is monotone (its
    depressed form ``t**3 + p t + q = 0`` has ``p > 0``), in hyperbolic form:
    ``t = -2 sqrt(p/3) sinh(asinh(3q/(2p) sqrt(3/p))/3)``. Unlike Cardano's form, it never
    squares ``q`` (which overflows where ``|q| > 1e154``) and does not cancel where
    ``q`` is small; else None."""
    try:
        poly = sp.Poly(eq.rhs - eq.lhs, unknown)
    except sp.PolynomialError:
        return None
    if poly.degree() != 3:
        return None
    a, b, c, d = poly.all_coeffs()
    p = sp.simplify((3 * a * c - b**2) / (3 * a**2))
    if not p.is_positive:
        return None
    q = sp.simplify((2 * b**3 - 9 * a * b * c + 27 * a**2 * d) / (27 * a**3))
    t = -2 * sp.sqrt(p / 3) * sp.sinh(sp.asinh(3 * q / (2 * p) * sp.sqrt(3 / p)) / 3)
    return t - b / (3 * a)


@cache
def _solve_unique(name: str, eq: sp.Eq, unknown: sp.Indexed,
                  domain: tuple[sp.Expr, sp.Expr] | None = None) -> sp.Expr:
    """The solution of ``eq`` for ``unknown`` that inverts the block on the reals.

    A monotone cubic's real root in hyperbolic form first (:func:`_monotone_cubic_root`);
    then ``solve`` (one solution: the affine blocks); where it gives several, the real
    solution ``solveset`` finds over the reals, or else the one of ``solve``'s roots that
    is real and solves the equation at every sample point. On a domain, the root of a
    quadratic that lies in it (:func:`_quadratic_in_domain`), else the one of ``solve``'s
    roots that gives back every sample of the domain. Refused in one line where no
    closed form is found or the real solution is not unique.
    """
    where = f"{name}: solving {eq} for {unknown}" + (
        f" on ({domain[0]}, {domain[1]})" if domain else "")
    if domain is not None:
        quad = _quadratic_in_domain(eq, unknown, domain)
        roots = _quadratic_roots(quad) if quad is not None else None
        if roots is None:
            try:
                roots = sp.solve(eq, unknown, dict=False)
            except NotImplementedError:
                roots = []
        kept = _real_roots(eq, unknown, roots, domain)
        if len(kept) != 1:
            raise SpecificationError(
                f"{where}: {len(kept)} of its {len(roots)} solutions lie in the domain for "
                "every sample; a coupling block needs exactly one")
        return kept[0]
    cubic = _monotone_cubic_root(eq, unknown)
    if cubic is not None and _real_roots(eq, unknown, [cubic]) == [cubic]:
        return cubic
    try:
        solutions = sp.solve(eq, unknown, dict=False)
    except NotImplementedError:
        solutions = None
    if solutions is not None and len(solutions) == 1:
        return solutions[0]
    real = sp.solveset(eq, unknown, sp.S.Reals)
    candidates = None
    if isinstance(real, sp.FiniteSet):
        candidates = list(real)
    elif (isinstance(real, sp.Intersection) and len(real.args) == 2
          and sp.S.Reals in real.args):
        finite = [a for a in real.args if isinstance(a, sp.FiniteSet)]
        candidates = list(finite[0]) if finite else None
    if candidates is None and solutions:
        candidates = solutions
    if not candidates:
        raise SpecificationError(
            f"{where}: SymPy finds no closed-form inverse; the engine derives blocks whose "
            "inverse it can write down")
    kept = _real_roots(eq, unknown, sorted(candidates, key=sp.default_sort_key))
    if len(kept) != 1:
        raise SpecificationError(
            f"{where}: {len(kept)} of its {len(candidates)} solutions are real; a coupling "
            "block needs exactly one")
    return kept[0]


@cache
def derive_inverse(block: CouplingBlock) -> Derivation:
    """1.1: invert the block, ``x2`` from the second equation, then ``x1`` from the first."""
    x2_sol = _solve_unique(block.name, sp.Eq(Y2[i], block.y2), X2[i])
    x1_eq = sp.Eq(Y1[i], block.y1)
    x1_sol = _solve_unique(block.name, x1_eq, X1[i], block.domain)
    steps = [
        Step(X2[i], x2_sol, "solve the second equation, {0}, for {1}",
             given={Y2[i]: block.y2}, notes=(sp.Eq(Y2[i], block.y2), X2[i])),
    ]
    quad = (_quadratic_in_domain(x1_eq, X1[i], block.domain)
            if block.domain is not None else None)
    if quad is not None:
        frac = sp.Symbol("u", real=True)
        lower, width = quad["lower"], quad["width"]
        quadratic = quad["a"] * frac**2 + quad["b"] * frac + quad["c"]
        steps.append(Step(
            InDomain(X1[i], *block.domain), x1_sol,
            "with {2} known, {3} and {4} can be evaluated. On the domain {5}, the first "
            "equation, {0}, with its denominator cleared, is a quadratic, {6}; its root in "
            "the interval, in the form that does not cancel near the interval's lower end, "
            "is {1}",
            given={Y1[i]: block.y1},
            notes=(x1_eq, X1[i], X2[i], FB[i], GB[i], sp.Interval(lower, block.domain[1]),
                   sp.Eq(quadratic.xreplace({frac: (X1[i] - lower) / width}), 0)),
            models=(exact_domain_model(block.domain),)))
    else:
        steps.append(Step(
            X1[i], x1_sol,
            "with {2} known, {3} and {4} can be evaluated; solve the first equation, "
            "{0}, for {1}" + (" in its domain {5}" if block.domain is not None else ""),
            given={Y1[i]: block.y1},
            notes=(x1_eq, X1[i], X2[i], FB[i], GB[i]) + (
                (sp.Interval(*block.domain),) if block.domain is not None else ())))
    results = [
        Result("x2", x2_sol, "the second input, from the second output alone", X2[i]),
        Result("x1", x1_sol, "the first input, with the two functions evaluated at the "
               "recovered second input", X1[i]),
    ]
    return Derivation(
        "1.1", f"Inverting {block.title}",
        "Give the inputs of the block from its outputs.",
        steps, results,
        conclusion="Invert the second equation first, {x2}; with the second input known, "
                   "the first equation gives {x1}, component by component.",
        models=_models(block), variant=block.name,
    )


def _bernstein(poly: sp.Poly, frac: sp.Symbol, rest: sp.Symbol) -> sp.Expr:
    """A polynomial in ``frac`` in the Bernstein basis ``C(d, k) frac**k rest**(d - k)``
    (``rest = 1 - frac``): on the interval, where both are in [0, 1], positive
    coefficients give a sum of positive terms, which does not cancel."""
    d = poly.degree()
    a = poly.all_coeffs()[::-1]
    terms = []
    for k in range(d + 1):
        b = sp.factor(sum(sp.binomial(k, m) / sp.binomial(d, m) * a[m] for m in range(k + 1)))
        terms.append(sp.binomial(d, k) * b * frac**k * rest**(d - k))
    return sp.Add(*terms)


def in_interval(expr: sp.Expr, domain: tuple[sp.Expr, sp.Expr]) -> sp.Expr:
    """``expr``, a ratio of polynomials in ``x1``, written in the fraction of the domain
    where ``x1`` lies, ``u = (x1 - lower)/(upper - lower)``, and ``1 - u = (upper -
    x1)/(upper - lower)``: factored, each factor a polynomial in the Bernstein basis (a
    spline bin's slope becomes Durkan et al.'s sum of positive terms); unchanged where it
    is not a ratio of polynomials in ``x1``.

    Example:
        >>> from derive.vocabulary import param_vector, x1
        >>> xk, xk1 = param_vector("xk"), param_vector("xk1")
        >>> in_interval(2 * x1 - xk - xk1, (xk, xk1))
        (-(-x1[i] + xk1[i])/(xk1[i] - xk[i]) + (x1[i] - xk[i])/(xk1[i] - xk[i]))*(xk1[i] - xk[i])
    """
    lower, upper = domain
    frac, rest, width = (sp.Dummy(name, positive=True) for name in ("u", "v", "w"))
    inside = sp.sympify(expr).xreplace({X1[i]: lower + width * frac})
    inside = (inside.xreplace({upper: lower + width}) if _own_upper(domain) is not None
              else inside.xreplace({width: upper - lower}))
    try:
        factored = sp.factor(sp.together(inside), frac)
    except sp.PolynomialError:
        return expr
    if factored.has(X1[i]):
        return expr

    def basis(e: sp.Expr) -> sp.Expr:
        if e.is_Mul:
            return sp.Mul(*(basis(f) for f in e.args))
        if e.is_Pow and e.exp.is_Integer:
            return basis(e.base) ** e.exp
        if e.has(frac) and e.is_polynomial(frac):
            return _bernstein(sp.Poly(e, frac), frac, rest)
        return e

    if not factored.is_rational_function(frac):
        return expr
    arranged = basis(factored)
    return arranged.xreplace({frac: (X1[i] - lower) / width, rest: (upper - X1[i]) / width}
                             ).xreplace({width: upper - lower})


def _chain_rule(expr: sp.Expr, wrt: sp.IndexedBase,
                domain: tuple[sp.Expr, sp.Expr] | None = None
                ) -> tuple[sp.Expr, tuple[Term, ...]]:
    """``d expr_i / d wrt_j`` by the chain rule, as an entry and as matrix terms; on a
    domain, the slope in ``x1`` is written in the interval's fraction
    (:func:`in_interval`)."""
    delta = sp.KroneckerDelta(i, j)
    direct = sp.diff(expr, wrt[i])
    if domain is not None and wrt == X1:
        direct = in_interval(direct, domain)
    entry = direct * delta
    terms = [Term(to_vector(direct), IDENTITY)] if direct != 0 else []
    for fbase, arg in FUNCTIONS.items():
        if arg != wrt:
            continue
        partial = sp.diff(expr, fbase[i])
        entry += partial * JACOBIANS[fbase][i, j]
        if partial != 0:
            terms.append(Term(to_vector(partial), vector_call(JACOBIANS[fbase])))
    return entry, tuple(terms)


_KINDS = {"zero": "zero", "diagonal": "diagonal",
          "full": "a full matrix in general: every output may depend on every input"}


@cache
def derive_jacobian(block: CouplingBlock) -> Derivation:
    """1.2: the Jacobian ``dy/dx`` as a 2x2 block matrix, by the chain rule."""
    steps, results, blocks = [], [], {}
    for out_name, out_base in (("y1", Y1), ("y2", Y2)):
        for in_name, in_base in (("x1", X1), ("x2", X2)):
            expr = block.outputs[out_name]
            entry, terms = _chain_rule(expr, in_base, block.domain)
            through = [f[i] for f, a in FUNCTIONS.items()
                       if a == in_base and sp.diff(expr, f[i]) != 0]
            direct = sp.diff(expr, in_base[i]) != 0
            notes = [out_base[i], in_base[j], *through]
            ways = []
            if direct:
                notes.append(sp.KroneckerDelta(i, j))
                ways.append(f"directly, only where the indices agree (the factor "
                            f"{{{len(notes) - 1}}})")
            if through:
                notes.append(j)
                ways += [f"through {{{k + 2}}} for every {{{len(notes) - 1}}}"
                         for k in range(len(through))]
            chain = " (chain rule)" if through else ""
            reason = ("{0} depends on {1} " + ", and ".join(ways) + chain
                      if ways else "{0} does not depend on {1}")
            steps.append(Step(sp.Derivative(out_base[i], in_base[j]), entry, reason,
                              given=block.given, notes=tuple(notes)))
            kind = ("zero" if not terms else "diagonal" if all(
                t.matrix == IDENTITY for t in terms) else "full")
            description = _KINDS[kind]
            blocks[(out_name, in_name)] = BlockSpec(out_name, in_name, terms, description)
            results.append(Result(f"d{out_name}_d{in_name}", entry, description,
                                  sp.Derivative(out_base[i], in_base[j])))
    # The special case the hand-out's student assumed: element-wise F and G, whose
    # Jacobians are diagonal; checked in a model where F_k depends on x2_k alone.
    elementwise = {JACOBIANS[f][i, j]: sp.KroneckerDelta(i, j) * DERIVATIVES[f][i]
                   for f in FUNCTIONS}
    special = sp.factor_terms(results[1].expr.xreplace(elementwise))
    steps.append(Step(
        sp.Derivative(Y1[i], X2[j]), special,
        "in the special case where {1} and {2} act element-wise, their Jacobians are diagonal, "
        "{0}, and so is this block",
        given=block.given, notes=(sp.Eq(JACOBIANS[FB][i, j], elementwise[JACOBIANS[FB][i, j]]),
                                  FB[i], GB[i]),
        models=(index_model((1, 2, 3), elementwise=True),)))
    results.append(Result(
        "dy1_dx2_elementwise", special,
        "the same block when the two functions act element-wise: diagonal",
        sp.Derivative(Y1[i], X2[j])))
    matrix = BlockMatrixSpec(((blocks[("y1", "x1")], blocks[("y1", "x2")]),
                              (blocks[("y2", "x1")], blocks[("y2", "x2")])))
    triangular = blocks[("y2", "x1")].is_zero
    return Derivation(
        "1.2", f"The Jacobian of {block.title}",
        "Give the Jacobian of the outputs with respect to the inputs as a 2 by 2 block "
        "matrix, saying what each block is.",
        steps, results,
        conclusion=("The lower-left block vanishes, {dy2_dx1}, so the Jacobian is block "
                    "upper-triangular." if triangular else
                    "The Jacobian is not block-triangular."),
        models=_models(block), variant=block.name,
        block_matrix=MatrixDisplay(matrix, sp.Derivative(sp.Symbol("y"), sp.Symbol("x")),
                                   "The Jacobian as a block matrix"),
    )


def jacobian_blocks(block: CouplingBlock) -> BlockMatrixSpec:
    """The block matrix of :func:`derive_jacobian`, blocks as ``diag(c) @ M`` terms."""
    shown = derive_jacobian(block).block_matrix
    assert shown is not None
    return shown.matrix


def _log_abs_unevaluated(expr: sp.Expr) -> sp.Expr:
    """``log|expr|`` as written, before any simplification (for display)."""
    return sp.log(sp.Abs(expr, evaluate=False), evaluate=False)


def _volume_condition(log_det: sp.Expr) -> sp.Basic:
    """``log_det = 0`` simplified: one sum, constant factors divided out; ``false`` where
    every term has one sign, so the sum cannot vanish."""
    sums = sp.Add.make_args(log_det)
    if not all(isinstance(s_, sp.Sum) and s_.limits == sums[0].limits for s_ in sums):
        return sp.Eq(log_det, 0)
    body = sp.factor_terms(sp.Add(*(s_.function for s_ in sums)))
    _, body = body.as_independent(*body.free_symbols, as_Add=False)
    if body.is_positive or body.is_negative:
        return sp.false
    atoms = sorted(body.atoms(sp.Indexed), key=sp.default_sort_key)
    if (body.is_nonnegative or body.is_nonpositive) and len(atoms) == 1:
        # terms of one sign: the sum vanishes exactly where every term does
        zeros = sp.solve(body, atoms[0])
        if len(zeros) == 1:
            return sp.Eq(atoms[0], zeros[0])
    return sp.Eq(sp.Sum(body, sums[0].limits), 0)


@cache
def derive_determinant(block: CouplingBlock) -> Derivation:
    """1.3: the determinant, the log-determinant and the volume-preservation verdict."""
    matrix = jacobian_blocks(block)
    (a_block, _), (c_block, d_block) = matrix.blocks
    if not c_block.is_zero:
        raise SpecificationError(f"{block.name}: dy2/dx1 != 0; the block is not triangular")
    if not (a_block.is_diagonal and d_block.is_diagonal):
        raise SpecificationError(f"{block.name}: a diagonal block is not diagonal")
    jac = derive_jacobian(block)
    a = jac.result("dy1_dx1").coeff(sp.KroneckerDelta(i, j))
    d = jac.result("dy2_dx2").coeff(sp.KroneckerDelta(i, j))
    det_full = DetJacobian(block.y1, block.y2)
    det_a, det_d = DetBlock(block.y1, X1, Y1), DetBlock(block.y2, X2, Y2)
    # An identity block contributes 1 (and its log 0): it is said so, not written prod(1).
    entries = [entry for entry in (a, d) if entry != 1]
    identities = [det for det, entry in ((det_a, a), (det_d, d)) if entry == 1]
    prod = sp.Mul(*(sp.Product(e, (i, 0, n - 1)) for e in entries))
    sum_of_logs = sp.Add(*(sp.Sum(_log_abs_unevaluated(e), (i, 0, n - 1)) for e in entries),
                         evaluate=False) if entries else sp.Integer(0)
    log_det, arranged = arrange(sum_of_logs, LOG_REWRITES)
    # A product of exponentials is written as the exponential of a sum; any other product
    # stays a product (the log-determinant below is what the kernels evaluate).
    exponentials = bool(entries) and all(is_exponential(e) for e in entries)
    det = sp.exp(log_det) if exponentials else prod
    identity_notes = tuple(sp.Eq(det_, 1) for det_ in identities)
    if not entries:
        diag_reason = "both diagonal blocks are identity matrices: {0} and {1}"
    else:
        diag_reason = ("a diagonal block is a diagonal matrix: its determinant is the product "
                       "of its diagonal entries"
                       + ("; the other is the identity, {0}, and contributes 1"
                          if identities else ""))
    steps = [
        Step(det_full, det_a * det_d,
             "{0}: the Jacobian is block upper-triangular, so its determinant is the "
             "product of the determinants of its diagonal blocks",
             notes=(sp.Eq(sp.Derivative(Y2[i], X1[j]), 0),), given=block.given),
        Step(det_a * det_d, prod, diag_reason, notes=identity_notes),
    ]
    if exponentials and prod != det:
        steps.append(Step(prod, det, "a product of exponentials is the exponential of the sum "
                                     "of their exponents"))
    if entries:
        steps.append(Step(sp.log(sp.Abs(det_full)), sum_of_logs,
                          "the log of a product is the sum of the logs"
                          + (" (the identity block contributes 0)" if identities else "")))
        steps += arranged
    else:
        steps.append(Step(sp.log(sp.Abs(det_full)), 0, "the log of 1"))
    condition = _volume_condition(log_det) if log_det != 0 else sp.true
    results = [
        Result("det", det, "the determinant of the Jacobian", det_full),
        Result("log_abs_det", log_det, "the log-determinant", sp.log(sp.Abs(det_full))),
        Result("volume_condition", condition,
               "where the block preserves volume, that is where the determinant is 1"),
    ]
    if condition == sp.true:
        verdict = "Volume preserving: {det} for every input."
    elif condition == sp.false and all(
            isinstance(t, sp.Sum) and not t.function.free_symbols
            for t in sp.Add.make_args(log_det)):
        # a constant log-determinant: its terms may differ in sign (log 3 - log 2)
        verdict = ("Never volume preserving: the determinant is the same for every input, "
                   "and {log_abs_det} is not 0.")
    elif condition == sp.false:
        verdict = ("Never volume preserving: every term of {log_abs_det} has the same sign, "
                   "so the sum never vanishes.")
    else:
        every = isinstance(condition, sp.Eq) and not isinstance(condition.lhs, sp.Sum)
        verdict = ("Not volume preserving in general: every term of {log_abs_det} has one "
                   "sign, so the volume is preserved exactly where {volume_condition} for "
                   "every component." if every else
                   "Not volume preserving in general: {volume_condition} is where the volume "
                   "is preserved, and it holds for some inputs only.")
    return Derivation(
        "1.3", f"The determinant of {block.title}",
        "Give the determinant of the Jacobian. Is the block volume preserving? Justify.",
        steps, results, conclusion=verdict, models=_models(block), variant=block.name,
    )


#: The kernel outputs derivation 1.3n arranges: (result name, kind, source).
_KERNEL_OUTPUTS = (
    ("y1", "forward"), ("y2", "forward"), ("x1", "inverse"), ("x2", "inverse"),
    ("log_abs_det", "determinant"),
    ("dy1_dx1", "jacobian"), ("dy1_dx2", "jacobian"), ("dy2_dx1", "jacobian"),
    ("dy2_dx2", "jacobian"),
)
_SOURCES = {"forward": "the block's definition", "inverse": "the inverse of 1.1",
            "determinant": "the log-determinant of 1.3", "jacobian": "the Jacobian entry of 1.2"}


@cache
def derive_arrangement(block: CouplingBlock) -> Derivation:
    """1.3n: each kernel's expression rewritten for floating point, every rewrite proved."""
    inv, jac, det = derive_inverse(block), derive_jacobian(block), derive_determinant(block)
    derived = {"y1": (Y1[i], block.y1), "y2": (Y2[i], block.y2),
               "x1": (X1[i], inv.result("x1")), "x2": (X2[i], inv.result("x2")),
               "log_abs_det": (sp.log(sp.Abs(DetJacobian(block.y1, block.y2))),
                               det.result("log_abs_det"))}
    for out in ("y1", "y2"):
        for inp in ("x1", "x2"):
            r = next(r for r in jac.results if r.name == f"d{out}_d{inp}")
            derived[r.name] = (r.lhs, r.expr)
    steps, results = [], []
    for name, kind in _KERNEL_OUTPUTS:
        lhs, expr = derived[name]
        arranged, rewrites = arrange(expr, KERNEL_REWRITES)
        shown = bool(rewrites) or name == "log_abs_det"
        if shown:
            steps.append(Step(lhs, expr, _SOURCES[kind], given={lhs: expr}))
            steps += rewrites
        results.append(Result(name, arranged, f"{_SOURCES[kind]}, as the kernels evaluate it",
                              lhs, typeset=shown))
    rewritten = len(steps) > 1
    series = any(step.notes and any(isinstance(note, sp.Eq) and note.rhs.getO() is not None
                                    for note in step.notes if isinstance(note, sp.Eq))
                 for step in steps)
    return Derivation(
        "1.3n", f"The kernels of {block.title} in floating point",
        "Arrange the expressions the kernels evaluate so that none overflows, cancels or "
        "rounds away where the value it stands for is a finite number.",
        steps, results,
        conclusion=("No expression needs rewriting: the kernels evaluate each as derived."
                    if not rewritten else
                    "Each rewrite is an identity SymPy proves, except the series piece, which "
                    "agrees to below 1e-17 of the value; every other expression is evaluated "
                    "as derived." if series else
                    "Each rewrite is an identity SymPy proves; every other expression is "
                    "evaluated as derived."),
        models=_models(block, (1,)), variant=block.name,
    )


def arranged_blocks(block: CouplingBlock) -> BlockMatrixSpec:
    """The block matrix of 1.2 with each entry as derivation 1.3n arranges it."""
    matrix = jacobian_blocks(block)
    arrangement = derive_arrangement(block)
    rows = []
    for row in matrix.blocks:
        cells = []
        for spec in row:
            entry = arrangement.result(f"d{spec.row}_d{spec.col}")
            terms = []
            direct = entry.coeff(sp.KroneckerDelta(i, j))
            if direct != 0:
                terms.append(Term(to_vector(direct), IDENTITY))
            for jbase in JACOBIANS.values():
                partial = entry.coeff(jbase[i, j])
                if partial != 0:
                    terms.append(Term(to_vector(partial), vector_call(jbase)))
            cells.append(BlockSpec(spec.row, spec.col, tuple(terms), spec.description))
        rows.append(tuple(cells))
    return BlockMatrixSpec(tuple(rows))


_X = (Arg("x1", "batch", "first half of the input, shape (..., n)."),
      Arg("x2", "batch", "second half of the input, shape (..., n)."))
_Y = (Arg("y1", "batch", "first half of the output, shape (..., n)."),
      Arg("y2", "batch", "second half of the output, shape (..., n)."))
_S1 = Arg("s", "param", "the parameter vector s, shape (n,).")
_FG = (Arg("F", "function", "callable (..., n) -> (..., n); ignored where unused."),
       Arg("G", "function", "callable (..., n) -> (..., n); ignored where unused."))
_J = (Arg("JF", "jacobian", "callable (..., n) -> (..., n, n), JF(x)[..., i, j] = dF_i/dx_j."),
      Arg("JG", "jacobian", "callable (..., n) -> (..., n, n), JG(x)[..., i, j] = dG_i/dx_j."))

_EXAMPLE = """>>> import numpy as np
>>> from {package} import {name}
>>> x1, x2, s = np.array([0.5, -1.0]), np.array([0.2, 0.3]), np.array([0.1, -0.2])
>>> y1, y2 = {name}.forward(x1, x2, s, np.tanh, np.sin)
>>> back = {name}.inverse(y1, y2, s, np.tanh, np.sin)
>>> bool(np.allclose(back[0], x1) and np.allclose(back[1], x2))
True
>>> {name}.log_det_jacobian(x1, x2, s, np.tanh, np.sin).shape
()"""

_EXAMPLE_OWN = """>>> import numpy as np
>>> from {package} import {name}
>>> x1, x2, s = np.array([0.5, -1.0]), np.array([0.2, 0.3]), np.array([0.1, -0.2])
>>> y1, y2 = {name}.forward(x1, x2, s{own}, np.tanh, np.sin)
>>> back = {name}.inverse(y1, y2, s{own}, np.tanh, np.sin)
>>> bool(np.allclose(back[0], x1) and np.allclose(back[1], x2))
True"""


def coupling_kernels(block: CouplingBlock, source: str = "",
                     package: str | None = "generated") -> Module:
    """The kernel module of any coupling block: forward, inverse, Jacobian, log-det.

    Every expression is the one derivation 1.3n arranges for floating point. The block's
    own parameter vectors (:func:`~derive.vocabulary.param_vector`) are arguments after
    ``s``, of shape ``(n,)``, checked like it, and its scalars
    (:func:`~derive.vocabulary.param_scalar`) after them, of shape ``()``. ``source`` is
    what the header says the module is derived from (default: the block's name);
    ``package`` the package the docstring's example imports it from (None: no example,
    for material whose output package the user names).

    Example:
        >>> from derive.vocabulary import F, param_vector, s, x1, x2
        >>> t = param_vector("t")
        >>> shifted = CouplingBlock("shifted", "a shifted block", x1 + F, sp.exp(s) * x2 + t)
        >>> module = coupling_kernels(shifted)
        >>> module.kernels[0].arg_names, module.source
        (('x1', 'x2', 's', 't', 'F', 'G'), "block 'shifted', derivations 1.1-1.3n")
    """
    arranged = derive_arrangement(block)
    own = tuple(Arg(name, kind, (f"the parameter vector {name}, shape (n,)"
                                 if kind.endswith("param") else
                                 f"the scalar parameter {name}, shape ()")
                    + (", every entry > 0." if kind.startswith("positive") else "."))
                for name, kind in block.parameters)
    _S = (_S1,) + own  # noqa: N806 - the parameters, s first

    def out(name: str, doc: str, reduced: bool = False) -> Output:
        return Output(name if name != "log_abs_det" else "log_det",
                      to_vector(arranged.result(name)), doc, reduced=reduced)

    y = (out("y1", "first half of the output, shape (..., n)."),
         out("y2", "second half of the output, shape (..., n)."))
    log_det = out("log_abs_det", "log|det(dy/dx)|, shape (...,).", reduced=True)
    kernels = (
        Kernel("forward", _X + _S + _FG, y,
               f"Apply {block.title}: y = (y1, y2) from x = (x1, x2)."),
        Kernel("inverse", _Y + _S + _FG,
               (out("x1", "first half of the input, shape (..., n)."),
                out("x2", "second half of the input, shape (..., n).")),
               f"Invert {block.title}: x = (x1, x2) from y = (y1, y2).",
               "x2 is recovered first; F and G are then evaluated at it (derivation 1.1)."),
        Kernel("jacobian", _X + _S + _FG + _J,
               (Output("J", arranged_blocks(block),
                       "dy/dx, shape (..., 2n, 2n), rows (y1, y2) and columns (x1, x2)."),),
               f"The Jacobian dy/dx of {block.title} as a dense (..., 2n, 2n) array.",
               "Assembled block by block from derivation 1.2; F and G need not act "
               "element-wise."),
        Kernel("log_det_jacobian", _X + _S + _FG, (log_det,),
               f"log|det(dy/dx)| of {block.title}, computed without forming exp.",
               "The closed form of derivation 1.3; it stays finite where exp(G) overflows."),
        Kernel("forward_and_log_det", _X + _S + _FG, y + (log_det,),
               f"Apply {block.title} and return log|det(dy/dx)| with it.",
               "What a flow's training step needs: F and G are evaluated once for both, "
               "and the results equal those of forward and log_det_jacobian."),
    )
    return Module(
        name=block.name,
        title=f"Generated kernels for {block.title}.",
        description=(block.summary + (
            " The four kernels share one signature, so blocks are interchangeable: x1, x2, "
            "y1, y2 have shape (..., n) with any leading batch dimensions, s has shape (n,), "
            "and F, G map (..., n) to (..., n)." if not own else
            " The kernels share one signature: x1, x2, y1, y2 have shape (..., n) with any "
            "leading batch dimensions, "
            + " and ".join(a.name for a in (_S1,) + own if a.is_param)
            + " have shape (n,)"
            + "".join(f", {a.name} has shape ()" for a in own if a.is_scalar)
            + ", and F, G map (..., n) to (..., n).")),
        kernels=kernels,
        source=source or f"block {block.name!r}, derivations 1.1-1.3n",
        contract="coupling",
        example="" if package is None else (_EXAMPLE if not own else _EXAMPLE_OWN).format(
            name=block.name, package=package,
            own="".join((", np.ones(2)" if a.is_positive else ", np.zeros(2)") if a.is_param
                        else ", np.float64(0.5)" for a in own)),
    )
