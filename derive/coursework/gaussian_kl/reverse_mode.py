r"""Questions 2.4 and 2.4p: reverse-mode differentiation through the computation graph
``z = mu + sigma eps, r = log q(z), s = log p(z), t = r - s`` (the graph is data,
:class:`Graph`), the expectation of the estimator, the sticking-the-landing estimator,
and the variances of both.

Example:
    >>> [n.name for n in computation_graph(PARAMETERIZATIONS["sigma"]).nodes]
    ['eps', 'mu', 'sigma', 'z', 'r', 's', 't']
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from sympy import stats
from sympy.codegen.cfunctions import expm1

from derive.api import (
    BackwardTable,
    ComputationGraph,
    Derivation,
    Expectation,
    GraphNode,
    Result,
    Step,
    Variance,
    gaussian_log_pdf,
    simplify,
)

from .chain import _chain_given, _through_sigma, is_log_linear
from .closed_form import _q_model, derive_kl
from .natural import _arrange_natural, _pair_given, _pair_through_sigma, natural_variables
from .parameterizations import (
    _PER_DIMENSION,
    _PER_DIMENSION_PAIR,
    PARAMETERIZATIONS,
    STANDARD_NORMAL,
    Parameterization,
    Prior,
    _eps_label,
    eps,
    learned_prior,
    mu,
    mu_p,
    sigma,
    sigma_p,
    z,
)
from .rewrites import _common_factor, _sinh_form, _stabilize

__all__ = ["Node", "Graph", "computation_graph", "derive_gradient_estimators"]


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
        inner = _noise_times(inner) + coeffs[k] / common if inner != 0 else coeffs[k] / common
    arranged = constant + _noise_times(common * inner) if coeffs else constant
    # With sigma taken out, sinh(a/2) is formed apart, and the noise times it overflows
    # where a is large and negative although the product with sigma is small (issue 23):
    # below a = 88 each coefficient is used as it is (expm1(a) never overflows there, in
    # float32 either); sigma taken out serves only beyond, where expm1(a) would overflow.
    plain = {k: _stabilize(v.subs(sigma, p.sigma), p, prior).subs(p.sigma, sigma)
             for k, v in by_power.items()}
    plain.pop(sp.Integer(1), None)
    folded = [e.args[0] for v in plain.values() for e in v.atoms(expm1)]
    if coeffs and common.has(sigma) and plain != coeffs and len(set(folded)) == 1:
        below = sp.Integer(0)
        for k in sorted(plain, key=lambda k: -degree[k]):
            below = _noise_times(below) + plain[k] if below != 0 else plain[k]
        arranged = sp.Piecewise((constant + _noise_times(below), folded[0] < _EXPM1_SAFE),
                                (arranged, True))
    return arranged.subs(sigma, p.sigma)


#: Below this argument expm1 overflows in neither float32 (88.72) nor float64.
_EXPM1_SAFE = 88


def _noise_times(product: sp.Expr) -> sp.Expr:
    """``eps * product``, with ``eps`` multiplied into the factor that divides by sigma.

    ``eps (1 + 1/sigma)`` is ``0 * inf``, not a number, where ``eps = 0`` and sigma is
    subnormal (``1/sigma`` overflows), and overflows where ``eps/sigma`` is still finite;
    ``eps + eps/sigma`` is 0 there, and finite wherever the value is.

    Example:
        >>> _noise_times((1 + 1 / sigma) * (sigma - 1))
        (eps + eps/sigma)*(sigma - 1)
    """
    factors = list(sp.Mul.make_args(product))
    for k, f in enumerate(factors):
        if f.is_Add and any(sp.Mul.make_args(t).count(1 / sigma) for t in f.args):
            factors[k] = sp.Add(*(eps * t for t in f.args))
            return sp.Mul(*factors)
    return eps * product


#: The computation graph's types are the engine's (a derivation shows its graph).
Node = GraphNode
Graph = ComputationGraph


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
        value = simplify(value.xreplace({v: k for (_, k), v in frozen.items()}))
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
                if par in (mu, mu_p):  # arranged as for sigma, but with no quotient by
                    # sigma itself (in the user's scale, not among this step's givens)
                    arranged = _arrange_natural(of_sigma.result(f"{label}_{par.name}"),
                                                sigma_param, learned_prior(sigma_param),
                                                split_scale=False)
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
            var = sp.factor(simplify(
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
        graph=graph,
        backward=(BackwardTable("Backward pass (reparameterization)", rows),
                  BackwardTable("Backward pass (sticking the landing)", stl_rows)),
        latex_names=_PER_DIMENSION if standard else _PER_DIMENSION_PAIR,
    )
