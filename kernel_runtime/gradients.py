"""Eager PyTorch autograd through a kernel's derived gradient, not through its pieces.

A kernel whose exact gradient is another kernel of its module (``kl`` and ``kl_grad``, as
the derivation says: :attr:`derive.spec.Kernel.gradient`) hands both array-API bodies to
:func:`differentiable`. Where eager PyTorch would record a gradient, the value is computed
once without a graph, and the backward pass is the derived gradient kernel evaluated on the
saved inputs, times the incoming gradient -- a few operations, where autograd through the
pieces replays every piece and every ``where``. Everywhere else (no gradient needed,
``torch.compile`` and ``torch.func`` tracing, other libraries) the body runs as it is.

Example:
    >>> import torch
    >>> def body(xp, a, _batch, _dtype):
    ...     return a * a
    >>> def grad(xp, a, _batch, _dtype):
    ...     return (2 * a,)
    >>> a = torch.tensor([1.0, 3.0], requires_grad=True)
    >>> differentiable(torch, body, grad, (a,), ((2,), torch.float32)).sum().backward()
    >>> a.grad
    tensor([2., 6.])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import pieces
from .namespaces import is_torch
from .numpy_views import numpy_views
from .pieces import eager
from .prepare import broadcast

__all__ = ["differentiable"]

_FUNCTION: list[Any] = []  # the autograd.Function class, made once torch is in use


def _function() -> Any:
    """The ``torch.autograd.Function`` that evaluates a body and differentiates through its
    gradient body (built on first use: this package never imports torch itself)."""
    if not _FUNCTION:
        import torch

        class DerivedGradient(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, xp: Any, body: Callable[..., Any],
                        grad_body: Callable[..., Any], rest: tuple[Any, ...],
                        *arrays: Any) -> Any:
                ctx.save_for_backward(*arrays)
                ctx.xp, ctx.grad_body, ctx.rest = xp, grad_body, rest
                return _evaluate(xp, body[0], arrays, rest, body[1])

            @staticmethod
            def backward(ctx: Any, grad_out: Any) -> tuple[Any, ...]:
                arrays = ctx.saved_tensors
                grads = ctx.grad_body(ctx.xp, *arrays, *ctx.rest)
                out = tuple((grad_out * g).sum_to_size(a.shape) if need else None
                            for a, g, need in zip(arrays, grads, ctx.needs_input_grad[4:],
                                                  strict=True))
                return (None, None, None, None, *out)

        _FUNCTION.append(DerivedGradient)
    return _FUNCTION[0]


def differentiable(xp: Any, body: Callable[..., Any], grad_body: Callable[..., Any],
                   arrays: Sequence[Any], rest: tuple[Any, ...],
                   numpy_body: Callable[..., Any] | None = None) -> Any:
    """``body(xp, *arrays, *rest)``, differentiated in eager PyTorch through ``grad_body``.

    ``grad_body(xp, *arrays, *rest)`` returns the exact gradient of the body's one output
    with respect to each of ``arrays``, element-wise (the derivation's gradient kernel).
    ``numpy_body(*arrays, *rest)``, where given (contract 2.3), is the same kernel's NumPy
    body, which CPU tensors run on NumPy views of their memory.
    """
    if not (arrays and is_torch(arrays[0])):
        return body(xp, *arrays, *rest)
    import torch

    if not (torch.is_grad_enabled() and any(getattr(a, "requires_grad", False) for a in arrays)
            and eager(xp, arrays)):
        return _evaluate(xp, body, arrays, rest, numpy_body)
    return _function().apply(xp, (body, numpy_body), grad_body, rest, *arrays)


def _evaluate(xp: Any, body: Callable[..., Any], arrays: Sequence[Any],
              rest: tuple[Any, ...], numpy_body: Callable[..., Any] | None) -> Any:
    """``body(xp, *arrays, *rest)``; for CPU tensors (:func:`kernel_runtime.pieces.strategy`
    says ``"numpy"``; looked up at call time, so a test that forces a path forces this one
    too) the NumPy body (else ``body`` with the ``numpy`` namespace) runs on NumPy views of
    their memory and its result is handed back as a tensor (``torch.from_numpy``, no copy):
    the same expressions, each a NumPy call of about 1 us where a torch operation
    dispatches in about 3 us, and pieces gathered where they hold with no device to sync."""
    if pieces.strategy(xp, broadcast(*(tuple(getattr(a, "shape", ())) for a in arrays)),
                arrays) == "numpy":
        views = numpy_views(arrays, rest)
        if views is not None:
            import numpy
            import torch

            with numpy.errstate(all="ignore"):  # torch arithmetic warns of nothing
                out = numpy_body(*views[0], *views[1]) if numpy_body is not None else \
                    body(numpy, *views[0], *views[1])
            return torch.from_numpy(numpy.asarray(out))
    return body(xp, *arrays, *rest)
