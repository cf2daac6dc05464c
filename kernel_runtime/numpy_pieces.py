"""Piecewise values in NumPy: the base piece everywhere, the others gathered where they hold.

:func:`kernel_runtime.pieces.select` hands NumPy calls here (its ``"gather"`` strategy;
``base_piece`` is passed in, so that it is decided in one place).

Example:
    >>> x = numpy.array([-2.0, 0.5, 3.0])
    >>> gather_numpy((3,), x.dtype, (x,), (x < 0, x > 1),
    ...              ((lambda x: -x, (x,), ()), (lambda: 7.0, (), ()), (lambda x: x, (x,), ())),
    ...              False, lambda counts, size: None)
    array([2. , 0.5, 7. ])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy

from .outputs import finish, full

__all__ = ["base_value", "gather_numpy"]

_ndarray = numpy.ndarray

_count = numpy.count_nonzero
_greater = numpy.greater  # on booleans: a and not b, in one pass


def base_value(piece: tuple[Any, ...], outside: bool, quiet: bool) -> Any:
    """A piece evaluated everywhere in NumPy: where it is not the last piece (``outside``
    its region on some entries) every floating-point warning is ignored; the last piece
    ignores overflow and invalid operations only where ``quiet`` says that it may overflow
    where another piece holds."""
    fn, args, _ = piece
    if outside:
        with numpy.errstate(all="ignore"):
            return fn(*args)
    if quiet:
        with numpy.errstate(over="ignore", invalid="ignore"):
            return fn(*args)
    return fn(*args)


def gather_numpy(shape: tuple[int, ...], dtype: Any, arrays: tuple[Any, ...],
                 conds: tuple[Any, ...], pieces: tuple[Any, ...], quiet: bool,
                 base_piece: Callable[[list[int], int], int | None]) -> Any:
    """The "gather" strategy of :func:`kernel_runtime.pieces.select` for NumPy, with as few
    passes and calls as the counts allow.

    Each condition is counted as it comes; one that holds nowhere builds no mask and joins
    no union, and where no condition holds anywhere the base piece is simply evaluated
    everywhere (no mask at all). A condition's exclusive mask (it holds, no earlier one
    does) is one ``greater`` of two booleans; the last piece's mask is built only where
    that piece is gathered. Where no piece holds on most entries, the output starts empty:
    every entry is then written by the one piece that holds there.
    """
    size = math.prod(shape)
    masks: list[Any] = []
    counts: list[int] = []
    union = None  # where an earlier condition holds (None: nowhere)
    for cond in conds:
        if type(cond) is not _ndarray or cond.shape != shape:
            cond = numpy.broadcast_to(cond, shape)
        n = int(_count(cond))
        if n and union is not None:
            cond = _greater(cond, union)
            n = int(_count(cond))
            if n:
                union = union | cond
        elif n:
            union = cond
        masks.append(cond if n else None)
        counts.append(n)
    counts.append(size - sum(counts))
    base = base_piece(counts, size)
    last = len(pieces) - 1
    if base is None:
        out = numpy.empty(shape, dtype)
    else:
        out = finish(base_value(pieces[base], base != last, quiet), shape, dtype, arrays)
    for k, (fn, args, _) in enumerate(pieces):
        if k == base or not counts[k]:
            continue
        # the last piece is gathered only where a condition holds (else it would be base)
        mask = masks[k] if k < last else numpy.logical_not(union)
        index = mask.ravel().nonzero()[0]
        out.put(index, fn(*(full(a, shape).take(index) for a in args)))
    return out
