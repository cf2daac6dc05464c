r"""Question 2.1 and 2.2: the free-energy identity and the factorization of the KL term.

Both are chains of abstract steps over log-density symbols, expectations and KL
divergences. SymPy cannot decide such steps abstractly, so each derivation names a
concrete model in which every term has a closed form, and every step is checked there:

* 2.1 in the linear-Gaussian model ``p(z) = N(0, 1)``, ``p(x|z) = N(w z + b, tau^2)``,
  ``q = N(mu, sigma^2)``, with ``p(x)`` and ``p(z|x)`` derived by SymPy (integration and
  Bayes' rule);
* 2.2 with ``D = 3`` independent Gaussian factors.

Example:
    >>> d = derive_free_energy()
    >>> d.result("identity")
    Eq(F_q, log_p_x - KL(log_q_z, log_p_z_given_x, q))
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from derive.api import KL, Derivation, Expectation, GaussianModel, Result, Step, gaussian_log_pdf

__all__ = ["derive_free_energy", "derive_kl_factorization", "linear_gaussian_model",
           "LOG_DENSITIES"]

z = sp.Symbol("z", real=True)
x = sp.Symbol("x", real=True)
mu = sp.Symbol("mu", real=True)
sigma = sp.Symbol("sigma", positive=True)
w = sp.Symbol("w", real=True)
b = sp.Symbol("b", real=True)
tau = sp.Symbol("tau", positive=True)

#: The log-density symbols of question 2, by name.
LOG_DENSITIES = {
    name: sp.Symbol(name, real=True)
    for name in ("log_p_x_given_z", "log_p_z", "log_q_z", "log_p_z_given_x", "log_p_x")
}
_lpxz, _lpz, _lqz, _lpzx, _lpx = LOG_DENSITIES.values()
F_q = sp.Symbol("F_q", real=True)
_q = sp.Symbol("q")


@cache
def _gaussian_integral() -> tuple[sp.Expr, tuple[sp.Symbol, sp.Symbol, sp.Symbol]]:
    """The integral of exp(-a z^2 + b z + c) over the real line, as SymPy evaluates it."""
    a, b_, c = sp.Symbol("a", positive=True), sp.Symbol("b", real=True), sp.Symbol("c", real=True)
    value = sp.simplify(sp.integrate(sp.exp(-a * z**2 + b_ * z + c), (z, -sp.oo, sp.oo)))
    return value, (a, b_, c)


@cache
def _log_evidence() -> tuple[sp.Expr, sp.Expr]:
    """log p(x) in the linear-Gaussian model: as integrated, and in a tidy display form.

    The joint's log is quadratic in z, so the integral is SymPy's Gaussian integral with
    the coefficients read off (faster than integrating the joint itself, and the same).
    """
    log_joint = gaussian_log_pdf(x, w * z + b, tau) + gaussian_log_pdf(z, 0, 1)
    poly = sp.Poly(sp.expand(log_joint), z)
    integral, (a, b_, c) = _gaussian_integral()
    evidence = integral.xreplace({a: -poly.coeff_monomial(z**2), b_: poly.coeff_monomial(z),
                                  c: poly.coeff_monomial(1)})
    raw = sp.expand(sp.expand_log(sp.log(sp.simplify(evidence)), force=True))
    logs = sp.Add(*(term for term in raw.args if term.has(sp.log)))
    return raw, sp.factor(raw - logs) + sp.logcombine(logs, force=True)


@cache
def linear_gaussian_model() -> GaussianModel:
    """p(z) = N(0, 1), p(x|z) = N(w z + b, tau^2), q = N(mu, sigma^2); p(x), p(z|x) derived.

    ``log p(x)`` comes from integrating ``p(x|z) p(z)`` over ``z``; ``log p(z|x)`` from
    Bayes' rule. Both are closed forms in ``x, w, b, tau`` (and ``z``).
    """
    log_px = _log_evidence()[1]
    log_pzx = sp.expand(gaussian_log_pdf(x, w * z + b, tau) + gaussian_log_pdf(z, 0, 1) - log_px)
    return GaussianModel(
        "linear-Gaussian model",
        densities={_lpxz: gaussian_log_pdf(x, w * z + b, tau), _lpz: gaussian_log_pdf(z, 0, 1),
                   _lqz: gaussian_log_pdf(z, mu, sigma), _lpx: log_px, _lpzx: log_pzx},
        distributions={_q: {z: (mu, sigma)}},
    )


def _gaussian_mass(log_density: sp.Expr) -> sp.Expr:
    """The integral over z of exp(log_density), quadratic in z, by SymPy's Gaussian integral."""
    poly = sp.Poly(sp.expand(log_density), z)
    integral, (a, b_, c) = _gaussian_integral()
    return sp.simplify(integral.xreplace({a: -poly.coeff_monomial(z**2),
                                          b_: poly.coeff_monomial(z), c: poly.coeff_monomial(1)}))


