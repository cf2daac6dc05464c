"""Outputs and matrices: results of the full shape and dtype, scaled rows, block matrices.

The NumPy bodies call :func:`finish`, :func:`full` and :func:`scale_rows`; the array-API
bodies their ``_xp`` counterparts, which keep each array on its library and device.

Example:
    >>> import numpy as np
    >>> finish(np.ones(2), (2, 2), np.dtype(np.float64), ()).shape
    (2, 2)
"""

from __future__ import annotations

from typing import Any

import numpy

from .namespaces import device, kind, mutable

__all__ = ["full", "finish", "scale_rows", "finish_xp", "scale_rows_xp", "eye_xp",
           "blocks_xp"]

_ndarray = numpy.ndarray


def full(a: Any, shape: tuple[int, ...]) -> Any:
    """``a`` broadcast to ``shape`` (a view); ``a`` itself where it has that shape already."""
    if type(a) is _ndarray and a.shape == shape:
        return a
    return a if numpy.shape(a) == shape else numpy.broadcast_to(a, shape)


def finish(value: Any, shape: tuple[int, ...], dtype: numpy.dtype,
           inputs: tuple[Any, ...]) -> numpy.ndarray:
    """A NumPy output as a new, writeable array of the full shape and the working dtype.

    Example:
        >>> a = numpy.ones(2)
        >>> finish(a, (2,), a.dtype, (a,)) is a
        False
    """
    if type(value) is not _ndarray:
        value = numpy.asarray(value)
    if value.shape != shape or value.dtype is not dtype and value.dtype != dtype:
        return numpy.array(numpy.broadcast_to(value, shape), dtype=dtype)
    if not value.flags.writeable:
        return value.copy()  # never hand back a read-only view of an input
    for a in inputs:
        if value is a:
            return value.copy()  # never hand back an input itself
    return value


def scale_rows(coef: Any, matrix: numpy.ndarray) -> numpy.ndarray:
    """``diag(coef) @ matrix`` without forming ``diag(coef)`` (NumPy)."""
    coef = numpy.asarray(coef)
    return coef[..., :, None] * matrix if coef.ndim else coef * matrix


def finish_xp(xp: Any, value: Any, shape: tuple[int, ...], dtype: Any,
              inputs: tuple[Any, ...]) -> Any:
    """An array-API output of the full shape and dtype, never an input itself."""
    if not hasattr(value, "dtype"):
        return xp.full(shape, value, dtype=dtype, device=device(inputs[0]))
    fresh = True
    if tuple(value.shape) != shape:
        value = xp.broadcast_to(value, shape)
        fresh = False
    if value.dtype != dtype:
        return xp.astype(value, dtype)
    if not fresh or any(value is a for a in inputs):
        if mutable(xp):
            return xp.astype(value, dtype, copy=True)
        if fresh and kind(xp) == "dask":
            # A new Dask array object on the same graph (nothing computed): item
            # assignment on the output (``y[y < 0] = 0``, which rebinds the object's
            # graph) must not reach the caller's array. JAX arrays have none.
            return value.copy()
    return value


def scale_rows_xp(xp: Any, coef: Any, matrix: Any) -> Any:
    """``diag(coef) @ matrix`` without forming ``diag(coef)`` (any array-API library)."""
    if not hasattr(coef, "ndim") or coef.ndim == 0:
        return coef * matrix
    return xp.expand_dims(coef, axis=-1) * matrix


def eye_xp(xp: Any, n: int, dtype: Any, like: Any) -> Any:
    """The ``n x n`` identity in ``dtype`` on ``like``'s device."""
    return xp.eye(n, dtype=dtype, device=device(like))


def blocks_xp(xp: Any, blocks: tuple[Any, Any, Any, Any], batch: tuple[int, ...], n: int,
              dtype: Any, like: Any) -> Any:
    """The ``(..., 2n, 2n)`` matrix ``[[A, B], [C, D]]`` from its blocks (None: zero)."""
    shape = batch + (n, n)
    full_blocks = []
    for block in blocks:
        if block is None:
            block = xp.zeros(shape, dtype=dtype, device=device(like))
        elif tuple(block.shape) != shape:
            block = xp.broadcast_to(block, shape)
        full_blocks.append(block)
    top = xp.concat(full_blocks[:2], axis=-1)
    bottom = xp.concat(full_blocks[2:], axis=-1)
    return xp.concat([top, bottom], axis=-2)
