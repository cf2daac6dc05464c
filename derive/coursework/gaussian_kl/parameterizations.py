r"""The scale parameterizations of the Gaussian KL (questions 2.3 and 2.4), the priors, and
the symbols the derivations share.

A :class:`~derive.parameterization.Parameterization` says how the user's scale parameter
gives ``sigma`` (``sigma`` itself, or ``logvar = log sigma^2``); :data:`PARAMETERIZATIONS`
is the coursework's registry of them. A :class:`Prior` is the prior factor ``p_i``: the standard
normal, or a learned one (:func:`learned_prior`).

Example:
    >>> PARAMETERIZATIONS["logvar"].sigma
    exp(logvar/2)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import sympy as sp

from derive.api import Parameterization

__all__ = ["Parameterization", "PARAMETERIZATIONS", "Prior", "STANDARD_NORMAL", "learned_prior"]

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


#: Question 2.3 and 2.4 are per dimension: their symbols print with the subscript i.
_PER_DIMENSION = {"mu": r"\mu_i", "sigma": r"\sigma_i", "eps": r"\epsilon_i", "z": "z_i",
                  "r": "r_i", "s": "s_i", "t": "t_i", "logvar": r"\lambda_i",
                  "epsilon": r"\epsilon_i"}


#: The learned prior's symbols too.
_PER_DIMENSION_PAIR = {**_PER_DIMENSION, "mu_p": r"\mu_{p,i}", "sigma_p": r"\sigma_{p,i}",
                       "logvar_p": r"\lambda_{p,i}", "m": "m_i", "r": "r_i", "x": "x_i"}


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
