r"""Code-generation targets as values: one config per target names its printer and templates.

Following SymForce's ``codegen_config``: a :class:`Backend` is a small frozen dataclass --
the target's name, its printer class, the lowering that prints a target-free plan
(:mod:`codegen.plan`) for it, and the template that lays out one kernel body. A
generated module holds, for each kernel, a public function (argument checks through
:mod:`kernel_runtime`, then dispatch on the caller's array library) and one body per
backend in :data:`BACKENDS`, all printed from the same plan. Adding a target is adding a
value to that tuple, not an ``if`` in the renderer.

Example:
    >>> [b.name for b in BACKENDS]
    ['numpy', 'xp', 'fused']
    >>> import sympy as sp
    >>> [b.printer().doprint(sp.exp(sp.Symbol("a"))) for b in BACKENDS]
    ['numpy.exp(a)', 'xp.exp(a)', 'math.exp(a)']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kernel_runtime
from derive.spec import Module

from .environment import environment
from .fused_backend import FusedPrinter, lower_fused
from .numpy_backend import KernelPrinter, lower_numpy
from .plan import KernelPlan, plan_entry, plan_kernel
from .xp_backend import XpPrinter, lower_xp

__all__ = ["Backend", "NUMPY", "ARRAY_API", "FUSED", "BACKENDS", "RuntimeContract",
           "runtime_contract", "render_module", "render_numpy"]


@dataclass(frozen=True)
class Backend:
    """One target of the generated modules.

    Arguments:
        name: the suffix of each kernel's body function (``_<kernel>_<name>``).
        printer: the class printing right-hand sides.
        lower: prints a plan for this target (a dict the template lays out), or None where
            the target has no body for that kernel.
        template: the jinja2 template of one kernel body.
        namespace: the body's first parameter, the array namespace ("" for none).
        dispatch: whether the kernel's public function calls this body (False: the
            module reaches it through a namespace named ``name``, built by
            ``kernel_runtime.<name>_kernels``).
        imports: the modules a module with such a body imports.
        note: a paragraph for the module's docstring where it has such a body.
    """

    name: str
    printer: type[KernelPrinter]
    lower: Callable[[KernelPlan, Any], dict[str, Any] | None]
    template: str
    namespace: str = ""
    dispatch: bool = True
    imports: tuple[str, ...] = ()
    note: str = ""


#: NumPy, specialized: in-place block assembly, pieces patched with ``take``/``put``.
NUMPY = Backend("numpy", KernelPrinter, lower_numpy, "body_numpy.py.jinja")
#: Any array-API library (PyTorch, JAX, Dask, CuPy, array_api_strict), through ``xp``.
ARRAY_API = Backend("xp", XpPrinter, lower_xp, "body_xp.py.jinja", namespace="xp")
#: One loop per element-wise kernel, compiled by numba where it is installed,
#: behind the module's ``fused`` namespace (:mod:`codegen.fused_backend`).
FUSED = Backend(
    "fused", FusedPrinter, lower_fused, "body_fused.py.jinja", dispatch=False,
    imports=("math",),
    note="For NumPy float32 and float64 arrays, ``fused.<kernel>`` runs the same kernel as one "
         "loop compiled by numba, each piece evaluated only where it is taken "
         "(an optional extra: pip install 'derive-engine[fast]'; kernel_runtime.fused).")
#: The bodies a generated kernel has (where the target lowers it), in the order written.
BACKENDS: tuple[Backend, ...] = (NUMPY, ARRAY_API, FUSED)


@dataclass(frozen=True)
class RuntimeContract:
    """The ``kernel_runtime`` contract a generated module is written against, and checks on
    import: a runtime of the same ``major`` version and at least this ``minor`` version.

    Arguments:
        version: ``"major.minor"``, as ``kernel_runtime.CONTRACT_VERSION``.
        major: the major version (a runtime of another major version is refused).
        minor: the minor version (a runtime of a lower minor version is refused).
    """

    version: str
    major: int
    minor: int


def runtime_contract(version: str = kernel_runtime.CONTRACT_VERSION) -> RuntimeContract:
    """The contract of ``version`` (by default the runtime's own, at generate time).

    Example:
        >>> runtime_contract("1.2")
        RuntimeContract(version='1.2', major=1, minor=2)
    """
    major, dot, minor = version.partition(".")
    if not (dot and major.isdigit() and minor.isdigit()):
        raise ValueError(f"expected a contract version 'major.minor', got {version!r}")
    return RuntimeContract(version, int(major), int(minor))


def render_module(module: Module, command: str,
                  backends: tuple[Backend, ...] = BACKENDS) -> str:
    """The source of ``generated/<module.name>.py``.

    Arguments:
        module: the module specification.
        command: the command that regenerates the file, for its header.
        backends: the targets whose bodies each kernel gets.
    """
    plans = {k.name: plan_kernel(k) for k in module.kernels}
    entries = {k.name: plan_entry(module, k, plans[k.name]) for k in module.kernels}
    lowered = {b.name: {name: b.lower(plan, b.printer()) for name, plan in plans.items()}
               for b in backends}
    # a body the public function does not call is reached with the fast path's checks,
    # which take the kernel's parameters in order (all of them, as the public function
    # takes them): only where they are its checked arrays (an argument the kernel does not
    # read is no parameter of the body)
    declared = {k.name: tuple(a.name for a in k.args) for k in module.kernels}
    for b in backends:
        if not b.dispatch:
            for name, plan in plans.items():
                if not entries[name].params == tuple(plan.checked) == declared[name]:
                    lowered[b.name][name] = None
    # the kernels reached through the module's namespace of each such backend
    extra = {b.name: [k for k in module.kernels if lowered[b.name][k.name] is not None]
             for b in backends if not b.dispatch}
    # the fused bodies of a kernel with a derived gradient and of that gradient, which
    # kernel_runtime.differentiable may run for eager CPU tensors (the runtime decides)
    fused = {k.name for k in extra.get(FUSED.name, ())}
    fused_bodies = {k.name: tuple(f"_{name}_fused" if name in fused else "None"
                                  for name in (k.name, k.gradient))
                    for k in module.kernels if k.gradient and k.name in fused}
    present = [b for b in backends if any(v is not None for v in lowered[b.name].values())]
    imports = sorted({name for b in present for name in b.imports})
    notes = [b.note for b in present if b.note]
    template = environment().get_template("module.py.jinja")
    return template.render(module=module, plans=plans, entries=entries, lowered=lowered,
                           backends=backends, extra=extra, imports=imports, notes=notes,
                           fused_bodies=fused_bodies,
                           command=command, contract=runtime_contract())


def render_numpy(module: Module, command: str) -> str:
    """The source of ``generated/<module.name>.py`` with every backend of :data:`BACKENDS`
    (the NumPy body and the array-API body): :func:`render_module` with its defaults.

    Arguments:
        module: the module specification.
        command: the command that regenerates the file, for its header.
    """
    return render_module(module, command)
