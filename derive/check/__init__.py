r"""``derive check``: mark a student's LaTeX answer against the derived result, safely.

The answer is read against a whitelist (:mod:`~derive.check.latex_reader`), mapped onto
the engine's symbols (:mod:`~derive.check.quantities`), decided numerically and
symbolically (:mod:`~derive.check.equivalence`), its chain checked step by step and its
mistake named (:mod:`~derive.check.diagnosis`, :mod:`~derive.check.marking`), all in a
sandboxed child process (:mod:`~derive.check.sandbox`).

Example:
    >>> answer = r"x_2 = y_2 \circ e^{-s}, \quad x_1 = (y_1 - F(x_2)) / e^{G(x_2)}"
    >>> report = mark_one("1.1", answer)
    >>> report["verdict"], report["read_as"]
    ('correct', 'x2 = y2*exp(-s); x1 = (-F(x2) + y1)*exp(-G(x2))')
"""

from .latex_reader import NOTATION, Unreadable, read_answer
from .marking import EXIT_CODES, Report, mark
from .quantities import SUPPORTED, question_spec
from .sandbox import LIMITS, Limits, mark_batch, mark_one

__all__ = ["mark", "mark_one", "mark_batch", "Report", "EXIT_CODES", "Limits", "LIMITS",
           "SUPPORTED", "NOTATION", "Unreadable", "read_answer", "question_spec"]
