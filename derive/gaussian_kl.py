r"""Questions 2.3 and 2.4: the Gaussian KL term, its gradient, and gradient estimators.

A :class:`Parameterization` says how the user's scale parameter gives ``sigma``
(``sigma`` itself, or ``logvar = log sigma^2``). For each, the engine derives:

* 2.3 -- ``KL(q_i || p_i)`` by taking the expectation of ``log q_i - log p_i`` under
  ``q_i`` (normal moments from ``sympy.stats``);
* 2.3n -- a numerically stable arrangement of the KL and its gradient, each rewrite
  proved equal by SymPy (``expm1``, factoring, and a Taylor series where ``expm1(x) - x``
  would cancel);
* 2.4 -- reverse-mode differentiation through the computation graph
  ``z = mu + sigma eps, r = log q(z), s = log p(z), t = r - s`` (the graph is data,
  :class:`Graph`), the expectation of the estimator, the sticking-the-landing estimator,
  and the variances of both.

Example:
    >>> derive_kl(PARAMETERIZATIONS["sigma"]).result("kl")
    mu**2/2 + sigma**2/2 - log(sigma) - 1/2
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import sympy as sp
from sympy import stats
from sympy.codegen.cfunctions import expm1, log1p
from sympy.codegen.rewriting import expm1_opt, log1p_opt, optimize

from .arrangement import KERNEL_REWRITES, arrange
from .derivation import Derivation, Result, Step
from .pieces import safe_point
from .probability import KL, Expectation, GaussianModel, Variance, gaussian_log_pdf

__all__ = ["Parameterization", "PARAMETERIZATIONS", "Prior", "STANDARD_NORMAL", "learned_prior",
           "Node", "Graph", "expm1mx", "is_log_linear", "derive_chain_factors",
           "times_scale_derivative", "dsigma", "dlogsigma", "dlogsigma_p",
           "derive_kl", "derive_stable_kl", "derive_stable_kl_pair", "natural_variables",
           "scaled_squares", "derive_gradient_estimators"]

mu = sp.Symbol("mu", real=True)
sigma = sp.Symbol("sigma", positive=True)
logvar = sp.Symbol("logvar", real=True)
eps = sp.Symbol("eps", real=True)
mu_p = sp.Symbol("mu_p", real=True)
sigma_p = sp.Symbol("sigma_p", positive=True)
z = sp.Symbol("z", real=True)
x = sp.Symbol("x", real=True)
_log_q = sp.Symbol("log_q_i", real=True)
_log_p = sp.Symbol("log_p_i", real=True)
_q_i = sp.Symbol("q_i")
_eps_label = sp.Symbol("epsilon")
#: The same x where it may be infinite: the kernels see infinities with the check off.
x_extended = sp.Symbol("x", extended_real=True)
KL_i = sp.Symbol("KL_i", real=True)
_a = sp.Symbol("a", real=True)

#: Where the Taylor series of expm1(x) - x replaces the cancelling difference, and its order.
SERIES_RADIUS = sp.Rational(1, 2)
SERIES_ORDER = 16
#: From this x up, exp(x) is taken from sigma (halved, then squared), not from
#: exp(log sigma**2), whose relative error grows like x * eps, and expm1(x), which overflows
#: where the KL is still finite (tests/test_gaussian_kl.py measures each piece).
DIRECT_RADIUS = 2
#: Where x is the user's parameter itself (logvar), exp(x) is as accurate as it gets: the
#: direct piece serves only from here, just below where float32's expm1 overflows (88.7).
OVERFLOW_RADIUS = 88
#: Below -NO_CANCELLATION, expm1(x) is within 0.14 of -1 and -x >= 2: nothing cancels.
NO_CANCELLATION = 2


#: Question 2.3 and 2.4 are per dimension: their symbols print with the subscript i.
_PER_DIMENSION = {"mu": r"\mu_i", "sigma": r"\sigma_i", "eps": r"\epsilon_i", "z": "z_i",
                  "r": "r_i", "s": "s_i", "t": "t_i", "logvar": r"\lambda_i",
                  "epsilon": r"\epsilon_i"}


#: The learned prior's symbols too.
_PER_DIMENSION_PAIR = {**_PER_DIMENSION, "mu_p": r"\mu_{p,i}", "sigma_p": r"\sigma_{p,i}",
                       "logvar_p": r"\lambda_{p,i}", "m": "m_i", "r": "r_i", "x": "x_i"}


@dataclass(frozen=True)
class Parameterization:
    """How the scale parameter a user passes gives the standard deviation ``sigma``.

    Arguments:
        name: ``"sigma"`` or ``"logvar"``; also the derivations' variant name.
        module: the generated module's name.
        scale: the symbol of the user's parameter.
        sigma: ``sigma`` as an expression in ``scale``.
        title: how the parameterization reads in prose.
    """

    name: str
    module: str
    scale: sp.Symbol
    sigma: sp.Expr
    title: str

    @property
    def positive(self) -> bool:
        """Whether the scale must be > 0 (it must be where it is sigma itself)."""
        return bool(self.scale.is_positive)

    @property
    def pair_module(self) -> str:
        """The generated module of the KL from a learned prior in this parameterization."""
        return self.module.replace("gaussian_kl", "gaussian_kl_pair", 1)


PARAMETERIZATIONS: dict[str, Parameterization] = {
    "sigma": Parameterization("sigma", "gaussian_kl", sigma, sigma,
                              "the standard deviation sigma"),
    "logvar": Parameterization("logvar", "gaussian_kl_logvar", logvar, sp.exp(logvar / 2),
                               "the log-variance logvar = log sigma^2"),
}


@dataclass(frozen=True)
class Prior:
    """The prior factor ``p_i = N(mean, sigma^2)``: the standard normal, or a learned one.

    Arguments:
        name: ``"standard"`` or ``"learned"``.
        mean: the prior's mean (``0`` or the symbol ``mu_p``).
        sigma: the prior's standard deviation as an expression in its scale (``1``, or
            ``sigma_p``, or ``exp(logvar_p / 2)``).
        scale: the prior's scale parameter, or None where it is fixed.
    """

    name: str
    mean: sp.Expr
    sigma: sp.Expr
    scale: sp.Symbol | None = None

    @property
    def is_standard(self) -> bool:
        return self.mean == 0 and self.sigma == 1


#: The coursework's prior.
STANDARD_NORMAL = Prior("standard", sp.Integer(0), sp.Integer(1))


@cache
def learned_prior(p: Parameterization) -> Prior:
    """The prior ``N(mu_p, sigma_p^2)``, its scale parameterized as ``p`` parameterizes q's.

    Example:
        >>> learned_prior(PARAMETERIZATIONS["logvar"]).sigma
        exp(logvar_p/2)
    """
    scale_p = sp.Symbol(f"{p.scale.name}_p", **p.scale.assumptions0)
    return Prior("learned", mu_p, p.sigma.xreplace({p.scale: scale_p}), scale_p)


class expm1mx(sp.Function):  # noqa: N801 - SymPy function names are lower case
    """``expm1mx(x) = exp(x) - 1 - x``, the part of ``exp(x)`` after its tangent at 0."""

    nargs = 1
    is_real = True

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sp.exp(self.args[0]) - 1

    def _eval_rewrite_as_exp(self, arg: sp.Expr, **kwargs: object) -> sp.Expr:
        return sp.exp(arg) - 1 - arg

    def _eval_rewrite_as_Piecewise(self, arg: sp.Expr, **kwargs: object) -> sp.Expr:
        """The evaluable form: a Taylor polynomial near 0, ``expm1(x) - x`` elsewhere."""
        return sp.Piecewise((sp.horner(_taylor(arg)), sp.Abs(arg) < SERIES_RADIUS),
                            (optimize(sp.exp(arg) - 1 - arg, [expm1_opt]), True))


def _taylor(arg: sp.Expr) -> sp.Expr:
    """The Taylor polynomial of ``exp(x) - 1 - x`` at 0, up to ``x**(SERIES_ORDER - 1)``."""
    return sp.series(sp.exp(x) - 1 - x, x, 0, SERIES_ORDER).removeO().xreplace({x: arg})


def _q_model(p: Parameterization, prior: Prior = STANDARD_NORMAL) -> GaussianModel:
    prior_sigma = sigma_p if not prior.is_standard else prior.sigma
    return GaussianModel(
        "q_i = N(mu, sigma^2), p_i = " + ("N(0, 1)" if prior.is_standard
                                          else "N(mu_p, sigma_p^2)"),
        densities={_log_q: gaussian_log_pdf(z, mu, p.sigma),
                   _log_p: gaussian_log_pdf(z, prior.mean, prior_sigma)},
        distributions={_q_i: {z: (mu, p.sigma)}, _eps_label: {eps: (0, 1)}},
    )


def _linear(f: sp.Expr, var: sp.Symbol, label: sp.Symbol) -> sp.Expr:
    """``E[f]`` written by linearity: constants out, one expectation per remaining term."""
    terms = []
    for term in sp.Add.make_args(f):
        const, rest = term.as_independent(var, as_Add=False)
        terms.append(const if rest == 1 else const * Expectation(rest, label))
    return sp.Add(*terms)


@cache
def derive_kl(p: Parameterization, prior: Prior = STANDARD_NORMAL) -> Derivation:
    """2.3: the closed form of ``KL(q_i || p_i)``, by taking the expectation.

    With the learned prior, the derivation ends with the standard normal as its special
    case: 2.3's answer.
    """
    standard = prior.is_standard
    p_sigma = prior.sigma if standard else sigma_p  # sigma_p stays a symbol until the end
    model = _q_model(PARAMETERIZATIONS["sigma"], prior)
    log_prior = gaussian_log_pdf(z, prior.mean, p_sigma)
    integrand = gaussian_log_pdf(z, mu, sigma) - log_prior
    by_linearity = _linear(integrand, z, _q_i)
    expectations = sorted(by_linearity.atoms(Expectation), key=sp.default_sort_key)
    moments = by_linearity.replace(lambda e: isinstance(e, Expectation),
                                   lambda e: model.evaluate(e))
    closed = sp.simplify(moments)
    half_form = sp.Mul(sp.Rational(1, 2), sp.expand(2 * closed), evaluate=False)
    kl_def = KL(_log_q, _log_p, _q_i)
    steps = [
        Step(KL_i, kl_def.definition(), "the definition of the KL divergence",
             given={KL_i: kl_def}),
        Step(kl_def.definition(), Expectation(integrand, _q_i),
             "the Gaussian log-densities {0} and {1}",
             notes=(sp.Eq(_log_q, gaussian_log_pdf(z, mu, sigma)), sp.Eq(_log_p, log_prior))),
        Step(Expectation(integrand, _q_i), by_linearity, "linearity of expectation"),
        Step(by_linearity, moments,
             "the moments of the normal distribution: "
             + ", ".join(f"{{{k}}}" for k in range(len(expectations))),
             notes=tuple(sp.Eq(e, model.evaluate(e)) for e in expectations)),
        Step(moments, half_form, "collect terms"),
    ]
    kl = closed
    substitution = {sigma: p.sigma} | ({} if standard else {sigma_p: prior.sigma})
    if p.sigma != sigma or (not standard and prior.sigma != sigma_p):
        kl = sp.simplify(sp.expand_log(closed.xreplace(substitution), force=True))
        notes = tuple(sp.Eq(k, v) for k, v in substitution.items() if k != v)
        steps.append(Step(half_form, kl,
                          "substitute " + " and ".join(f"{{{k}}}" for k in range(len(notes))),
                          given=substitution, notes=notes))
    one = sp.solve(sp.Eq(prior.sigma, 1), prior.scale) if not standard else []
    if one:  # (a parameterization whose sigma never reaches 1 has no such special case)
        coursework = derive_kl(p).result("kl")
        at_standard = {mu_p: 0, prior.scale: one[0]}
        steps.append(Step(kl.xreplace(at_standard), coursework,
                          "the special case of the standard normal prior, {0} zero and {1} "
                          "one: the answer of 2.3", notes=(mu_p, sigma_p)))
    display = None
    if standard:  # the course's form: 1/2 (mu^2 + sigma^2 - 1 - log sigma^2)
        variance = sp.simplify(p.sigma**2)
        log_variance = (sp.log(sigma**2) if p.sigma == sigma
                        else sp.expand_log(sp.log(variance), force=True))
        display = sp.Mul(sp.Rational(1, 2),
                         sp.Add(mu**2, variance, -1, -log_variance, evaluate=False),
                         evaluate=False)
    results = [Result("kl", kl, "the KL divergence", KL_i, display=display)]
    title = ("The KL divergence of a Gaussian from the standard normal" if standard
             else "The KL divergence between two Gaussians")
    statement = ("Give the KL divergence of one factor of q from the matching factor of p "
                 "explicitly in that factor's mean and scale." if standard else
                 "Give the KL divergence of one factor of q from the matching factor of a "
                 "learned Gaussian prior explicitly in the means and scales of both.")
    return Derivation(
        "2.3" if standard else "2.3p", title, statement, steps, results,
        conclusion="{kl}: zero exactly at the prior's mean and scale, positive elsewhere.",
        models=(model,), variant=p.name,
        data={"latex_names": _PER_DIMENSION if standard else _PER_DIMENSION_PAIR},
    )


def _stabilize(expr: sp.Expr, p: Parameterization,
               prior: Prior = STANDARD_NORMAL) -> sp.Expr:
    """``expr`` arranged so that nothing cancels near the optimum and nothing overflows early.

    Factor; keep the factors that vanish at the optimum (sigma = 1) apart, where they are
    computed exactly (``sigma - 1``, ``expm1(logvar)``); expand what is left over the
    denominator (``(sigma + 1) / sigma -> 1 + 1/sigma``), so that it cannot overflow.
    """
    if not expr.has(p.scale):
        return optimize(sp.factor(expr), [expm1_opt, log1p_opt])
    at = sp.solve(sp.Eq(p.sigma, prior.sigma), p.scale)  # none where sigma never reaches it
    numer, denom = sp.fraction(sp.factor(expr))
    factors = sp.Mul.make_args(numer)
    vanishing = [f for f in factors if at and f.free_symbols and f.xreplace({p.scale: at[0]})
                 == 0]
    rest = sp.Mul(*[f for f in factors if f not in vanishing]) / denom
    arranged = sp.Mul(*vanishing) * sp.expand(rest) if vanishing else sp.factor(expr)
    return optimize(arranged, [expm1_opt, log1p_opt])


def _sinh_form(expr: sp.Expr, p: Parameterization) -> sp.Expr:
    """``expm1(a)`` as ``2 exp(a/2) sinh(a/2)`` where ``exp(a/2)`` is sigma.

    Both are exact at the optimum (``sinh(0) = 0``), but ``expm1(a)`` overflows before a
    division by sigma brings it back into range, and ``0 * expm1(a)`` is NaN where it
    overflows; ``exp(a/2)`` and ``sinh(a/2)`` stay finite twice as far.
    """
    def rewrite(e: sp.Expr) -> sp.Expr:
        half = sp.exp(e.args[0] / 2)
        return 2 * half * sp.sinh(e.args[0] / 2) if sp.simplify(half - p.sigma) == 0 else e

    return expr.replace(lambda e: isinstance(e, expm1), rewrite)


# --- any scale parameterization: the chain rule through sigma and log sigma -------------

#: sigma'(scale) and (log sigma)'(scale) = sigma'/sigma, each computed once by the kernels.
dsigma = sp.Symbol("dsigma", real=True)
dlogsigma = sp.Symbol("dlogsigma", real=True)


def is_log_linear(p: Parameterization) -> bool:
    """Whether ``sigma`` is the scale itself or ``log sigma`` is linear in it (``sigma = c
    exp(k scale)``, as for ``logvar``): then every gradient is a function of the scale that
    :func:`_stabilize` arranges exactly (``expm1`` of the scale at the optimum). Any other
    parameterization (softplus, ``exp(rho) + c``, ``rho**2``, ``1/rho``, ...) goes through
    ``sigma`` and ``log sigma`` (derivation 2.3c): its powers would overflow or underflow
    where the gradient is finite.

    Example:
        >>> is_log_linear(PARAMETERIZATIONS["logvar"])
        True
    """
    if p.sigma == p.scale:
        return True
    log_derivative = sp.simplify(sp.diff(sp.log(p.sigma), p.scale))
    return bool(log_derivative.is_number and log_derivative != 0)


def _in_each_piece(lhs: sp.Basic, rhs: sp.Basic) -> list[tuple[sp.Basic, sp.Basic]]:
    """A check model: both sides at a point inside each piece's region of ``rhs``, as a
    ratio (the random points of the numeric check may all fall in one piece, and a series
    piece is exact nowhere, so each is compared where it is used, to 1e-12 relative)."""
    if not isinstance(rhs, sp.Piecewise):
        return [(lhs, rhs)]
    pairs, earlier = [], []
    for piece, cond in rhs.args:
        region = sp.And(cond, *(sp.Not(c) for c in earlier))
        earlier.append(cond)
        point = safe_point(piece, region)
        # symbols the region does not constrain take distinct values (mu != mu_p), so that
        # no factor vanishes at the point by accident
        free = sorted(set(point) - region.free_symbols, key=sp.default_sort_key)
        point.update({sym: sp.Rational(k + 2, 3) for k, sym in enumerate(free)})
        # as numbers: SymPy's simplification of such constants can divide by a 0 it rounded
        a, b = lhs.xreplace(point).doit().evalf(50), piece.xreplace(point).doit().evalf(50)
        # relative: a series piece is within 1e-17 of the value, whatever its size
        pairs.append((sp.Integer(1), b / a) if a.is_nonzero else (a, b))
    return pairs


def _refine_pieces(expr: sp.Expr) -> sp.Expr:
    """A piecewise value folded into one, each piece simplified where it is taken (its
    condition, and no earlier one): ``|u| = -u`` where ``u < 0``, and ``exp(u) exp(-|u|)``
    is 1 where ``u >= 0`` (never ``inf * 0``)."""
    folded = sp.piecewise_fold(expr)
    if not isinstance(folded, sp.Piecewise):
        return folded
    pieces, earlier = [], []
    for e, c in folded.args:
        region = sp.And(c, *(sp.Not(k) for k in earlier))
        earlier.append(c)
        try:
            pieces.append((sp.refine(e, region) if region is not sp.true else e, c))
        except ValueError:  # the region is empty (folded conditions contradict): never taken
            continue
    return sp.Piecewise(*pieces)


@cache
def derive_chain_factors(p: Parameterization) -> Derivation:
    """2.3c: ``sigma``, ``log sigma^2``, ``sigma'`` and ``(log sigma)'`` of a scale
    parameterization, arranged for floating point (each rewrite a checked step).

    ``(log sigma)'`` is the derivative of the arranged ``log sigma``, piece by piece: where
    ``sigma`` underflows (softplus far left), ``sigma'/sigma`` would be ``0/0``, while the
    log, and so its derivative, stays in range.

    Example:
        >>> rho = sp.Symbol("rho", real=True)
        >>> d = derive_chain_factors(Parameterization("rho", "m", rho, sp.exp(rho), "e"))
        >>> d.result("dlogsigma_evaluable"), d.result("dsigma_evaluable")
        (1, exp(rho))
    """
    s = p.scale
    log_var = sp.simplify(sp.expand_log(sp.log(p.sigma**2), force=True))
    steps = [Step(sp.log(p.sigma**2), log_var, "the log of the variance, expanded")]
    x_arranged, more = arrange(log_var, KERNEL_REWRITES)
    steps += more
    sigma_arranged, more = arrange(p.sigma, KERNEL_REWRITES)
    steps += more
    derivative = sp.diff(p.sigma, s)
    dsigma_arranged, more = arrange(derivative, KERNEL_REWRITES)
    x_arranged, sigma_arranged, dsigma_arranged = (
        _refine_pieces(e) for e in (x_arranged, sigma_arranged, dsigma_arranged))
    steps = [Step(sp.Derivative(p.sigma, s), derivative, "differentiate")] + steps + more
    log_derivative = sp.simplify(sp.diff(log_var / 2, s))
    steps.append(Step(sp.Derivative(sp.log(p.sigma), s), log_derivative,
                      "differentiate the log of the standard deviation"))
    from_log, more = arrange(_refine_pieces(sp.diff(x_arranged / 2, s)), KERNEL_REWRITES)
    from_log = _refine_pieces(from_log)
    steps.append(Step(log_derivative, from_log,
                      "the derivative of the arranged {0}, piece by piece: where {1} "
                      "underflows its log does not, so {2} is never {3}",
                      notes=(sp.log(sigma), sigma, dsigma / sigma, sp.nan),
                      models=(_in_each_piece,)))
    results = [
        Result("x", x_arranged, "the log-variance, arranged", typeset=False),
        Result("sigma_evaluable", sigma_arranged, "the standard deviation, arranged",
               typeset=False),
        Result("dsigma_evaluable", dsigma_arranged, "its derivative, arranged", typeset=False),
        Result("dlogsigma_evaluable", from_log, "the derivative of its log, arranged",
               typeset=False),
    ]
    return Derivation(
        "2.3c", "The standard deviation and its derivatives in floating point",
        "Arrange sigma, log sigma^2, sigma' and (log sigma)' of the parameterization so that "
        "each is finite wherever its true value is.", steps, results, variant=p.name)


def times_scale_derivative(c: sp.Expr) -> sp.Expr:
    """``c sigma'``, ``c`` a coefficient of the ``sigma`` parameterization (in ``sigma``):
    where ``c`` has a pole at ``sigma = 0``, ``c sigma' = (c sigma) (log sigma)'``, used
    where ``sigma < 1`` (``c sigma`` is finite as sigma underflows, ``c`` is not); each
    form arranged by :func:`_stabilize` for the ``sigma`` parameterization.

    Example:
        >>> times_scale_derivative(sigma - 1 / sigma).args[1]
        (dlogsigma*(sigma - 1)*(sigma + 1), True)
    """
    sigma_param = PARAMETERIZATIONS["sigma"]
    if not sp.denom(sp.together(c)).has(sigma):
        return _stabilize(c, sigma_param) * dsigma
    times = sp.expand(c * sigma)
    if not times.has(sigma):
        return times * dlogsigma
    # the sigma < 1 form last: a kernel may evaluate it everywhere (it only overflows,
    # where sigma**2 does), while 1/sigma in the other divides by zero where sigma underflows
    return sp.Piecewise((_stabilize(c, sigma_param) * dsigma, sigma >= 1),
                        (_stabilize(times, sigma_param) * dlogsigma, True))


def _through_sigma(expr_sigma: sp.Expr) -> sp.Expr:
    """An expression of the ``sigma`` parameterization (a gradient or an estimator in
    ``sigma``, ``mu``, ``eps``) times ``sigma'``, by powers of the noise, each coefficient
    through :func:`times_scale_derivative`; the pieces folded into one piecewise value."""
    by_power = sp.collect(sp.expand(expr_sigma), eps, evaluate=False)
    total = sp.Add(*(k * times_scale_derivative(sp.factor(v))
                     for k, v in sorted(by_power.items(), key=lambda kv: sp.default_sort_key(
                         kv[0]))))
    return sp.piecewise_fold(total)


def _chain_given(p: Parameterization) -> dict[sp.Symbol, sp.Expr]:
    return {sigma: p.sigma, dsigma: sp.diff(p.sigma, p.scale),
            dlogsigma: sp.diff(p.sigma, p.scale) / p.sigma}


def _common_factor(terms: list[sp.Expr]) -> sp.Expr:
    """The product of the symbolic factors every term shares, each to its least power."""
    powers = [sp.Mul(*[f for f in sp.Mul.make_args(t) if f.free_symbols]).as_powers_dict()
              for t in terms]
    shared = set.intersection(*(set(d) for d in powers))
    return sp.Mul(*(b ** min(d[b] for d in powers) for b in sorted(shared, key=sp.default_sort_key)
                    if all(d[b].is_positive for d in powers)))


def _arrange_estimator(expr: sp.Expr, p: Parameterization,
                       prior: Prior = STANDARD_NORMAL) -> sp.Expr:
    """An estimator as ``c0 + eps g (c1/g + eps c2/g + ...)``, each coefficient stabilized.

    ``g`` is the factor the noise terms share (sigma, where it is computed from the scale):
    taken out, ``eps sigma`` is formed first, so that ``eps = 0`` gives 0 and not
    ``0 * inf`` where sigma overflows, and the noise terms overflow only where their sum
    does.
    """
    in_sigma = sp.expand(expr).subs(p.sigma, sigma)
    by_power = sp.collect(in_sigma, eps, evaluate=False)
    coeffs = {k: _sinh_form(_stabilize(v.subs(sigma, p.sigma), p, prior), p).subs(p.sigma, sigma)
              for k, v in by_power.items()}
    constant = coeffs.pop(sp.Integer(1), sp.Integer(0))
    degree = {k: sp.degree(k, eps) for k in coeffs}
    common = _common_factor(list(coeffs.values()))
    inner = sp.Integer(0)
    for k in sorted(coeffs, key=lambda k: -degree[k]):  # Horner in eps
        inner = inner * eps + coeffs[k] / common if inner != 0 else coeffs[k] / common
    arranged = constant + eps * common * inner if coeffs else constant
    return arranged.subs(sigma, p.sigma)


def scaled_squares(expr: sp.Expr) -> sp.Expr:
    """``expr`` with every term ``c a**2`` written ``4c (a/2)**2``: halve, then square.

    Halving and doubling are exact in binary floating point, so the value is the same to
    the last bit, but ``a**2`` overflows from ``|a| ~ 1.3e154`` (float64) where ``a**2/2``
    is still finite. ``exp(2b)`` counts as the square of ``exp(b)``. The halved base is an
    unevaluated expression, so that SymPy keeps the arrangement.

    Example:
        >>> a = sp.Symbol("a", real=True)
        >>> scaled_squares(a**2 / 2 - a)
        -a + 2*(a/2)**2
    """

    def arrange(term: sp.Expr) -> sp.Expr:
        coeff, rest = term.as_coeff_Mul()
        if isinstance(rest, sp.Pow) and rest.exp == 2:
            base = rest.base
        elif isinstance(rest, sp.exp):
            base = sp.exp(rest.args[0] / 2)
        else:
            return term
        return 4 * coeff * sp.UnevaluatedExpr(base / 2) ** 2

    return sp.Add(*(arrange(t) for t in sp.Add.make_args(sp.expand(expr))))


@cache
def derive_stable_kl(p: Parameterization) -> Derivation:
    """2.3n: the KL and its exact gradient arranged for floating point, proved equal."""
    kl = derive_kl(p).result("kl")
    s = p.scale
    log_var = sp.simplify(sp.expand_log(sp.log(p.sigma**2), force=True))  # x = log sigma^2
    # the part of the KL that is not a function of x (mu**2/2): no need to solve for s
    quadratic = sp.simplify(kl - (p.sigma**2 - 1 - log_var) / 2)
    stable = (quadratic + expm1mx(x) / 2).xreplace({x: log_var})
    grad = {name: sp.diff(kl, var) for name, var in (("mu", mu), (p.name, s))}
    log_linear = is_log_linear(p)
    sigma_value, x_value = p.sigma, log_var
    if not log_linear:  # sigma, x and the chain factors as 2.3c arranges them
        chain = derive_chain_factors(p)
        # sigma by name: the kernel computes it once, as 2.3c arranges it (a piecewise
        # value of its own, not one nested in a piece)
        sigma_value, x_value = sigma, chain.result("x")
    stable_grad = {name: _stabilize(g, p) for name, g in grad.items()}
    if not log_linear:
        d_kl_d_sigma = sp.diff(derive_kl(PARAMETERIZATIONS["sigma"]).result("kl"), sigma)
        stable_grad[p.name] = _through_sigma(d_kl_d_sigma)
    in_exp = quadratic + (sp.exp(x) - 1 - x) / 2
    # The pieces the kernel evaluates, each by x, each halved before it is formed.
    series = _taylor(x)
    middle = optimize(sp.exp(x) - 1 - x, [expm1_opt])
    outer = sigma_value**2 - 1 - x  # exp(x) taken from sigma itself, squared after halving
    outer_half = scaled_squares(outer / 2)
    direct_from = OVERFLOW_RADIUS if log_var == s else DIRECT_RADIUS
    quadratic_half = scaled_squares(quadratic)
    steps = [
        Step(KL_i, kl, "the closed form of 2.3", given={KL_i: kl}),
        Step(kl, in_exp, "write {0} with {1}, so that tiny and huge scales stay in range",
             given={x: log_var}, notes=(sp.Eq(p.sigma**2, sp.exp(x)), sp.Eq(x, log_var))),
        Step(in_exp, quadratic + expm1mx(x) / 2,
             "name the part that cancels where {0} is near zero: {1}",
             notes=(x, sp.Eq(expm1mx(x), sp.exp(x) - 1 - x))),
        Step(expm1mx(x), series + sp.O(x**SERIES_ORDER),
             "where {0}, its Taylor series: no subtraction at all", notes=(
                 sp.Abs(x) < SERIES_RADIUS,)),
        Step(expm1mx(x), middle,
             "where {0}, the subtraction loses a few bits at most (none where {1})",
             notes=(sp.And(SERIES_RADIUS <= sp.Abs(x), x < direct_from),
                    x <= -NO_CANCELLATION)),
        Step(expm1mx(x) / 2, outer_half,
             "where {0}, take the exponential from the standard deviation, halved before it "
             "is squared: computed from {1}, its relative error would grow with {1}, and "
             "squared first it would overflow where the KL is still finite",
             given={x: log_var, sigma: p.sigma}, notes=(x >= direct_from, x)),
        Step(quadratic, quadratic_half,
             "halve before squaring: exact in binary floating point, and no overflow where "
             "the KL is finite"),
        Step(sp.Limit(1 / expm1mx(x), x, sp.oo), 0,
             "{0} grows without bound: where {1} is infinite (the finiteness check off), the "
             "value is infinite, not a difference of infinities", notes=(expm1mx(x), x)),
    ]
    for name, g in grad.items():
        var = mu if name == "mu" else s
        steps.append(Step(sp.Derivative(KL_i, var), g, "differentiate with respect to {0}",
                          given={KL_i: kl}, notes=(var,)))
        if name == p.name and not log_linear:
            steps.append(Step(
                g, stable_grad[name],
                "the chain rule through {0}: its derivative with respect to {0} times {1}; "
                "where {2}, written with {3} instead, so that nothing is an infinity times "
                "0 where {0} underflows (each factor as 2.3c arranges it)",
                given=_chain_given(p), notes=(sigma, dsigma, sigma < 1,
                                              sp.Eq(dsigma, sigma * dlogsigma))))
        elif stable_grad[name] != g:
            uses_expm1 = stable_grad[name].has(expm1)
            steps.append(Step(
                g, stable_grad[name],
                "factor; keep the factor that vanishes at the optimum apart, computed exactly"
                + (", with {0}" if uses_expm1 else ""),
                notes=(sp.Eq(sp.exp(_a) - 1, optimize(sp.exp(_a) - 1, [expm1_opt])),)
                if uses_expm1 else ()))
    # The expm1 piece comes last: the NumPy kernel evaluates the last piece everywhere and
    # each other piece only where it holds, and the expm1 piece holds for most scales. Where
    # the direct or the infinite piece holds, expm1 may overflow (or form inf - inf); those
    # entries are overwritten (the kl kernel's output says so: ``overwritten_overflow``).
    pieces = [(sp.oo, sp.Eq(x_extended, sp.oo)),
              (sp.horner(series / 2), sp.Abs(x) < SERIES_RADIUS),
              (outer_half, x >= direct_from)]
    evaluable = quadratic_half + sp.Piecewise(*pieces, (middle / 2, True))
    bound = _series_error()
    results = [
        Result("kl_stable", stable, "the KL arranged for floating point", KL_i),
        Result("x", x_value, "the log-variance the arrangement uses", x),
        Result("kl_evaluable", evaluable,
               "the same, written out piece by piece for evaluation in floating point",
               typeset=False),
        Result("series_relative_error", bound,
               "the relative truncation error of the series at the ends of its interval, "
               "where it is largest, evaluated by SymPy"),
    ] + [Result(f"grad_{name}", g, "the gradient arranged for floating point",
                sp.Derivative(KL_i, mu if name == "mu" else s))
         for name, g in stable_grad.items()]
    return Derivation(
        "2.3n", "The KL term and its gradient in floating point",
        "Arrange the KL divergence and its gradient so that float32 and float64 keep their "
        "relative accuracy for every positive scale, near the optimum included.",
        steps, results,
        conclusion="Each rewrite is an identity SymPy proves; only the series is an "
                   "approximation, with relative error at most {series_relative_error}.",
        variant=p.name, data={"latex_names": _PER_DIMENSION},
    )


# --- 2.3n for the learned prior: natural variables ---------------------------------------

#: The natural variables of the learned prior: the standardized mean difference and the
#: ratio of standard deviations (x, the log of its square, is the module-level x).
m_nat = sp.Symbol("m", real=True)
r_nat = sp.Symbol("r", positive=True)
#: Where the ratio of standard deviations is within this of 1, its log is computed from
#: the exact difference of the two (log1p), not from the rounded ratio.
RATIO_RADIUS = sp.Rational(1, 2)
#: Below this ratio of standard deviations, log(sigma^2/sigma_p^2) is taken from the two
#: logs: the ratio itself underflows (to zero in float64 below 5e-324, in float32 below
#: 1e-45) or is subnormal, while the KL, about -log(ratio), is finite. Representable (and
#: normal) in float32 too; the logs' rounding is then below 1 eps of x.
TINY_RATIO = sp.Rational(1, 10**30)
#: Where the scales are log-variances, x = logvar - logvar_p is rounded once, and from
#: x = EXACT_FROM up the KL (about exp(x)/2) amplifies that rounding x/2 times: there the
#: ratio is taken from the two exact inputs instead, while both exponentials (of half of
#: each input, below LOGVAR_LIMIT in magnitude) are finite and normal even in float32.
EXACT_FROM = 4
#: Where a user parameterization's scales and their ratio are above this (normal in
#: float64), the pair kernels take the ratio of standard deviations from the two scales.
NORMAL_RATIO = sp.Rational(1, 10**300)
LOGVAR_LIMIT = 170


def _natural(expr: sp.Expr, p: Parameterization, prior: Prior) -> sp.Expr:
    """``expr`` in the natural variables ``m``, ``r`` (and ``sigma_p``, ``eps``)."""
    e = sp.expand(expr).subs(p.sigma, sigma).subs(prior.sigma, sigma_p)
    e = e.xreplace({mu: mu_p + sigma_p * m_nat, sigma: sigma_p * r_nat})
    return sp.simplify(e)


def _in_x(coeff: sp.Expr) -> sp.Expr:
    """A coefficient in ``m, r`` with ``r**2 - 1`` as ``expm1(x)`` and ``r - 1/r`` as
    ``2 sinh(x/2)``: both exact where ``r = 1``, the second finite as long as ``r`` is."""
    e = optimize(sp.factor(coeff).subs(r_nat, sp.exp(x / 2)), [expm1_opt])
    e = e.replace(lambda a: isinstance(a, sp.Mul) and a.has(expm1(x))
                  and sp.exp(-x / 2) in a.args,
                  lambda a: a.xreplace({expm1(x): 2 * sp.sinh(x / 2) * sp.exp(x / 2)}))
    e = e.subs(sp.exp(x / 2), r_nat)
    # (r + 1)/r as 1 + 1/r: the product (r + 1)(r - 1) overflows for r > 1.3e154 before
    # the division by r brings it back into range (d sigma_q at sigma_q = 1e150,
    # sigma_p = 1e-5 is 1e160, finite).
    return e.replace(lambda a: isinstance(a, sp.Mul) and r_nat + 1 in a.args
                     and 1 / r_nat in a.args,
                     lambda a: a / ((r_nat + 1) / r_nat) * sp.Add(1, 1 / r_nat))


def _arrange_natural(expr: sp.Expr, p: Parameterization, prior: Prior) -> sp.Expr:
    """An exact gradient or an estimator of the learned-prior KL, arranged for floating
    point: in natural variables, by powers of the noise, each coefficient with the
    factors that vanish at ``q = p`` in the exact forms of :func:`_in_x`."""
    by_power = sp.collect(sp.expand(_natural(expr, p, prior)), eps, evaluate=False)
    coeffs = {k: _in_x(v) for k, v in by_power.items()}
    constant = coeffs.pop(sp.Integer(1), sp.Integer(0))
    if not coeffs:
        return constant
    common = _common_factor(list(coeffs.values()))
    inner = sp.Integer(0)
    for k in sorted(coeffs, key=lambda k: -sp.degree(k, eps)):  # Horner in eps
        inner = inner * eps + coeffs[k] / common if inner != 0 else coeffs[k] / common
    return constant + eps * common * inner


def natural_variables(p: Parameterization, prior: Prior) -> dict[sp.Symbol, sp.Expr]:
    """``m``, ``x``, ``r`` and ``sigma_p`` in the parameters (``m`` first: it is
    evaluated as written)."""
    ratio = sp.simplify(p.sigma / prior.sigma)
    log_ratio = sp.simplify(sp.expand_log(sp.log(ratio**2), force=True))
    return {m_nat: (mu - mu_p) / prior.sigma, x: log_ratio, r_nat: ratio,
            sigma_p: prior.sigma}


#: (log sigma_p)'(scale_p), computed once by the pair kernels (dlogsigma is q's).
dlogsigma_p = sp.Symbol("dlogsigma_p", real=True)


def _pair_given(p: Parameterization) -> dict[sp.Symbol, sp.Expr]:
    """The natural variables and both log-derivatives in the parameters."""
    prior = learned_prior(p)
    d_q = sp.diff(sp.log(p.sigma), p.scale)
    return {**natural_variables(p, prior), dlogsigma: d_q,
            dlogsigma_p: d_q.xreplace({p.scale: prior.scale})}


def _pair_through_sigma(expr_sigma: sp.Expr, side: sp.Symbol) -> sp.Expr:
    """A derivative (or an estimator) of the learned-prior KL with respect to one scale
    parameter, from ``expr_sigma``, the same with respect to ``side`` (``sigma`` or
    ``sigma_p``) in the ``sigma`` parameterization: ``(side * expr_sigma) (log side)'``,
    the first factor in the natural variables (finite where the scale underflows), the
    second from 2.3c (``dlogsigma``, or ``dlogsigma_p`` on the prior's side)."""
    sigma_param = PARAMETERIZATIONS["sigma"]
    scaled = _arrange_natural(expr_sigma * side, sigma_param, learned_prior(sigma_param))
    return scaled * (dlogsigma if side == sigma else dlogsigma_p)


@cache
def derive_stable_kl_pair(p: Parameterization) -> Derivation:
    """2.3np: the learned-prior KL and its gradient in natural variables, for floating point.

    The KL is the standard-normal one in ``m = (mu - mu_p)/sigma_p`` and
    ``x = log(sigma^2/sigma_p^2)``, so 2.3n's pieces serve unchanged, and they are accurate
    where ``q`` is near ``p``, not only near the standard normal.
    """
    prior = learned_prior(p)
    kl = derive_kl(p, prior).result("kl")
    nat = natural_variables(p, prior)
    in_nat = m_nat**2 / 2 + (sp.exp(x) - 1 - x) / 2
    ratio_exact = p.sigma == sigma  # the ratio of two given numbers, rounded once
    given = dict(nat)
    steps = [
        Step(KL_i, kl, "the closed form of 2.3p", given={KL_i: kl}),
        Step(kl, in_nat, "in the natural variables {0} and {1}: the standard-normal KL of 2.3, "
             "in them", given=given, notes=(sp.Eq(m_nat, nat[m_nat]), sp.Eq(x, nat[x]))),
        Step(in_nat, m_nat**2 / 2 + expm1mx(x) / 2,
             "name the part that cancels where {0} is near zero, as in 2.3n: {1}",
             notes=(x, sp.Eq(expm1mx(x), sp.exp(x) - 1 - x))),
    ]
    x_eval = nat[x]
    m_eval = nat[m_nat]
    slope = sp.diff(sp.log(prior.sigma), prior.scale)
    if prior.sigma != prior.scale and is_log_linear(p):  # sigma_p = c exp(k scale_p)
        # where log sigma_p < -LOGVAR_LIMIT/2, sigma_p underflows (logvar_p < -170)
        log_sigma_p = sp.expand_log(sp.log(prior.sigma), force=True)
        bound = sp.solve(sp.Eq(log_sigma_p, -sp.Rational(LOGVAR_LIMIT, 2)), prior.scale)[0]
        root = sp.exp(-log_sigma_p / 2)
        m_far = sp.UnevaluatedExpr((mu - mu_p) * root) * root
        far = prior.scale < bound if slope > 0 else prior.scale > bound
        steps.append(Step(nat[m_nat], m_far,
                          "where {0}, multiply by {1} twice: {2} is subnormal or zero there, "
                          "{1} finite", given=given, notes=(far, root, prior.sigma)))
        m_eval = sp.Piecewise((nat[m_nat], ~far), (m_far, True))
    if not is_log_linear(p):  # sigma_p underflows where its log does not
        quarter = _refine_pieces(
            derive_chain_factors(p).result("x").xreplace({p.scale: prior.scale}) / 4)
        by_piece = quarter.args if isinstance(quarter, sp.Piecewise) else ((quarter, sp.true),)
        m_far = sp.Piecewise(*((sp.UnevaluatedExpr((mu - mu_p) * sp.exp(-h)) * sp.exp(-h), c)
                               for h, c in by_piece))
        steps.append(Step(nat[m_nat], m_far,
                          "where {0}, multiply by {1} twice, from the arranged log of 2.3c: "
                          "{2} is subnormal or zero there, {1} finite", given=given,
                          notes=(prior.sigma < TINY_RATIO, sp.exp(-sp.log(sigma_p) / 2),
                                 sigma_p), models=(_in_each_piece,)))
        m_eval = sp.piecewise_fold(sp.Piecewise((nat[m_nat], prior.sigma >= TINY_RATIO),
                                                (m_far, True)))
    if ratio_exact:
        d = (sigma - sigma_p) / sigma_p
        steps.append(Step(nat[x], 2 * log1p(d),
                          "where {0}, from the exact difference {1}, not the rounded ratio",
                          notes=(sp.Abs(sigma - sigma_p) < RATIO_RADIUS * sigma_p,
                                 sigma - sigma_p)))
        apart = 2 * sp.log(sigma) - 2 * sp.log(sigma_p)
        steps.append(Step(nat[x], apart,
                          "where {0}, from the two logs: the ratio would underflow",
                          notes=(sigma / sigma_p < TINY_RATIO,)))
        x_eval = sp.Piecewise((2 * log1p(d),
                               sp.Abs(sigma - sigma_p) < RATIO_RADIUS * sigma_p),
                              (2 * sp.log(sigma / sigma_p), sigma / sigma_p >= TINY_RATIO),
                              (apart, True))
    log_linear = is_log_linear(p)
    r_eval = sp.exp(x / 2) if p.scale != sigma else nat[r_nat]  # (the kernels' r)
    if not log_linear:  # sigma and sigma_p as 2.3c arranges them, each computed once
        x_q = derive_chain_factors(p).result("x")
        apart = _refine_pieces(x_q - x_q.xreplace({p.scale: prior.scale}))
        d = (sigma - sigma_p) / sigma_p
        at = {sigma: p.sigma, sigma_p: prior.sigma}
        steps.append(Step(nat[x], 2 * log1p(d),
                          "where {0}, from the exact difference {1}, not the rounded ratio",
                          given=at, notes=(sp.Abs(sigma - sigma_p) < RATIO_RADIUS * sigma_p,
                                           sigma - sigma_p)))
        steps.append(Step(nat[x], apart,
                          "where {0} is out of range, from the two arranged logs of 2.3c: "
                          "either scale may underflow", notes=(sigma / sigma_p,),
                          models=(_in_each_piece,)))
        in_range = (sigma / sigma_p >= TINY_RATIO) & (sigma_p / sigma >= TINY_RATIO)
        x_eval = sp.piecewise_fold(sp.Piecewise(
            (2 * log1p(d), sp.Abs(sigma - sigma_p) < RATIO_RADIUS * sigma_p),
            (2 * sp.log(sigma / sigma_p), in_range), (apart, True)))
        # r from the two scales (rounded once) where both and their ratio are normal; from
        # exp(x/2) only where one underflows: that rounds x, amplified x/2 times
        normal = ((sigma / sigma_p >= NORMAL_RATIO) & (sigma_p / sigma >= NORMAL_RATIO)
                  & (sigma_p >= NORMAL_RATIO) & (sigma >= NORMAL_RATIO))
        r_eval = sp.Piecewise((sigma / sigma_p, normal), (sp.exp(x / 2), True))
        steps.append(Step(nat[r_nat], r_eval.xreplace({x: nat[x]}),
                          "where {0}, the ratio itself; else {1}", given={**given, **at},
                          notes=(normal, sp.Eq(r_nat, sp.exp(x / 2)))))
    direct_from = OVERFLOW_RADIUS if nat[x] == p.scale - prior.scale else DIRECT_RADIUS
    series = _taylor(x)
    middle = optimize(sp.exp(x) - 1 - x, [expm1_opt])
    outer_half = scaled_squares(r_nat**2 / 2) - x / 2 - sp.Rational(1, 2)
    quadratic_half = scaled_squares(m_nat**2 / 2)
    pieces = [(sp.oo, sp.Eq(x_extended, sp.oo)),
              (sp.horner(series / 2), sp.Abs(x) < SERIES_RADIUS)]
    if nat[x] == p.scale - prior.scale:  # a difference of two inputs, rounded once
        r_exact = sp.exp(p.scale / 2) * sp.exp(-prior.scale / 2)
        exact_half = (scaled_squares(r_nat**2 / 2).xreplace({r_nat: r_exact})
                      - x / 2 - sp.Rational(1, 2))
        in_range = ((x >= EXACT_FROM) & (sp.Abs(p.scale) < LOGVAR_LIMIT)
                    & (sp.Abs(prior.scale) < LOGVAR_LIMIT))
        steps.append(Step(expm1mx(x) / 2, exact_half,
                          "where {0}, the ratio from the two inputs, each exact, not from "
                          "their rounded difference {1}", given=given,
                          notes=(in_range, x)))
        pieces.append((exact_half, in_range))
    pieces.append((middle / 2, x < direct_from))  # the direct piece last, as in 2.3n
    evaluable = quadratic_half + sp.Piecewise(*pieces, (outer_half, True))
    steps.append(Step(expm1mx(x) / 2, outer_half,
                      "where {0}, from the ratio {1} halved, then squared (2.3n's pieces "
                      "otherwise)", given=given, notes=(x >= direct_from, r_nat)))
    params = (mu, p.scale, mu_p, prior.scale)
    names = ("mu", p.name, "mu_p", f"{p.name}_p")
    grads = {}
    for name, var in zip(names, params, strict=True):
        g = sp.diff(kl, var)
        steps.append(Step(sp.Derivative(KL_i, var), g, "differentiate with respect to {0}",
                          given={KL_i: kl}, notes=(var,)))
        if not log_linear:  # the sigma parameterization's, through 2.3c
            sigma_param = PARAMETERIZATIONS["sigma"]
            if var in (mu, mu_p):
                grads[name] = derive_stable_kl_pair(sigma_param).result(f"grad_{var.name}")
                steps.append(Step(g, grads[name], "as for the standard deviation: in the "
                                  "natural variables", given=_pair_given(p)))
                continue
            side = sigma if var == p.scale else sigma_p
            kl_sigma = derive_kl(sigma_param, learned_prior(sigma_param)).result("kl")
            grads[name] = _pair_through_sigma(sp.diff(kl_sigma, side), side)
            steps.append(Step(g, grads[name],
                              "the chain rule through {0}: {0} times the derivative with "
                              "respect to {0} (in the natural variables, finite where {0} "
                              "underflows), times {1}, as 2.3c arranges it",
                              given=_pair_given(p), notes=(
                                  sigma if var == p.scale else sigma_p,
                                  dlogsigma if var == p.scale else dlogsigma_p)))
            continue
        grads[name] = _arrange_natural(g, p, prior)
        steps.append(Step(g, grads[name],
                          "in the natural variables, the factor that vanishes where {0} is "
                          "one in exact form", given=given, notes=(r_nat,)))
    results = [
        Result("kl_natural", m_nat**2 / 2 + expm1mx(x) / 2,
               "the KL in the natural variables", KL_i),
        Result("kl_evaluable", evaluable, "piece by piece, for evaluation", typeset=False),
        Result("x_evaluable", x_eval, "the log variance ratio, for evaluation",
               typeset=False),
        Result("r_evaluable", r_eval, "the ratio of standard deviations, for evaluation",
               typeset=False),
        Result("m_evaluable", m_eval, "the standardized mean difference, for evaluation",
               typeset=False),
    ] + [Result(f"natural_{s.name}", e, "a natural variable", s, typeset=False)
         for s, e in nat.items()] + [
        Result(f"grad_{name}", g, "the gradient arranged for floating point",
               sp.Derivative(KL_i, var))
        for (name, g), var in zip(grads.items(), params, strict=True)]
    return Derivation(
        "2.3np", "The KL between two Gaussians in floating point",
        "Arrange the KL divergence from a learned prior and its gradient so that they keep "
        "their relative accuracy where q is near p, for scales far from 1.",
        steps, results,
        conclusion="The KL of 2.3 in the natural variables: the same pieces serve, now near "
                   "any prior.",
        variant=p.name, data={"latex_names": _PER_DIMENSION_PAIR},
    )


def _series_error() -> sp.Float:
    """The relative error of the truncated series at x = +-radius, to 30 digits.

    The remainder's terms grow with |x| faster than expm1mx does, so the ends are the worst.
    """
    exact = sp.exp(x) - 1 - x
    rel = sp.Abs((exact - _taylor(x)) / exact)
    worst = max(rel.xreplace({x: v}).evalf(30) for v in (-SERIES_RADIUS, SERIES_RADIUS))
    return sp.Float(worst, 3)


# --- 2.4: the computation graph and reverse mode --------------------------------------


@dataclass(frozen=True)
class Node:
    """A node of a computation graph: its symbol, its expression in its parents, its role.

    ``role`` is ``"noise"``, ``"parameter"``, ``"intermediate"`` or ``"output"``;
    ``score_of`` lists the parameters whose direct edges into this node carry the score
    term (the edges sticking-the-landing cuts).
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
class Graph:
    """A computation graph, nodes in topological order; the last node is the output."""

    nodes: tuple[Node, ...]

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    def parents(self, node: Node) -> list[Node]:
        if node.expr is None:
            return []
        return [n for n in self.nodes if node.expr.has(n.symbol)]

    def children(self, node: Node) -> list[Node]:
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

    def descendants(self, node: Node) -> list[Node]:
        out: list[Node] = []
        frontier = [node]
        while frontier:
            for child in self.children(frontier.pop()):
                if child not in out:
                    out.append(child)
                    frontier.append(child)
        return out


def _bar(symbol: sp.Symbol, suffix: str = "bar") -> sp.Symbol:
    return sp.Symbol(f"{symbol.name}_{suffix}", real=True)


@cache
def computation_graph(p: Parameterization, prior: Prior = STANDARD_NORMAL) -> Graph:
    """The graph of question 2.4 for parameterization ``p`` (the prior's parameters are
    leaves too where it is learned)."""
    r, s_, t = (sp.Symbol(n, real=True) for n in ("r", "s", "t"))
    nodes = [Node(eps, None, "noise", "the noise, eps ~ N(0, 1)"),
             Node(mu, None, "parameter", "the mean")]
    if p.sigma == p.scale:
        nodes.append(Node(sigma, None, "parameter", "the standard deviation"))
    else:
        nodes.append(Node(p.scale, None, "parameter", p.title))
        nodes.append(Node(sigma, p.sigma, "intermediate", "the standard deviation"))
    prior_mean, prior_sigma = prior.mean, prior.sigma
    if not prior.is_standard:
        nodes.append(Node(mu_p, None, "parameter", "the prior's mean"))
        if prior.sigma == prior.scale:
            nodes.append(Node(sigma_p, None, "parameter", "the prior's standard deviation"))
        else:
            nodes.append(Node(prior.scale, None, "parameter", f"the prior's {p.title}"))
            nodes.append(Node(sigma_p, prior.sigma, "intermediate",
                              "the prior's standard deviation"))
        prior_sigma = sigma_p
    nodes += [
        Node(z, mu + sigma * eps, "intermediate", "the reparameterized sample"),
        Node(r, gaussian_log_pdf(z, mu, sigma), "intermediate", "log q_i(z_i)",
             score_of=(mu, sigma)),
        Node(s_, gaussian_log_pdf(z, prior_mean, prior_sigma), "intermediate",
             "log p_i(z_i)"),
        Node(t, r - s_, "output", "t_i = r_i - s_i"),
    ]
    return Graph(tuple(nodes))


def _adjoints(graph: Graph, cut: bool) -> tuple[list[Step], dict[sp.Symbol, sp.Expr],
                                                list[tuple[sp.Symbol, sp.Expr, sp.Expr]]]:
    """Reverse mode, node by node; ``cut`` drops the score edges (sticking the landing).

    Every step is checked against the adjoint computed independently: the derivative of
    the output with every descendant of the node written out in terms of it.
    """
    suffix = "stl" if cut else "bar"
    out = graph.output
    values: dict[sp.Symbol, sp.Expr] = {}
    steps: list[Step] = []
    frozen = {}
    for n in graph.nodes:
        for par in n.score_of:
            if cut:
                frozen[(n.symbol, par)] = sp.Dummy(f"{par.name}_frozen", real=True)

    def local(child: Node, par: Node) -> sp.Expr:
        expr = child.expr
        if (child.symbol, par.symbol) in frozen:
            expr = expr.xreplace({par.symbol: frozen[(child.symbol, par.symbol)]})
        return sp.diff(expr, par.symbol)

    def truth(node: Node) -> sp.Expr:
        expr = out.expr if out is not node else node.symbol
        descendants = graph.descendants(node)
        # write out every descendant of the node, from the output back
        for d in reversed(graph.nodes):
            if d in descendants and d.expr is not None:
                e = d.expr
                for (child, par), dummy in frozen.items():
                    if child == d.symbol:
                        e = e.xreplace({par: dummy})
                expr = expr.xreplace({d.symbol: e})
        value = sp.diff(expr, node.symbol) if out is not node else sp.Integer(1)
        return graph.in_leaves(value.xreplace({v: k for (_, k), v in frozen.items()}))

    given: dict[sp.Symbol, sp.Expr] = {}
    rows: list[tuple[sp.Symbol, sp.Expr, sp.Expr]] = []
    for node in reversed(graph.nodes):
        if node.role == "noise":
            continue
        bar = _bar(node.symbol, suffix)
        given[bar] = truth(node)
        if node is out:
            values[node.symbol] = sp.Integer(1)
            steps.append(Step(bar, 1, "seed the backward pass at the output", given=given))
            rows.append((bar, sp.Integer(1), sp.Integer(1)))
            continue
        accumulation = sp.Add(*(_bar(c.symbol, suffix) * local(c, node)
                                for c in graph.children(node)))
        value = sp.Add(*(values[c.symbol] * local(c, node) for c in graph.children(node)))
        if node.role == "parameter":
            value = graph.in_leaves(value)
        value = sp.simplify(value.xreplace({v: k for (_, k), v in frozen.items()}))
        values[node.symbol] = value
        children = graph.children(node)
        reason = ("sum over the children of {0}: "
                  + ", ".join(f"{{{k + 1}}}" for k in range(len(children)))
                  + (" (the score edges into the log-density cut)" if cut and any(
                      (c.symbol, node.symbol) in frozen for c in children) else ""))
        leaves = {n.symbol: graph.in_leaves(n.expr) for n in graph.nodes if n.expr is not None}
        steps.append(Step(bar, accumulation.xreplace(
            {v: k for (_, k), v in frozen.items()}), reason, given={**given, **leaves},
            notes=(node.symbol, *(c.symbol for c in children))))
        steps.append(Step(accumulation.xreplace({v: k for (_, k), v in frozen.items()}),
                          value, "substitute the adjoints already computed",
                          given={**given, **leaves}))
        rows.append((bar, accumulation.xreplace({v: k for (_, k), v in frozen.items()}), value))
    return steps, values, rows


@cache
def derive_gradient_estimators(p: Parameterization,
                               prior: Prior = STANDARD_NORMAL) -> Derivation:
    """2.4: backpropagation through the graph; expectation, STL and variances."""
    graph = computation_graph(p, prior)
    kl = derive_kl(p, prior).result("kl")
    model = _q_model(p, prior)
    standard = prior.is_standard
    steps, full, rows = _adjoints(graph, cut=False)
    stl_steps, stl, stl_rows = _adjoints(graph, cut=True)
    params = [n.symbol for n in graph.nodes if n.role == "parameter"]
    results = []
    arranged_steps = []
    for label, values, out, kind in (("grad", full, steps, "reparameterized"),
                                     ("stl", stl, stl_steps, "sticking-the-landing")):
        for par in params:
            est = values[par]
            adjoint = _bar(par, "bar" if label == "grad" else "stl")
            out.append(Step(Expectation(adjoint, _eps_label), sp.diff(kl, par),
                            "its expectation over the noise is the derivative of 2.3 with "
                            "respect to {0}: the estimator is unbiased"
                            + ("" if label == "grad" else
                               "; the dropped score term has expectation zero"),
                            given={adjoint: est}, notes=(par,)))
            results.append(Result(f"{label}_{par.name}", est,
                                  f"the {kind} estimate of the gradient (its component on "
                                  "the left)", _bar(par, "bar" if label == "grad" else "stl")))
            if prior.is_standard and not is_log_linear(p):
                # the estimator of the sigma parameterization times sigma', through 2.3c
                given = _chain_given(p)
                if par == p.scale:
                    of_sigma = derive_gradient_estimators(PARAMETERIZATIONS["sigma"])
                    arranged = _through_sigma(of_sigma.result(f"{label}_sigma"))
                else:
                    arranged = est.subs(p.sigma, sigma)
            elif prior.is_standard:
                arranged, given = _arrange_estimator(est, p), {}
            elif not is_log_linear(p):  # the sigma parameterization's, through 2.3c
                sigma_param = PARAMETERIZATIONS["sigma"]
                of_sigma = derive_gradient_estimators(sigma_param, learned_prior(sigma_param))
                given = _pair_given(p)
                if par in (mu, mu_p):
                    arranged = of_sigma.result(f"kernel_{label}_{par.name}")
                else:
                    side = sigma if par == p.scale else sigma_p
                    arranged = _pair_through_sigma(
                        of_sigma.result(f"{label}_{side.name}"), side)
            else:
                arranged, given = _arrange_natural(est, p, prior), natural_variables(p, prior)
            arranged_steps.append(Step(est, arranged, given=given, reason=
                                       "for the kernels, in powers of the noise with the "
                                       "factor its terms share taken out, each coefficient "
                                       "factored so that nothing cancels near the optimum",
                                       notes=(), aside=True))
            results.append(Result(f"kernel_{label}_{par.name}", arranged,
                                  "the same, arranged for floating point", typeset=False))
    variance_steps = []
    noise = stats.Normal("epsilon", 0, 1)
    for label, values in (("", full), ("stl_", stl)):
        for par in params:
            # The estimators are polynomials in the noise: its moments give the variance
            # directly (the learned prior has four of them; sympy.stats takes seconds each).
            var = sp.factor(sp.simplify(
                stats.variance(values[par].xreplace({eps: noise})) if standard
                else model.evaluate(Variance(values[par], _eps_label))))
            adjoint = _bar(par, "stl" if label else "bar")
            variance_steps.append(Step(Variance(adjoint, _eps_label), var,
                                       f"the variance of the {'STL' if label else 'full'} "
                                       "estimate for {0}, from the moments of the normal "
                                       "distribution",
                                       given={adjoint: values[par]}, notes=(par,)))
            results.append(Result(f"var_{label}{par.name}", var,
                                  f"the variance of the {'STL' if label else 'full'} estimate "
                                  "of that component of the gradient",
                                  Variance(_bar(par, "stl" if label else "bar"), _eps_label)))
    return Derivation(
        "2.4" if standard else "2.4p",
        "Reparameterized gradients of the KL term" + ("" if standard else
                                                      " with a learned prior"),
        "Estimate the gradient of the KL divergence with respect to the mean and the scale "
        + ("" if standard else "of both distributions ")
        + "by backpropagation through the computation graph below.",
        steps + stl_steps + variance_steps + arranged_steps, results,
        conclusion="The expectation over the noise of each backpropagated gradient equals the "
                   "exact gradient of 2.3, so the estimator is unbiased, with {var_mu}; "
                   "sticking the landing drops the score term, stays unbiased, and has "
                   "{var_stl_mu}, zero at the optimum.",
        models=(model,), variant=p.name,
        data={"graph": graph, "backward": rows, "backward_stl": stl_rows,
              "latex_names": _PER_DIMENSION if standard else _PER_DIMENSION_PAIR},
    )