def _tidy(expr: sp.Expr) -> sp.Expr:
    """A canonical display form: logs expanded, then terms grouped by the scale tau."""
    return sp.collect(sp.expand(sp.expand_log(expr, force=True)), [sp.log(tau), sp.log(sigma)])


def _posterior(model: GaussianModel) -> tuple[sp.Expr, sp.Expr]:
    """Mean and variance of p(z|x), read off the quadratic log-density."""
    poly = sp.Poly(model.densities[_lpzx], z)
    a2, a1 = poly.coeff_monomial(z**2), poly.coeff_monomial(z)
    return sp.simplify(-a1 / (2 * a2)), sp.simplify(-1 / (2 * a2))


@cache
def derive_free_energy() -> Derivation:
    """2.1: ``F(q) = log p(x) - KL(q(z) || p(z|x))``, step by step."""
    model = linear_gaussian_model()
    kl_prior = KL(_lqz, _lpz, _q)
    kl_post = KL(_lqz, _lpzx, _q)
    steps = [
        Step(F_q, Expectation(_lpxz, _q) - kl_prior,
             "the definition of the variational free energy",
             given={F_q: Expectation(_lpxz, _q) - kl_prior}),
        Step(Expectation(_lpxz, _q) - kl_prior,
             Expectation(_lpxz, _q) - kl_prior.definition(),
             "the definition of the KL divergence"),
        Step(Expectation(_lpxz, _q) - kl_prior.definition(),
             Expectation(_lpxz + _lpz - _lqz, _q), "linearity of expectation"),
        Step(Expectation(_lpxz + _lpz - _lqz, _q), Expectation(_lpzx + _lpx - _lqz, _q),
             "Bayes' rule, {0}", notes=(sp.Eq(_lpxz + _lpz, _lpzx + _lpx),)),
        Step(Expectation(_lpzx + _lpx - _lqz, _q), _lpx - kl_post.definition(),
             "linearity; {0} does not depend on {1}, and {2}",
             notes=(_lpx, z, sp.Eq(Expectation(1, _q), 1))),
        Step(_lpx - kl_post.definition(), _lpx - kl_post, "the definition of the KL divergence"),
    ]
    raw_evidence, evidence = _log_evidence()
    marginal = gaussian_log_pdf(x, b, sp.sqrt(w**2 + tau**2))
    normalizer = sp.Integral(sp.exp(_lpzx), (z, -sp.oo, sp.oo))
    steps.append(Step(_lpx, evidence,
                      "in the linear-Gaussian model {0}, {1}, {2}: the log of the integral "
                      "of the likelihood times the prior over {3}, in closed form",
                      given={_lpx: raw_evidence},
                      notes=tuple(sp.Eq(k, model.densities[k]) for k in (_lpz, _lpxz, _lqz))
                      + (z,), aside=True))
    steps.append(Step(evidence, marginal,
                      "the log-density of a normal with mean {0} and variance {1}, as it must be",
                      notes=(b, w**2 + tau**2), aside=True))
    steps.append(Step(normalizer, 1,
                      "and the posterior that Bayes' rule gives integrates to one",
                      given={normalizer: _gaussian_mass(model.densities[_lpzx])}, aside=True))
    direct = _tidy(model.evaluate(Expectation(_lpxz, _q) - kl_prior))
    via_identity = _tidy(model.evaluate(_lpx - kl_post))
    steps.append(Step(
        direct, via_identity,
        "in the linear-Gaussian model, the free energy computed directly (left) and as the "
        "log evidence minus the KL divergence to the posterior (right), both in closed form",
        aside=True))
    post_mean, post_var = _posterior(model)
    results = [
        Result("identity", sp.Eq(F_q, _lpx - kl_post),
               "the free energy is the log evidence minus the KL to the posterior"),
        Result("model_log_evidence", model.densities[_lpx],
               "the log evidence in the linear-Gaussian model, by integration", _lpx,
               aside=True),
        Result("model_posterior_mean", post_mean, "the mean of the posterior in that model",
               aside=True),
        Result("model_posterior_variance", post_var,
               "the variance of the posterior in that model", aside=True),
        Result("model_free_energy", direct, "the free energy in that model", F_q, aside=True),
    ]
    return Derivation(
        "2.1", "The free energy and the posterior",
        "Show that the free energy equals the log evidence minus the KL divergence from {0} "
        "to the posterior.", steps, results,
        conclusion="{identity}: maximizing the free energy over {0} maximizes a lower bound on "
                   "the log evidence, and the gap is the KL divergence from {0} to the "
                   "posterior.",
        models=(model,), variant="", notes=(_q,),
    )


