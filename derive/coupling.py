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

from .arrangement import KERNEL_REWRITES, LOG_REWRITES, arrange, is_exponential
from .derivation import Derivation, MatrixDisplay, Result, Step
from .nodes import IDENTITY, BlockMatrixSpec, BlockSpec, Term
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
    """

    name: str
    title: str
    y1: sp.Expr
    y2: sp.Expr
    summary: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise SpecificationError(f"name: expected a Python identifier, got {self.name!r}")
        for label, expr in (("y1", self.y1), ("y2", self.y2)):
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
        _check_monotone(self.name, "y1", sp.sympify(self.y1), X1[i])
        _check_monotone(self.name, "y2", sp.sympify(self.y2), X2[i])
        for expr, unknown, out in ((self.y1, X1[i], Y1[i]), (self.y2, X2[i], Y2[i])):
            if sp.diff(expr, unknown, 2) != 0:
                # not affine: whether a closed-form real inverse exists is decided now,
                # in a second or so, not when the derivations reach it
                _solve_unique(self.name, sp.Eq(out, sp.sympify(expr)), unknown)

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
        vectors (kind ``"param"``, shape ``(n,)``) by name, then its scalars (``"scalar"``).

        Example:
            >>> from derive.vocabulary import F, param_scalar, param_vector, x1, x2
            >>> t, c = param_vector("t"), param_scalar("c")
            >>> CouplingBlock("shifted", "A shift", x1 + c * F, x2 + t).parameters
            (('t', 'param'), ('c', 'scalar'))
        """
        exprs = [sp.sympify(self.y1), sp.sympify(self.y2)]
        vectors = {str(a.base.label) for e in exprs for a in e.atoms(sp.Indexed)
                   if a.base not in _INPUT_BASES}
        scalars = {str(sym) for e in exprs for sym in _scalars(e)}
        return (tuple((name, "param") for name in sorted(vectors))
                + tuple((name, "scalar") for name in sorted(scalars)))


def _scalars(expr: sp.Expr) -> set[sp.Symbol]:
    """The plain symbols of ``expr``: neither an index, ``n``, nor an indexed base's label."""
    labels = {a.base.label for a in expr.atoms(sp.Indexed)}
    return {sym for sym in expr.atoms(sp.Symbol) if sym not in labels and sym not in (i, j, n)}


def _unknowns(expr: sp.Expr) -> list[sp.Basic]:
    """What a sample point assigns in ``expr``: its components and its scalars, sorted."""
    return sorted(expr.atoms(sp.Indexed) | _scalars(expr), key=sp.default_sort_key)


#: Deterministic sample values for the numeric parts of the specification checks.
_SAMPLES = tuple(sp.Rational(v) for v in ("-11/4", "-1", "-3/8", "0", "1/2", "5/4", "7/2"))


def _sample_points(symbols: list[sp.Basic], count: int = 24) -> list[dict[sp.Basic, sp.Rational]]:
    """``count`` assignments of :data:`_SAMPLES` to ``symbols``, the same on every run."""
    points = []
    for k in range(count):
        points.append({sym: _SAMPLES[(k * (3 + 2 * m) + m) % len(_SAMPLES)]
                       for m, sym in enumerate(symbols)})
    return points


def _check_monotone(name: str, label: str, expr: sp.Expr, unknown: sp.Indexed) -> None:
    """Refuse ``label = expr`` unless its slope in ``unknown`` keeps one sign and is never 0:
    proved from SymPy's assumptions, or else not contradicted at any sample point (where a
    sample shows a zero or a change of sign, the block is not invertible there)."""
    slope = sp.diff(expr, unknown)
    if slope.is_positive or slope.is_negative:
        return
    symbols = _unknowns(slope)
    signs: dict[int, dict[sp.Basic, sp.Rational]] = {}
    for point in _sample_points(symbols):
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
                f"{name}: {label} = {expr} is not invertible for {unknown}: its slope "
                f"d{label}/d{unknown.base} = {slope} {why}; a coupling block needs a slope "
                "that is never 0")


def _is_real_at(expr: sp.Expr, point: dict[sp.Basic, sp.Rational]) -> bool:
    value = sp.N(expr.xreplace(point), 30)
    if not value.is_number or value.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
        return False
    re_, im_ = value.as_real_imag()
    return abs(im_) <= 1e-20 * (1 + abs(re_))


def _real_roots(eq: sp.Eq, unknown: sp.Indexed,
                roots: list[sp.Expr]) -> list[sp.Expr]:
    """The roots of ``eq`` that are real, and solve it, at every sample point: the one
    that inverts the block on the reals (the others are complex or spurious)."""
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
def _solve_unique(name: str, eq: sp.Eq, unknown: sp.Indexed) -> sp.Expr:
    """The solution of ``eq`` for ``unknown`` that inverts the block on the reals.

    A monotone cubic's real root in hyperbolic form first (:func:`_monotone_cubic_root`);
    then ``solve`` (one solution: the affine blocks); where it gives several, the real
    solution ``solveset`` finds over the reals, or else the one of ``solve``'s roots that
    is real and solves the equation at every sample point. Refused in one line where no
    closed form is found or the real solution is not unique.
    """
    where = f"{name}: solving {eq} for {unknown}"
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
    x1_sol = _solve_unique(block.name, sp.Eq(Y1[i], block.y1), X1[i])
    steps = [
        Step(X2[i], x2_sol, "solve the second equation, {0}, for {1}",
             given={Y2[i]: block.y2}, notes=(sp.Eq(Y2[i], block.y2), X2[i])),
        Step(X1[i], x1_sol,
             "with {2} known, {3} and {4} can be evaluated; solve the first equation, "
             "{0}, for {1}", given={Y1[i]: block.y1},
             notes=(sp.Eq(Y1[i], block.y1), X1[i], X2[i], FB[i], GB[i])),
    ]
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
        models=_MODELS, variant=block.name,
    )


def _chain_rule(expr: sp.Expr, wrt: sp.IndexedBase) -> tuple[sp.Expr, tuple[Term, ...]]:
    """``d expr_i / d wrt_j`` by the chain rule, as an entry and as matrix terms."""
    delta = sp.KroneckerDelta(i, j)
    direct = sp.diff(expr, wrt[i])
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
            entry, terms = _chain_rule(expr, in_base)
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
        models=_MODELS, variant=block.name,
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
        steps, results, conclusion=verdict, models=_MODELS, variant=block.name,
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
        models=(index_model((1,)),), variant=block.name,
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
    own = tuple(Arg(name, kind, f"the parameter vector {name}, shape (n,)." if kind == "param"
                    else f"the scalar parameter {name}, shape ().")
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
            + " and ".join(a.name for a in (_S1,) + own if a.kind == "param")
            + " have shape (n,)"
            + "".join(f", {a.name} has shape ()" for a in own if a.kind == "scalar")
            + ", and F, G map (..., n) to (..., n).")),
        kernels=kernels,
        source=source or f"block {block.name!r}, derivations 1.1-1.3n",
        contract="coupling",
        example="" if package is None else (_EXAMPLE if not own else _EXAMPLE_OWN).format(
            name=block.name, package=package,
            own="".join(", np.zeros(2)" if a.kind == "param" else ", np.float64(0.5)"
                        for a in own)),
    )
