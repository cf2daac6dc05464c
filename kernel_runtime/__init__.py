r"""The runtime the generated kernels import: argument checks and array-library dispatch.

Every generated kernel calls :func:`prepare_elementwise` or :func:`prepare_coupling`
first. They find the caller's array library (``array_api_compat.array_namespace``), check
shapes, dtypes and -- where cheap -- values, and return the arrays in one floating dtype
with the namespace to compute in: the ``numpy`` module itself for NumPy input (the kernel
then runs its NumPy-specialized body), or an array-API namespace (PyTorch, JAX, Dask,
CuPy, ``array_api_strict``, ...), for which it runs its array-API body. Before that, a
kernel tries its NumPy fast path (:func:`numpy_elementwise`, :func:`numpy_coupling`, built
once per kernel at import): NumPy arrays of one float dtype and matching shapes are
checked as they are (same checks, same errors) and go straight to the NumPy body.

Checks:

- Shapes, dtypes and callables are always checked. They are static, so they raise at
  trace time too (``jax.jit``, ``torch.compile``).
- Value checks (NaN, infinity, entries that must be positive) follow ``check_finite``:
  ``None`` (the default) checks where values are cheap to read -- NumPy,
  ``array_api_strict`` and eager PyTorch on the CPU -- and skips them under tracing
  (``torch.compile``, ``torch.func``), for JAX, Dask and GPU arrays, where an input
  outside the domain then gives NaN or infinity; ``True`` forces them (a Dask graph is
  computed; under ``jax.jit`` it is an error); ``False`` skips them. All value checks of
  one call fold into one reduction, so there is at most one device sync per call. For
  PyTorch that reduction is a sum of squares per array (finite only where every entry
  is), tested entry by entry only where it is not. NumPy, with no device to sync, tests
  each array that must be positive by its minimum and the read arrays by one dot product
  per pair (:func:`_values_pass`), entry by entry only where one of these fails.

Piecewise values: where a call runs eagerly (:func:`eager`), a kernel evaluates each piece
but the last only on the entries where it holds (:func:`taken`, :func:`take_xp`,
:func:`put_xp`); under tracing it selects with the double where.

Example:
    >>> import numpy as np
    >>> xp, (mu, sigma), shape, dtype = prepare_elementwise(
    ...     ("mu", "sigma"), (np.zeros(3), 2), ("sigma",), ("mu", "sigma"), None)
    >>> xp is np, shape, dtype, sigma.dtype
    (True, (3,), dtype('float64'), dtype('float64'))
    >>> prepare_elementwise(("mu", "sigma"), (0.0, -1.0), ("sigma",), ("sigma",), None)
    Traceback (most recent call last):
    ...
    ValueError: sigma: expected every entry > 0, got a minimum of -1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy

__all__ = [
    "prepare_elementwise", "prepare_coupling", "call", "call_xp", "finish", "finish_xp",
    "broadcast", "full", "scale_rows", "scale_rows_xp", "eye_xp", "blocks_xp", "device",
    "numpy_elementwise", "numpy_coupling",
    "eager", "mostly", "piece_shape", "safe_where", "zeros_xp", "taken", "take_xp", "put_xp",
    "callee_arg", "CalleeArg",
]

_ndarray = numpy.ndarray
_F64, _F32 = numpy.dtype(numpy.float64), numpy.dtype(numpy.float32)
_minimum = numpy.minimum.reduce
_isfinite = math.isfinite
#: ``numpy.vdot`` without the ``__array_function__`` dispatch (a third of its cost on 1e2
#: elements): it is only given NumPy arrays
_vdot = getattr(numpy.vdot, "__wrapped__", numpy.vdot)


# --- NumPy: the fast path --------------------------------------------------------------


def _refuse_labelled(name: str, value: Any) -> None:
    """Refuse pandas objects: their index would be dropped and values paired by position."""
    module = type(value).__module__ or ""
    if module.split(".")[0] in ("pandas", "xarray") and hasattr(value, "index"):
        raise TypeError(
            f"{name}: got a {type(value).__name__}, whose index the kernels would ignore, "
            "pairing values by position; align the inputs first (e.g. mu, sigma = "
            f"mu.align(sigma)) and pass {name}.to_numpy()")


def _as_numpy(name: str, value: Any) -> numpy.ndarray:
    """``value`` as a real NumPy array, or an error naming ``name``."""
    if type(value) is _ndarray:
        array = value
    else:
        _refuse_labelled(name, value)
        try:
            array = numpy.asarray(value)
        except (ValueError, TypeError) as error:
            raise TypeError(f"{name}: expected a real numeric array, got a "
                            f"{type(value).__name__} that is not one ({error})") from None
    kind = array.dtype.kind
    if kind not in "iuf":
        raise TypeError(f"{name}: expected a real numeric array, got dtype {array.dtype}")
    if kind == "f" and array.dtype != _F64 and array.dtype != _F32:
        raise TypeError(_not_single_or_double(name, array.dtype))
    return array


def _not_single_or_double(name: str, dtype: Any) -> str:
    """The error for a float dtype other than float32 and float64 (float16, bfloat16, long
    double), alike in every library: the kernels' accuracy bounds and thresholds are
    derived for float32 and float64 only."""
    return f"{name}: expected a float32, float64 or integer array, got dtype {dtype}"


def _numpy_dtype(values: Sequence[Any], arrays: Sequence[numpy.ndarray]) -> numpy.dtype:
    """The working dtype: Python scalars stay weak; integers compute in float64."""
    return numpy.result_type(
        *(v if type(v) in (int, float) else a for v, a in zip(values, arrays, strict=True)),
        1.0)


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


def _non_finite_numpy(names: Sequence[str], arrays: Sequence[numpy.ndarray]) -> str | None:
    """The name of the first array with a NaN or an infinity, or None (exact, per array)."""
    for name, a in zip(names, arrays, strict=True):
        if a.dtype.kind == "f" and not numpy.isfinite(a).all():
            return name
    return None


def _value_checks(names: Sequence[str], positive: Sequence[str],
                  read: Sequence[str]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The indices of the arrays that must be positive, and of those whose values are read.

    Example:
        >>> _value_checks(("mu", "sigma", "eps"), ("sigma",), ("mu", "sigma"))
        ((1,), (0, 1))
    """
    return (tuple(i for i, name in enumerate(names) if name in positive),
            tuple(i for i, name in enumerate(names) if name in read))


