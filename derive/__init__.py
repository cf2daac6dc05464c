r"""Derive, check and typeset the coursework derivations with SymPy.

The public API: derivations as data (:class:`Derivation`, :class:`Step`, :class:`Result`),
coupling-block specifications (:class:`CouplingBlock`) and the question registry
(:func:`build`). ``python -m derive --help`` shows the command line.

Example:
    >>> from derive import build
    >>> build("1.3").result("log_abs_det")
    Sum(G[i], (i, 0, n - 1)) + Sum(s[i], (i, 0, n - 1))
"""

from .coupling import CouplingBlock, derive_determinant, derive_inverse, derive_jacobian
from .derivation import Derivation, Result, Step, StepCheckError
from .questions import QUESTIONS, UnknownQuestionError, build

__all__ = [
    "Derivation", "Step", "Result", "StepCheckError",
    "CouplingBlock", "derive_inverse", "derive_jacobian", "derive_determinant",
    "QUESTIONS", "UnknownQuestionError", "build",
]
__version__ = "0.1.0"