# --- 2.2 ---------------------------------------------------------------------------

_i = sp.Symbol("i", integer=True, nonnegative=True)
_D = sp.Symbol("D", integer=True, positive=True)
_Q = sp.IndexedBase("q", positive=True)     # q_i(z_i)
_P = sp.IndexedBase("p", positive=True)     # p_i(z_i)
_qz = sp.Symbol("q_z", positive=True)        # q(z)
_pz = sp.Symbol("p_z", positive=True)        # p(z)
_MODEL_D = 3


@cache
def factorized_model(size: int = _MODEL_D) -> GaussianModel:
    """``D = size`` independent Gaussian factors q_i = N(mu_i, sigma_i^2), p_i = N(0, 1)."""
    zs = sp.symbols(f"z_0:{size}", real=True)
    mus = sp.symbols(f"mu_0:{size}", real=True)
    sigmas = sp.symbols(f"sigma_0:{size}", positive=True)
    densities: dict[sp.Basic, sp.Expr] = {}
    for k in range(size):
        densities[_Q[k]] = sp.exp(gaussian_log_pdf(zs[k], mus[k], sigmas[k]))
        densities[_P[k]] = sp.exp(gaussian_log_pdf(zs[k], 0, 1))
    densities[_qz] = sp.Mul(*(densities[_Q[k]] for k in range(size)))
    densities[_pz] = sp.Mul(*(densities[_P[k]] for k in range(size)))
    distributions = {_q: {zs[k]: (mus[k], sigmas[k]) for k in range(size)}}
    for k in range(size):
        distributions[_Q[k]] = {zs[k]: (mus[k], sigmas[k])}
    return _SumExpandingModel(f"{size} independent Gaussian factors", densities,
                              distributions, extra={_D: size})


class _SumExpandingModel(GaussianModel):
    """A Gaussian model in which sums and products over ``i`` are first written out."""

    def evaluate(self, expr: sp.Basic) -> sp.Basic:
        size = self.extra[_D]
        explicit = sp.sympify(expr).xreplace({_D: size})
        explicit = explicit.replace(lambda e: isinstance(e, (sp.Sum, sp.Product)),
                                    lambda e: e.doit())
        return super().evaluate(explicit)


@cache
def derive_kl_factorization() -> Derivation:
    """2.2: the KL divergence of factorized q, p is the sum of per-dimension KLs."""
    prod_q = sp.Product(_Q[_i], (_i, 0, _D - 1))
    prod_p = sp.Product(_P[_i], (_i, 0, _D - 1))
    term = sp.log(_Q[_i]) - sp.log(_P[_i])
    steps = [
        Step(KL(sp.log(_qz), sp.log(_pz), _q), Expectation(sp.log(_qz) - sp.log(_pz), _q),
             "the definition of the KL divergence"),
        Step(Expectation(sp.log(_qz) - sp.log(_pz), _q),
             Expectation(sp.log(prod_q) - sp.log(prod_p), _q),
             "both densities factorize over the dimensions",
             given={_qz: prod_q, _pz: prod_p}),
        Step(Expectation(sp.log(prod_q) - sp.log(prod_p), _q),
             Expectation(sp.Sum(term, (_i, 0, _D - 1)), _q),
             "the log of a product is the sum of the logs"),
        Step(Expectation(sp.Sum(term, (_i, 0, _D - 1)), _q),
             sp.Sum(Expectation(term, _q), (_i, 0, _D - 1)), "linearity of expectation"),
        Step(sp.Sum(Expectation(term, _q), (_i, 0, _D - 1)),
             sp.Sum(Expectation(term, _Q[_i]), (_i, 0, _D - 1)),
             "the term for {0} depends on {1} alone, and the other factors of {2} integrate "
             "to one", notes=(_i, sp.IndexedBase("z", real=True)[_i], _q)),
        Step(sp.Sum(Expectation(term, _Q[_i]), (_i, 0, _D - 1)),
             sp.Sum(KL(sp.log(_Q[_i]), sp.log(_P[_i]), _Q[_i]), (_i, 0, _D - 1)),
             "the definition of the KL divergence, per dimension"),
    ]
    results = [Result(
        "decomposition",
        sp.Eq(KL(sp.log(_qz), sp.log(_pz), _q),
              sp.Sum(KL(sp.log(_Q[_i]), sp.log(_P[_i]), _Q[_i]), (_i, 0, _D - 1))),
        "the KL term decomposes over the dimensions")]
    return Derivation(
        "2.2", "The KL term decomposes over dimensions",
        "Show that the KL divergence between factorized {0} and {1} is the sum of the KL "
        "divergences of their factors.",
        steps, results,
        conclusion="{decomposition} for fully factorized {0} and {1}.",
        models=(factorized_model(),), notes=(_q, sp.Symbol("p")),
    )
