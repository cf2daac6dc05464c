"""The general entry points: every kernel's argument checks, in any array library.

:func:`prepare_elementwise` and :func:`prepare_coupling` resolve the namespace and the
working dtype (:mod:`kernel_runtime.namespaces`), check shapes (errors name the
arguments) and run the value checks ``check_finite`` asks for
(:mod:`kernel_runtime.checks`).

Example:
    >>> import numpy as np
    >>> xp, arrays, batch, n, dtype = prepare_coupling(
    ...     ("x1", "x2"), (np.zeros((4, 3)), np.zeros(3)), ("s",), (np.ones(3),), (), None)
    >>> batch, n, dtype
    ((4,), 3, dtype('float64'))
"""

from __future__ import annotations

from typing import Any

import numpy

from .checks import checked
from .namespaces import resolve

__all__ = ["broadcast", "prepare_elementwise", "prepare_coupling"]


def broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """The shapes broadcast together (``numpy.broadcast_shapes`` only where they differ).

    Example:
        >>> broadcast((2, 3), (2, 3)), broadcast((2, 1), (3,))
        ((2, 3), (2, 3))
    """
    first = shapes[0]
    for shape in shapes:
        if shape != first:
            return numpy.broadcast_shapes(*shapes)
    return first


def prepare_elementwise(
    names: tuple[str, ...], values: tuple[Any, ...], positive: tuple[str, ...],
    read: tuple[str, ...], check_finite: bool | None,
) -> tuple[Any, list[Any], tuple[int, ...], Any]:
    """Check the arguments of an element-wise kernel (any broadcastable shapes).

    Returns ``(xp, arrays, shape, dtype)``: the namespace (``numpy`` for NumPy input), the
    arrays in the working dtype, their broadcast shape and the dtype.
    """
    xp, arrays, dtype = resolve(names, values)
    if xp is numpy:
        try:
            shape = arrays[0].shape
            for a in arrays:
                if a.shape != shape:
                    shape = numpy.broadcast_shapes(*(a.shape for a in arrays))
                    break
        except ValueError:
            listed = ", ".join(f"{n} {a.shape}" for n, a in zip(names, arrays, strict=True))
            raise ValueError(f"{', '.join(names)}: shapes do not broadcast: {listed}") from None
        return numpy, checked(xp, names, values, arrays, dtype, positive, read,
                               check_finite), shape, dtype
    try:
        shape = broadcast(*(tuple(a.shape) for a in arrays))
    except ValueError:
        listed = ", ".join(f"{n} {tuple(a.shape)}" for n, a in zip(names, arrays, strict=True))
        raise ValueError(f"{', '.join(names)}: shapes do not broadcast: {listed}") from None
    return xp, checked(xp, names, values, arrays, dtype, positive, read, check_finite), \
        shape, dtype


def _coupling_shapes(vectors: tuple[str, ...], params: tuple[str, ...],
                     shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The batch shape of vectors ``(..., n)`` and parameters ``(n,)``; errors name them."""
    for name, shape in zip(vectors + params, shapes, strict=True):
        if not shape:
            raise ValueError(f"{name}: expected an array of shape (..., n), got a scalar")
    n = shapes[0][-1]
    if n == 0:
        raise ValueError(f"{vectors[0]}: expected a last dimension n >= 1, got shape {shapes[0]}")
    k = len(vectors)
    if any(shape[-1] != n for shape in shapes[:k]):
        listed = ", ".join(f"{v} {s}" for v, s in zip(vectors, shapes, strict=False))
        raise ValueError(f"{', '.join(vectors)}: expected the same last dimension n, got "
                         f"{listed}")
    try:
        batch = broadcast(*(shape[:-1] for shape in shapes[:k]))
    except ValueError:
        listed = ", ".join(f"{v} {s}" for v, s in zip(vectors, shapes, strict=False))
        raise ValueError(f"{', '.join(vectors)}: leading (batch) dimensions do not broadcast: "
                         f"{listed}") from None
    for name, shape in zip(params, shapes[k:], strict=True):
        if shape != (n,):
            raise ValueError(f"{name}: expected shape ({n},) to match n = {n}, got {shape}")
    return batch


def prepare_coupling(
    vectors: tuple[str, ...], vector_values: tuple[Any, ...], params: tuple[str, ...],
    param_values: tuple[Any, ...], read: tuple[str, ...], check_finite: bool | None,
    scalars: tuple[str, ...] = (), scalar_values: tuple[Any, ...] = (),
    positive: tuple[str, ...] = (),
) -> tuple[Any, list[Any], tuple[int, ...], int, Any]:
    """Check the arguments of a coupling kernel: vectors ``(..., n)``, parameters ``(n,)``,
    and scalars ``()`` (a block's own scalar parameters, where it has any); the parameters
    and scalars named in ``positive`` must be > 0 (checked with the others, in one pass).

    Returns ``(xp, arrays, batch, n, dtype)``: the namespace (``numpy`` for NumPy input),
    the arrays (vectors, then parameters, then scalars) in the working dtype, the broadcast
    batch shape, ``n`` and the dtype.

    Example:
        >>> import numpy as np
        >>> prepare_coupling(("z",), (np.zeros((2, 3)),), ("u",), (np.ones(3),), (), None,
        ...                  ("b",), (np.float64(0.5),))[2:4]
        ((2,), 3)
        >>> try:
        ...     prepare_coupling(("z",), (np.zeros(3),), (), (), (), None, ("b",), (np.ones(3),))
        ... except ValueError as error:
        ...     print(error)
        b: expected a scalar (shape ()), got shape (3,)
    """
    names = vectors + params + scalars
    values = vector_values + param_values + scalar_values
    xp, arrays, dtype = resolve(names, values)
    shapes = [a.shape for a in arrays] if xp is numpy else [tuple(a.shape) for a in arrays]
    if scalars:
        for name, shape in zip(scalars, shapes[len(shapes) - len(scalars):], strict=True):
            if shape != ():
                raise ValueError(f"{name}: expected a scalar (shape ()), got shape {shape}")
        shapes = shapes[:len(shapes) - len(scalars)]
    k = len(vectors)
    first = shapes[0]
    n = first[-1] if first else 0
    same = n > 0 and all(shape == first for shape in shapes[1:k]) and all(
        shape == (n,) for shape in shapes[k:])
    batch = first[:-1] if same else _coupling_shapes(vectors, params, shapes)
    return xp, checked(xp, names, values, arrays, dtype, positive, read, check_finite), \
        batch, n, dtype
