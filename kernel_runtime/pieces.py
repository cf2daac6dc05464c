"""Piecewise values: the one place that decides, per target and per call, how pieces are selected.

A generated kernel hands each piecewise value to :func:`select` as data: the conditions of
its pieces (the first that holds wins; the last piece holds where none does), and for each
piece a function of its arrays with a safe point for each (argument values where the piece
and its derivatives are finite, chosen by the derivation's planner). Nothing in a kernel
or a template decides how; :func:`strategy` and :func:`base_piece` do:

- ``"gather"`` -- NumPy, and eager libraries that can gather (``array_api_strict``, CuPy,
  eager PyTorch from :data:`GATHER_FROM` entries up): the pieces' regions are counted
  (one device sync in PyTorch), the piece holding on most entries (more than half,
  :func:`base_piece`) is evaluated everywhere -- whichever piece it is, not the
  derivation's last -- and every other piece only on the entries gathered where it holds,
  written back there (none where it holds nowhere). Where no piece holds on most entries,
  every piece is gathered, so no pass computes values that are overwritten. Where a
  gathered piece's arguments record a gradient, the everywhere piece runs on its safe
  point where another piece holds, so that no 0 * inf = NaN reaches the gradient.
- ``"where"`` -- eager PyTorch below :data:`GATHER_FROM` entries: every piece evaluated
  everywhere and selected with ``torch.where``: no ``nonzero``, no device sync (at these
  sizes a call's cost is its operations' dispatch, not their arithmetic); safe points
  only for arguments that record a gradient.
- ``"traced"`` -- ``torch.compile``, ``torch.func``, JAX, Dask and any other library: the
  "double where", shape-static: every argument on the piece's safe point where the piece
  is not taken.

- ``"numpy"`` -- plain CPU tensors: :func:`kernel_runtime.differentiable` runs the body
  on NumPy views of their memory (:mod:`kernel_runtime.numpy_views`), gathering as NumPy.

Every strategy evaluates each piece as the same expression on the same values where it
is taken, so they agree bit for bit within one library (NumPy's log and exp may round
otherwise than torch's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy

from .namespaces import DERIVED, device, is_torch, kind, torch_tracing
from .numpy_pieces import base_value, gather_numpy
from .numpy_views import numpy_viewable
from .outputs import finish, finish_xp, full
from .prepare import broadcast

__all__ = ["GATHER_FROM", "Piece", "select", "strategy", "base_piece", "eager", "zero",
           "safe_where", "zeros_xp", "taken", "take_xp", "put_xp"]

#: Eager PyTorch (where it does not run the NumPy body: GPUs, dispatch modes) gathers the
#: pieces from this many entries up, and selects with ``torch.where`` below (no device
#: sync). Measured (CPU, one thread, ``kl`` and the pair ``kl``, float32 and float64,
#: against ``torch.distributions``): at 1000 x 100 entries where costs what gather does
#: (kl ÷ td 3.1 / 1.7 against 3.2 / 2.5) and saves the count's sync.
GATHER_FROM = 1 << 17

#: One piece as a kernel passes it: its value as a function of its arrays, those arrays,
#: and a safe point for each (empty where no target needs one, as in the NumPy body).
Piece = tuple[Callable[..., Any], tuple[Any, ...], tuple[Any, ...]]


def eager(xp: Any, arrays: Sequence[Any]) -> bool:
    """Whether this call runs eagerly: arrays that hold values now, and data-dependent
    shapes allowed -- eager PyTorch (not under ``torch.compile``/``torch.export``,
    ``torch.func`` transforms or ``torch.jit`` tracing, and not on the ``meta`` device),
    ``array_api_strict`` and CuPy. False for JAX and Dask (traced, asynchronous or lazy)
    and any other library.

    Example:
        >>> import array_api_strict as xps
        >>> eager(xps, [xps.asarray([1.0])])
        True
    """
    library = kind(xp)
    if library == "torch":
        if torch_tracing():
            return False
        return all(getattr(a, "device", None) is None or a.device.type != "meta"
                   for a in arrays)
    return library in ("array_api_strict", "cupy")


def strategy(xp: Any, shape: tuple[int, ...], arrays: Sequence[Any]) -> str:
    """How this call selects pieces: ``"gather"``, ``"where"``, ``"traced"`` or
    ``"numpy"`` (see the module's summary; :func:`select`, handed CPU tensors itself,
    selects as eager PyTorch does elsewhere).

    Example:
        >>> strategy(numpy, (3,), ())
        'gather'
        >>> import torch
        >>> strategy(torch, (4,), (torch.ones(4),))
        'numpy'
        >>> strategy(torch, (4,), (torch.ones(4, device="meta"),))
        'traced'
    """
    if xp is numpy:
        return "gather"
    if not eager(xp, arrays):
        return "traced"
    if kind(xp) == "torch":
        if numpy_viewable(arrays):
            return "numpy"
        return "where" if math.prod(shape) < GATHER_FROM else "gather"
    return "gather"


def base_piece(counts: Sequence[int], size: int) -> int | None:
    """The piece evaluated everywhere: the one holding on most entries, where it holds on
    more than half of them; else None (every piece is gathered).

    Example:
        >>> base_piece([0, 3, 1, 6], 10), base_piece([0, 5, 0, 5], 10)
        (3, None)
    """
    if not counts:
        return None
    best = max(range(len(counts)), key=counts.__getitem__)
    return best if 2 * counts[best] > size else None


def zero(xp: Any, dtype: Any, like: Any) -> Any:
    """A 0-d zero in ``dtype`` on ``like``'s device (constants in ``where`` become arrays
    with it: the 2023.12 standard has no scalar arguments to ``where``)."""
    if is_torch(like):
        import torch

        return torch.zeros((), dtype=dtype, device=like.device)
    return xp.zeros((), dtype=dtype, device=device(like))


def select(xp: Any, arrays: tuple[Any, ...], dtype: Any, like: Any,
           conds: tuple[Any, ...], pieces: tuple[Piece, ...], quiet: bool = False) -> Any:
    """The piecewise value: ``pieces[k]`` where ``conds[k]`` holds and no earlier condition
    does, the last piece where none holds, selected as :func:`strategy` decides.

    ``arrays`` are the arrays the pieces and conditions read (their broadcast shape is the
    value's); ``quiet`` says that the derivation's last piece may overflow (or form
    inf - inf) where another piece holds and overwrites it (NumPy: not warned about).

    Example:
        >>> x = numpy.array([-2.0, 0.5, 3.0])
        >>> select(numpy, (x,), x.dtype, x, (x < 0, x > 1),
        ...        ((lambda x: -x, (x,), ()), (lambda: 7.0, (), ()), (lambda x: x, (x,), ())))
        array([2. , 0.5, 7. ])
    """
    if xp is numpy:
        shape = broadcast(*(a.shape if type(a) is _ndarray else numpy.shape(a)
                            for a in arrays))
    else:
        shape = broadcast(*(tuple(getattr(a, "shape", ())) for a in arrays))
    how = strategy(xp, shape, arrays)  # the one place the selection is decided
    if how == "gather" and xp is numpy:
        return gather_numpy(shape, dtype, arrays, conds, pieces, quiet, base_piece)
    if how == "numpy":
        how = "where" if math.prod(shape) < GATHER_FROM else "gather"
    if how == "gather":
        return _gather(xp, shape, dtype, like, arrays, conds, pieces, quiet)
    return _where(xp, conds, pieces, traced=how == "traced")


_ndarray = numpy.ndarray


def _masks(xp: Any, conds: tuple[Any, ...], shape: tuple[int, ...]) -> list[Any]:
    """Where each piece is taken, of ``shape``: its condition and no earlier one."""
    masks = []
    taken_before = None
    for cond in conds:
        if tuple(getattr(cond, "shape", ())) != shape:
            cond = numpy.broadcast_to(cond, shape) if xp is numpy else \
                xp.broadcast_to(cond, shape)
        masks.append(cond if taken_before is None else cond & ~taken_before)
        taken_before = cond if taken_before is None else taken_before | cond
    if taken_before is None:
        return [numpy.ones(shape, bool) if xp is numpy else xp.ones(shape, dtype=xp.bool)]
    masks.append(~taken_before)
    return masks


def _counts(xp: Any, masks: list[Any], size: int) -> list[int]:
    """How many entries each mask holds on: one device sync (the last is the rest)."""
    if xp is numpy:
        counts = [int(numpy.count_nonzero(m)) for m in masks[:-1]]
    elif is_torch(masks[0]):
        import torch

        counts = torch.stack([m.sum() for m in masks[:-1]]).tolist() if masks[:-1] else []
    else:
        counts = [int(xp.sum(xp.astype(m, xp.int64))) for m in masks[:-1]]
    return counts + [size - sum(counts)]


def _gather(xp: Any, shape: tuple[int, ...], dtype: Any, like: Any, arrays: tuple[Any, ...],
            conds: tuple[Any, ...], pieces: tuple[Piece, ...], quiet: bool) -> Any:
    """The base piece everywhere, every other piece where it holds (gathered)."""
    size = math.prod(shape)
    masks = _masks(xp, conds, shape)
    counts = _counts(xp, masks, size)
    base = base_piece(counts, size)
    if base is None:
        out = numpy.zeros(shape, dtype) if xp is numpy else \
            zeros_xp(xp, shape, dtype, like, arrays)
    else:
        fn, args, safe = pieces[base]
        if xp is numpy:
            out = finish(base_value(pieces[base], base != len(pieces) - 1, quiet), shape,
                         dtype, arrays)
        else:
            args = tuple(safe_where(xp, masks[base], a, s)
                         for a, s in zip(args, safe, strict=True))
            out = finish_xp(xp, fn(*args), shape, dtype, arrays)
            if not args:  # a constant: joins the gradient's graph as the double where does
                out = zeros_xp(xp, shape, dtype, like, arrays) + out
    for k, (fn, args, _) in enumerate(pieces):
        if k == base or not counts[k]:
            continue
        if xp is numpy:
            index = masks[k].ravel().nonzero()[0]
            out.put(index, fn(*(full(a, shape).take(index) for a in args)))
        else:
            where = taken(xp, masks[k], shape, counts[k])
            out = put_xp(xp, out, where, fn(*(take_xp(xp, a, where, shape) for a in args)))
    return out


def _where(xp: Any, conds: tuple[Any, ...], pieces: tuple[Piece, ...], traced: bool) -> Any:
    """Every piece everywhere, selected with ``where``; an argument on its safe point where
    the piece is not taken: all when ``traced`` (not under ``DERIVED``), else those with a grad."""
    traced = traced and not (kind(xp) == "jax" and DERIVED.get())  # (no contextvar: dynamo)
    where = _where_function(xp)
    masks: list[Any] = []

    def mask(k: int) -> Any:  # the exclusive masks, computed once, only where needed
        if not masks:
            taken_before = None
            for cond in conds:
                masks.append(cond if taken_before is None else cond & ~taken_before)
                taken_before = cond if taken_before is None else taken_before | cond
            masks.append(~taken_before)
        return masks[k]

    values = []
    for k, (fn, args, safe) in enumerate(pieces):
        args = tuple(where(mask(k), a, _safe(xp, s, a)) if traced or _records_gradient(a) else a
                     for a, s in zip(args, safe, strict=True))
        values.append(fn(*args))
    out = values[-1]
    selectors = masks[:-1] if masks else conds  # the first condition that holds wins
    for k in reversed(range(len(conds))):
        out = where(selectors[k], values[k], out)
    return out


def _where_function(xp: Any) -> Callable[..., Any]:
    """``torch.where`` for PyTorch (not the ``array_api_compat`` wrapper), else ``xp.where``."""
    if kind(xp) == "torch":
        import torch

        return torch.where
    return xp.where


def _records_gradient(a: Any) -> bool:
    if not is_torch(a):
        return False
    import torch

    return bool(a.requires_grad and torch.is_grad_enabled())


def safe_where(xp: Any, mask: Any, source: Any, safe: Any) -> Any:
    """``source`` where ``mask`` holds, else the safe value -- where that matters.

    A piece evaluated everywhere is overwritten where another piece holds. Its value there
    is discarded, but autograd would multiply the zero gradient by the piece's derivative
    there, which may be infinite (0 * inf = NaN): so where ``source`` needs a gradient, it
    is replaced by the piece's safe point first. A PyTorch tensor that records no gradient
    is returned as it is; other libraries always get the ``where``, so that no overflow
    warning is raised at the discarded entries (NumPy under ``array_api_strict``).

    Example:
        >>> import array_api_strict as xps
        >>> x = xps.asarray([1.0, 1000.0])
        >>> safe_where(xps, x < 10, x, xps.asarray(0.0))
        Array([1., 0.], dtype=array_api_strict.float64)
    """
    if is_torch(source):
        if not _records_gradient(source):
            return source
        return _where_function(xp)(mask, source, safe)
    return xp.where(mask, source, _safe(xp, safe, source))


def _safe(xp: Any, safe: Any, source: Any) -> Any:
    """A safe point (a number) as ``where`` takes it: a weak scalar, or a 0-d array."""
    if hasattr(safe, "dtype") or kind(xp) in ("torch", "jax", "dask", "numpy"):
        return safe
    return xp.asarray(safe, dtype=source.dtype, device=device(source))


def zeros_xp(xp: Any, shape: tuple[int, ...], dtype: Any, like: Any,
             sources: tuple[Any, ...]) -> Any:
    """Zeros of ``shape``, the start of a piecewise value whose every piece is gathered.

    In PyTorch, where a source records a gradient, the zeros join the graph through an
    empty sum of it (0, with a zero gradient): so the value records a gradient even where
    no entry takes a piece that reads a source (an empty batch, or only constant pieces),
    as the double where's value does -- else ``backward`` on it would raise.

    Example:
        >>> import torch
        >>> s = torch.ones(0, requires_grad=True)
        >>> zeros_xp(torch, (0,), torch.float32, s, (s,)).requires_grad
        True
    """
    out = xp.zeros(shape, dtype=dtype, device=device(like))
    if is_torch(out):
        import torch

        if torch.is_grad_enabled():
            for a in sources:
                if getattr(a, "requires_grad", False):
                    out = out + a.reshape(-1)[:0].sum().to(out.dtype)
    return out


def taken(xp: Any, mask: Any, shape: tuple[int, ...], count: int | None = None
          ) -> tuple[Any, Any] | None:
    """Where ``mask`` (broadcast to ``shape``) holds: ``(flat indices, full mask)``, or None.

    The indices are ascending, so values gathered with :func:`take_xp` are in the order a
    boolean mask selects them. In PyTorch, with ``count`` (how many entries hold) known,
    without a device sync (``nonzero_static``).

    Example:
        >>> import array_api_strict as xps
        >>> index, _ = taken(xps, xps.asarray([[True], [False]]), (2, 2))
        >>> index
        Array([0, 1], dtype=array_api_strict.int64)
        >>> taken(xps, xps.asarray(False), (3,)) is None
        True
    """
    if tuple(mask.shape) != shape:
        mask = xp.broadcast_to(mask, shape)
    if is_torch(mask):
        import torch

        flat = mask.reshape(-1)
        if count is not None and hasattr(torch, "nonzero_static"):
            index = torch.nonzero_static(flat, size=count).reshape(-1)
        else:
            index = torch.nonzero(flat).reshape(-1)
    else:
        index = xp.nonzero(xp.reshape(mask, (-1,)))[0]
    return (index, mask) if index.shape[0] else None


def take_xp(xp: Any, a: Any, where: tuple[Any, Any], shape: tuple[int, ...]) -> Any:
    """The entries of ``a`` (broadcast to ``shape``) at :func:`taken`'s indices, flat.

    Differentiable in PyTorch (``index_select``): the gradient flows back to ``a``'s
    gathered entries only.
    """
    if not hasattr(a, "shape"):
        return a  # a Python scalar broadcasts as it is
    if tuple(a.shape) != shape:
        a = xp.broadcast_to(a, shape)
    if is_torch(a):
        import torch

        return torch.index_select(a.reshape(-1), 0, where[0])
    return xp.take(xp.reshape(a, (-1,)), where[0])


def put_xp(xp: Any, out: Any, where: tuple[Any, Any], values: Any) -> Any:
    """``out`` with ``values`` written at :func:`taken`'s entries.

    ``out`` is the kernel's own full-shape array (from :func:`kernel_runtime.finish_xp`), so
    it is written in place -- except in PyTorch where either side needs a gradient: there
    the write is out of place (``index_copy``), so no tensor autograd saved is modified, and
    the gradient reaches ``values`` at the written entries and ``out`` elsewhere.
    """
    index, mask = where
    if tuple(getattr(values, "shape", ())) != tuple(index.shape):
        values = xp.broadcast_to(values, tuple(index.shape))  # a constant piece
    if is_torch(out):
        import torch

        flat = out.reshape(-1)
        if torch.is_grad_enabled() and (out.requires_grad or values.requires_grad):
            return torch.index_copy(flat, 0, index, values).reshape(out.shape)
        if not out.is_contiguous():
            out = out.contiguous()
            flat = out.view(-1)
        flat.index_copy_(0, index, values)
        return out
    out[mask] = values
    return out
