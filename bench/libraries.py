"""Comparison 5: per-call overhead at small batches, and the kernels in PyTorch and JAX.

- ``overhead``: NumPy at a flow's 16 x 8 batch and a VAE's 128 x 32 latents: the
  generated kernel (default checks, and ``check_finite=False``), its NumPy body called
  directly (the same arithmetic, no checks, no dispatch) and the hand-written NumPy of
  :mod:`bench.handwritten`; the per-call overhead is generated minus body.
- ``torch``: generated ÷ hand-written, both in PyTorch eager (float64, CPU).
- ``jax``: generated ÷ hand-written, both under ``jax.jit`` (float64, CPU).
- ``torch_kl``: ``torch.distributions.kl_divergence(Normal(mu, sigma), Normal(0, 1))``
  against our ``kl`` on the same float32 tensors, on "posterior collapse" data (sigma
  within 1% of 1 in 90% of the dimensions) and on wide data (log sigma ~ N(-0.5, 1)),
  with each one's largest relative error against float64.

The hand-written forms are the straightforward formulas, typed in per library (not the
floating-point arrangement of derivation 2.3n), as in :mod:`bench.handwritten`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

import numpy as np

from . import handwritten
from .timing import compare

__all__ = ["run", "OVERHEAD_SHAPES"]

#: (label, batch, n): a coupling flow's small batch, and a VAE's batch of latents
OVERHEAD_SHAPES = (("16x8", 16, 8), ("128x32", 128, 32))


def _gen(module: str, kernel: str) -> Callable:
    return getattr(importlib.import_module(f"generated.{module}"), kernel)


def _numpy_cases(batch: int, n: int) -> list[tuple[str, str, tuple, Callable]]:
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((2, batch, n))
    s = 0.1 * rng.standard_normal(n)
    mu = rng.standard_normal((batch, n))
    sigma = np.exp(-0.5 + rng.standard_normal((batch, n)))
    return [
        ("coupling", "log_det_jacobian", (x1, x2, s, np.tanh, np.sin),
         handwritten.log_det_jacobian),
        ("coupling", "forward", (x1, x2, s, np.tanh, np.sin), handwritten.forward),
        ("gaussian_kl", "kl", (mu, sigma), handwritten.kl),
        ("gaussian_kl", "kl_grad", (mu, sigma), handwritten.kl_grad),
        ("gaussian_kl_logvar", "kl", (mu, 2 * np.log(sigma)),
         handwritten.BASELINES[("gaussian_kl_logvar", "kl")]),
    ]


def _body_call(module: str, kernel: str, args: tuple) -> Callable[[], object]:
    """The kernel's NumPy body on the same (already valid) arguments: its arithmetic
    without the checks and dispatch of the public function."""
    fn = _gen(module, kernel)
    body = _gen(module, f"_{kernel}_numpy")
    given = dict(zip(inspect.signature(fn).parameters, args, strict=False))
    names = [p for p in inspect.signature(body).parameters if not p.startswith("_")]
    arrays = [given[p] for p in names if not callable(given[p])]
    if module == "coupling":
        shape = (arrays[0].shape[:-1], arrays[0].shape[-1], arrays[0].dtype)
    else:
        shape = (np.broadcast_shapes(*(a.shape for a in arrays)), arrays[0].dtype)
    values = [given[p] for p in names]
    return lambda: body(*values, *shape)


def _overhead(repeats: int, min_sample: float, log: Callable[[str], None]) -> list[dict]:
    rows = []
    for label, batch, n in OVERHEAD_SHAPES:
        for module, kernel, args, base in _numpy_cases(batch, n):
            fn = _gen(module, kernel)
            t = compare({"generated": lambda f=fn, a=args: f(*a),
                         "no check": lambda f=fn, a=args: f(*a, check_finite=False),
                         "body": _body_call(module, kernel, args),
                         "hand-written": lambda b=base, a=args: b(*a)},
                        repeats=repeats, min_sample=min_sample)
            gen, raw, body, hand = (t[k].median for k in
                                    ("generated", "no check", "body", "hand-written"))
            rows.append({"shape": label, "module": module, "kernel": kernel,
                         "elements": batch * n, "generated": gen, "no_check": raw,
                         "body": body, "hand": hand, "overhead": gen - body,
                         "ratio": gen / hand})
            log(f"  numpy {module}.{kernel} @ {label}: generated {gen * 1e6:.1f} us "
                f"(no check {raw * 1e6:.1f}), its body {body * 1e6:.1f} us, hand-written "
                f"{hand * 1e6:.1f} us, overhead {(gen - body) * 1e6:.1f} us")
    return rows


def _library_cases(xp, asarray, elements: int):
    """(module, kernel, args, hand-written) with the straightforward formulas in ``xp``."""
    rng = np.random.default_rng(1)
    n = 8
    batch = max(1, elements // n)
    x1, x2 = (asarray(a) for a in rng.standard_normal((2, batch, n)))
    s = asarray(0.1 * rng.standard_normal(n))
    mu = asarray(rng.standard_normal(elements))
    log_sigma = -0.5 + rng.standard_normal(elements)
    sigma, logvar = asarray(np.exp(log_sigma)), asarray(2 * log_sigma)
    return [
        ("coupling", "log_det_jacobian", (x1, x2, s, xp.tanh, xp.sin),
         lambda a, b, c, F, G: xp.sum(G(b), axis=-1) + xp.sum(c)),
        ("coupling", "forward", (x1, x2, s, xp.tanh, xp.sin),
         lambda a, b, c, F, G: (xp.exp(G(b)) * a + F(b), xp.exp(c) * b)),
        ("gaussian_kl", "kl", (mu, sigma),
         lambda m, sg: 0.5 * (m**2 + sg**2 - xp.log(sg**2) - 1)),
        ("gaussian_kl_logvar", "kl", (mu, logvar),
         lambda m, lv: 0.5 * (m**2 + xp.exp(lv) - lv - 1)),
    ]


def _torch(sizes: list[int], repeats: int, min_sample: float,
           log: Callable[[str], None]) -> list[dict]:
    import torch

    rows = []
    for elements in sizes:
        for module, kernel, args, base in _library_cases(torch, torch.asarray, elements):
            fn = _gen(module, kernel)
            t = compare({"generated": lambda f=fn, a=args: f(*a),
                         "hand-written": lambda b=base, a=args: b(*a)},
                        repeats=repeats, min_sample=min_sample)
            rows.append(_ratio_row("torch eager", module, kernel, elements, t))
            log(f"  torch {module}.{kernel} @ {elements:.0e}: ratio {rows[-1]['ratio']:.2f}")
    return rows


def _jax(sizes: list[int], repeats: int, min_sample: float,
         log: Callable[[str], None]) -> list[dict]:
    import jax

    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    rows = []
    for elements in sizes:
        for module, kernel, args, base in _library_cases(jnp, jnp.asarray, elements):
            arrays = [a for a in args if not callable(a)]
            fns = [a for a in args if callable(a)]
            fn = _gen(module, kernel)
            gen = jax.jit(lambda *a, f=fn, c=fns: f(*a, *c))
            hand = jax.jit(lambda *a, b=base, c=fns: b(*a, *c))
            t = compare({"generated": lambda g=gen, a=arrays: jax.block_until_ready(g(*a)),
                         "hand-written": lambda h=hand, a=arrays: jax.block_until_ready(h(*a))},
                        repeats=repeats, min_sample=min_sample)
            rows.append(_ratio_row("jax.jit", module, kernel, elements, t))
            log(f"  jax.jit {module}.{kernel} @ {elements:.0e}: ratio {rows[-1]['ratio']:.2f}")
    return rows


def _ratio_row(library: str, module: str, kernel: str, elements: int, t: dict) -> dict:
    gen, hand = t["generated"].median, t["hand-written"].median
    return {"library": library, "module": module, "kernel": kernel, "elements": elements,
            "generated": gen, "hand": hand, "ratio": gen / hand}


def _torch_kl(elements: int, repeats: int, min_sample: float,
              log: Callable[[str], None]) -> list[dict]:
    import torch
    from torch.distributions import Normal, kl_divergence

    kl = _gen("gaussian_kl", "kl")
    rng = np.random.default_rng(2)
    mu = 0.1 * rng.standard_normal(elements)
    wide = np.exp(-0.5 + rng.standard_normal(elements))
    collapsed = np.where(rng.random(elements) < 0.9, 1 + 0.01 * rng.uniform(-1, 1, elements),
                         wide)
    rows = []
    for label, sigma in (("collapsed", collapsed), ("wide", wide)):
        m32, s32 = (torch.asarray(a, dtype=torch.float32) for a in (mu, sigma))
        prior = Normal(torch.zeros((), dtype=torch.float32), torch.ones((), dtype=torch.float32))
        t = compare({"ours": lambda a=m32, b=s32: kl(a, b),
                     "torch.distributions": lambda a=m32, b=s32, p=prior:
                         kl_divergence(Normal(a, b), p)},
                    repeats=repeats, min_sample=min_sample)
        exact = kl(m32.double().numpy(), s32.double().numpy())  # float64, same inputs
        nonzero = exact != 0

        def worst(value, exact=exact, nonzero=nonzero):
            v = value.double().numpy()
            return float(np.max(np.abs(v - exact)[nonzero] / np.abs(exact[nonzero])))

        ours, theirs = kl(m32, s32), kl_divergence(Normal(m32, s32), prior)
        rows.append({"data": label, "elements": elements,
                     "ours": t["ours"].median, "torch": t["torch.distributions"].median,
                     "ratio": t["ours"].median / t["torch.distributions"].median,
                     "error_ours": worst(ours), "error_torch": worst(theirs)})
        log(f"  torch kl ({label}) @ {elements:.0e}: ours / torch.distributions "
            f"{rows[-1]['ratio']:.2f}; worst relative error {rows[-1]['error_ours']:.1e} vs "
            f"{rows[-1]['error_torch']:.1e}")
    return rows


def run(sizes: list[int], repeats: int, min_sample: float,
        log: Callable[[str], None] = print) -> dict[str, object]:
    """Every part whose library is importable; the others are skipped with a note."""
    results: dict[str, object] = {"overhead": _overhead(repeats, min_sample, log)}
    for name, part in (("torch", _torch), ("jax", _jax)):
        try:
            importlib.import_module(name)
        except ImportError:
            log(f"note: {name} is not installed; its rows are skipped")
            continue
        results[name] = part(sizes, repeats, min_sample, log)
    if "torch" in results:
        results["torch_kl"] = _torch_kl(max(sizes), repeats, min_sample, log)
    return results
