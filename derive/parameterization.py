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
    >>> Parameterization("log_sigma", "gaussian_kl_exp", rho, sp.exp(rho), "exp")
    Traceback (most recent call last):
    ...
    ValueError: parameterization 'log_sigma': its scale is named 'rho', not 'log_sigma'
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass

import sympy as sp

__all__ = ["Parameterization"]


@dataclass(frozen=True)
class Parameterization:
    """How the scale parameter a user passes gives the standard deviation ``sigma``.

    Arguments:
        name: ``"sigma"`` or ``"logvar"``; also the derivations' variant name, and the
            name of the kernels' scale argument: the name of ``scale``.
        module: the generated module's name (its learned prior's: :attr:`pair_module`).
        scale: the symbol of the user's parameter (real; positive where it must be > 0).
        sigma: ``sigma`` as an expression in ``scale`` (and no other symbol).
        title: how the parameterization reads in prose.

    Raises ``ValueError``, in one line, when these do not hold.
    """

    name: str
    module: str
    scale: sp.Symbol
    sigma: sp.Expr
    title: str

    def __post_init__(self) -> None:
        def refuse(why: str) -> ValueError:
            return ValueError(f"parameterization {self.name!r}: {why}")

        if not isinstance(self.name, str) or not self.name.isidentifier() \
                or keyword.iskeyword(self.name):
            raise refuse("its name must be a Python identifier (the kernels' argument)")
        if not isinstance(self.module, str) or not self.module.isidentifier():
            raise refuse(f"its module {self.module!r} must be a Python identifier")
        if not isinstance(self.scale, sp.Symbol) or self.scale.is_real is not True:
            raise refuse(f"its scale must be a real SymPy Symbol (given {self.scale!r}: "
                         "sympy.Symbol(name, real=True), or positive=True)")
        if self.scale.name != self.name:
            raise refuse(f"its scale is named {self.scale.name!r}, not {self.name!r}")
        if not isinstance(self.sigma, sp.Expr) or self.sigma.free_symbols != {self.scale}:
            raise refuse(f"sigma must be a SymPy expression in the scale {self.name} alone "
                         f"(given {self.sigma!r})")

    @property
    def positive(self) -> bool:
        """Whether the scale must be > 0 (it must be where it is sigma itself)."""
        return bool(self.scale.is_positive)

    @property
    def pair_module(self) -> str:
        """The generated module of the KL from a learned prior in this parameterization."""
        return self.module.replace("gaussian_kl", "gaussian_kl_pair", 1)
