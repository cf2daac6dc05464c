"""The fused path: each kernel's element function compiled by numba, an optional extra.

A generated module whose kernels have element functions (``codegen.fused_backend``)
holds, besides its kernels, a namespace ``fused`` (:func:`fused_kernels`) with the same
kernels, arguments and errors: NumPy arrays of one float dtype (float32 or float64) are
checked by the kernel's NumPy fast path (the same checks, the same messages) and then run
through the kernel's loop, compiled by numba (:func:`fused_loop`): one pass over the
entries, each piece evaluated only where it is taken; every other input (other
libraries, integers, lists, keyword arguments) goes to the kernel itself.

numba is imported on the first call of a fused kernel, never on import: without it that
call raises ImportError naming the extra (``pip install 'derive-engine[fast]'``). Each
loop is compiled on its first call with each dtype (see ``docs/performance.md`` for the
cost) and cached by numba (``cache=True``: in the ``__pycache__`` folder beside the
generated module, or under ``NUMBA_CACHE_DIR`` where that folder is not writable; numba's
own files only), so a later process loads it in about 10 ms (after importing numba).

Example:
    >>> def twice(a, out):
    ...     for i in range(out.size):
    ...         out[i] = 2 * a[i]
    >>> f = fused_loop(twice, 1, 1)
    >>> f.inputs, f.outputs
    (1, 1)
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy

__all__ = ["FusedLoop", "fused_loop", "fused_kernels", "fused_available", "EXTRA"]

_empty = numpy.empty
_float64 = numpy.dtype(numpy.float64)
_broadcast_to = numpy.broadcast_to

#: How a user installs numba for the fused path.
EXTRA = "pip install 'derive-engine[fast]' (or pip install numba)"


@functools.cache
def fused_available() -> bool:
    """Whether numba can be imported (the fused kernels run), tried once.

    Example:
        >>> isinstance(fused_available(), bool)
        True
    """
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


class FusedLoop:
    """A generated loop over flat arrays -- ``inputs`` arrays read, then ``outputs`` arrays
    written, entry by entry -- compiled by numba on its first call for each dtype
    (``error_model="numpy"``: IEEE arithmetic, no Python exception on a division by zero;
    no fast-math, so every operation rounds as printed).

    Called with the broadcast shape, the dtype and ``inputs`` NumPy arrays of that dtype
    whose shapes broadcast to it, it returns the ``outputs`` new arrays of that shape and
    dtype (one array, or a tuple of them; float64 for the outputs whose indices are in
    ``wide``: values a later step reads at the precision the loop computed them). Inputs
    of the full shape are read in place (a view, or one copy where they are not
    C-contiguous); the others are broadcast and copied first.

    Example:
        >>> def add(a, b, out):
        ...     for i in range(out.size):
        ...         out[i] = a[i] + b[i]
        >>> loop = FusedLoop(add, 2, 1)
        >>> loop.inputs, loop.outputs, loop
        (2, 1, <fused loop add, not compiled yet>)
    """

    def __init__(self, loop: Callable[..., None], inputs: int, outputs: int,
                 wide: tuple[int, ...] = ()) -> None:
        self.loop = loop
        self.inputs = inputs
        self.outputs = outputs
        self.wide = wide
        self._compiled: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "compiled" if self._compiled is not None else "not compiled yet"
        return f"<fused loop {self.loop.__qualname__}, {state}>"

    def compile(self) -> Any:
        """The numba dispatcher of the loop (ImportError without numba)."""
        with self._lock:
            if self._compiled is None:
                if not fused_available():
                    raise ImportError(f"{self.loop.__module__}.fused needs numba: {EXTRA}")
                self._compiled = _njit(self.loop)
        return self._compiled

    def __call__(self, shape: tuple[int, ...], dtype: numpy.dtype, *arrays: Any) -> Any:
        compiled = self._compiled
        if compiled is None:
            compiled = self.compile()
        flat = [a.ravel() if a.shape == shape else _broadcast_to(a, shape).ravel()
                for a in arrays]
        if self.outputs == 1 and not self.wide:  # the common case, without the lists
            out = _empty(shape, dtype)
            compiled(*flat, out.reshape(-1))
            return out
        outs = tuple(_empty(shape, _float64 if k in self.wide else dtype)
                     for k in range(self.outputs))
        if self.outputs == 1:
            compiled(*flat, outs[0].reshape(-1))
            return outs[0]
        compiled(*flat, *[o.reshape(-1) for o in outs])
        return outs


def fused_loop(loop: Callable[..., None], inputs: int, outputs: int,
               wide: tuple[int, ...] = ()) -> FusedLoop:
    """``loop`` (a generated module's ``_<kernel>_loop``), to be compiled on first use:
    :class:`FusedLoop`.

    Example:
        >>> def half(a, out):
        ...     for i in range(out.size):
        ...         out[i] = a[i] / 2
        >>> fused_loop(half, 1, 1)
        <fused loop half, not compiled yet>
    """
    return FusedLoop(loop, inputs, outputs, wide)


def fused_kernels(module: str, kernels: tuple[tuple[str, Callable[..., Any],
                                                     Callable[..., Any], Callable[..., Any]],
                                               ...]) -> SimpleNamespace:
    """A module's ``fused`` namespace: for each ``(name, kernel, numpy_args, body)``, a
    function ``name`` with ``kernel``'s arguments that sends NumPy float arrays through
    ``numpy_args`` (the kernel's NumPy fast path: its checks) to ``body`` (the fused
    body), and anything else to ``kernel``. It raises ImportError without numba.

    Example:
        >>> def kl(mu, *, check_finite=None):
        ...     '''The kernel.'''
        ...     return mu
        >>> ns = fused_kernels("m", (("kl", kl, lambda a, c: None, None),))
        >>> ns.kl.__name__, ns.kl.__doc__.splitlines()[-1]
        ('kl', 'The kernel.')
    """
    functions = {}
    for name, kernel, numpy_args, body in kernels:
        # the positional arguments the fast path checks (a kernel's own, before the ``*``)
        functions[name] = _fused_kernel(module, name, kernel, numpy_args, body)
    return SimpleNamespace(**functions)


def _values_ok(positive: int, *arrays: Any) -> bool:
    """Whether every entry of the flat ``arrays`` is finite, and > 0 in the first
    ``positive`` of them (compiled by numba: one call for every array of a kernel)."""
    ok = True
    k = 0
    for a in literal_unroll(arrays):  # noqa: F821 (numba's, bound when compiled)
        if k < positive:
            for i in range(a.size):
                x = a[i]
                ok &= (x > 0) & (x < math.inf)
        else:
            for i in range(a.size):
                ok &= abs(a[i]) < math.inf
        k += 1
    return ok


_checks: list[Any] = []


def _compiled_checks() -> Any:
    """:func:`_values_ok` compiled, once."""
    if not _checks:
        import numba

        _values_ok.__globals__["literal_unroll"] = numba.literal_unroll
        _checks.append(_njit(_values_ok))
    return _checks[0]


def _njit(function: Callable[..., Any]) -> Any:
    """``function`` for numba to compile on first call: IEEE arithmetic
    (``error_model="numpy"``), no fast-math, cached where numba finds a writable folder
    (beside the module, or its user-wide or ``NUMBA_CACHE_DIR`` folder); not cached where
    it finds none."""
    import numba

    try:
        return numba.njit(cache=True, error_model="numpy")(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(error_model="numpy")(function)


def _fused_kernel(module: str, name: str, kernel: Callable[..., Any],
                  numpy_args: Callable[..., Any], body: Callable[..., Any]) -> Callable[..., Any]:
    arity = sum(p.kind is p.POSITIONAL_OR_KEYWORD
                for p in inspect.signature(kernel).parameters.values())
    # the fast path's value checks, as one compiled pass per array (where every entry
    # passes; else the fast path's own checks raise its errors)
    positive_at = tuple(getattr(numpy_args, "positive_at", ()))
    finite_at = tuple(i for i in getattr(numpy_args, "read_at", ()) if i not in positive_at)
    own_checks = hasattr(numpy_args, "read_at")
    order, npos = positive_at + finite_at, len(positive_at)

    @functools.wraps(kernel)
    def run(*args: Any, check_finite: bool | None = None, **kwargs: Any) -> Any:
        if not fused_available():
            raise ImportError(f"{module}.fused.{name} needs numba: {EXTRA}")
        if kwargs or len(args) != arity:
            return kernel(*args, check_finite=check_finite, **kwargs)
        if not own_checks:
            fast = numpy_args(args, check_finite)
        else:
            fast = numpy_args(args, False)  # shapes and dtypes
            if fast is not None and check_finite is not False:
                values_ok = _checks[0] if _checks else _compiled_checks()
                if not values_ok(npos, *[args[i].ravel() for i in order]):
                    numpy_args(args, True)  # raises the kernel's error
        if fast is None:
            return kernel(*args, check_finite=check_finite)
        return body(*args, *fast)

    run.__qualname__ = f"fused.{name}"
    run.__doc__ = (f"{module}.{name} through its numba-compiled loops for NumPy float32 and "
                   f"float64 arrays (kernel_runtime.fused); the same arguments, checks and "
                   f"errors, and {name} itself for any other input.\n\n"
                   + (kernel.__doc__ or ""))
    return run
