r"""Derivation 2.3np: the KL from a learned prior in natural variables, for floating point.

The KL is the standard-normal one in ``m = (mu - mu_p)/sigma_p`` and
``x = log(sigma^2/sigma_p^2)``, so the pieces of 2.3n serve unchanged.

Example:
    >>> p = PARAMETERIZATIONS["sigma"]
    >>> natural_variables(p, learned_prior(p))[m_nat]
    (mu - mu_p)/sigma_p
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p
from sympy.codegen.rewriting import expm1_opt, optimize

from derive.api import Derivation, Result, Step, simplify

from .chain import (
    _in_each_piece,
    _refine_pieces,
    derive_chain_factors,
    dlogsigma,
    is_log_linear,
    log_dlogsigma,
)
from .closed_form import derive_kl
from .parameterizations import (
    _PER_DIMENSION_PAIR,
    PARAMETERIZATIONS,
    KL_i,
    Parameterization,
    Prior,
    eps,
    learned_prior,
    mu,
    mu_p,
    sigma,
    sigma_p,
    x,
    x_extended,
)
from .rewrites import _common_factor, scaled_squares
from .stable import (
    DIRECT_RADIUS,
    OVERFLOW_RADIUS,
    SERIES_RADIUS,
    _taylor,
    expm1mx,
)

__all__ = ["m_nat", "r_nat", "dlogsigma_p", "natural_variables", "derive_stable_kl_pair"]

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
    return simplify(e)


def _in_x(coeff: sp.Expr, scale: sp.Expr | None = None) -> sp.Expr:
    """A coefficient in ``m, r`` with ``r**2 - 1`` as ``expm1(x)`` and ``r - 1/r`` as
    ``2 sinh(x/2)``: both exact where ``r = 1``, the second finite as long as ``r`` is.

    Where ``scale`` (q's standard deviation, an input) is given, ``c (1 + 1/r)/sigma_p`` is
    ``c/sigma_p + c/scale``: ``r = scale/sigma_p`` underflows (1e-200/1e200) where neither
    quotient overflows, and ``1/r`` would be infinite there."""
    e = optimize(sp.factor(coeff).subs(r_nat, sp.exp(x / 2)), [expm1_opt])
    e = e.replace(lambda a: isinstance(a, sp.Mul) and a.has(expm1(x))
                  and sp.exp(-x / 2) in a.args,
                  lambda a: a.xreplace({expm1(x): 2 * sp.sinh(x / 2) * sp.exp(x / 2)}))
    e = e.subs(sp.exp(x / 2), r_nat)
    # (r + 1)/r as 1 + 1/r: the product (r + 1)(r - 1) overflows for r > 1.3e154 before
    # the division by r brings it back into range (d sigma_q at sigma_q = 1e150,
    # sigma_p = 1e-5 is 1e160, finite).
    e = e.replace(lambda a: isinstance(a, sp.Mul) and r_nat + 1 in a.args
                  and 1 / r_nat in a.args,
                  lambda a: a / ((r_nat + 1) / r_nat) * sp.Add(1, 1 / r_nat))
    if scale is None:
        return e
    return e.replace(lambda a: isinstance(a, sp.Mul) and 1 + 1 / r_nat in a.args
                     and 1 / sigma_p in a.args,
                     lambda a: _over_each(a / ((1 + 1 / r_nat) / sigma_p), scale))


def _over_each(rest: sp.Expr, scale: sp.Expr) -> sp.Expr:
    """``rest/sigma_p + rest/scale``: each quotient is finite where the value is (a product
    with ``1/sigma_p + 1/scale`` is 0 * inf where both scales are subnormal and r = 1)."""
    return rest / sigma_p + rest / scale


def _arrange_natural(expr: sp.Expr, p: Parameterization, prior: Prior,
                     split_scale: bool = True) -> sp.Expr:
    """An exact gradient or an estimator of the learned-prior KL, arranged for floating
    point: in natural variables, by powers of the noise, each coefficient with the
    factors that vanish at ``q = p`` in the exact forms of :func:`_in_x`."""
    by_power = sp.collect(sp.expand(_natural(expr, p, prior)), eps, evaluate=False)
    # q's standard deviation where it is an input (the sigma parameterization)
    scale = p.sigma if split_scale and p.sigma == p.scale else None
    coeffs = {k: _in_x(v, scale) for k, v in by_power.items()}
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
    ratio = simplify(p.sigma / prior.sigma)
    log_ratio = simplify(sp.expand_log(sp.log(ratio**2), force=True))
    return {m_nat: (mu - mu_p) / prior.sigma, x: log_ratio, r_nat: ratio,
            sigma_p: prior.sigma}


#: (log sigma_p)'(scale_p), computed once by the pair kernels (dlogsigma is q's).
dlogsigma_p = sp.Symbol("dlogsigma_p", real=True)


def _pair_given(p: Parameterization) -> dict[sp.Symbol, sp.Expr]:
    """The natural variables, both log-derivatives and the log of q's, in the parameters."""
    prior = learned_prior(p)
    d_q = sp.diff(sp.log(p.sigma), p.scale)
    return {**natural_variables(p, prior), dlogsigma: d_q,
            dlogsigma_p: d_q.xreplace({p.scale: prior.scale}), log_dlogsigma: sp.log(sp.Abs(d_q))}


def _below_level(prior: Prior, level: sp.Expr, sign: int | None) -> sp.Basic | None:
    """A condition on the prior's scale alone under which ``sigma_p`` is below ``level``
    (about: the bound is the integer nearest where it crosses), from the sign of
    ``(log sigma)'`` and a bisection of ``sigma_p`` on the integers; None where the scale is
    not a real number of either sign, the sign is unknown, or ``level`` is not reached
    below ``2**16`` in magnitude. A condition on the scale, not on ``sigma_p``: folded with
    the pieces of 2.3c's arranged log (conditions on the scale), the pieces that are never
    taken are then empty intervals, which :func:`_taken_pieces` finds.

    Example:
        >>> rho = sp.Symbol("rho", real=True)
        >>> p = Parameterization("rho", "m", rho, sp.log(1 + sp.exp(rho)), "softplus")
        >>> _below_level(learned_prior(p), TINY_RATIO, 1)
        rho_p < -69
    """
    s = prior.scale
    if sign is None or s.is_positive or s.is_negative:
        return None

    def below(k: int) -> bool:  # sigma_p(sign * k) < level
        return bool(sp.N(prior.sigma.xreplace({s: sign * k}) - level, 30) < 0)

    if below(0):
        return None
    far = next((-(2**j) for j in range(17) if below(-(2**j))), None)
    if far is None:
        return None
    near = 0  # below(far), not below(near): bisect to neighbours
    while near - far > 1:
        mid = (near + far) // 2
        far, near = (mid, near) if below(mid) else (far, mid)
    return s < sign * near if sign > 0 else s > sign * near


def _taken_pieces(pw: sp.Basic) -> sp.Basic:
    """``pw`` without the pieces that are never taken: a piece whose condition, and no
    earlier one's, holds nowhere (an empty set of SymPy's, for conditions on one symbol).
    The first piece that holds is taken, so dropping one that never holds changes no
    value; the step that does so is checked in each remaining piece.

    Example:
        >>> u = sp.Symbol("u", real=True)
        >>> _taken_pieces(sp.Piecewise((1, u >= -69), (2, u >= -20), (3, True)))
        Piecewise((1, u >= -69), (3, True))
    """
    if not isinstance(pw, sp.Piecewise):
        return pw
    kept, earlier = [], []
    for e, c in pw.args:
        region = sp.And(c, *(sp.Not(k) for k in earlier))
        earlier.append(c)
        if region is sp.false:
            continue
        if len(region.free_symbols) == 1:
            try:
                if region.as_set() is sp.S.EmptySet:
                    continue
            except (NotImplementedError, TypeError, ValueError):
                pass
        kept.append((e, c))
    if kept[-1][1] is not sp.true:  # the last piece serves wherever none holds
        kept[-1] = (kept[-1][0], sp.true)
    return sp.Piecewise(*kept)


def _over_sigma_p_far(g: sp.Expr, p: Parameterization, prior: Prior
                      ) -> tuple[sp.Expr, sp.Basic] | None:
    """``g = k m/sigma_p`` (``k`` a number; a mean's gradient) in two pieces, as it is where
    ``sigma_p >= TINY_RATIO`` and as ``k (m sigma_p**-1/2) sigma_p**-1/2`` below, each
    ``sigma_p**-1/2`` from 2.3c's arranged log (``m/sigma_p`` is 0/0 where ``mu = mu_p``
    and ``sigma_p`` underflows, though the gradient is 0), and the condition of the second;
    None for any other ``g``. Where that log is itself piecewise (softplus: a series below
    ``rho = -20``), the condition is one on the prior's scale (:func:`_below_level`) and the
    pieces never taken are dropped (:func:`_taken_pieces`): a piece for ``rho_p >= -20``
    where ``rho_p < -69`` has no point to check it at."""
    k = simplify(g / (m_nat / sigma_p))
    if not (k.is_number and k != 0):
        return None
    quarter = _refine_pieces(
        derive_chain_factors(p).result("x").xreplace({p.scale: prior.scale}) / 4)
    if not isinstance(quarter, sp.Piecewise):
        far = k * sp.UnevaluatedExpr(m_nat * sp.exp(-quarter)) * sp.exp(-quarter)
        return sp.Piecewise((g, sigma_p >= TINY_RATIO), (far, True)), sigma_p < TINY_RATIO
    cond = _below_level(prior, TINY_RATIO, _log_derivative_sign(p))
    if cond is None:
        return None
    far = sp.Piecewise(*((k * sp.UnevaluatedExpr(m_nat * sp.exp(-h)) * sp.exp(-h), c)
                         for h, c in quarter.args))
    return _taken_pieces(sp.piecewise_fold(sp.Piecewise((g, ~cond), (far, True)))), cond


#: Above this log variance ratio, ``r**2 - 1`` overflows (from 709.78) before its product
#: with q's ``(log sigma)'`` is formed: that product is formed in logs there.
LARGE_X = 709


def _log_derivative_sign(p: Parameterization) -> int | None:
    """The sign of ``(log sigma)'`` for every scale, or None where SymPy cannot tell."""
    d_q = simplify(sp.diff(sp.log(p.sigma), p.scale))
    return 1 if d_q.is_positive else -1 if d_q.is_negative else None


def _in_logs_where_x_is_large(product: sp.Expr, scaled: sp.Expr, sign: int | None
                              ) -> tuple[sp.Expr, sp.Basic] | None:
    """``scaled * dlogsigma`` (q's side) where ``scaled`` is a function of ``x`` alone, as
    ``Piecewise((product, x < LARGE_X), (sign exp(x + log|dlogsigma|) (scaled e^-x), True))``
    and the identity that proves the second piece; None where that does not apply."""
    if sign is None:
        return None
    exact = scaled.xreplace({r_nat: sp.exp(x / 2)}).replace(
        lambda e: isinstance(e, expm1), lambda e: sp.exp(e.args[0]) - 1)
    if exact.free_symbols != {x}:
        return None
    rest = simplify(sp.expand(exact * sp.exp(-x)))
    if rest.has(sp.exp(x)) or rest.has(sp.exp(x / 2)):  # not bounded as x grows
        return None
    rest = optimize(rest, [expm1_opt])
    large = sign * sp.exp(x + log_dlogsigma) * rest
    identity = sp.Eq(exact * dlogsigma, large.xreplace(
        {log_dlogsigma: sp.log(sign * dlogsigma)}), evaluate=False)
    return sp.Piecewise((product, x < LARGE_X), (large, True)), identity


def _pair_through_sigma(expr_sigma: sp.Expr, side: sp.Symbol,
                        sign: int | None = None) -> sp.Expr:
    """A derivative (or an estimator) of the learned-prior KL with respect to one scale
    parameter, from ``expr_sigma``, the same with respect to ``side`` (``sigma`` or
    ``sigma_p``) in the ``sigma`` parameterization: ``(side * expr_sigma) (log side)'``,
    the first factor in the natural variables (finite where the scale underflows), the
    second from 2.3c (``dlogsigma``, or ``dlogsigma_p`` on the prior's side). On q's side,
    with ``sign`` (that of ``(log sigma)'``), where the first factor is a function of ``x``
    alone it is formed in logs where ``x`` is large (:func:`_in_logs_where_x_is_large`):
    there the first factor overflows where ``(log sigma)'`` underflows (a sigmoid at
    ``(0, 1e5, 0, -800)``: inf * 0), though their product is finite or 0."""
    sigma_param = PARAMETERIZATIONS["sigma"]
    # sigma here stands for p.sigma in the user's scale, which the step's givens do not
    # hold: no quotient by sigma itself (_in_x's split) may appear in the result
    scaled = _arrange_natural(expr_sigma * side, sigma_param, learned_prior(sigma_param),
                              split_scale=False)
    product = scaled * (dlogsigma if side == sigma else dlogsigma_p)
    if side != sigma:
        return product
    found = _in_logs_where_x_is_large(product, scaled, sign)
    return product if found is None else found[0]


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
    if ratio_exact:
        # as in 2.3n, from the scales: exp(x) - 1 = d (d + 2) with d = sigma/sigma_p - 1 from
        # the exact difference, so the piece is (d - x/2) + d**2/2: no transcendental call
        # beyond x's log, and where it cancels d - x/2 is exact (Sterbenz). Its square is
        # halved before it is formed, so it overflows only where the KL does, and it serves
        # every x from the series up: no piece of its own for large ratios (issue 24)
        d = sp.UnevaluatedExpr((sigma - sigma_p) / sigma_p)
        # (halved by hand: scaled_squares expands, which would round the ratio first)
        middle = 2 * (sp.UnevaluatedExpr(d - x / 2) + 2 * sp.UnevaluatedExpr(d / 2) ** 2)
        steps.append(Step(expm1mx(x) / 2, middle / 2,
                          "where {0}, from {1}, the exact difference over the prior's scale, "
                          "as 2.3n does from the standard deviation: no transcendental call "
                          "beyond the logarithm; the square halved before it is formed, so "
                          "that it overflows only where the KL does (no piece of its own "
                          "for large ratios)", given=given,
                          notes=(SERIES_RADIUS <= sp.Abs(x), (sigma - sigma_p) / sigma_p)))
        evaluable = quadratic_half + sp.Piecewise(*pieces, (middle / 2, True))
    else:
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
                found = _over_sigma_p_far(grads[name], p, prior)
                if found is not None:
                    far, where = found
                    steps.append(Step(
                        grads[name], far,
                        "where {0}, {1} is below {6}, subnormal or zero: {2} is {3} times {4} "
                        "twice, from the arranged log of 2.3c (in its pieces that are taken "
                        "there), so that it is not 0/0 where {5} is 0",
                        given=_pair_given(p), models=(_in_each_piece,),
                        notes=(where, sigma_p, m_nat / sigma_p, m_nat,
                               sp.exp(-sp.log(sigma_p) / 2), mu - mu_p, TINY_RATIO)))
                    grads[name] = far
                continue
            side = sigma if var == p.scale else sigma_p
            kl_sigma = derive_kl(sigma_param, learned_prior(sigma_param)).result("kl")
            sign = _log_derivative_sign(p)
            grads[name] = _pair_through_sigma(sp.diff(kl_sigma, side), side, sign)
            steps.append(Step(g, grads[name],
                              "the chain rule through {0}: {0} times the derivative with "
                              "respect to {0} (in the natural variables, finite where {0} "
                              "underflows), times {1}, as 2.3c arranges it",
                              given=_pair_given(p), notes=(
                                  sigma if var == p.scale else sigma_p,
                                  dlogsigma if var == p.scale else dlogsigma_p)))
            if isinstance(grads[name], sp.Piecewise):
                product, large = (piece for piece, _ in grads[name].args)
                scaled = product / dlogsigma
                identity = _in_logs_where_x_is_large(product, scaled, sign)[1]
                steps.append(Step(
                    product, large,
                    "where {0}, the first factor overflows (from {1}) where {2} may "
                    "underflow, though the product is finite or 0: it is formed in logs, "
                    "{3}, with {4} as 2.3c arranges it",
                    given=_pair_given(p),
                    notes=(x >= LARGE_X, x > sp.Float("709.78", 5), dlogsigma, identity,
                           log_dlogsigma)))
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
        "their relative accuracy where {0} is near {1}, for scales far from 1.",
        steps, results,
        conclusion="The KL of 2.3 in the natural variables: the same pieces serve, now near "
                   "any prior.",
        variant=p.name, latex_names=_PER_DIMENSION_PAIR,
        notes=(sp.Symbol("q"), sp.Symbol("p")),
    )

