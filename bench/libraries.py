"""Comparison 5: per-call overhead at small batches, and the kernels in PyTorch and JAX.

- ``overhead``: NumPy at a flow's 16 x 8 batch and a VAE's 128 x 32 latents: the
  generated kernel (default checks, and ``check_finite=False``), its NumPy body called
  directly (the same arithmetic, no checks, no dispatch) and the hand-written NumPy of
  :mod:`bench.handwritten`; the per-call overhead is generated minus body (the median
  over round-robin rounds of the two samples' difference).
- ``torch``: generated (default checks, and ``check_finite=False``) ÷ hand-written, both
  in PyTorch eager (float64, CPU, the bench's one thread, ``MKL_ENABLE_INSTRUCTIONS=AVX2``);
  for the coupling kernels also ÷ the hand-written formula with the same promise (F and G
  never get the caller's tensor: one clone per callable);
- ``jax``: the same under ``jax.jit`` (float64, CPU; every function compiled before
  timing, every call timed to ``block_until_ready``).
- ``torch_kl``: ``torch.distributions.kl_divergence(Normal(mu, sigma), Normal(0, 1))``
  against our ``kl``, eager and under ``torch.compile`` (with the warnings compiling
  printed, and the eager call's device syncs), on the same float32 tensors, on
  "posterior collapse" data (sigma within 1% of 1 in 90% of the dimensions) and on wide
  data (log sigma ~ N(-0.5, 1)), with each one's largest relative error against float64.

The hand-written forms are :mod:`bench.handwritten_xp`: the straightforward formulas
typed in per library, and for the KL kernels also derivation 2.3n's arrangement typed in
(``where`` over the pieces; in torch eager also mask and patch), a comparison at equal
accuracy. All contenders of a row are timed round-robin in one loop
(:func:`bench.timing.compare`), and each baseline is first checked against the generated
kernel's values.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import warnings
from collections.abc import Callable

import numpy as np

from . import handwritten, handwritten_xp
from .autodiff import import_torch
from .timing import compare

__all__ = ["run", "OVERHEAD_SHAPES"]

#: From this many elements up, rows take ``large_repeats`` samples (each one call).
LARGE = 10**7

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


#: Samples per overhead row at least: the rows are cheap, and the overhead is a small
#: difference of two times, so it needs more samples than a ratio does.
OVERHEAD_REPEATS = 15


def _paired_difference(a, b) -> float:
    """The median over round-robin rounds of ``a``'s sample minus ``b``'s sample of the
    same round: a difference that drift between rounds (another process) does not reach."""
    return float(np.median(np.subtract(a.samples, b.samples)))


def _overhead(repeats: int, min_sample: float, log: Callable[[str], None]) -> list[dict]:
    rows = []
    for label, batch, n in OVERHEAD_SHAPES:
        for module, kernel, args, base in _numpy_cases(batch, n):
            fn = _gen(module, kernel)
            t = compare({"generated": lambda f=fn, a=args: f(*a),
                         "no check": lambda f=fn, a=args: f(*a, check_finite=False),
                         "body": _body_call(module, kernel, args),
                         "hand-written": lambda b=base, a=args: b(*a)},
                        repeats=max(repeats, OVERHEAD_REPEATS), min_sample=min_sample)
            gen, raw, body, hand = (t[k].median for k in
                                    ("generated", "no check", "body", "hand-written"))
            overhead = _paired_difference(t["generated"], t["body"])
            rows.append({"shape": label, "module": module, "kernel": kernel,
                         "elements": batch * n, "generated": gen, "no_check": raw,
                         "body": body, "hand": hand, "overhead": overhead,
                         "overhead_no_check": _paired_difference(t["no check"], t["body"]),
                         "ratio": gen / hand})
            log(f"  numpy {module}.{kernel} @ {label}: generated {gen * 1e6:.1f} us "
                f"(no check {raw * 1e6:.1f}), its body {body * 1e6:.1f} us, hand-written "
                f"{hand * 1e6:.1f} us, overhead {overhead * 1e6:.1f} us")
    return rows


def _library_cases(asarray, elements: int) -> list[tuple[str, str, tuple]]:
    """(module, kernel, args) in one library: the coupling block (n = 8, F = tanh,
    G = sin) and the KL kernels (``log sigma ~ N(-0.5, 1)``, every piece exercised)."""
    rng = np.random.default_rng(1)
    n = 8
    batch = max(1, elements // n)
    x1, x2 = (asarray(a) for a in rng.standard_normal((2, batch, n)))
    s = asarray(0.1 * rng.standard_normal(n))
    mu = asarray(rng.standard_normal(elements))
    log_sigma = -0.5 + rng.standard_normal(elements)
    sigma, logvar = asarray(np.exp(log_sigma)), asarray(2 * log_sigma)
    return [(module, kernel, (x1, x2, s) if module == "coupling" else
             (mu, sigma) if module == "gaussian_kl" else (mu, logvar))
            for module, kernel in handwritten_xp.CASES]


def _agrees(library: str, module: str, kernel: str, results: dict[str, object],
            log: Callable[[str], None]) -> bool:
    """Whether every baseline gives the generated kernel's values (else a WARNING)."""
    ok = True
    ours = results.pop("generated")
    ours = ours if isinstance(ours, tuple) else (ours,)
    for label, value in results.items():
        value = value if isinstance(value, tuple) else (value,)
        same = len(value) == len(ours) and all(
            np.shape(u) == np.shape(v) and np.allclose(np.asarray(u), np.asarray(v),
                                                        rtol=1e-7, atol=1e-9)
            for u, v in zip(ours, value, strict=True))
        if not same:
            log(f"WARNING: {library} {module}.{kernel} disagrees with its {label} baseline")
            ok = False
    return ok


