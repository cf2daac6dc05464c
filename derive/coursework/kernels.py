r"""Kernel specifications from derivations: what ``codegen`` renders into ``generated/``.

Each function here turns derived results into a :class:`derive.spec.Module`; no formula
is written here, only which derived result becomes which output. Where a kernel computes a
derived value in another form (a name it computes once in place of its definition), that
form is a result of a derivation of the kernels' forms (:func:`derive.api.kernel_forms`):
each edit is a checked step, which fails if the form is not equal to the value as derived.

Example:
    >>> from derive.coursework.blocks import BLOCKS
    >>> [k.name for k in coupling_module(BLOCKS["coupling"]).kernels]
    ['forward', 'inverse', 'jacobian', 'log_det_jacobian', 'forward_and_log_det']
"""

from __future__ import annotations

import sympy as sp

from derive.api import (
    Arg,
    CouplingBlock,
    Edit,
    Kernel,
    Module,
    Output,
    coupling_kernels,
    kernel_forms,
)

from .gaussian_kl import (
    PARAMETERIZATIONS,
    Parameterization,
    derive_chain_factors,
    derive_gradient_estimators,
    derive_stable_kl,
    derive_stable_kl_pair,
    dlogsigma,
    is_log_linear,
    learned_prior,
    log_dlogsigma,
    m_nat,
    mu,
    natural_variables,
    r_nat,
    sigma,
    sigma_p,
)

__all__ = ["coupling_module", "gaussian_kl_module", "gaussian_kl_pair_module"]

def coupling_module(block: CouplingBlock) -> Module:
    """The generated module of a shipped coupling block (:func:`derive.api.coupling_kernels`)."""
    return coupling_kernels(block, f"derive.coursework.blocks.BLOCKS[{block.name!r}], "
                                   "derivations 1.1-1.3n", package="generated")

_KL_EXAMPLE = """>>> import numpy as np
>>> from generated import {name}
>>> mu, scale = np.array([0.0, 0.5]), np.array([{one}, {other}])
>>> {name}.kl(mu, scale).shape
(2,)
>>> eps = np.random.default_rng(0).standard_normal((1000, 2))
>>> d_mu, d_scale = {name}.kl_grad_reparam(mu, scale, eps)
>>> d_mu.shape
(1000, 2)"""


def _source(p: Parameterization, derivations: str) -> str:
    """What a KL module's header says it is derived from: the registry entry of a
    parameterization of the coursework's, else the parameterization itself (another
    material's, loaded beside the coursework)."""
    if PARAMETERIZATIONS.get(p.name) == p:
        return f"derive.coursework.gaussian_kl.PARAMETERIZATIONS[{p.name!r}], {derivations}"
    return f"parameterization {p.name!r} (sigma = {p.sigma}), {derivations}"


def _example(p: Parameterization, text: str, name: str) -> str:
    """A KL module's docstring example: for the coursework's parameterizations only (the
    output package of another material's is the one its user names)."""
    if PARAMETERIZATIONS.get(p.name) != p:
        return ""
    one, other = ("1.0", "2.0") if p.positive else ("0.0", "1.5")
    return text.format(name=name, one=one, other=other)


