"""Eager PyTorch autograd through a kernel's derived gradient, not through its pieces.

A kernel whose exact gradient is another kernel of its module (``kl`` and ``kl_grad``, as
the derivation says: :attr:`derive.spec.Kernel.gradient`) hands both array-API bodies to
:func:`differentiable`. Where eager PyTorch would record a gradient, the value is computed
once without a graph, and the backward pass is the derived gradient kernel evaluated on the
saved inputs, times the incoming gradient -- a few operations, where autograd through the
pieces replays every piece and every ``where``. Everywhere else (no gradient needed,
``torch.compile`` and ``torch.func`` tracing, other libraries) the body runs as it is.
Plain CPU tensors run the NumPy body (or, where numba is importable, the fused body) on
views of their memory, forward and backward alike: decided in :func:`_on_views` only.

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

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy

from . import fused, pieces
from .namespaces import DERIVED, is_torch, kind
from .numpy_views import numpy_viewable, numpy_views
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
            def forward(ctx: Any, xp: Any, body: tuple[Any, ...],
                        grad_body: tuple[Any, ...], rest: tuple[Any, ...],
                        *arrays: Any) -> Any:
                ctx.save_for_backward(*arrays)
                ctx.xp, ctx.grad_body, ctx.rest = xp, grad_body, rest
                return _evaluate(xp, body[0], arrays, rest, body[1], body[2])

            @staticmethod
            def backward(ctx: Any, grad_out: Any) -> tuple[Any, ...]:
                arrays = ctx.saved_tensors
                needs = ctx.needs_input_grad[4:]
                out = None
                if not torch.is_grad_enabled():  # no double backward: no graph to record
                    out = _backward_on_views(ctx.xp, arrays, ctx.rest, ctx.grad_body[1],
                                             grad_out, needs)
                if out is None:
                    grads = _outputs(ctx.grad_body[0](ctx.xp, *arrays, *ctx.rest))
                    out = tuple((grad_out * g).sum_to_size(a.shape) if need else None
                                for a, g, need in zip(arrays, grads, needs, strict=True))
                return (None, None, None, None, *out)

        _FUNCTION.append(DerivedGradient)
    return _FUNCTION[0]


def differentiable(xp: Any, body: Callable[..., Any], grad_body: Callable[..., Any],
                   arrays: Sequence[Any], rest: tuple[Any, ...],
                   numpy_body: Callable[..., Any] | None = None,
                   fused_bodies: tuple[Callable[..., Any] | None,
                                       Callable[..., Any] | None] = (None, None)) -> Any:
    """``body(xp, *arrays, *rest)``, differentiated in eager PyTorch through ``grad_body``.

    ``grad_body(xp, *arrays, *rest)`` returns the exact gradient of the body's one output
    with respect to each of ``arrays``, element-wise (the derivation's gradient kernel).
    ``numpy_body(*arrays, *rest)``, where given (contract 2.3), is the same kernel's NumPy
    body, which CPU tensors run on NumPy views of their memory. ``fused_bodies``, where
    given (contract 2.5), are the kernel's and its gradient kernel's fused bodies (each
    None where the module has none: ``_<kernel>_fused``, NumPy float arrays in, compiled
    by numba), which CPU tensors run instead where numba is importable (see
    :func:`_numpy_route`).
    """
    if not (arrays and is_torch(arrays[0])):
        if kind(xp) == "jax":
            return _jax_derived(xp, body, grad_body, arrays, rest)
        return body(xp, *arrays, *rest)
    import torch

    if not (torch.is_grad_enabled() and any(getattr(a, "requires_grad", False) for a in arrays)
            and eager(xp, arrays)):
        return _evaluate(xp, body, arrays, rest, numpy_body, fused_bodies[0])
    return _function().apply(xp, (body, numpy_body, fused_bodies[0]),
                             (grad_body, fused_bodies[1]), rest, *arrays)


def _outputs(value: Any) -> tuple[Any, ...]:
    """A gradient kernel's outputs as a tuple: one output comes back as the array itself
    (a kernel of one argument; zipped with the arguments, its entries were taken for them).

    >>> _outputs(numpy.ones(2))[0].shape, len(_outputs((1, 2)))
    ((2,), 2)
    """
    return value if isinstance(value, tuple) else (value,)


def _jax_derived(xp: Any, body: Callable[..., Any], grad_body: Callable[..., Any],
                 arrays: Sequence[Any], rest: tuple[Any, ...]) -> Any:
    """``body(xp, *arrays, *rest)`` as a ``jax.custom_jvp`` whose tangent is the derived
    gradient (``grad_body``) dotted with the arguments' tangents: ``jax.grad``, ``jvp``
    and ``vjp`` (under ``jit`` or not) differentiate the kernel through its gradient
    kernel, a few operations, not through every piece and every ``where`` (issue 24:
    ``jit(grad(kl))`` took 7.5-7.8x the naive formula's, 1.1-1.5x this way), and the
    value's pieces need no safe points (``namespaces.DERIVED``). Higher
    derivatives differentiate ``grad_body`` itself, whose pieces keep theirs."""
    import jax
    from jax.custom_derivatives import SymbolicZero

    def value(*a: Any) -> Any:
        token = DERIVED.set(True)
        try:
            return body(xp, *a, *rest)
        finally:
            DERIVED.reset(token)

    f = jax.custom_jvp(value)

    def jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
        out = f(*primals)
        # the gradient kernel differentiated again (a Hessian) through an expm1 whose
        # derivative is exp, not expm1 + 1 (0 where expm1 rounds to -1)
        grads = _outputs(grad_body(_JaxGradient(xp), *primals, *rest))
        dot = None
        for g, t in zip(grads, tangents, strict=True):
            if isinstance(t, SymbolicZero):  # an argument not differentiated: its gradient
                continue  # may overflow, and inf * 0 is NaN
            dot = g * t if dot is None else dot + g * t
        if dot is None:
            return out, jax.numpy.zeros_like(out)
        return out, jax.numpy.broadcast_to(dot, jax.numpy.shape(out)).astype(out.dtype)

    f.defjvp(jvp, symbolic_zeros=True)
    # a Python number differentiated arrives in the rule as a float without a device
    return f(*(jax.numpy.asarray(a) for a in arrays))


class _JaxGradient:
    """The JAX namespace ``xp`` as the gradient kernel sees it inside the custom JVP: the
    same, but for an ``expm1`` whose derivative is ``exp(x)`` (:func:`_jax_expm1`)."""

    def __init__(self, xp: Any) -> None:
        self._xp = xp

    def __getattr__(self, name: str) -> Any:
        return _jax_expm1() if name == "expm1" else getattr(self._xp, name)


@functools.cache
def _jax_expm1() -> Callable[[Any], Any]:
    """``jax.numpy.expm1`` with the derivative ``exp(x)``: JAX's own is ``g (expm1(x) + 1)``,
    exactly 0 where ``expm1(x)`` rounds to -1 (x below about -37 in float64), so a second
    derivative through it lost its terms (the pair's Hessian at a scale ratio of 1e-40)."""
    import jax

    @jax.custom_jvp
    def expm1(x: Any) -> Any:
        return jax.numpy.expm1(x)

    @expm1.defjvp
    def _(primals: tuple[Any], tangents: tuple[Any]) -> tuple[Any, Any]:
        (x,), (dx,) = primals, tangents
        return jax.numpy.expm1(x), jax.numpy.exp(x) * dx

    return expm1


def _evaluate(xp: Any, body: Callable[..., Any], arrays: Sequence[Any],
              rest: tuple[Any, ...], numpy_body: Callable[..., Any] | None,
              fused_body: Callable[..., Any] | None = None) -> Any:
    """``body(xp, *arrays, *rest)``, or for CPU tensors the same kernel's fused or NumPy
    body (else ``body`` with the ``numpy`` namespace) on views of their memory
    (:func:`_on_views`), its result handed back as a tensor (``torch.from_numpy``, no
    copy)."""
    out = _on_views(xp, arrays, rest, fused_body, numpy_body or functools.partial(
        body, numpy))
    if out is None:
        return body(xp, *arrays, *rest)
    import torch

    return torch.from_numpy(numpy.asarray(out))


def _backward_on_views(xp: Any, arrays: Sequence[Any], rest: tuple[Any, ...],
                       fused_grad: Callable[..., Any] | None, grad_out: Any,
                       needs: Sequence[bool]) -> tuple[Any, ...] | None:
    """The backward pass through the gradient kernel's fused body on views of the saved
    CPU tensors (:func:`_on_views`), each gradient times ``grad_out`` by NumPy where it is
    a CPU tensor too (else by torch), summed to its argument's shape; where the incoming
    gradient is a broadcast 1 (``.sum().backward()``), a gradient that shares memory with
    no input and no other gradient is handed back as it is (no pass, no new array). None
    where the fused body does not run (the caller runs the gradient's array-API body)."""
    grads = _on_views(xp, arrays, rest, fused_grad, None)
    if grads is None:
        return None
    grads = _outputs(grads)
    import torch

    views = numpy_views([grad_out], ()) if numpy_viewable([grad_out]) else None
    incoming = None if views is None else views[0][0]
    # the incoming gradient of ``.sum().backward()``: one 1 broadcast (every stride 0)
    ones = incoming is not None and incoming.size > 0 and not any(incoming.strides) \
        and incoming.flat[0] == 1
    out: list[Any] = []
    # a gradient handed back as it is must share memory with no input and no other one
    kept: list[Any] = [a.detach().numpy() for a in arrays] if ones else []
    for a, g, need in zip(arrays, grads, needs, strict=True):
        if not need:
            out.append(None)
            continue
        g = numpy.asarray(g)
        if ones and g.shape == incoming.shape and g.dtype == incoming.dtype and not any(
                numpy.may_share_memory(g, b) for b in kept):
            t = torch.from_numpy(g)  # the body's new array, times 1: as it is
            kept.append(g)
        elif incoming is not None:  # a new array: the body's outputs are never scaled in place
            t = torch.from_numpy(numpy.asarray(numpy.multiply(g, incoming)))
        else:
            t = grad_out * torch.from_numpy(g)
        out.append(t if tuple(t.shape) == tuple(a.shape) else t.sum_to_size(a.shape))
    return tuple(out)


def _on_views(xp: Any, arrays: Sequence[Any], rest: tuple[Any, ...],
              fused_body: Callable[..., Any] | None,
              numpy_body: Callable[..., Any] | None) -> Any:
    """For CPU tensors (:func:`kernel_runtime.pieces.strategy` says ``"numpy"``; looked up
    at call time, so a test that forces a path forces this one too), a body's NumPy
    results on NumPy views of their memory; else None. The body, decided here and only
    here: the fused one (one compiled pass, each piece evaluated only on the entries that
    take it) where there is one, numba is importable
    (:func:`kernel_runtime.fused.fused_available`, looked up at call time) and every view
    is an array of the working dtype, float32 or float64, as the fused kernels take them;
    else ``numpy_body`` (the same expressions, each a NumPy call of about 1 us where a
    torch operation dispatches in about 3 us, pieces gathered where they hold, no device
    to sync); else None (the caller runs its own body).

    The fused body's first call in a process imports numba (about 1 s) and compiles its
    loop or loads it from numba's cache (``docs/performance.md``).
    """
    if fused_body is None and numpy_body is None:
        return None
    if pieces.strategy(xp, broadcast(*(tuple(getattr(a, "shape", ())) for a in arrays)),
                       arrays) != "numpy":
        return None
    views = numpy_views(arrays, rest)
    if views is None:
        return None
    args, rest_np = views
    run = numpy_body
    if fused_body is not None and fused.fused_available():
        dtype = rest_np[-1] if rest_np else None  # the working dtype, last (the template's)
        if isinstance(dtype, numpy.dtype) and dtype in _FUSED_DTYPES:
            run = fused_body
            for a in args:
                if type(a) is not numpy.ndarray or a.dtype != dtype:
                    run = numpy_body
                    break
    if run is None:
        return None
    with numpy.errstate(all="ignore"):  # torch arithmetic warns of nothing
        return run(*args, *rest_np)


#: The dtypes the fused bodies take.
_FUSED_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