def _torch(sizes: list[int], repeats: int, min_sample: float,
           log: Callable[[str], None], large_repeats: int | None = None) -> list[dict]:
    torch = import_torch()  # MKL limited to AVX2; the bench's thread count (1)
    rows = []
    checked: dict[tuple[str, str], bool] = {}
    for elements in sizes:
        for module, kernel, arrays in _library_cases(torch.asarray, elements):
            fn = _gen(module, kernel)
            naive, same = handwritten_xp.CASES[module, kernel]
            patch = handwritten_xp.MASK_PATCH_TORCH.get((module, kernel))
            args = arrays + ((torch.tanh, torch.sin) if module == "coupling" else ())
            fns: dict[str, Callable[[], object]] = {
                "generated": lambda f=fn, a=args: f(*a),
                "no check": lambda f=fn, a=args: f(*a, check_finite=False),
                "hand-written": lambda b=naive, a=args: b(torch, torch.clone, *a)}
            promise = handwritten_xp.SAME_PROMISE.get((module, kernel))
            if promise is not None:
                fns["same promise"] = lambda b=promise, a=args: b(torch, torch.clone, *a)
            if same is not None:
                fns["same, where"] = lambda b=same, a=args: b(torch, torch.clone, *a)
            if patch is not None:
                fns["same, mask and patch"] = lambda b=patch, a=args: b(torch, *a)
            if (module, kernel) not in checked:
                checked[module, kernel] = _agrees(
                    "torch", module, kernel,
                    {k: v() for k, v in fns.items() if k != "no check"}, log)
            t = compare(fns, repeats=_repeats(elements, repeats, large_repeats),
                        min_sample=min_sample)
            rows.append(_ratio_row("torch eager", module, kernel, elements, t,
                                   checked[module, kernel]))
            _log_ratio("torch", rows[-1], log)
    return rows