def gaussian_kl_module(p: Parameterization) -> Module:
    """The generated module of the per-dimension Gaussian KL in parameterization ``p``
    (the coursework's, or another material's: any :class:`~derive.api.Parameterization`)."""
    stable = derive_stable_kl(p)
    est = derive_gradient_estimators(p)
    s = p.name
    mu_arg = Arg("mu", "elementwise", "the mean of q_i, any shape broadcasting with the others.")
    scale_arg = Arg(s, "positive" if p.positive else "elementwise",
                    f"{p.title} of q_i" + (", every entry > 0." if p.positive else "."))
    eps_arg = Arg("eps", "elementwise",
                  "standard normal noise; broadcasts against mu, e.g. shape (S, *mu.shape).")
    grads = ("the estimate of dKL/dmu.", f"the estimate of dKL/d{s}.")

    # Where sigma is a function of the scale, compute it once and write every power of it
    # in terms of it (exp(logvar) = sigma**2, exp(-logvar/2) = 1/sigma): one exponential.
    derived_sigma = p.sigma != p.scale
    shared = (Output("sigma", p.sigma, "the standard deviation", internal=True),) \
        if derived_sigma else ()
    if not is_log_linear(p):  # sigma and its derivatives as derivation 2.3c arranges them
        chain = derive_chain_factors(p)
        shared = tuple(Output(name, chain.result(f"{name}_evaluable"), doc, internal=True)
                       for name, doc in (("sigma", "the standard deviation"),
                                         ("dsigma", "d sigma / d scale"),
                                         ("dlogsigma", "d log(sigma) / d scale")))

    # the gradients with sigma computed once: each rewrite a checked step
    derived = {f"{prefix}_{v}": d.result(f"{prefix}_{v}")
               for prefix, d in (("grad", stable), ("kernel_grad", est), ("kernel_stl", est))
               for v in ("mu", s)}
    in_sigma = {name: value.subs(p.sigma, sigma) if derived_sigma else value
                for name, value in derived.items()}
    forms = kernel_forms(f"2.3n:{s}", "The Gaussian KL's gradients", [
        (name, derived[name], form, "sigma computed once, in place of its definition",
         {sigma: p.sigma}) for name, form in in_sigma.items() if form != derived[name]])

    def form(name: str) -> sp.Expr:
        return forms.result(name) if in_sigma[name] != derived[name] else derived[name]

    def pair(prefix: str, doc: tuple[str, str]) -> tuple[Output, ...]:
        return (Output("d_mu", form(f"{prefix}_mu"), doc[0]),
                Output(f"d_{s}", form(f"{prefix}_{s}"), doc[1]))

    graph = est.graph
    assert graph is not None
    graph_text = "; ".join(
        f"{n.name} from {', '.join(parent.name for parent in graph.parents(n))}"
        for n in graph.nodes if n.expr is not None)
    kernels = (
        Kernel("kl", (mu_arg, scale_arg),
               shared[:1] * (not is_log_linear(p))  # sigma, where 2.3c arranges it
               + (Output("x", stable.result("x"), "log sigma^2", internal=True),
                Output("kl", stable.result("kl_evaluable"), "KL(q_i || p_i), element-wise.")),
               "The KL divergence of q_i from the standard normal prior, per dimension "
               "(sum it yourself).",
               "Arranged as in derivation 2.3n: finite and accurate for sigma from 1e-200 to "
               "1e100, and near sigma = 1 without cancellation.", gradient="kl_grad"),
        Kernel("kl_grad", (mu_arg, scale_arg),
               shared + pair("grad", ("dKL/dmu, exactly.", f"dKL/d{s}, exactly.")),
               f"The exact gradient of the KL divergence with respect to (mu, {s})."),
        Kernel("kl_grad_reparam", (mu_arg, scale_arg, eps_arg),
               shared + pair("kernel_grad", grads),
               "One reparameterized estimate of the gradient per eps sample (derivation 2.4).",
               f"Backpropagation through the graph of derivation 2.4 ({graph_text}); its "
               "mean over eps is kl_grad."),
        Kernel("kl_grad_stl", (mu_arg, scale_arg, eps_arg),
               shared + pair("kernel_stl", grads),
               "One sticking-the-landing estimate of the gradient per eps sample.",
               "The estimator of kl_grad_reparam without the score term of log q; unbiased, "
               "and exactly zero at mu = 0, sigma = 1."),
    )
    return Module(
        name=p.module,
        title=f"Generated kernels for the Gaussian KL term, parameterized by {p.title}.",
        description=("KL(q_i || p_i) for q_i = N(mu_i, sigma_i^2) and p_i = N(0, 1), its exact "
                     "gradient, and two stochastic gradient estimators, element-wise over "
                     "arrays of any broadcastable shapes."),
        kernels=kernels,
        source=_source(p, "derivations 2.3, 2.3n, 2.4"),
        contract="elementwise",
        example=_example(p, _KL_EXAMPLE, p.module),
    )


