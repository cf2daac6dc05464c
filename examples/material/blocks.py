r"""The example's coupling blocks: each is its two equations, in ``derive.api``'s vocabulary.

* ``coupling_shifted``: the coursework's block with a shift vector of its own, ``t``
  (:func:`derive.api.param_vector`), which becomes an argument of its kernels after ``s``;
* ``coupling_asinh``: a monotone block that is not affine in ``x1``: the engine picks the
  inverse that is real on the reals, and its log-determinant depends on ``x1``;
* ``coupling_rq_bin``: one bin of a rational-quadratic spline (Durkan et al., 2019),
  monotone on its interval ``[xk, xk1]`` only (``domain=``): the engine inverts it by the
  root of a quadratic that lies in the bin, and writes its slope in the bin's fraction.

Example:
    >>> from derive.api import derive_determinant, derive_inverse
    >>> BLOCKS["coupling_shifted"].parameters
    (('t', 'param'),)
    >>> derive_inverse(BLOCKS["coupling_shifted"]).result("x2")
    (-t[i] + y2[i])*exp(-s[i])
    >>> derive_inverse(BLOCKS["coupling_asinh"]).result("x1")
    -sinh((F[i] - y1[i])*exp(-G[i]))
    >>> [name for name, _ in BLOCKS["coupling_rq_bin"].parameters]
    ['dk', 'dk1', 'h', 'xk', 'xk1', 'yk']
"""

from __future__ import annotations

from sympy import asinh, exp

from derive.api import CouplingBlock, F, G, param_vector, s, x1, x2

__all__ = ["BLOCKS", "RQ_BIN", "t"]

#: The shift vector of the first block: ``t[i]``, a parameter of shape (n,).
t = param_vector("t")

#: One bin of a rational-quadratic spline: its knots ``xk < xk1`` (the interval of x1), the
#: output at the lower knot ``yk`` (plus ``F``), the bin's height ``h > 0``, and the
#: slopes at the two knots ``dk, dk1 > 0``; each a parameter vector of shape (n,).
xk, xk1, yk = param_vector("xk"), param_vector("xk1"), param_vector("yk")
h, dk, dk1 = (param_vector(name, positive=True) for name in ("h", "dk", "dk1"))
_XI = (x1 - xk) / (xk1 - xk)          # where x1 lies in the bin, from 0 to 1
_SLOPE = h / (xk1 - xk)               # the bin's mean slope
RQ_BIN = yk + F + h * (_SLOPE * _XI**2 + dk * _XI * (1 - _XI)) / (
    _SLOPE + (dk + dk1 - 2 * _SLOPE) * _XI * (1 - _XI))

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
    CouplingBlock(
        "coupling_rq_bin", "one bin of a rational-quadratic spline",
        y1=RQ_BIN, y2=x2, domain=(xk, xk1),
        summary="One bin of a rational-quadratic spline (Durkan et al., 2019), shifted by "
                "F(x2): monotone for x1 in [xk, xk1], where the kernels are defined."),
)}