def _jax(sizes: list[int], repeats: int, min_sample: float,
         log: Callable[[str], None], large_repeats: int | None = None) -> list[dict]:
    import jax

    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    rows = []
    checked: dict[tuple[str, str], bool] = {}
    for elements in sizes:
        for module, kernel, arrays in _library_cases(jnp.asarray, elements):
            fn = _gen(module, kernel)
            naive, same = handwritten_xp.CASES[module, kernel]
            extra = (jnp.tanh, jnp.sin) if module == "coupling" else ()
            jitted = {
                "generated": jax.jit(lambda *a, f=fn, c=extra: f(*a, *c)),
                "no check": jax.jit(lambda *a, f=fn, c=extra: f(*a, *c, check_finite=False)),
                "hand-written": jax.jit(
                    lambda *a, b=naive, c=extra: b(jnp, _identity, *a, *c))}
            if same is not None:
                jitted["same, where"] = jax.jit(
                    lambda *a, b=same, c=extra: b(jnp, _identity, *a, *c))
            values = {k: jax.block_until_ready(g(*arrays)) for k, g in jitted.items()}
            if (module, kernel) not in checked:  # compiled above, before any timing
                values.pop("no check")
                checked[module, kernel] = _agrees("jax", module, kernel, values, log)
            t = compare({k: lambda g=g, a=arrays: jax.block_until_ready(g(*a))
                         for k, g in jitted.items()},
                        repeats=_repeats(elements, repeats, large_repeats), min_sample=min_sample)
            rows.append(_ratio_row("jax.jit", module, kernel, elements, t,
                                   checked[module, kernel]))
            _log_ratio("jax.jit", rows[-1], log)
    return rows


def _repeats(elements: int, repeats: int, large_repeats: int | None) -> int:
    """Fewer samples at 1e7 elements and above, where one call lasts up to seconds."""
    return large_repeats if large_repeats and elements >= LARGE else repeats


def _identity(x):
    return x


def _ratio_row(library: str, module: str, kernel: str, elements: int, t: dict,
               agrees: bool) -> dict:
    """Medians and ratios of one row. ``same``: the faster of the typed-in forms of the
    same arrangement (``where``; in torch eager also mask and patch)."""
    gen, raw, hand = (t[k].median for k in ("generated", "no check", "hand-written"))
    row = {"library": library, "module": module, "kernel": kernel, "elements": elements,
           "generated": gen, "no_check": raw, "hand": hand, "ratio": gen / hand,
           "ratio_no_check": raw / hand, "agrees": agrees}
    if "same promise" in t:  # the coupling kernels in torch eager: one clone per callable
        row["promise"] = t["same promise"].median
        row["ratio_promise"] = gen / row["promise"]
        row["ratio_promise_no_check"] = raw / row["promise"]
    forms = {k: t[k].median for k in ("same, where", "same, mask and patch") if k in t}
    if forms:
        row["same_where"] = forms["same, where"]
        if "same, mask and patch" in forms:
            row["same_mask_patch"] = forms["same, mask and patch"]
        row["same"] = min(forms.values())
        row["ratio_same"] = gen / row["same"]
        row["ratio_same_no_check"] = raw / row["same"]
    return row


def _log_ratio(library: str, row: dict, log: Callable[[str], None]) -> None:
    text = (f"  {library} {row['module']}.{row['kernel']} @ {row['elements']:.0e}: ratio "
            f"{row['ratio']:.2f} (no check {row['ratio_no_check']:.2f})")
    if "ratio_promise" in row:
        text += (f", vs same promise {row['ratio_promise']:.2f} "
                 f"(no check {row['ratio_promise_no_check']:.2f})")
    if "ratio_same" in row:
        text += (f", vs same arrangement {row['ratio_same']:.2f} "
                 f"(no check {row['ratio_same_no_check']:.2f})")
    log(text)