def _refuse_minimum(name: str, a: numpy.ndarray) -> None:
    """Raise ValueError for an array with a NaN or an entry <= 0 (its minimum named)."""
    low = _minimum(a, axis=None)  # NaN propagates
    if low != low:
        raise ValueError(f"{name}: expected finite values, got NaN or infinity")
    raise ValueError(f"{name}: expected every entry > 0, got a minimum of {low}")


def _check_values(names: Sequence[str], arrays: Sequence[numpy.ndarray],
                  positive: tuple[int, ...], read: tuple[int, ...]) -> None:
    """Raise ValueError naming the first argument with a value outside its domain.

    ``positive`` and ``read`` index ``arrays`` (:func:`_value_checks`); the read arrays are
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
    (dot products two at a time, as :func:`_check_values` says)."""
    finite = True
    pending = None
    for i in read:
        a = arrays[i]
        if not a.flags.c_contiguous:  # vdot flattens a C-contiguous array without a copy
            if not a.flags.f_contiguous:
                finite = False  # strided: tested entry by entry below
                break
            a = a.ravel(order="K")  # a view: no copy
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


def _refuse_non_finite(names: Sequence[str], arrays: Sequence[numpy.ndarray],
                       read: tuple[int, ...]) -> None:
    """Raise ValueError naming the first read array with a NaN or an infinity, if any."""
    bad = _non_finite_numpy([names[i] for i in read], [arrays[i] for i in read])
    if bad is not None:
        raise ValueError(f"{bad}: expected finite values, got NaN or infinity")


