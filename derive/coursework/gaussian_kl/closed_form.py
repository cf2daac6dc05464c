r"""Questions 2.3 and 2.3p: the closed form of ``KL(q_i || p_i)``, by taking the
expectation of ``log q_i - log p_i`` under ``q_i`` (normal moments from ``sympy.stats``).

Example:
    >>> derive_kl(PARAMETERIZATIONS["sigma"]).result("kl")
    mu**2/2 + sigma**2/2 - log(sigma) - 1/2
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from derive.api import (
    KL,
    Derivation,
    Expectation,
    GaussianModel,
    Result,
    Step,
    gaussian_log_pdf,
    simplify,
)

from .parameterizations import (
    _PER_DIMENSION,
    _PER_DIMENSION_PAIR,
    PARAMETERIZATIONS,
    STANDARD_NORMAL,
    KL_i,
    Parameterization,
    Prior,
    _eps_label,
    _log_p,
    _log_q,
    _q_i,
    eps,
    mu,
    mu_p,
    sigma,
    sigma_p,
    z,
)

__all__ = ["derive_kl"]


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
def _in_sigma(prior: Prior) -> tuple[sp.Expr, sp.Expr, sp.Expr, tuple[sp.Eq, ...], sp.Expr,
                                     sp.Expr]:
    """What 2.3 derives in ``sigma`` before any parameterization is substituted, once per
    prior: ``log p``, the integrand, its expectation by linearity, the normal moments it
    takes (as notes), the expectation with them, and its closed form. Every
    parameterization shares it (``sympy.stats`` takes seconds over these moments)."""
    p_sigma = prior.sigma if prior.is_standard else sigma_p  # a symbol until the end
    model = _q_model(PARAMETERIZATIONS["sigma"], prior)
    log_prior = gaussian_log_pdf(z, prior.mean, p_sigma)
    integrand = gaussian_log_pdf(z, mu, sigma) - log_prior
    by_linearity = _linear(integrand, z, _q_i)
    expectations = sorted(by_linearity.atoms(Expectation), key=sp.default_sort_key)
    values = {e: model.evaluate(e) for e in expectations}
    moments = by_linearity.xreplace(values)
    notes = tuple(sp.Eq(e, values[e]) for e in expectations)
    return log_prior, integrand, by_linearity, notes, moments, simplify(moments)


@cache
def derive_kl(p: Parameterization, prior: Prior = STANDARD_NORMAL) -> Derivation:
    """2.3: the closed form of ``KL(q_i || p_i)``, by taking the expectation.

    With the learned prior, the derivation ends with the standard normal as its special
    case: 2.3's answer.
    """
    standard = prior.is_standard
    log_prior, integrand, by_linearity, moment_notes, moments, closed = _in_sigma(prior)
    model = _q_model(PARAMETERIZATIONS["sigma"], prior)
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
             + ", ".join(f"{{{k}}}" for k in range(len(moment_notes))),
             notes=moment_notes),
        Step(moments, half_form, "collect terms"),
    ]
    kl = closed
    substitution = {sigma: p.sigma} | ({} if standard else {sigma_p: prior.sigma})
    if p.sigma != sigma or (not standard and prior.sigma != sigma_p):
        kl = simplify(sp.expand_log(closed.xreplace(substitution), force=True))
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
        variance = simplify(p.sigma**2)
        log_variance = (sp.log(sigma**2) if p.sigma == sigma
                        else sp.expand_log(sp.log(variance), force=True))
        display = sp.Mul(sp.Rational(1, 2),
                         sp.Add(mu**2, variance, -1, -log_variance, evaluate=False),
                         evaluate=False)
    results = [Result("kl", kl, "the KL divergence", KL_i, display=display)]
    title = ("The KL divergence of a Gaussian from the standard normal" if standard
             else "The KL divergence between two Gaussians")
    statement = ("Give the KL divergence of one factor of {0} from the matching factor of {1} "
                 "explicitly in that factor's mean and scale." if standard else
                 "Give the KL divergence of one factor of {0} from the matching factor of a "
                 "learned Gaussian prior explicitly in the means and scales of both.")
    return Derivation(
        "2.3" if standard else "2.3p", title, statement, steps, results,
        conclusion="{kl}: zero exactly at the prior's mean and scale, positive elsewhere.",
        models=(model,), variant=p.name, notes=(sp.Symbol("q"), sp.Symbol("p")),
        latex_names=_PER_DIMENSION if standard else _PER_DIMENSION_PAIR,
    )
