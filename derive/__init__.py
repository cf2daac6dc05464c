r"""Derive, check and typeset the coursework derivations with SymPy.

The public API: derivations as data (:class:`Derivation`, :class:`Step`, :class:`Result`),
coupling-block specifications (:class:`CouplingBlock`) and the question registry
(:func:`build`). ``python -m derive --help`` shows the command line. Taking a name from
here also loads the views a derivation shows itself with (``str``, Jupyter's LaTeX), which
the typesetting layer registers.

Example:
    >>> from derive import build
    >>> build("1.3").result("log_abs_det")
    Sum(G[i], (i, 0, n - 1)) + Sum(s[i], (i, 0, n - 1))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .coupling import CouplingBlock, derive_determinant, derive_inverse, derive_jacobian
    from .derivation import Derivation, Result, Step, StepCheckError
    from .questions import QUESTIONS, UnknownQuestionError, build

__all__ = [
    "Derivation", "Step", "Result", "StepCheckError",
    "CouplingBlock", "derive_inverse", "derive_jacobian", "derive_determinant",
    "QUESTIONS", "UnknownQuestionError", "build",
]
__version__ = "0.1.0"

# Imported on first use (SymPy takes most of a second): ``import derive.cli`` stays quick,
# so the command line handles Ctrl-C during that import (exit 130, no traceback).
_HOME = {"Derivation": "derivation", "Step": "derivation", "Result": "derivation",
         "StepCheckError": "derivation", "CouplingBlock": "coupling",
         "derive_inverse": "coupling", "derive_jacobian": "coupling",
         "derive_determinant": "coupling", "QUESTIONS": "questions",
         "UnknownQuestionError": "questions", "build": "questions"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    # the views a derivation shows itself with (str, Jupyter's LaTeX): the typesetting
    # layer registers them, and the derivation layer imports no typesetting
    importlib.import_module("derive.text")
    importlib.import_module("codegen.latex")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
