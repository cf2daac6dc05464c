"""Array namespaces and dtypes: the caller's array library, the working dtype, the device.

A kernel's arguments are resolved once per call (:func:`resolve`): NumPy arrays of one
float dtype as they are; other NumPy input (scalars, lists, integers) converted; any other
array-API library's arrays found with ``array_api_compat.array_namespace`` (cached per
array type), checked for known shapes and cast to one working dtype on the first array's
device. ``array_api_compat`` is imported on first non-NumPy use (:func:`array_api`), so
NumPy calls never pay it.

Example:
    >>> import numpy as np
    >>> xp, arrays, dtype = resolve(("mu", "sigma"), (np.zeros(2, np.float32), 1))
    >>> xp is np, dtype, [a.dtype for a in arrays]
    (True, dtype('float32'), [dtype('float32'), dtype('int64')])
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from typing import Any

import numpy

__all__ = ["array_api", "library", "is_torch", "kind", "mutable", "torch_tracing", "device",
           "resolve"]

_ndarray = numpy.ndarray
_F64, _F32 = numpy.dtype(numpy.float64), numpy.dtype(numpy.float32)


def array_api() -> Any:
    """The ``array_api_compat`` module."""
    import array_api_compat  # imported on first non-NumPy use: NumPy calls never pay it

    return array_api_compat


def library(value: Any) -> str:
    """The library and type of ``value``, for messages (``"torch.Tensor"``)."""
    kind = type(value)
    return f"{kind.__module__.split('.')[0]}.{kind.__name__}"


def is_torch(a: Any) -> bool:
    """Whether ``a`` is a PyTorch object (by its type's module: torch is never imported)."""
    return type(a).__module__.startswith("torch")


#: A namespace's ``__name__`` -> its library, as ``array_api_compat``'s ``is_*_namespace``
#: tell them apart, without their ``lru_cache`` (which ``torch.compile`` warns about).
_KINDS = {"numpy": "numpy", "array_api_compat.numpy": "numpy", "torch": "torch",
          "array_api_compat.torch": "torch", "jax.numpy": "jax",
          "jax.experimental.array_api": "jax", "dask.array": "dask",
          "array_api_compat.dask.array": "dask", "cupy": "cupy",
          "array_api_compat.cupy": "cupy", "array_api_strict": "array_api_strict"}


#: Whether the value being computed is differentiated through the kernel's derived
#: gradient, never through its pieces (``kernel_runtime.gradients``: JAX's custom JVP):
#: then a traced piece needs no safe point (no gradient flows through it).
DERIVED: contextvars.ContextVar[bool] = contextvars.ContextVar("derived", default=False)


def kind(xp: Any) -> str:
    """The library of an array namespace: ``"numpy"``, ``"torch"``, ``"jax"``, ``"dask"``,
    ``"cupy"``, ``"array_api_strict"``, or ``""`` for any other.

    Example:
        >>> kind(numpy)
        'numpy'
    """
    return _KINDS.get(getattr(xp, "__name__", ""), "")


def mutable(xp: Any) -> bool:
    """Whether the library's arrays can be written in place (JAX's and Dask's cannot)."""
    return kind(xp) not in ("jax", "dask")


def torch_tracing() -> bool:
    """Whether PyTorch is tracing now: ``torch.compile``/``torch.export``, ``torch.jit``
    tracing, or a ``torch.func`` transform (``vmap``, ``grad``); torch must be imported."""
    import torch

    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return True
    return torch._C._functorch.peek_interpreter_stack() is not None  # torch.func.vmap, grad


def device(x: Any) -> Any:
    """The device of an array (``array_api_compat.device``; a tensor's own ``device``)."""
    if is_torch(x):
        return x.device
    return array_api().device(x)


def _refuse_labelled(name: str, value: Any) -> None:
    """Refuse pandas objects: their index would be dropped and values paired by position."""
    module = type(value).__module__ or ""
    if module.split(".")[0] in ("pandas", "xarray") and hasattr(value, "index"):
        raise TypeError(
            f"{name}: got a {type(value).__name__}, whose index the kernels would ignore, "
            "pairing values by position; align the inputs first (e.g. mu, sigma = "
            f"mu.align(sigma)) and pass {name}.to_numpy()")


def _not_single_or_double(name: str, dtype: Any) -> str:
    """The error for a float dtype other than float32 and float64 (float16, bfloat16, long
    double), alike in every library: the kernels' accuracy bounds and thresholds are
    derived for float32 and float64 only."""
    return f"{name}: expected a float32, float64 or integer array, got dtype {dtype}"


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
    # by size, so a non-native byte order ('>f8') passes as the float64 it is
    if kind == "f" and array.dtype.itemsize not in (4, 8):
        raise TypeError(_not_single_or_double(name, array.dtype))
    return array


def _numpy_dtype(values: Sequence[Any], arrays: Sequence[numpy.ndarray]) -> numpy.dtype:
    """The working dtype: Python scalars stay weak; integers compute in float64."""
    return numpy.result_type(
        *(v if type(v) in (int, float) else a for v, a in zip(values, arrays, strict=True)),
        1.0)


def _same_float(values: Sequence[Any]) -> numpy.dtype | None:
    """The dtype where every value is a NumPy float64 (or every one float32) array."""
    dtype = getattr(values[0], "dtype", None)
    if dtype is not _F64 and dtype is not _F32:
        return None
    for v in values:
        if type(v) is not _ndarray or v.dtype is not dtype:
            return None
    return dtype


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
        if kind.__module__ == "torch" and kind.__name__ == "Tensor":
            # without array_namespace's lru_cache, which torch.compile warns about
            import array_api_compat.torch as torch_xp

            _NAMESPACES[kind.__qualname__ + kind.__module__] = torch_xp
            return torch_xp
    for name, value in arrays:
        _refuse_labelled(name, value)
    compat = array_api()
    try:
        xp = compat.array_namespace(*(v for _, v in arrays))
    except TypeError:
        listed = ", ".join(f"{n} ({library(v)})" for n, v in arrays)
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
            if library(value).startswith("dask."):
                raise ValueError(f"{name}: expected an array of known shape, got shape "
                                 f"{shape} (a Dask array of unknown chunk sizes); call "
                                 f"{name}.compute_chunk_sizes() first")
            raise ValueError(f"{name}: expected an array of known shape, got shape {shape}")


def resolve(names: tuple[str, ...], values: tuple[Any, ...]) -> tuple[Any, Any, Any]:
    """The namespace, the arrays and the working dtype of a kernel's array arguments.

    NumPy arrays are returned as given (cast by :func:`kernel_runtime.checks.checked` after
    the shape checks); other libraries' arrays are already in the working dtype.
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
