r"""Coupling layers typed in by hand in PyTorch: the reference the generated kernels replace.

Each entry of :data:`HANDWRITTEN` has the generated modules' signature
(``forward``, ``inverse``, ``log_det_jacobian``, each ``(a, b, s, F, G)``), written from
the block's equations in PROBLEM.md, not from anything the engine printed. A flow built on
one of these and a flow built on ``generated/<block>.py`` must train identically
(``tests/test_examples.py``); a block without an entry here simply has no hand-written
twin (the drop-in test skips it, saying so).

Example:
    >>> import torch
    >>> layer = HANDWRITTEN["coupling"]
    >>> x1, x2, s = torch.tensor([[0.5]]), torch.tensor([[0.2]]), torch.tensor([0.1])
    >>> y1, y2 = layer.forward(x1, x2, s, torch.tanh, torch.sin)
    >>> back = layer.inverse(y1, y2, s, torch.tanh, torch.sin)
    >>> bool(torch.allclose(back[0], x1) and torch.allclose(back[1], x2))
    True
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

__all__ = ["HANDWRITTEN"]

Fn = Callable[[Tensor], Tensor]


# --- question 1's block: y1 = exp(G(x2)) * x1 + F(x2), y2 = exp(s) * x2 -----------------

def _coupling_forward(x1: Tensor, x2: Tensor, s: Tensor, F: Fn, G: Fn) -> Any:
    return torch.exp(G(x2)) * x1 + F(x2), torch.exp(s) * x2


def _coupling_inverse(y1: Tensor, y2: Tensor, s: Tensor, F: Fn, G: Fn) -> Any:
    x2 = y2 * torch.exp(-s)
    return (y1 - F(x2)) * torch.exp(-G(x2)), x2


def _coupling_log_det(x1: Tensor, x2: Tensor, s: Tensor, F: Fn, G: Fn) -> Any:
    return G(x2).sum(-1) + s.sum()


# --- RealNVP: y1 = exp(G(x2)) * x1 + F(x2), y2 = x2 ---------------------------------------

def _affine_forward(x1: Tensor, x2: Tensor, s: Tensor, F: Fn, G: Fn) -> Any:
    return torch.exp(G(x2)) * x1 + F(x2), x2.clone()


def _affine_inverse(y1: Tensor, y2: Tensor, s: Tensor, F: Fn, G: Fn) -> Any:
    return (y1 - F(y2)) * torch.exp(-G(y2)), y2.clone()


def _affine_log_det(x1: Tensor, x2: Tensor, s: Tensor, F: Fn, G: Fn) -> Any:
    return G(x2).sum(-1)


# --- NICE: y1 = x1 + F(x2), y2 = x2 -----------------------------------------------------

def _additive_forward(x1: Tensor, x2: Tensor, s: Tensor, F: Fn, G: Fn) -> Any:
    return x1 + F(x2), x2.clone()


def _additive_inverse(y1: Tensor, y2: Tensor, s: Tensor, F: Fn, G: Fn) -> Any:
    return y1 - F(y2), y2.clone()


def _additive_log_det(x1: Tensor, x2: Tensor, s: Tensor, F: Fn, G: Fn) -> Any:
    return x2.new_zeros(x2.shape[:-1])


# --- Glow: y1 = sigmoid(G(x2) + 2) * x1 + F(x2), y2 = x2 (openai/glow's ``scale``) ---------

def _glow_forward(x1: Tensor, x2: Tensor, s: Tensor, F: Fn, G: Fn) -> Any:
    return torch.sigmoid(G(x2) + 2) * x1 + F(x2), x2.clone()


def _glow_inverse(y1: Tensor, y2: Tensor, s: Tensor, F: Fn, G: Fn) -> Any:
    return (y1 - F(y2)) / torch.sigmoid(G(y2) + 2), y2.clone()


def _glow_log_det(x1: Tensor, x2: Tensor, s: Tensor, F: Fn, G: Fn) -> Any:
    return torch.nn.functional.logsigmoid(G(x2) + 2).sum(-1)


# --- FrEIA's soft clamp: y1 = exp(c 2/pi atan(G(x2)/c)) * x1 + F(x2), y2 = x2, c = 2 ----

_CLAMP = 2.0


def _soft_clamp(g: Tensor) -> Tensor:
    return _CLAMP * (2 / torch.pi) * torch.atan(g / _CLAMP)


def _soft_clamp_forward(x1: Tensor, x2: Tensor, s: Tensor, F: Fn, G: Fn) -> Any:
    return torch.exp(_soft_clamp(G(x2))) * x1 + F(x2), x2.clone()


def _soft_clamp_inverse(y1: Tensor, y2: Tensor, s: Tensor, F: Fn, G: Fn) -> Any:
    return (y1 - F(y2)) * torch.exp(-_soft_clamp(G(y2))), y2.clone()


def _soft_clamp_log_det(x1: Tensor, x2: Tensor, s: Tensor, F: Fn, G: Fn) -> Any:
    return _soft_clamp(G(x2)).sum(-1)


#: Hand-written twins of the shipped blocks, by block name.
HANDWRITTEN: dict[str, SimpleNamespace] = {
    "coupling": SimpleNamespace(forward=_coupling_forward, inverse=_coupling_inverse,
                                log_det_jacobian=_coupling_log_det),
    "coupling_affine": SimpleNamespace(forward=_affine_forward, inverse=_affine_inverse,
                                       log_det_jacobian=_affine_log_det),
    "coupling_additive": SimpleNamespace(forward=_additive_forward, inverse=_additive_inverse,
                                         log_det_jacobian=_additive_log_det),
    "coupling_glow": SimpleNamespace(forward=_glow_forward, inverse=_glow_inverse,
                                     log_det_jacobian=_glow_log_det),
    "coupling_soft_clamp": SimpleNamespace(forward=_soft_clamp_forward,
                                           inverse=_soft_clamp_inverse,
                                           log_det_jacobian=_soft_clamp_log_det),
}
