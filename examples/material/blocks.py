r"""The example's coupling blocks: each is its two equations, in ``derive.api``'s vocabulary.

* ``coupling_shifted``: the coursework's block with a shift vector of its own, ``t``
  (:func:`derive.api.param_vector`), which becomes an argument of its kernels after ``s``;
* ``coupling_asinh``: a monotone block that is not affine in ``x1``: the engine picks the
  inverse that is real on the reals, and its log-determinant depends on ``x1``.

Example:
    >>> from derive.api import derive_determinant, derive_inverse
    >>> BLOCKS["coupling_shifted"].parameters
    (('t', 'param'),)
    >>> derive_inverse(BLOCKS["coupling_shifted"]).result("x2")
    (-t[i] + y2[i])*exp(-s[i])
    >>> derive_inverse(BLOCKS["coupling_asinh"]).result("x1")
    -sinh((F[i] - y1[i])*exp(-G[i]))
"""

from __future__ import annotations

from sympy import asinh, exp

from derive.api import CouplingBlock, F, G, param_vector, s, x1, x2

__all__ = ["BLOCKS", "t"]

#: The shift vector of the first block: ``t[i]``, a parameter of shape (n,).
t = param_vector("t")

#: The example's blocks, by name.
BLOCKS: dict[str, CouplingBlock] = {b.name: b for b in (
    CouplingBlock(
        "coupling_shifted", "an affine coupling block with a shift vector",
        y1=exp(G) * x1 + F, y2=exp(s) * x2 + t,
        summary="The coursework's block with a learned shift t on x2 as well as a scale."),
    CouplingBlock(
        "coupling_asinh", "a monotone coupling block that is not affine",
        y1=asinh(x1) * exp(G) + F, y2=x2,
        summary="y1 = asinh(x1) exp(G(x2)) + F(x2): monotone in x1, not affine."),
)}
