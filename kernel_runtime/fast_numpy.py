"""The NumPy fast path: a kernel's checks for NumPy arrays of one float dtype, built once.

Each generated kernel builds its fast path at import (:func:`numpy_elementwise`,
:func:`numpy_coupling`) and tries it first on every call: NumPy arrays of one float dtype
(float64 or float32) and matching shapes are checked as they are -- same checks, same
errors as :func:`kernel_runtime.prepare_elementwise` -- and go straight to the kernel's
NumPy body; for any other input it returns None and the kernel takes the general path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy

from .checks import check_values, pair_up, value_checks, values_pass

__all__ = ["numpy_elementwise", "numpy_coupling"]

_ndarray = numpy.ndarray
_F64, _F32 = numpy.dtype(numpy.float64), numpy.dtype(numpy.float32)


def numpy_elementwise(names: tuple[str, ...], positive: tuple[str, ...],
                      read: tuple[str, ...]) -> Callable[..., Any]:
    """An element-wise kernel's NumPy fast path, built once per kernel at import.

    The function returned takes the array arguments and ``check_finite`` and returns
    ``(shape, dtype)`` where they are NumPy arrays of one float dtype (float64 or float32)
    whose shapes broadcast, after the value checks
    :func:`~kernel_runtime.prepare_elementwise` makes (same errors); for any other input it
    returns None, and the kernel calls :func:`~kernel_runtime.prepare_elementwise`.

    Example:
        >>> fast = numpy_elementwise(("mu", "sigma"), ("sigma",), ("mu", "sigma"))
        >>> fast((numpy.zeros(3), numpy.ones((2, 1))), None)
        ((2, 3), dtype('float64'))
        >>> fast((numpy.zeros(3), 1.0), None) is None
        True
    """
    positive_at, read_at = value_checks(names, positive, read)
    pairs = pair_up(read_at)

    def fast(values: tuple[Any, ...], check_finite: bool | None
             ) -> tuple[tuple[int, ...], numpy.dtype] | None:
        first = values[0]
        if type(first) is not _ndarray:
            return None
        dtype = first.dtype
        if dtype is not _F64 and dtype is not _F32:
            return None
        shape = first.shape
        broadcasts = False
        for a in values:
            if type(a) is not _ndarray or a.dtype is not dtype:
                return None
            if a.shape != shape:
                broadcasts = True
        if broadcasts:
            try:
                shape = numpy.broadcast_shapes(*(a.shape for a in values))
            except ValueError:
                return None  # prepare_elementwise names them
            if check_finite is not False:
                check_values(names, values, positive_at, read_at)
        elif check_finite is not False and not values_pass(values, positive_at, pairs):
            check_values(names, values, positive_at, read_at)
        return shape, dtype

    # which arrays it checks, for a path that tests their values another way first
    # (kernel_runtime.fused)
    fast.positive_at, fast.read_at = positive_at, read_at  # type: ignore[attr-defined]
    return fast


def numpy_coupling(vectors: tuple[str, ...], params: tuple[str, ...],
                   read: tuple[str, ...], scalars: tuple[str, ...] = (),
                   positive: tuple[str, ...] = ()) -> Callable[..., Any]:
    """A coupling kernel's NumPy fast path, built once per kernel at import.

    The function returned takes the array arguments (vectors, then parameters) and
    ``check_finite`` and returns ``(batch, n, dtype)`` where they are NumPy arrays of one
    float dtype, the vectors of one shape ``(..., n)`` with ``n >= 1`` and the parameters
    of shape ``(n,)`` and the scalars (``scalars``, after them) of shape ``()``, after the
    value checks :func:`~kernel_runtime.prepare_coupling` makes (same errors; the parameters
    and scalars named in ``positive`` must be > 0, tested in the same pass); for any other
    input it returns None, and the kernel calls :func:`~kernel_runtime.prepare_coupling`.

    Example:
        >>> fast = numpy_coupling(("x1", "x2"), ("s",), ("x1", "x2", "s"))
        >>> fast((numpy.zeros((4, 2)), numpy.zeros((4, 2)), numpy.ones(2)), None)
        ((4,), 2, dtype('float64'))
        >>> fast((numpy.zeros((4, 2)), numpy.zeros((3, 2)), numpy.ones(2)), None) is None
        True
        >>> fast = numpy_coupling(("x1",), ("h",), ("x1", "h"), (), ("h",))
        >>> fast((numpy.zeros((4, 2)), numpy.array([1.0, -2.0])), None)
        Traceback (most recent call last):
        ...
        ValueError: h: expected every entry > 0, got a minimum of -2.0
    """
    names = vectors + params + scalars
    positive_at, read_at = value_checks(names, positive, read)
    k = len(vectors)
    m = len(vectors + params)
    pairs = pair_up(tuple(i for i in read_at if i < k), tuple(i for i in read_at if k <= i < m),
                    tuple(i for i in read_at if i >= m))

    def fast(values: tuple[Any, ...], check_finite: bool | None
             ) -> tuple[tuple[int, ...], int, numpy.dtype] | None:
        first = values[0]
        if type(first) is not _ndarray:
            return None
        dtype = first.dtype
        shape = first.shape
        if dtype is not _F64 and dtype is not _F32 or not shape:
            return None
        n = shape[-1]
        if not n:
            return None
        for a in values[1:k]:
            if type(a) is not _ndarray or a.dtype is not dtype or a.shape != shape:
                return None
        param = (n,)
        for a in values[k:m]:
            if type(a) is not _ndarray or a.dtype is not dtype or a.shape != param:
                return None
        for a in values[m:]:
            if type(a) is not _ndarray or a.dtype is not dtype or a.shape != ():
                return None
        if check_finite is not False and not values_pass(values, positive_at, pairs):
            check_values(names, values, positive_at, read_at)
        return shape[:-1], n, dtype

    return fast