_PAIR_EXAMPLE = """>>> import numpy as np
>>> from generated import {name}
>>> mu_q, mu_p = np.array([0.0, 0.5]), np.array([0.1, 0.5])
>>> scale_q, scale_p = np.array([{one}, {other}]), np.array([{other}, {other}])
>>> float({name}.kl(mu_q, scale_q, mu_p, scale_p)[1])
0.0
>>> grads = {name}.kl_grad(mu_q, scale_q, mu_p, scale_p)
>>> len(grads), grads[0].shape
(4, (2,))"""


def gaussian_kl_pair_module(p: Parameterization) -> Module:
    """The generated module of the KL between two diagonal Gaussians, both sides in ``p``.

    The kernels work in the natural variables of derivation 2.3np; every argument
    broadcasts against the others.
    """
    prior = learned_prior(p)
    stable = derive_stable_kl_pair(p)
    est = derive_gradient_estimators(p, prior)
    s_q, s_p = f"{p.name}_q", prior.scale.name
    rename = {mu: sp.Symbol("mu_q", real=True), p.scale: sp.Symbol(s_q, real=True)}

    def out(name: str, expr: sp.Expr, doc: str, internal: bool = False) -> Output:
        return Output(name, expr.xreplace(rename), doc, internal=internal)

    derived_sigma_p = prior.sigma != sigma_p
    internal = ((out("sigma_p", prior.sigma, "the prior's standard deviation", True),)
                if derived_sigma_p else ())
    in_sigma_p = {prior.sigma: sigma_p} if derived_sigma_p else {}
    defined = natural_variables(p, prior)
    m_derived = stable.result("m_evaluable")
    ratio = stable.result("r_evaluable")
    kl_derived = stable.result("kl_evaluable")
    # the kernels' forms of m and kl: each edit a checked step
    edits: list[Edit] = []
    if not is_log_linear(p) and isinstance(m_derived, sp.Piecewise):
        # m from the shared sigma_p where that piece holds
        near = natural_variables(PARAMETERIZATIONS["sigma"],
                                 learned_prior(PARAMETERIZATIONS["sigma"]))[m_nat]
        (_, where), *rest = m_derived.args
        edits.append(("m", m_derived,
                      sp.Piecewise((near, where.xreplace({prior.sigma: sigma_p})), *rest),
                      "m from the shared sigma_p where that piece holds",
                      {sigma_p: prior.sigma}))
    elif isinstance(m_derived, sp.Piecewise) and derived_sigma_p:
        # sigma_p shared where it is used, not elsewhere
        (near, where), *rest = m_derived.args
        edits.append(("m", m_derived, sp.Piecewise((near.subs(in_sigma_p), where), *rest),
                      "sigma_p computed once, where that piece holds",
                      {sigma_p: prior.sigma}))
    elif m_derived.subs(in_sigma_p) != m_derived:
        edits.append(("m", m_derived, m_derived.subs(in_sigma_p), "sigma_p computed once",
                      {sigma_p: prior.sigma}))
    if is_log_linear(p):  # r in place; else a piecewise value of its own, computed once
        edits.append(("kl", kl_derived, kl_derived.xreplace({r_nat: ratio}),
                      "the ratio of standard deviations in place, as 2.3np evaluates it",
                      {r_nat: defined[r_nat]}))
    forms = kernel_forms(f"2.3np:{p.name}", "The Gaussian pair KL", edits)
    edited = {name for name, *_ in edits}
    m_eval = forms.result("m") if "m" in edited else m_derived
    kl_value = forms.result("kl") if "kl" in edited else kl_derived

    m_out = out("m", m_eval, "the standardized mean difference", True)
    x_out = out("x", stable.result("x_evaluable"), "the log variance ratio", True)
    # r from x where x is the parameters' difference (one exp), else the ratio itself
    r_out = out("r", ratio, "the ratio of standard deviations", True)
    natural = internal + (m_out, x_out)
    # kl forms no sigma_p: where exp(logvar_p/2) overflows, its autograd would carry
    # 0 * inf = NaN into d logvar_p although m (exp(-logvar_p/2) underflowing) is finite
    natural_kl = (out("m", m_derived, "the standardized mean difference", True), x_out)
    if not is_log_linear(p):  # both sides' sigma and (log sigma)' as 2.3c arranges them
        chain = derive_chain_factors(p)
        rename.update({sigma: sp.Symbol("sigma_q", real=True),
                       dlogsigma: sp.Symbol("dlogsigma_q", real=True),
                       log_dlogsigma: sp.Symbol("log_dlogsigma_q", real=True)})
        to_p = {p.scale: prior.scale}
        sides = tuple(
            out(f"{name}{side}", chain.result(f"{name}_evaluable").xreplace(
                to_p if side == "_p" else {}), doc, True)
            for side in ("_q", "_p")
            for name, doc in (("sigma", "a standard deviation"),
                              ("dlogsigma", "d log(sigma) / d scale"),
                              ("log_dlogsigma", "log|d log(sigma) / d scale|")))
        # again, in sigma_q and dlogsigma_q
        m_out = out("m", m_eval, "the standardized mean difference", True)
        x_out = out("x", stable.result("x_evaluable"), "the log variance ratio", True)
        r_out = out("r", ratio, "the ratio of standard deviations", True)
        natural = sides + (m_out, x_out)
        natural_kl = natural + (r_out,)
    args = (Arg("mu_q", "elementwise", "the mean of q_i."),
            Arg(s_q, "positive" if p.positive else "elementwise",
                f"{p.title} of q_i" + (", every entry > 0." if p.positive else ".")),
            Arg("mu_p", "elementwise", "the mean of the prior p_i."),
            Arg(s_p, "positive" if p.positive else "elementwise",
                f"{p.title} of p_i" + (", every entry > 0." if p.positive else ".")))
    eps_arg = Arg("eps", "elementwise",
                  "standard normal noise on the q side; broadcasts, e.g. shape (S, *mu_q.shape).")
    names = ("mu", p.name, "mu_p", f"{p.name}_p")
    outs = ("d_mu_q", f"d_{s_q}", "d_mu_p", f"d_{s_p}")

    def four(prefix: str, d: object, what: str) -> tuple[Output, ...]:
        return tuple(out(o, d.result(f"{prefix}_{n}"), f"{what} dKL/d{o[2:]}.")
                     for n, o in zip(names, outs, strict=True))

    kernels = (
        Kernel("kl", args, natural_kl + (out("kl", kl_value, "KL(q_i || p_i), element-wise."),),
               "The KL divergence of q_i from the prior p_i, per dimension (sum it yourself).",
               "Arranged as in derivation 2.3np, in the standardized mean difference and the "
               "log variance ratio: accurate where q_i is near p_i at any scale.",
               gradient="kl_grad"),
        Kernel("kl_grad", args, natural + (r_out,) + four("grad", stable, "exactly"),
               "The exact gradient of the KL divergence with respect to all four arguments."),
        Kernel("kl_grad_reparam", args + (eps_arg,),
               natural + (r_out,) + four("kernel_grad", est, "the estimate of"),
               "One reparameterized estimate of the gradient per eps sample (derivation 2.4p).",
               "Backpropagation through the graph of derivation 2.4p; its mean over eps is "
               "kl_grad."),
        Kernel("kl_grad_stl", args + (eps_arg,),
               natural + (r_out,) + four("kernel_stl", est, "the estimate of"),
               "One sticking-the-landing estimate of the gradient per eps sample.",
               "Without the score term of log q; unbiased, and zero for the q side at q = p."),
    )
    return Module(
        name=p.pair_module,
        title=f"Generated kernels for the KL between two Gaussians, parameterized by "
              f"{p.title}.",
        description=("KL(q_i || p_i) for q_i = N(mu_q, sigma_q^2) and a learned prior "
                     "p_i = N(mu_p, sigma_p^2), its exact gradient with respect to all four "
                     "arguments, and two stochastic gradient estimators with the noise on "
                     "the q side, element-wise over arrays of any broadcastable shapes."),
        kernels=kernels,
        source=_source(p, "derivations 2.3p, 2.3np, 2.4p"),
        contract="elementwise",
        example=_example(p, _PAIR_EXAMPLE, p.pair_module),
    )
