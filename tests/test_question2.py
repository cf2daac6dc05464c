"""Question 2's derivations: PROBLEM.md's facts, independent numeric checks, wrong steps caught."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from scipy import integrate
from scipy import stats as sst

from derive import Derivation, Step, StepCheckError, build
from derive.coursework.gaussian_kl import (
    PARAMETERIZATIONS,
    _eps_label,
    _q_model,
    computation_graph,
)
from derive.probability import Expectation

mu = sp.Symbol("mu", real=True)
sigma = sp.Symbol("sigma", positive=True)
eps = sp.Symbol("eps", real=True)
logvar = sp.Symbol("logvar", real=True)


def test_2_1_identity_and_the_linear_gaussian_model():
    """The identity as PROBLEM.md states it, and the model's evidence and posterior against
    the textbook formulas: x ~ N(b, w^2 + tau^2), z|x ~ N(w (x - b) / (w^2 + tau^2),
    tau^2 / (w^2 + tau^2))."""
    from derive.coursework.free_energy import LOG_DENSITIES
    from derive.probability import KL

    d = build("2.1")
    q = sp.Symbol("q")
    log = LOG_DENSITIES
    assert d.result("identity") == sp.Eq(
        sp.Symbol("F_q", real=True),
        log["log_p_x"] - KL(log["log_q_z"], log["log_p_z_given_x"], q))
    x, b, w = (sp.Symbol(v, real=True) for v in "xbw")
    tau = sp.Symbol("tau", positive=True)
    var = w**2 + tau**2
    normal = -(x - b) ** 2 / (2 * var) - sp.log(2 * sp.pi * var) / 2
    assert sp.simplify(sp.expand_log(d.result("model_log_evidence") - normal, force=True)) == 0
    assert sp.simplify(d.result("model_posterior_mean") - w * (x - b) / var) == 0
    assert sp.simplify(d.result("model_posterior_variance") - tau**2 / var) == 0


@pytest.mark.parametrize("w, b, tau, x, m, s", [(1.3, -0.2, 0.7, 0.9, 0.1, 0.5),
                                                 (-0.5, 1.0, 1.5, -2.0, -0.3, 1.2)])
def test_2_1_linear_gaussian_by_quadrature(w, b, tau, x, m, s):
    """Independent of SymPy: F(q) two ways, every integral by scipy.integrate.quad."""
    q = sst.norm(m, s)

    def quad(f):
        return integrate.quad(f, m - 30 * s, m + 30 * s, limit=200, epsabs=1e-13)[0]

    def log_lik(z):
        return sst.norm.logpdf(x, w * z + b, tau)

    log_px = np.log(integrate.quad(lambda z: np.exp(log_lik(z)) * sst.norm.pdf(z),
                                   -40, 40, limit=200)[0])
    kl_prior = quad(lambda z: q.pdf(z) * (q.logpdf(z) - sst.norm.logpdf(z)))
    free_energy = quad(lambda z: q.pdf(z) * log_lik(z)) - kl_prior
    kl_post = quad(lambda z: q.pdf(z) * (q.logpdf(z) - (log_lik(z) + sst.norm.logpdf(z)
                                                        - log_px)))
    assert free_energy == pytest.approx(log_px - kl_post, abs=1e-9)
    # and the engine's closed form of F(q) in that model agrees
    symbols = {str(sym): sym for sym in build("2.1").result("model_free_energy").free_symbols}
    closed = build("2.1").result("model_free_energy").subs(
        {symbols["w"]: w, symbols["b"]: b, symbols["tau"]: tau, symbols["x"]: x,
         symbols["mu"]: m, symbols["sigma"]: s})
    assert float(closed) == pytest.approx(free_energy, abs=1e-9)


def test_2_2_decomposition_with_sympy_stats_for_D_3():
    """Both sides of the engine's decomposition, evaluated in its D = 3 model, against the
    joint KL that sympy.stats computes over 3 independent normals."""
    from sympy import stats

    from derive.coursework.free_energy import factorized_model

    mus = sp.symbols("mu_0:3", real=True)
    sigmas = sp.symbols("sigma_0:3", positive=True)
    Z = [stats.Normal(f"Z{k}", mus[k], sigmas[k]) for k in range(3)]

    def log_normal(v, m, s):
        return -sp.log(s) - sp.log(2 * sp.pi) / 2 - (v - m) ** 2 / (2 * s**2)

    log_q = sum(log_normal(Z[k], mus[k], sigmas[k]) for k in range(3))
    log_p = sum(log_normal(Z[k], 0, 1) for k in range(3))
    joint = stats.E(log_q - log_p)
    decomposition = build("2.2").result("decomposition")
    model = factorized_model(3)
    for side in (decomposition.lhs, decomposition.rhs):
        assert sp.simplify(model.evaluate(side) - joint) == 0, side


@pytest.mark.parametrize("param", ["sigma", "logvar"])
def test_2_3_closed_form(param):
    kl = build("2.3", param).result("kl")
    s = PARAMETERIZATIONS[param].sigma
    expected = (mu**2 + s**2 - sp.log(s**2) - 1) / 2
    assert sp.simplify(sp.expand_log(kl - expected, force=True)) == 0


def test_2_4_adjoints_match_problem():
    d = build("2.4", "sigma")
    assert sp.simplify(d.result("grad_mu") - (mu + sigma * eps)) == 0
    assert sp.simplify(d.result("grad_sigma") - (mu * eps + sigma * eps**2 - 1 / sigma)) == 0
    z_bar = next(s.rhs for s in d.steps if s.lhs == sp.Symbol("z_bar", real=True))
    z = sp.Symbol("z", real=True)
    r_bar, s_bar = sp.Symbol("r_bar", real=True), sp.Symbol("s_bar", real=True)
    assert sp.simplify(z_bar.subs({r_bar: 1, s_bar: -1}) - (-(z - mu) / sigma**2 + z)) == 0


@pytest.mark.parametrize("param", ["sigma", "logvar"])
def test_2_4_expectations_and_variances(param):
    d = build("2.4", param)
    p = PARAMETERIZATIONS[param]
    s = p.sigma
    assert sp.simplify(d.result("var_mu") - s**2) == 0
    assert sp.simplify(d.result("var_stl_mu") - (s - 1 / s) ** 2) == 0
    # the STL estimate of dKL/dsigma-parameter is zero at the optimum
    at_opt = {mu: 0, p.scale: 1 if param == "sigma" else 0}
    assert sp.simplify(d.result(f"stl_{param}").subs(at_opt)) == 0
    unbiased = [s for s in d.steps if "unbiased" in s.reason]
    assert len(unbiased) == 4


def test_2_4_graph_is_data():
    graph = computation_graph(PARAMETERIZATIONS["sigma"])
    assert sorted(graph.edges) == sorted([("mu", "z"), ("sigma", "z"), ("eps", "z"),
                                          ("mu", "r"), ("sigma", "r"), ("z", "r"),
                                          ("z", "s"), ("r", "t"), ("s", "t")])
    lv = computation_graph(PARAMETERIZATIONS["logvar"])
    assert ("logvar", "sigma") in lv.edges


def test_a_wrong_expectation_step_is_caught():
    model = _q_model(PARAMETERIZATIONS["sigma"])
    wrong = Step(Expectation(mu * eps + sigma * eps**2 - 1 / sigma, _eps_label), sigma,
                 "forgot the 1/sigma")
    with pytest.raises(StepCheckError, match="forgot the 1/sigma"):
        Derivation("2.4", "t", "q", [wrong], [], models=(model,))


def test_a_wrong_series_step_is_caught():
    from derive.coursework.gaussian_kl import expm1mx

    x = sp.Symbol("x", real=True)
    with pytest.raises(StepCheckError, match="as a series"):
        Derivation("2.3n", "t", "q", [Step(expm1mx(x), x**2 / 2 + x**3 / 3 + sp.O(x**4), "no")],
                   [])
