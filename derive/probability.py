r"""Expectations, KL divergences and Gaussian densities, as SymPy nodes for question 2.

Abstract statements (``E_q[log p(x|z)]``, ``D_KL(q || p)``) are written with the nodes
:class:`Expectation` and :class:`KL` over *log-density symbols* (``log_q``, ``log_p_z``).
A step about them is checked in a concrete model (:class:`GaussianModel`) that gives every
log-density a closed form and evaluates every expectation exactly, with the moments of the
normal distribution as SymPy computes them.

Example:
    >>> import sympy as sp
    >>> z, mu = sp.Symbol("z", real=True), sp.Symbol("mu", real=True)
    >>> sigma = sp.Symbol("sigma", positive=True)
    >>> gaussian_expectation(z**2, {z: (mu, sigma)})
    mu**2 + sigma**2
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache

import sympy as sp
from sympy import stats

from .nodes import Opaque

__all__ = [
    "Expectation", "KL", "Variance", "gaussian_log_pdf", "gaussian_expectation",
    "GaussianModel", "normal_moment",
]


class Expectation(Opaque, sp.Expr):
    """``E_label[f]``: the expectation of ``f`` under the distribution called ``label``."""

    is_commutative = True

    def __new__(cls, f: sp.Expr, label: str | sp.Symbol) -> Expectation:
        label = sp.Symbol(label) if isinstance(label, str) else label
        return sp.Expr.__new__(cls, sp.sympify(f), label)

    @property
    def f(self) -> sp.Expr:
        return self.args[0]

    @property
    def label(self) -> sp.Symbol:
        return self.args[1]


class Variance(Opaque, sp.Expr):
    """``Var_label[f]``: the variance of ``f`` under the distribution called ``label``."""

    is_commutative = True

    def __new__(cls, f: sp.Expr, label: str | sp.Symbol) -> Variance:
        label = sp.Symbol(label) if isinstance(label, str) else label
        return sp.Expr.__new__(cls, sp.sympify(f), label)


class KL(Opaque, sp.Expr):
    """``D_KL(q || p)`` between two densities named by their log-density symbols.

    ``label`` names the distribution the expectation is taken under (that of ``q``).
    """

    is_commutative = True

    def __new__(cls, log_q: sp.Expr, log_p: sp.Expr, label: str | sp.Symbol) -> KL:
        label = sp.Symbol(label) if isinstance(label, str) else label
        return sp.Expr.__new__(cls, log_q, log_p, label)

    def definition(self) -> Expectation:
        """``E_q[log q - log p]``."""
        log_q, log_p, label = self.args
        return Expectation(log_q - log_p, label)


def gaussian_log_pdf(x: sp.Expr, mean: sp.Expr, std: sp.Expr) -> sp.Expr:
    """``log N(x; mean, std**2)``, written out."""
    return -sp.log(std) - sp.log(2 * sp.pi) / 2 - (x - mean) ** 2 / (2 * std**2)


@cache
def _raw_moment(k: int) -> sp.Expr:
    """``E[Z**k]`` for ``Z ~ N(m, s**2)``, computed by ``sympy.stats``."""
    m, s = sp.Symbol("m", real=True), sp.Symbol("s", positive=True)
    return sp.expand(stats.E(stats.Normal("Z", m, s) ** k))


def normal_moment(k: int, mean: sp.Expr, std: sp.Expr) -> sp.Expr:
    """``E[Z**k]`` for ``Z ~ N(mean, std**2)``."""
    m, s = sp.Symbol("m", real=True), sp.Symbol("s", positive=True)
    return _raw_moment(k).xreplace({m: mean, s: std})


def gaussian_expectation(f: sp.Expr, variables: Mapping[sp.Symbol, tuple[sp.Expr, sp.Expr]]
                         ) -> sp.Expr:
    """``E[f]`` over independent normal variables ``{z: (mean, std)}``, exactly.

    ``f`` must be a polynomial in the variables (after expanding logs of exponentials):
    the expectation is then a sum of products of normal moments. Anything else is
    handed to ``sympy.stats.E``.
    """
    g = sp.expand(sp.expand_log(f, force=True))
    for var, (mean, std) in variables.items():
        if not g.has(var):
            continue
        if g.is_polynomial(var):
            poly = sp.Poly(g, var)
            g = sp.expand(sum(coeff * normal_moment(k, mean, std)
                              for (k,), coeff in poly.terms()))
        else:
            g = sp.expand(stats.E(g.xreplace({var: stats.Normal(f"N_{var}", mean, std)})))
    return g


@dataclass(frozen=True)
class GaussianModel:
    """A concrete model: log-density symbols given closed forms, distributions given.

    Arguments:
        name: what the model is, for messages.
        densities: ``{log-density symbol: its closed form}``.
        distributions: ``{label: {variable: (mean, std)}}``, the distribution each
            expectation label is taken under (independent normals).
        extra: further substitutions applied last (e.g. ``D -> 3``).
    """

    name: str
    densities: Mapping[sp.Basic, sp.Expr]
    distributions: Mapping[sp.Symbol, Mapping[sp.Symbol, tuple[sp.Expr, sp.Expr]]]
    extra: Mapping[sp.Basic, sp.Basic] = None  # type: ignore[assignment]

    def evaluate(self, expr: sp.Basic) -> sp.Basic:
        """``expr`` with every density, expectation and KL made explicit."""

        def walk(e: sp.Basic) -> sp.Basic:
            if isinstance(e, KL):
                return walk(e.definition())
            if isinstance(e, Expectation):
                body = walk(e.f)
                return gaussian_expectation(body, self.distributions[e.label])
            if isinstance(e, Variance):
                f, label = e.args
                body = walk(f)
                dist = self.distributions[label]
                mean = gaussian_expectation(body, dist)
                return sp.expand(gaussian_expectation(body**2, dist) - mean**2)
            if e in self.densities:
                return self.densities[e]
            if not e.args:
                return e
            return e.func(*[walk(a) for a in e.args])

        out = walk(sp.sympify(expr))
        if self.extra:
            out = out.xreplace(dict(self.extra))
        return out

    def __call__(self, lhs: sp.Basic, rhs: sp.Basic) -> Iterator[tuple[sp.Basic, sp.Basic]]:
        yield self.evaluate(lhs), self.evaluate(rhs)
