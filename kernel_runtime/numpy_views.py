"""CPU tensors as NumPy arrays: views of the same memory, for the kernels' NumPy bodies.

Eager PyTorch at a VAE's batch spends its time dispatching operations (about 3 us each,
against about 1 us for a NumPy call): where every tensor is a plain CPU tensor of float32
or float64, :func:`kernel_runtime.differentiable` runs the kernel's body (its fused body
where numba is importable) on NumPy views of their memory (no copy) and hands its result
back as a tensor (``torch.from_numpy``, no copy); :func:`kernel_runtime.pieces.strategy`
says where (``"numpy"``).

Example:
    >>> import torch
    >>> numpy_viewable([torch.ones(2), 2.0]), numpy_viewable([torch.ones(2, dtype=torch.int64)])
    (True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy

__all__ = ["numpy_viewable", "numpy_views"]

#: torch float dtypes -> NumPy dtypes, filled on first use (this package never imports
#: torch itself)
_NUMPY_DTYPES: dict[Any, Any] = {}


def numpy_viewable(arrays: Sequence[Any]) -> bool:
    """Whether every array is a plain CPU tensor of float32 or float64 (or a Python scalar)
    and no torch dispatch mode (``FakeTensorMode``, an op counter) is active."""
    import torch

    if not _NUMPY_DTYPES:
        _NUMPY_DTYPES.update({torch.float32: numpy.dtype(numpy.float32),
                              torch.float64: numpy.dtype(numpy.float64)})
    seen = False
    for a in arrays:
        if type(a) is not torch.Tensor and type(a) is not torch.nn.Parameter:
            if isinstance(a, (int, float)):
                continue
            return False
        if a.device.type != "cpu" or a.dtype not in _NUMPY_DTYPES:
            return False
        seen = True
    modes = getattr(torch._C, "_len_torch_dispatch_stack", None)  # private: may go away
    return seen and modes is not None and not modes()


def numpy_views(arrays: Sequence[Any], rest: tuple[Any, ...]
                ) -> tuple[list[Any], tuple[Any, ...]] | None:
    """NumPy views of CPU tensors (the same memory), and ``rest`` with a torch dtype made the
    NumPy dtype; None where a tensor has no such view (a conjugate or negative view).

    Example:
        >>> import torch
        >>> views, rest = numpy_views([torch.ones(2)], ((2,), torch.float32))
        >>> views[0].dtype, rest
        (dtype('float32'), ((2,), dtype('float32')))
    """
    try:
        views = [a.detach().numpy() if hasattr(a, "detach") else a for a in arrays]
    except RuntimeError:
        return None
    return views, tuple(_NUMPY_DTYPES.get(r, r) if not isinstance(r, tuple) else r
                        for r in rest)
