"""Callable arguments (a coupling's ``F`` and ``G``): each gets its own copy; results checked.

NumPy: :func:`call` hands the callable a read-only copy. Other libraries:
:func:`callee_arg` chooses once per argument how its copies are made and checked
(:class:`CalleeArg`), and :func:`call_xp` calls and checks. A callable never gets the
caller's array, nor the kernel's own, nor one another callable got; a write into its copy
raises ``ValueError`` naming it where the library lets that be seen.
"""

from __future__ import annotations

from typing import Any

import numpy

from .namespaces import array_api, is_torch, kind, library, mutable
from .pieces import eager

__all__ = ["call", "CalleeArg", "callee_arg", "call_xp"]

_ndarray = numpy.ndarray


#: NumPy's errors for a write into a read-only array: by assignment, by a ufunc's output,
#: and for ``setflags(write=True)`` on a view whose base is read-only
_READ_ONLY = ("assignment destination is read-only", "output array is read-only",
              "cannot set WRITEABLE flag to True of this array")


def _private(copy: numpy.ndarray) -> numpy.ndarray:
    """A read-only view of ``copy``, a new array of the caller's values, made read-only:
    a write into the view raises, and so does ``setflags(write=True)`` (its base is
    read-only; a read-only view of a writeable array can be made writeable again). A
    write by a route no flag stops (``torch.from_numpy`` ignores it) reaches nobody."""
    copy.flags.writeable = False
    return copy.view()


def _call_read_only(name: str, fn: Any, arg: Any) -> Any:
    """``fn(arg)`` where ``arg`` is backed by a read-only NumPy buffer (:func:`_private`:
    NumPy's copy, ``array_api_strict``'s): NumPy's error for a write into it, or for
    making it writeable, re-raised naming ``fn``; any other error passes through."""
    try:
        return fn(arg)
    except ValueError as error:
        if str(error) in _READ_ONLY:
            raise ValueError(_wrote(name)) from error
        raise


def _wrote(name: str) -> str:
    return (f"{name}: expected {name} to leave its argument unchanged ({name} must not "
            f"modify its argument in place), but {name}(x) wrote into x; compute out of "
            f"place (x * 2, not x *= 2). The caller's arrays are unchanged ({name} never "
            f"gets them)")


def call(name: str, fn: Any, arg: numpy.ndarray, shape: str,
         dtype: numpy.dtype) -> numpy.ndarray:
    """Evaluate a callable argument once on its own read-only copy of ``arg``; check its
    result.

    ``fn`` cannot change the caller's array, nor the kernel's own ``arg`` (which it reads
    again), nor what another callable receives: it gets a copy (:func:`_private`), so even
    a write no flag stops (``torch.from_numpy(x)``) reaches nobody; an ordinary write into
    it raises NumPy's read-only ``ValueError``, re-raised naming ``fn`` (as the other
    libraries' writes are). The copy costs one pass over ``arg`` per callable.
    """
    if not callable(fn):
        raise TypeError(f"{name}: expected a callable, got {type(fn).__name__}")
    value = _call_read_only(name, fn, _private(arg.copy(order="K")))
    if type(value) is not _ndarray:
        value = numpy.asarray(value)
    if value.dtype is not dtype and value.dtype.kind not in "iuf":
        raise TypeError(
            f"{name}: expected {name}(x) to return real numbers, got dtype {value.dtype}")
    expected = arg.shape if shape == "vector" else arg.shape + arg.shape[-1:]
    if value.shape != expected:
        raise ValueError(f"{name}: expected {name}(x) of shape {expected} for x of shape "
                         f"{arg.shape}, got {value.shape}")
    return value if value.dtype is dtype else value.astype(dtype)