def _pairs(*groups: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """The read arrays two by two within each group of equal-size arrays (the last alone
    paired with itself).

    Example:
        >>> _pairs((0, 1, 2), (3,))
        ((0, 1), (2, 2), (3, 3))
    """
    return tuple((g[j], g[min(j + 1, len(g) - 1)]) for g in groups for j in range(0, len(g), 2))


def _values_pass(values: Sequence[numpy.ndarray], positive: tuple[int, ...],
                 pairs: tuple[tuple[int, int], ...]) -> bool:
    """Whether every value passes the checks of :func:`_check_values`, tested in bulk.

    ``positive`` indexes the arrays that must be positive, each tested by its minimum
    (``argmin`` stops at the first NaN, so NaN, -inf and entries <= 0 fail); ``pairs``
    (:func:`_pairs` of the read arrays, each pair of one size) are tested by one dot product
    per pair, finite only when every entry of both arrays is (an infinity times zero is
    NaN). True means every check passes; False means one may fail (or no entries, or
    products beyond ~1e308), and :func:`_check_values` then says which and why. Any layout
    works: ``argmin`` indexes the C-order flattening that ``item`` reads, and ``vdot``
    flattens (a copy only where an array is not C-contiguous).

    Example:
        >>> a, b = numpy.ones(3), numpy.array([1.0, numpy.inf, 2.0])
        >>> _values_pass((a, b), (0,), ((0, 0),)), _values_pass((a, b), (), ((0, 1),))
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
        if not _isfinite(_vdot(values[i], values[j])):  # vdot, unlike dot, never warns
            return False
    return True


def _check_numpy(names: Sequence[str], arrays: Sequence[numpy.ndarray],
                 positive: Sequence[str], read: Sequence[str]) -> None:
    """Raise ValueError naming the first argument with a value outside its domain
    (:func:`_check_values` by argument names; integer arrays are finite)."""
    positive_at, read_at = _value_checks(names, positive, read)
    _check_values(names, arrays, positive_at,
                  tuple(i for i in read_at if arrays[i].dtype.kind == "f"))


def numpy_elementwise(names: tuple[str, ...], positive: tuple[str, ...],
                      read: tuple[str, ...]) -> Callable[..., Any]:
    """An element-wise kernel's NumPy fast path, built once per kernel at import.

    The function returned takes the array arguments and ``check_finite`` and returns
    ``(shape, dtype)`` where they are NumPy arrays of one float dtype (float64 or float32)
    whose shapes broadcast, after the value checks :func:`prepare_elementwise` makes
    (same errors); for any other input it returns None, and the kernel calls
    :func:`prepare_elementwise`.

    Example:
        >>> fast = numpy_elementwise(("mu", "sigma"), ("sigma",), ("mu", "sigma"))
        >>> fast((numpy.zeros(3), numpy.ones((2, 1))), None)
        ((2, 3), dtype('float64'))
        >>> fast((numpy.zeros(3), 1.0), None) is None
        True
    """
    positive_at, read_at = _value_checks(names, positive, read)
    pairs = _pairs(read_at)

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
                _check_values(names, values, positive_at, read_at)
        elif check_finite is not False and not _values_pass(values, positive_at, pairs):
            _check_values(names, values, positive_at, read_at)
        return shape, dtype

    return fast


def numpy_coupling(vectors: tuple[str, ...], params: tuple[str, ...],
                   read: tuple[str, ...]) -> Callable[..., Any]:
    """A coupling kernel's NumPy fast path, built once per kernel at import.

    The function returned takes the array arguments (vectors, then parameters) and
    ``check_finite`` and returns ``(batch, n, dtype)`` where they are NumPy arrays of one
    float dtype, the vectors of one shape ``(..., n)`` with ``n >= 1`` and the parameters
    of shape ``(n,)``, after the value checks :func:`prepare_coupling` makes (same
    errors); for any other input it returns None, and the kernel calls
    :func:`prepare_coupling`.

    Example:
        >>> fast = numpy_coupling(("x1", "x2"), ("s",), ("x1", "x2", "s"))
        >>> fast((numpy.zeros((4, 2)), numpy.zeros((4, 2)), numpy.ones(2)), None)
        ((4,), 2, dtype('float64'))
        >>> fast((numpy.zeros((4, 2)), numpy.zeros((3, 2)), numpy.ones(2)), None) is None
        True
    """
    names = vectors + params
    positive_at, read_at = _value_checks(names, (), read)
    k = len(vectors)
    pairs = _pairs(tuple(i for i in read_at if i < k), tuple(i for i in read_at if i >= k))

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
        for a in values[k:]:
            if type(a) is not _ndarray or a.dtype is not dtype or a.shape != param:
                return None
        if check_finite is not False and not _values_pass(values, positive_at, pairs):
            _check_values(names, values, positive_at, read_at)
        return shape[:-1], n, dtype

    return fast


def _same_float(values: Sequence[Any]) -> numpy.dtype | None:
    """The dtype where every value is a NumPy float64 (or every one float32) array."""
    dtype = getattr(values[0], "dtype", None)
    if dtype is not _F64 and dtype is not _F32:
        return None
    for v in values:
        if type(v) is not _ndarray or v.dtype is not dtype:
            return None
    return dtype


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


def scale_rows(coef: Any, matrix: numpy.ndarray) -> numpy.ndarray:
    """``diag(coef) @ matrix`` without forming ``diag(coef)`` (NumPy)."""
    coef = numpy.asarray(coef)
    return coef[..., :, None] * matrix if coef.ndim else coef * matrix


# --- array-API libraries ----------------------------------------------------------------


def _compat() -> Any:
    import array_api_compat  # imported on first non-NumPy use: NumPy calls never pay it

    return array_api_compat


def _library(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__.split('.')[0]}.{kind.__name__}"


def _namespace(names: Sequence[str], values: Sequence[Any]) -> Any:
    """The array namespace of the arguments; TypeError naming them where libraries mix."""
    arrays = [(n, v) for n, v in zip(names, values, strict=True)
              if not isinstance(v, int | float | list | tuple)]
    if not arrays:
        return numpy
    kind = type(arrays[0][1])
    if all(type(v) is kind for _, v in arrays):
        cached = _NAMESPACES.get(kind.__qualname__ + kind.__module__)
        if cached is not None:  # the namespace of one array type is fixed
            return cached
    for name, value in arrays:
        _refuse_labelled(name, value)
    compat = _compat()
    try:
        xp = compat.array_namespace(*(v for _, v in arrays))
    except TypeError:
        listed = ", ".join(f"{n} ({_library(v)})" for n, v in arrays)
        raise TypeError(f"{', '.join(n for n, _ in arrays)}: expected arrays of one array "
                        f"library, got {listed}") from None
    xp = numpy if compat.is_numpy_namespace(xp) else xp
    if all(type(v) is kind for _, v in arrays) and not compat.is_array_api_strict_namespace(xp):
        _NAMESPACES[kind.__qualname__ + kind.__module__] = xp
    return xp


#: array type (by name) -> namespace, for calls whose arrays are all of one type
_NAMESPACES: dict[str, Any] = {}
_DTYPES: dict[tuple[Any, ...], Any] = {}


def _xp_dtype(xp: Any, names: Sequence[str], values: Sequence[Any]) -> Any:
    """The working dtype (cached per namespace and input dtypes); errors name the argument."""
    key = (xp.__name__, *(getattr(v, "dtype", type(v)) for v in values))
    cached = _DTYPES.get(key)
    if cached is not None:
        return cached
    floats = []
    for name, value in zip(names, values, strict=True):
        dtype = getattr(value, "dtype", None)
        if dtype is None:
            continue
        if dtype in (xp.float32, xp.float64):
            floats.append(dtype)
        elif dtype == xp.bool or not xp.isdtype(dtype, "integral"):
            raise TypeError(_not_single_or_double(name, dtype))
    if floats:
        result = xp.float64 if xp.float64 in floats else xp.float32
    else:  # integers only: float64 chosen explicitly, not the library's default float
        supported = xp.__array_namespace_info__().dtypes(kind="real floating")
        result = xp.float64 if "float64" in supported else xp.float32
    _DTYPES[key] = result
    return result


def device(x: Any) -> Any:
    """The device of an array (``array_api_compat.device``)."""
    return _compat().device(x)


def _checks_values(xp: Any, arrays: Sequence[Any], check_finite: bool | None) -> bool:
    """Whether value checks run: ``check_finite`` if given, else where they are cheap."""
    if check_finite is not None:
        return bool(check_finite)
    compat = _compat()
    if compat.is_array_api_strict_namespace(xp):
        return True
    if compat.is_torch_namespace(xp):
        import torch

        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return False
        if torch._C._functorch.peek_interpreter_stack() is not None:  # torch.func.vmap, grad
            return False
        return all(a.device.type == "cpu" for a in arrays)
    return False  # JAX (traced or asynchronous), Dask (lazy), CuPy and others (a device)


def _passes_torch(names: Sequence[str], arrays: Sequence[Any], positive: Sequence[str],
                  read: Sequence[str]) -> bool:
    """Whether every read torch tensor is finite and every positive one > 0: one sync.

    As :func:`_check_numpy`: the sum of the squares of a contiguous float tensor
    (``torch.dot`` of its flat view, one BLAS pass, ~10x cheaper than ``isfinite``) is
    finite only when every entry is; a positive tensor's minimum (NaN propagates) must be
    > 0. False (then :func:`_check_xp` tests entry by entry and names the argument) where
    a sum is not finite -- a NaN, an infinity, or entries beyond ~1e154 (~1e19 in float32)
    -- and for non-contiguous tensors. Computed on detached tensors: nothing joins the
    autograd graph.
    """
    import torch

    total = None
    lows = []
    for name, a in zip(names, arrays, strict=True):
        if name not in read and name not in positive:
            continue
        if not a.dtype.is_floating_point or not a.is_contiguous():
            return False
        flat = a.detach().reshape(-1)
        if name in positive and flat.numel():
            lows.append(torch.amin(flat))
        if name in read:
            square = torch.dot(flat, flat)
            total = square if total is None else total + square
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
    if _compat().is_torch_namespace(xp) and _passes_torch(names, arrays, positive, read):
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


def _as_xp(xp: Any, values: Sequence[Any], dtype: Any, like: Any) -> list[Any]:
    """Every value in ``dtype`` on ``like``'s device; Python scalars and lists converted."""
    out = []
    dev = None
    for v in values:
        if not hasattr(v, "dtype"):
            if dev is None:
                dev = device(like)
            v = xp.asarray(v, dtype=dtype, device=dev)
        elif v.dtype != dtype:
            v = xp.astype(v, dtype)
        out.append(v)
    return out


def _refuse_unknown_shapes(names: Sequence[str], values: Sequence[Any]) -> None:
    """ValueError naming the first array with a dimension of unknown size (a Dask array
    of unknown chunk sizes has ``nan`` there, the array API ``None``): its shapes cannot
    be checked, so it is refused, saying what to do, before anything is computed.

    Example:
        >>> import dask.array as da
        >>> x = da.arange(4.0)[da.arange(4) > 1]
        >>> _refuse_unknown_shapes(("mu",), (x,))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: mu: ... got shape (nan,) ...; call mu.compute_chunk_sizes() first
    """
    for name, value in zip(names, values, strict=True):
        shape = getattr(value, "shape", ())
        if any(d is None or isinstance(d, float) for d in shape):  # not torch's SymInt
            shape = tuple(shape)
            if _library(value).startswith("dask."):
                raise ValueError(f"{name}: expected an array of known shape, got shape "
                                 f"{shape} (a Dask array of unknown chunk sizes); call "
                                 f"{name}.compute_chunk_sizes() first")
            raise ValueError(f"{name}: expected an array of known shape, got shape {shape}")


def _resolve(names: tuple[str, ...], values: tuple[Any, ...]) -> tuple[Any, Any, Any]:
    """The namespace, the arrays and the working dtype of a kernel's array arguments.

    NumPy arrays are returned as given (cast by :func:`_checked` after the shape checks);
    other libraries' arrays are already in the working dtype.
    """
    dtype = _same_float(values)
    if dtype is not None:  # the fast path: NumPy arrays of one float dtype
        return numpy, values, dtype
    xp = _namespace(names, values)
    if xp is numpy:
        arrays = [_as_numpy(n, v) for n, v in zip(names, values, strict=True)]
        return numpy, arrays, _numpy_dtype(values, arrays)
    _refuse_unknown_shapes(names, values)
    dtype = _xp_dtype(xp, names, values)
    like = next(v for v in values if hasattr(v, "dtype"))
    return xp, _as_xp(xp, values, dtype, like), dtype


def _checked(xp: Any, names: tuple[str, ...], values: tuple[Any, ...], arrays: Any,
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


# --- the entry points -------------------------------------------------------------------


def prepare_elementwise(
    names: tuple[str, ...], values: tuple[Any, ...], positive: tuple[str, ...],
    read: tuple[str, ...], check_finite: bool | None,
) -> tuple[Any, list[Any], tuple[int, ...], Any]:
    """Check the arguments of an element-wise kernel (any broadcastable shapes).

    Returns ``(xp, arrays, shape, dtype)``: the namespace (``numpy`` for NumPy input), the
    arrays in the working dtype, their broadcast shape and the dtype.
    """
    xp, arrays, dtype = _resolve(names, values)
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
        return numpy, _checked(xp, names, values, arrays, dtype, positive, read,
                               check_finite), shape, dtype
    try:
        shape = broadcast(*(tuple(a.shape) for a in arrays))
    except ValueError:
        listed = ", ".join(f"{n} {tuple(a.shape)}" for n, a in zip(names, arrays, strict=True))
        raise ValueError(f"{', '.join(names)}: shapes do not broadcast: {listed}") from None
    return xp, _checked(xp, names, values, arrays, dtype, positive, read, check_finite), \
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
) -> tuple[Any, list[Any], tuple[int, ...], int, Any]:
    """Check the arguments of a coupling kernel: vectors ``(..., n)``, parameters ``(n,)``.

    Returns ``(xp, arrays, batch, n, dtype)``: the namespace (``numpy`` for NumPy input),
    the arrays (vectors, then parameters) in the working dtype, the broadcast batch shape,
    ``n`` and the dtype.
    """
    names = vectors + params
    values = vector_values + param_values
    xp, arrays, dtype = _resolve(names, values)
    shapes = [a.shape for a in arrays] if xp is numpy else [tuple(a.shape) for a in arrays]
    k = len(vectors)
    first = shapes[0]
    n = first[-1] if first else 0
    same = n > 0 and all(shape == first for shape in shapes[1:k]) and all(
        shape == (n,) for shape in shapes[k:])
    batch = first[:-1] if same else _coupling_shapes(vectors, params, shapes)
    return xp, _checked(xp, names, values, arrays, dtype, (), read, check_finite), batch, n, \
        dtype


def _mutable(xp: Any) -> bool:
    """Whether the library's arrays can be written in place (JAX's and Dask's cannot)."""
    compat = _compat()
    return not (compat.is_jax_namespace(xp) or compat.is_dask_namespace(xp))


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


def _wrote(name: str) -> str:
    return (f"{name}: expected {name} to leave its argument unchanged ({name} must not "
            f"modify its argument in place), but {name}(x) wrote into x; compute out of "
            f"place (x * 2, not x *= 2). The caller's arrays are unchanged ({name} never "
            f"gets them)")


def callee_arg(xp: Any, value: Any, dtype: Any) -> CalleeArg:
    """The :class:`CalleeArg` of ``value`` (an argument of the kernel's callables, cast to
    ``dtype`` where it is not) for this call.

    Example:
        >>> import array_api_strict as xps
        >>> callee_arg(xps, xps.asarray([1.0]), xps.float64).mode
        'read_only'
    """
    if _is_torch(value):
        import torch

        mode = "versioned" if eager(xp, (value,)) and not torch.is_inference_mode_enabled() \
            and not value.is_inference() else "fresh"
    elif not _mutable(xp):
        mode = "as_is"
    elif _compat().is_array_api_strict_namespace(xp) and isinstance(
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
            same = _compat().array_namespace(value, arg) is not None
        except TypeError:
            same = False
        if not same:
            raise TypeError(f"{name}: expected {name}(x) to return an array of the library of "
                            f"x ({_library(arg)}), got {_library(value)}")
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
        if _mutable(xp):
            return xp.astype(value, dtype, copy=True)
        if fresh and _compat().is_dask_namespace(xp):
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



# --- piecewise values evaluated eagerly ---------------------------------------------------


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
    compat = _compat()
    if compat.is_torch_namespace(xp):
        import torch

        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return False
        if torch._C._functorch.peek_interpreter_stack() is not None:  # torch.func.vmap, grad
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
    if _is_torch(mask):
        import torch

        return 2 * int(torch.count_nonzero(mask)) > mask.numel()
    return 2 * int(xp.sum(xp.astype(mask, xp.int64))) > math.prod(mask.shape)


def piece_shape(*arrays: Any) -> tuple[int, ...]:
    """The broadcast shape of the arrays (a Python scalar counts as 0-d).

    Example:
        >>> piece_shape(numpy.zeros((2, 1)), numpy.zeros(3), 1.0)
        (2, 3)
    """
    return broadcast(*(tuple(getattr(a, "shape", ())) for a in arrays))


def _is_torch(a: Any) -> bool:
    return type(a).__module__.startswith("torch")


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
    if _is_torch(source):
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
    if _is_torch(out):
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
    if _is_torch(mask):
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
    if _is_torch(a):
        import torch

        return torch.index_select(a.reshape(-1), 0, where[0])
    return xp.take(xp.reshape(a, (-1,)), where[0])


def put_xp(xp: Any, out: Any, where: tuple[Any, Any], values: Any) -> Any:
    """``out`` with ``values`` written at :func:`taken`'s entries.

    ``out`` is the kernel's own full-shape array (from :func:`finish_xp`), so it is written
    in place -- except in PyTorch where either side needs a gradient: there the write is
    out of place (``index_copy``), so no tensor autograd saved is modified, and the gradient
    reaches ``values`` at the written entries and ``out`` elsewhere.
    """
    index, mask = where
    if tuple(getattr(values, "shape", ())) != tuple(index.shape):
        values = xp.broadcast_to(values, tuple(index.shape))  # a constant piece
    if _is_torch(out):
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
