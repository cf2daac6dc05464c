r"""A scale parameterization: how the scale parameter a user passes gives ``sigma``.

The class is generic (any expression of one scale symbol, ``sigma`` itself, ``exp(logvar /
2)``, ``softplus(rho)``...); the coursework's registry of them is
:data:`derive.coursework.gaussian_kl.PARAMETERIZATIONS`. It lives in the derivation layer,
under the material that registers parameterizations, so that :mod:`derive.api` can export
it.

Example:
    >>> import sympy as sp
    >>> rho = sp.Symbol("rho", real=True)
    >>> p = Parameterization("rho", "gaussian_kl_exp", rho, sp.exp(rho), "sigma = exp(rho)")
    >>> p.positive, p.pair_module
    (False, 'gaussian_kl_pair_exp')
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

__all__ = ["Parameterization"]


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
