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
    ['numpy', 'xp']
    >>> import sympy as sp
    >>> [b.printer().doprint(sp.exp(sp.Symbol("a"))) for b in BACKENDS]
    ['numpy.exp(a)', 'xp.exp(a)']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kernel_runtime
from derive.spec import Module

from .environment import environment
from .numpy_backend import KernelPrinter, lower_numpy
from .plan import KernelPlan, plan_entry, plan_kernel
from .xp_backend import XpPrinter, lower_xp

__all__ = ["Backend", "NUMPY", "ARRAY_API", "BACKENDS", "RuntimeContract", "runtime_contract",
           "render_module", "render_numpy"]


@dataclass(frozen=True)
class Backend:
    """One target of the generated modules.

    Arguments:
        name: the suffix of each kernel's body function (``_<kernel>_<name>``).
        printer: the class printing right-hand sides.
        lower: prints a plan for this target (a dict the template lays out).
        template: the jinja2 template of one kernel body.
        namespace: the body's first parameter, the array namespace ("" for none).
    """

    name: str
    printer: type[KernelPrinter]
    lower: Callable[[KernelPlan, Any], dict[str, Any]]
    template: str
    namespace: str = ""


#: NumPy, specialized: in-place block assembly, pieces patched with ``take``/``put``.
NUMPY = Backend("numpy", KernelPrinter, lower_numpy, "body_numpy.py.jinja")
#: Any array-API library (PyTorch, JAX, Dask, CuPy, array_api_strict), through ``xp``.
ARRAY_API = Backend("xp", XpPrinter, lower_xp, "body_xp.py.jinja", namespace="xp")
#: The bodies every generated kernel has, in the order they are written.
BACKENDS: tuple[Backend, ...] = (NUMPY, ARRAY_API)


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
    template = environment().get_template("module.py.jinja")
    return template.render(module=module, plans=plans, entries=entries, lowered=lowered,
                           backends=backends, command=command, contract=runtime_contract())


def render_numpy(module: Module, command: str) -> str:
    """The source of ``generated/<module.name>.py`` with every backend of :data:`BACKENDS`
    (the NumPy body and the array-API body): :func:`render_module` with its defaults.

    Arguments:
        module: the module specification.
        command: the command that regenerates the file, for its header.
    """
    return render_module(module, command)
