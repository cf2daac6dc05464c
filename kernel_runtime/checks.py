"""Value checks: NaN, infinity and entries that must be positive, one reduction per call.

NumPy arrays are tested in bulk (:func:`values_pass`: a minimum per positive array, a dot
product per pair of read arrays) and entry by entry only where that fails
(:func:`check_values`, which names the first argument outside its domain). Other
libraries fold every test into one reduction, so there is at most one device sync per
call; PyTorch first tries sums of squares. :func:`checked` runs what ``check_finite``
asks for.

Example:
    >>> import numpy as np
    >>> check_values(("mu", "sigma"), (np.zeros(2), np.array([1.0, -2.0])), (1,), (0, 1))
    Traceback (most recent call last):
    ...
    ValueError: sigma: expected every entry > 0, got a minimum of -2.0
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy

from .namespaces import kind, torch_tracing
from .numpy_views import numpy_viewable, numpy_views

__all__ = ["value_checks", "pair_up", "values_pass", "check_values", "checked"]

_minimum = numpy.minimum.reduce
_isfinite = math.isfinite
#: ``numpy.vdot`` without the ``__array_function__`` dispatch (a third of its cost on 1e2
#: elements): it is only given NumPy arrays
_vdot = getattr(numpy.vdot, "__wrapped__", numpy.vdot)
#: Above this many entries OpenBLAS runs a dot product on several threads (its ``ddot``
#: splits from 10,000 entries): on a loaded machine each call then waits for threads to be
#: scheduled (a median of 15 ms for one ``vdot`` of 1e5 entries at load 7, against 50 us
#: on one thread), so larger arrays are tested by their minimum and maximum instead
#: (single-threaded SIMD reductions; NaN propagates, neither warns).
BLAS_THREADS_FROM = 8192


def _finite_extremes(a: numpy.ndarray) -> bool:
    """Whether an array's minimum and maximum are finite (so every entry is; no NaN)."""
    return _isfinite(a.min()) and _isfinite(a.max())


