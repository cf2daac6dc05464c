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

The package's modules, by concept: :mod:`.parameterizations` (the registry, the priors,
the shared symbols), :mod:`.closed_form` (2.3, 2.3p), :mod:`.chain` (2.3c, any scale
parameterization through ``sigma``), :mod:`.rewrites` (the hand-written rewrites of the
arrangements), :mod:`.stable` (2.3n), :mod:`.natural` (2.3np, natural variables) and
:mod:`.reverse_mode` (2.4, 2.4p). This module re-exports what the rest of the engine and
the tests use.

Example:
    >>> derive_kl(PARAMETERIZATIONS["sigma"]).result("kl")
    mu**2/2 + sigma**2/2 - log(sigma) - 1/2
"""

from __future__ import annotations

from .chain import _chain_given as _chain_given
from .chain import _in_each_piece as _in_each_piece
from .chain import (
    derive_chain_factors,
    dlogsigma,
    dsigma,
    is_log_linear,
    log_dlogsigma,
    times_scale_derivative,
)
from .closed_form import _q_model as _q_model
from .closed_form import derive_kl
from .natural import _pair_given as _pair_given
from .natural import (
    derive_stable_kl_pair,
    dlogsigma_p,
    m_nat,
    natural_variables,
    r_nat,
)
from .parameterizations import (
    PARAMETERIZATIONS,
    STANDARD_NORMAL,
    Parameterization,
    Prior,
    eps,
    learned_prior,
    logvar,
    mu,
    mu_p,
    sigma,
    sigma_p,
    x,
)
from .parameterizations import _eps_label as _eps_label
from .reverse_mode import Graph, Node, computation_graph, derive_gradient_estimators
from .rewrites import scaled_squares
from .stable import (
    DIRECT_RADIUS,
    NO_CANCELLATION,
    OVERFLOW_RADIUS,
    SERIES_ORDER,
    SERIES_RADIUS,
    derive_stable_kl,
    expm1mx,
)

__all__ = ["Parameterization", "PARAMETERIZATIONS", "Prior", "STANDARD_NORMAL", "learned_prior",
           "Node", "Graph", "expm1mx", "is_log_linear", "derive_chain_factors",
           "times_scale_derivative", "dsigma", "dlogsigma", "dlogsigma_p", "log_dlogsigma",
           "derive_kl", "derive_stable_kl", "derive_stable_kl_pair", "natural_variables",
           "scaled_squares", "derive_gradient_estimators", "computation_graph",
           # the shared symbols and the arrangements' constants
           "mu", "sigma", "logvar", "eps", "mu_p", "sigma_p", "x", "m_nat", "r_nat",
           "SERIES_RADIUS", "SERIES_ORDER", "DIRECT_RADIUS", "OVERFLOW_RADIUS",
           "NO_CANCELLATION"]
