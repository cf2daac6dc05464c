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
  per pair (:func:`kernel_runtime.checks.values_pass`), entry by entry only where one of
  these fails.

Piecewise values: a kernel hands each to :func:`select` as data (its conditions, and each
piece as a function of its arrays with their safe points); how the pieces are selected,
per target and per call, is decided there and only there (:mod:`kernel_runtime.pieces`).

The modules, by concern:

- :mod:`kernel_runtime.fast_numpy` -- the NumPy fast path;
- :mod:`kernel_runtime.namespaces` -- array namespaces, dtypes and devices;
- :mod:`kernel_runtime.checks` -- value checks;
- :mod:`kernel_runtime.prepare` -- the general entry points (shapes);
- :mod:`kernel_runtime.callees` -- callable arguments and their copies;
- :mod:`kernel_runtime.pieces` -- piecewise values (:mod:`kernel_runtime.numpy_pieces`:
  their NumPy path);
- :mod:`kernel_runtime.polynomials` -- derived polynomials by Horner's rule;
- :mod:`kernel_runtime.fused` -- kernel loops compiled by numba (optional);
- :mod:`kernel_runtime.gradients` -- eager PyTorch autograd through a derived gradient
  (:mod:`kernel_runtime.numpy_views`: CPU tensors through the NumPy body, or the fused
  body where numba is importable);
- :mod:`kernel_runtime.outputs` -- outputs and block matrices.

The contract: this package's ``__all__``, what generated modules may use, versioned by
:data:`CONTRACT_VERSION` (``"major.minor"``). Each generated module records the version it
was generated against and, on import, refuses (``ImportError``) a runtime of another major
version or of a lower minor version. Adding a name or an optional argument raises the
minor version; removing or renaming a name, or changing what a generated module passes or
gets back, raises the major version. The package-level names are the ones generated
modules look up (at call time); how pieces are selected is decided inside
:func:`select` (tests patch :func:`kernel_runtime.pieces.strategy` to force a path).

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
    >>> CONTRACT_VERSION
    '2.6'
"""

from __future__ import annotations

from .callees import CalleeArg, call, call_xp, callee_arg
from .fast_numpy import numpy_coupling, numpy_elementwise
from .fused import fused_kernels, fused_loop
from .gradients import differentiable
from .outputs import blocks_xp, eye_xp, finish, finish_xp, full, scale_rows, scale_rows_xp
from .pieces import select, zero
from .polynomials import horner
from .prepare import broadcast, prepare_coupling, prepare_elementwise

#: The version of the contract below, ``"major.minor"``: generated modules check it on
#: import (same major version, at least their minor version).
CONTRACT_VERSION = "2.6"

#: The contract: the names generated modules use (``kernel_runtime.<name>``), then the class
#: of :func:`callee_arg`'s values and the version.
__all__ = [
    # the entry points and their NumPy fast paths
    "prepare_elementwise", "prepare_coupling", "numpy_elementwise", "numpy_coupling",
    # callable arguments
    "call", "call_xp", "callee_arg",
    # outputs and matrices
    "broadcast", "full", "finish", "finish_xp", "scale_rows", "scale_rows_xp", "eye_xp",
    "blocks_xp",
    # piecewise values
    "select", "zero",
    # eager PyTorch autograd through a derived gradient kernel (contract 2.1; its optional
    # NumPy body, which CPU tensors run: contract 2.3; its optional fused bodies, which CPU
    # tensors run where numba is importable: contract 2.5)
    "differentiable",
    # a derived polynomial by Horner's rule, in place where the library allows (contract 2.2)
    "horner",
    # loops compiled by numba, and a module's ``fused`` namespace (contract 2.4; the
    # optional float64 outputs of a loop, ``wide``: contract 2.6)
    "fused_loop", "fused_kernels",
    # what the names above take or return, and the version of them all
    "CalleeArg", "CONTRACT_VERSION",
]