def value_checks(names: Sequence[str], positive: Sequence[str],
                  read: Sequence[str]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The indices of the arrays that must be positive, and of those whose values are read.

    Example:
        >>> value_checks(("mu", "sigma", "eps"), ("sigma",), ("mu", "sigma"))
        ((1,), (0, 1))
    """
    return (tuple(i for i, name in enumerate(names) if name in positive),
            tuple(i for i, name in enumerate(names) if name in read))


@functools.lru_cache(maxsize=256)
def _indices(names: tuple[str, ...], positive: tuple[str, ...], read: tuple[str, ...]
             ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, int], ...]]:
    """:func:`value_checks` and the read arrays' :func:`pair_up`, once per kernel."""
    positive_at, read_at = value_checks(names, positive, read)
    return positive_at, read_at, pair_up(read_at)


def pair_up(*groups: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """The read arrays two by two within each group of equal-size arrays (the last alone
    paired with itself).

    Example:
        >>> pair_up((0, 1, 2), (3,))
        ((0, 1), (2, 2), (3, 3))
    """
    return tuple((g[j], g[min(j + 1, len(g) - 1)]) for g in groups for j in range(0, len(g), 2))


def values_pass(values: Sequence[numpy.ndarray], positive: tuple[int, ...],
                 pairs: tuple[tuple[int, int], ...]) -> bool:
    """Whether every value passes the checks of :func:`check_values`, tested in bulk.

    ``positive`` indexes the arrays that must be positive, each tested by its minimum
    (``argmin`` stops at the first NaN, so NaN, -inf and entries <= 0 fail); ``pairs``
    (:func:`pair_up` of the read arrays, each pair of one size) are tested by one dot product
    per pair, finite only when every entry of both arrays is (an infinity times zero is
    NaN). True means every check passes; False means one may fail (or no entries, or
    products beyond ~1e308), and :func:`check_values` then says which and why. Any layout
    works: ``argmin`` indexes the C-order flattening that ``item`` reads, and ``vdot``
    flattens (a copy only where an array is not C-contiguous).

    Example:
        >>> a, b = numpy.ones(3), numpy.array([1.0, numpy.inf, 2.0])
        >>> values_pass((a, b), (0,), ((0, 0),)), values_pass((a, b), (), ((0, 1),))
        (True, False)
    """
    try:
        for i in positive:
            a = values[i]
            if not a.item(a.argmin()) > 0:
                return False
    except ValueError:  # an empty array has no argmin
        return False
    for i, j in pairs:
        a = values[i]
        if a.size >= BLAS_THREADS_FROM:
            if not (_finite_extremes(a) and (j == i or _finite_extremes(values[j]))):
                return False
        elif not _isfinite(_vdot(a, values[j])):  # vdot, unlike dot, never warns
            return False
    return True


def check_values(names: Sequence[str], arrays: Sequence[numpy.ndarray],
                  positive: tuple[int, ...], read: tuple[int, ...]) -> None:
    """Raise ValueError naming the first argument with a value outside its domain.

    ``positive`` and ``read`` index ``arrays`` (:func:`value_checks`); the read arrays are
    floating. An array that must be positive is tested by its minimum (``argmin`` stops at
    a NaN, so NaN and entries <= 0 are rejected, in argument order). The read arrays are
    tested two at a time by the dot product of one with the other, finite only when every
    entry of both is (an infinity times zero is NaN): one BLAS pass per two arrays and no
    temporary (``isfinite(a).all()`` is 3x slower per array; ``vdot``, unlike ``dot``,
    warns of no overflow, and ``errstate`` costs more than the checks at 1e3 elements).
    Only where that fails (a NaN, an infinity, products beyond ~1e308, or a strided array)
    are the entries tested one by one, so the first non-finite argument is named.
    """
    _check_positive(names, arrays, positive)
    _check_read(names, arrays, read)


def _check_positive(names: Sequence[str], arrays: Sequence[numpy.ndarray],
                    positive: tuple[int, ...]) -> None:
    """Raise ValueError for the first array of ``positive`` with a NaN or an entry <= 0."""
    for i in positive:
        a = arrays[i]
        if a.flags.c_contiguous:
            try:
                low = a.item(a.argmin())  # argmin stops at the first NaN; flat C order
            except ValueError:  # no entries
                continue
        elif a.size:
            low = _minimum(a, axis=None)
        else:
            continue
        if not low > 0:
            _refuse_minimum(names[i], a)


def _check_read(names: Sequence[str], arrays: Sequence[numpy.ndarray],
                read: tuple[int, ...]) -> None:
    """Raise ValueError for the first array of ``read`` with a NaN or an infinity
    (dot products two at a time, as :func:`check_values` says)."""
    finite = True
    pending = None
    for i in read:
        a = arrays[i]
        if not a.flags.c_contiguous:  # vdot flattens a C-contiguous array without a copy
            if not a.flags.f_contiguous:
                finite = False  # strided: tested entry by entry below
                break
            a = a.ravel(order="K")  # a view: no copy
        if a.size >= BLAS_THREADS_FROM:
            finite = _finite_extremes(a)
            if not finite:
                break
            continue
        if pending is None:
            pending = a
            continue
        if pending.size == a.size:
            finite = _isfinite(_vdot(pending, a))  # no overflow warning, unlike numpy.dot
            pending = None
        else:
            finite = _isfinite(_vdot(pending, pending))
            pending = a
        if not finite:
            break
    if finite and pending is not None:
        finite = _isfinite(_vdot(pending, pending))
    if not finite:
        _refuse_non_finite(names, arrays, read)


def _refuse_minimum(name: str, a: numpy.ndarray) -> None:
    """Raise ValueError for an array with a NaN or an entry <= 0 (its minimum named)."""
    low = _minimum(a, axis=None)  # NaN propagates
    if low != low:
        raise ValueError(f"{name}: expected finite values, got NaN or infinity")
    raise ValueError(f"{name}: expected every entry > 0, got a minimum of {low}")


def _refuse_non_finite(names: Sequence[str], arrays: Sequence[numpy.ndarray],
                       read: tuple[int, ...]) -> None:
    """Raise ValueError naming the first read array with a NaN or an infinity, if any."""
    bad = _non_finite_numpy([names[i] for i in read], [arrays[i] for i in read])
    if bad is not None:
        raise ValueError(f"{bad}: expected finite values, got NaN or infinity")


def _non_finite_numpy(names: Sequence[str], arrays: Sequence[numpy.ndarray]) -> str | None:
    """The name of the first array with a NaN or an infinity, or None (exact, per array)."""
    for name, a in zip(names, arrays, strict=True):
        if a.dtype.kind == "f" and not numpy.isfinite(a).all():
            return name
    return None


def _check_numpy(names: Sequence[str], arrays: Sequence[numpy.ndarray],
                 positive: Sequence[str], read: Sequence[str]) -> None:
    """Raise ValueError naming the first argument with a value outside its domain
    (:func:`check_values` by argument names; integer arrays are finite)."""
    positive_at, read_at = value_checks(names, positive, read)
    check_values(names, arrays, positive_at,
                  tuple(i for i in read_at if arrays[i].dtype.kind == "f"))


def _checks_values(xp: Any, arrays: Sequence[Any], check_finite: bool | None) -> bool:
    """Whether value checks run: ``check_finite`` if given, else where they are cheap."""
    if check_finite is not None:
        return bool(check_finite)
    library = kind(xp)
    if library == "array_api_strict":
        return True
    if library == "torch":
        if torch_tracing():
            return False
        return all(a.device.type == "cpu" for a in arrays)
    return False  # JAX (traced or asynchronous), Dask (lazy), CuPy and others (a device)


def _passes_torch(names: Sequence[str], arrays: Sequence[Any], positive: Sequence[str],
                  read: Sequence[str]) -> bool:
    """Whether every read torch tensor is finite and every positive one > 0: one sync.

    As :func:`values_pass` for NumPy: the read tensors two at a time, by the dot product
    of one's flat view with the other's where they have as many entries (``torch.dot``, one
    BLAS pass, ~10x cheaper than ``isfinite``), else of one with itself: finite only when
    every entry of both is (an infinity times zero is NaN); a positive tensor's minimum
    (NaN propagates) must be > 0. False (then :func:`_check_xp` tests entry by entry and
    names the argument) where a product is not finite -- a NaN, an infinity, or products
    beyond ~1e308 (~1e38 in float32) -- and for non-contiguous tensors. Computed on
    detached tensors: nothing joins the autograd graph.
    """
    if numpy_viewable(arrays):  # CPU tensors: NumPy's checks on views of their memory
        views = numpy_views(arrays, ())
        if views is not None:
            positive_at, read_at, pairs = _indices(names, positive, read)
            size = arrays[read_at[0]].numel() if read_at else 0
            if any(arrays[i].numel() != size for i in read_at):  # pair those of one size
                pairs = tuple((i, i) for i in read_at)
            return values_pass(views[0], positive_at, pairs)
    import torch

    flats = []
    lows = []
    for name, a in zip(names, arrays, strict=True):
        if name not in read and name not in positive:
            continue
        if not a.dtype.is_floating_point or not a.is_contiguous():
            return False
        flat = a.detach() if a.requires_grad else a
        if flat.dim() != 1:
            flat = flat.reshape(-1)
        if name in positive and flat.numel():
            lows.append(torch.amin(flat))
        if name in read:
            flats.append(flat)
    total = None
    while flats:
        a = flats.pop(0)
        b = flats.pop(0) if flats and flats[0].numel() == a.numel() else a
        product = torch.dot(a, b)
        total = product if total is None else total + product
    if not lows:
        return total is None or math.isfinite(total.item())  # the one sync
    checks = ([] if total is None else [total]) + lows
    values = torch.stack([v.to(torch.float64) for v in checks]).tolist()  # the one sync
    if total is not None and not math.isfinite(values.pop(0)):
        return False
    return all(v > 0 for v in values)  # False for a NaN minimum


def _check_xp(xp: Any, names: Sequence[str], arrays: Sequence[Any],
              positive: Sequence[str], read: Sequence[str]) -> None:
    """All value checks as one reduction; on failure, name the argument."""
    if kind(xp) == "torch" and _passes_torch(names, arrays, positive, read):
        return
    tests = []
    for name, a in zip(names, arrays, strict=True):
        if name in read or name in positive:
            ok = xp.all(xp.isfinite(a))
            if name in positive:
                ok = ok & xp.all(a > 0)
            tests.append((name, ok))
    if not tests:
        return
    total = tests[0][1]
    for _, ok in tests[1:]:
        total = total & ok
    try:
        passed = bool(total)  # the one sync
    except Exception as error:  # e.g. jax's ConcretizationTypeError under jit
        raise TypeError(
            f"{', '.join(names)}: check_finite=True needs the values, which cannot be read "
            f"here ({type(error).__name__}); pass check_finite=None or False under tracing"
        ) from None
    if passed:
        return
    for name, a in zip(names, arrays, strict=True):
        if (name in read or name in positive) and not bool(xp.all(xp.isfinite(a))):
            raise ValueError(f"{name}: expected finite values, got NaN or infinity")
        if name in positive and not bool(xp.all(a > 0)):
            raise ValueError(
                f"{name}: expected every entry > 0, got a minimum of {float(xp.min(a))}")


def checked(xp: Any, names: tuple[str, ...], values: tuple[Any, ...], arrays: Any,
             dtype: Any, positive: tuple[str, ...], read: tuple[str, ...],
             check_finite: bool | None) -> Any:
    """The value checks ``check_finite`` asks for; the arrays in the working dtype."""
    if xp is numpy:
        if check_finite is not False:
            _check_numpy(names, arrays, positive, read)
        if arrays is not values:
            arrays = [a.astype(dtype, copy=False) for a in arrays]
        return arrays
    if _checks_values(xp, arrays, check_finite):
        _check_xp(xp, names, arrays, positive, read)
    return arrays