class CalleeArg:
    """What a kernel's callables receive for one argument: each callable its own copy.

    Made by :func:`callee_arg` once per distinct argument of the callables (``x2`` for
    both ``F(x2)`` and ``G(x2)``: the mode is chosen once) and passed to :func:`call_xp`,
    which gives each callable :meth:`give`'s array and then calls :meth:`done`. Where the
    library's arrays are mutable, a callable never gets the caller's array, nor the
    kernel's own (which the kernel reads again, and may return), nor the array another
    callable got: so a write into it by any route -- also those no check sees
    (``Tensor.data``, ``Tensor.numpy()``, ``torch.from_numpy`` of a NumPy buffer,
    ``setflags``) -- reaches neither the caller nor the result. The modes:

    - ``"versioned"`` -- eager PyTorch: a clone per callable (on the autograd tape);
      after the call its version counter (``Tensor._version``, bumped by every in-place
      write) tells whether the callable wrote into it in place, and :meth:`done` then
      raises ``ValueError`` naming it -- as NumPy's read-only copy raises.
    - ``"read_only"`` -- ``array_api_strict``: a copy per callable whose NumPy buffer is a
      read-only view of a read-only array (:func:`_private`); a write into it raises
      inside the callable, and :func:`call_xp` names it.
    - ``"fresh"`` -- everything else that is mutable (PyTorch under tracing, ``torch.func``
      or inference mode, whose tensors have no version counter; CuPy; other libraries): a
      copy per callable, unchecked.
    - ``"as_is"`` -- JAX and Dask: immutable arrays, passed as they are.

    Example:
        >>> import array_api_compat.torch as xp
        >>> x = xp.ones(3, dtype=xp.float64)
        >>> held = callee_arg(xp, x, xp.float64)
        >>> held.mode, held.give() is held.give(), held.give() is x
        ('versioned', False, False)
    """

    __slots__ = ("xp", "value", "dtype", "mode", "_copy", "_version")

    def __init__(self, xp: Any, value: Any, dtype: Any, mode: str) -> None:
        self.xp, self.value, self.dtype, self.mode = xp, value, dtype, mode
        self._copy: Any = None
        self._version = 0

    def give(self) -> Any:
        """The array for the next callable: its own copy (the value itself for JAX, Dask)."""
        mode, value = self.mode, self.value
        if mode == "as_is":
            return value
        if mode == "versioned":
            copy = value.clone() if value.dtype == self.dtype \
                else self.xp.astype(value, self.dtype, copy=True)
            self._copy, self._version = copy, copy._version
            return copy
        copy = self.xp.astype(value, self.dtype, copy=True)
        if mode == "read_only":  # array_api_strict's array wraps a NumPy array
            copy._array = _private(copy._array)
        return copy

    def done(self, name: str) -> None:
        """After callable ``name`` returned: ``ValueError`` naming it where it wrote into
        its copy in place (eager PyTorch's version counter); the copy is let go (freed as
        soon as nothing else holds it, e.g. autograd), so it does not outlive the call."""
        copy, self._copy = self._copy, None
        if copy is not None and copy._version != self._version:
            raise ValueError(_wrote(name))


def callee_arg(xp: Any, value: Any, dtype: Any) -> CalleeArg:
    """The :class:`CalleeArg` of ``value`` (an argument of the kernel's callables, cast to
    ``dtype`` where it is not) for this call.

    Example:
        >>> import array_api_strict as xps
        >>> callee_arg(xps, xps.asarray([1.0]), xps.float64).mode
        'read_only'
    """
    if is_torch(value):
        import torch

        mode = "versioned" if eager(xp, (value,)) and not torch.is_inference_mode_enabled() \
            and not value.is_inference() else "fresh"
    elif not mutable(xp):
        mode = "as_is"
    elif kind(xp) == "array_api_strict" and isinstance(
            getattr(value, "_array", None), numpy.ndarray):
        mode = "read_only"
    else:
        mode = "fresh"
    return CalleeArg(xp, value, dtype, mode)


def call_xp(xp: Any, name: str, fn: Any, held: CalleeArg, shape: str, dtype: Any) -> Any:
    """Evaluate a callable argument once on the caller's library's array; check the result.

    ``fn`` receives :meth:`CalleeArg.give`'s array: its own copy where the library's
    arrays are mutable (PyTorch, CuPy, ``array_api_strict``), never the caller's array nor
    one another callable gets; an in-place write into it raises ``ValueError`` naming
    ``fn`` where it is detected (eager PyTorch, ``array_api_strict``). JAX and Dask
    arrays are passed as they are.
    """
    if not callable(fn):
        raise TypeError(f"{name}: expected a callable, got {type(fn).__name__}")
    arg = held.value
    if held.mode == "read_only":
        value = _call_read_only(name, fn, held.give())
        if hasattr(value, "_array") and not value._array.flags.writeable:
            value = xp.astype(value, dtype, copy=True)  # fn returned (a view of) the copy
    else:
        value = fn(held.give())
    held.done(name)
    if type(value) is not type(arg):
        try:
            same = array_api().array_namespace(value, arg) is not None
        except TypeError:
            same = False
        if not same:
            raise TypeError(f"{name}: expected {name}(x) to return an array of the library of "
                            f"x ({library(arg)}), got {library(value)}")
    if value.dtype != dtype:
        if value.dtype not in (xp.float32, xp.float64) and not xp.isdtype(value.dtype,
                                                                           "integral"):
            raise TypeError(f"{name}: expected {name}(x) to return real numbers, got dtype "
                            f"{value.dtype}")
        value = xp.astype(value, dtype)
    expected = tuple(arg.shape) if shape == "vector" else tuple(arg.shape) + tuple(arg.shape[-1:])
    if tuple(value.shape) != expected:
        raise ValueError(f"{name}: expected {name}(x) of shape {expected} for x of shape "
                         f"{tuple(arg.shape)}, got {tuple(value.shape)}")
    return value