def _torch_kl(elements: int, repeats: int, min_sample: float,
              log: Callable[[str], None]) -> list[dict]:
    torch = import_torch()
    from torch.distributions import Normal, kl_divergence

    kl = _gen("gaussian_kl", "kl")
    rng = np.random.default_rng(2)
    mu = 0.1 * rng.standard_normal(elements)
    wide = np.exp(-0.5 + rng.standard_normal(elements))
    collapsed = np.where(rng.random(elements) < 0.9, 1 + 0.01 * rng.uniform(-1, 1, elements),
                         wide)
    rows = []
    compiled = torch.compile(kl)  # traced: the double where (kernel_runtime.pieces)
    for label, sigma in (("collapsed", collapsed), ("wide", wide)):
        m32, s32 = (torch.asarray(a, dtype=torch.float32) for a in (mu, sigma))
        prior = Normal(torch.zeros((), dtype=torch.float32), torch.ones((), dtype=torch.float32))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compiled(m32, s32)  # compiled before timing
        t = compare({"ours": lambda a=m32, b=s32: kl(a, b),
                     "torch.compile": lambda a=m32, b=s32: compiled(a, b),
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
                     "compiled": t["torch.compile"].median,
                     "ratio_compiled": t["torch.compile"].median
                     / t["torch.distributions"].median,
                     "compile_warnings": len(caught),
                     "syncs": _syncs(torch, lambda a=m32, b=s32: kl(a, b)),
                     "syncs_no_check": _syncs(
                         torch, lambda a=m32, b=s32: kl(a, b, check_finite=False)),
                     "error_ours": worst(ours), "error_torch": worst(theirs)})
        log(f"  torch kl ({label}) @ {elements:.0e}: ours / torch.distributions "
            f"{rows[-1]['ratio']:.2f}, compiled {rows[-1]['ratio_compiled']:.2f} "
            f"({len(caught)} warnings); syncs per call {rows[-1]['syncs']} "
            f"({rows[-1]['syncs_no_check']} unchecked); worst relative error "
            f"{rows[-1]['error_ours']:.1e} vs "
            f"{rows[-1]['error_torch']:.1e}")
    return rows


def _syncs(torch, call: Callable[[], object]) -> int:
    """Device syncs of one call: host reads of values (``item``, ``tolist``, ``bool``,
    ``int``, ``float``) and ``nonzero``, counted once each."""
    from torch.utils._python_dispatch import TorchDispatchMode

    found: list[str] = []
    inside: list[int] = []

    class Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in ("nonzero", "_local_scalar_dense") \
                    and not inside:
                found.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    saved = {}
    for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
        saved[name] = real = getattr(torch.Tensor, name)

        def wrapper(self, *a, _real=real, _name=name, **k):
            if not inside:
                found.append(_name)
            inside.append(1)
            try:
                return _real(self, *a, **k)
            finally:
                inside.pop()

        setattr(torch.Tensor, name, wrapper)
    try:
        with Mode():
            call()
    finally:
        for name, real in saved.items():
            setattr(torch.Tensor, name, real)
    return len(found)


def run(sizes: list[int], repeats: int, min_sample: float,
        log: Callable[[str], None] = print,
        large_repeats: int | None = None) -> dict[str, object]:
    """Every part whose library is importable; the others are skipped with a note.
    ``large_repeats``: the samples per row from 1e7 elements up (default ``repeats``)."""
    results: dict[str, object] = {"overhead": _overhead(repeats, min_sample, log)}
    for name, part in (("torch", _torch), ("jax", _jax)):
        if importlib.util.find_spec(name) is None:  # not imported: torch needs MKL set first
            log(f"note: {name} is not installed; its rows are skipped")
            continue
        results[name] = part(sizes, repeats, min_sample, log, large_repeats)
        if name == "torch":
            results["torch_threads"] = importlib.import_module("torch").get_num_threads()
        else:
            results["jax_version"] = importlib.import_module("jax").__version__
    if "torch" in results:
        results["torch_kl"] = _torch_kl(
            max(sizes), _repeats(max(sizes), repeats, large_repeats), min_sample, log)
    return results
