"""Polynomials the derivation wrote out by Horner's rule, evaluated with one temporary.

Example:
    >>> import numpy
    >>> horner(numpy.array([0.5, 2.0]), (1.0, -2.0, 3.0))  # x**2 - 2x + 3
    array([2.25, 3.  ])
"""

from __future__ import annotations

from typing import Any

__all__ = ["horner"]


def horner(x: Any, coefficients: tuple[float, ...]) -> Any:
    """``c[0] x^n + ... + c[n]`` by Horner's rule, each step rounded as the printed rule
    ``x*(...) + c`` rounds it: ``((c[0]*x + c[1])*x + c[2])*x + ...``.

    A derived Taylor piece printed as nested products is one temporary per operation; here
    the first product is the only new array and every later step writes into it, where the
    library writes in place (NumPy, eager PyTorch without a gradient, CuPy,
    ``array_api_strict``); elsewhere (JAX, Dask, a tensor recording a gradient) each step is
    a new array. The same operations on the same values in the same order, so the same bits.
    """
    p = coefficients[0] * x
    if getattr(p, "requires_grad", False):  # autograd saves what an in-place step writes over
        p = p + coefficients[1]
        for c in coefficients[2:]:
            p = x * p + c
        return p
    p += coefficients[1]  # in place, or a new array where the library has no in-place ops
    for c in coefficients[2:]:
        p *= x
        p += c
    return p
