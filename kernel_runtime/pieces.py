"""Piecewise values: where a call may gather each piece, and the gather, scatter and where.

Where a call runs eagerly (:func:`eager`), a kernel evaluates each piece but the last only
on the entries where it holds (:func:`taken`, :func:`take_xp`, :func:`put_xp`, starting
from :func:`zeros_xp`), and the last piece everywhere where it holds on most entries
(:func:`mostly`, :func:`safe_where`); under tracing it selects with the double where.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .namespaces import array_api, device, is_torch, torch_tracing
from .prepare import broadcast

__all__ = ["eager", "mostly", "piece_shape", "safe_where", "zeros_xp", "taken", "take_xp",
           "put_xp"]


def eager(xp: Any, arrays: Sequence[Any]) -> bool:
    """Whether this call may evaluate each piece only where it holds (gather and scatter).

    True where the arrays hold values now and data-dependent shapes are allowed: eager
    PyTorch (not under ``torch.compile``/``torch.export``, ``torch.func`` transforms or
    ``torch.jit`` tracing, and not on the ``meta`` device), ``array_api_strict`` and CuPy.
    False for JAX and Dask (traced, asynchronous or lazy) and any other library: their
    kernels select with the "double where", which is shape-static.

    Example:
        >>> import array_api_strict as xps
        >>> eager(xps, [xps.asarray([1.0])])
        True
    """
    compat = array_api()
    if compat.is_torch_namespace(xp):
        if torch_tracing():
            return False
        return all(getattr(a, "device", None) is None or a.device.type != "meta"
                   for a in arrays)
    return bool(compat.is_array_api_strict_namespace(xp) or compat.is_cupy_namespace(xp))


def mostly(xp: Any, mask: Any) -> bool:
    """Whether ``mask`` holds on more than half of its entries (then the eager lowering
    evaluates the last piece everywhere rather than gathering it).

    Example:
        >>> import array_api_strict as xps
        >>> mostly(xps, xps.asarray([True, True, False])), mostly(xps, xps.asarray([True, False]))
        (True, False)
    """
    if is_torch(mask):
        import torch

        return 2 * int(torch.count_nonzero(mask)) > mask.numel()
    return 2 * int(xp.sum(xp.astype(mask, xp.int64))) > math.prod(mask.shape)


def piece_shape(*arrays: Any) -> tuple[int, ...]:
    """The broadcast shape of the arrays (a Python scalar counts as 0-d).

    Example:
        >>> import numpy
        >>> piece_shape(numpy.zeros((2, 1)), numpy.zeros(3), 1.0)
        (2, 3)
    """
    return broadcast(*(tuple(getattr(a, "shape", ())) for a in arrays))


def safe_where(xp: Any, mask: Any, source: Any, safe: Any) -> Any:
    """``source`` where ``mask`` holds, else the safe value -- where that matters.

    The eager lowering evaluates the last piece everywhere and overwrites it where another
    piece holds. Its value there is discarded, but autograd would multiply the zero
    gradient by the piece's derivative there, which may be infinite (0 * inf = NaN): so
    where ``source`` needs a gradient, it is replaced by the piece's safe point first. A
    PyTorch tensor that records no gradient is returned as it is (the ``where`` costs a
    pass as long as the piece); other libraries always get the ``where``, so that no
    overflow warning is raised at the discarded entries (NumPy under
    ``array_api_strict``).

    Example:
        >>> import array_api_strict as xps
        >>> x = xps.asarray([1.0, 1000.0])
        >>> safe_where(xps, x < 10, x, xps.asarray(0.0))
        Array([1., 0.], dtype=array_api_strict.float64)
    """
    if is_torch(source):
        import torch

        if not (source.requires_grad and torch.is_grad_enabled()):
            return source
    return xp.where(mask, source, safe)


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


def taken(xp: Any, mask: Any, shape: tuple[int, ...]) -> tuple[Any, Any] | None:
    """Where ``mask`` (broadcast to ``shape``) holds: ``(flat indices, full mask)``, or None.

    The indices are ascending, so values gathered with :func:`take_xp` are in the order a
    boolean mask selects them.

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

        index = torch.nonzero(mask.reshape(-1)).reshape(-1)
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
