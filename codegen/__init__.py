r"""Render derived SymPy expressions as Python source and as LaTeX, through jinja2 templates.

``derive`` hands this package one plain value per generated file, a
:class:`~derive.spec.Module` of :class:`~derive.spec.Kernel` values; the renderers
print right-hand sides with SymPy's printers and lay them out with templates that hold
no formulas.

Example:
    >>> import sympy as sp
    >>> from codegen import Arg, Kernel, Output, lambdify_kernel
    >>> x = sp.Symbol("x", real=True)
    >>> f = lambdify_kernel(Kernel("twice", (Arg("x", "elementwise", "x"),),
    ...                            (Output("y", 2 * x, "2x"),), "Twice x."))
    >>> float(f(1.5))
    3.0
"""

from derive.spec import Arg, Kernel, Module, Output

from .backends import ARRAY_API, BACKENDS, NUMPY, Backend, render_module, render_numpy
from .latex import LatexOptions, latex, render_derivation, render_document
from .numpy_backend import KernelPrinter, lambdify_kernel
from .plan import plan_kernel
from .xp_backend import XpPrinter

__all__ = [
    "Arg", "Kernel", "Module", "Output",
    "Backend", "NUMPY", "ARRAY_API", "BACKENDS", "render_module",
    "KernelPrinter", "XpPrinter", "plan_kernel", "render_numpy", "lambdify_kernel",
    "LatexOptions", "latex", "render_derivation", "render_document",
]
