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

import _signal
import sys


def _interrupted_at_start(signum: int, frame: object) -> None:
    """Ctrl-C before :func:`derive.cli.main` has its handlers: exit 130, quietly (a
    KeyboardInterrupt here would print a traceback through the imports)."""
    raise SystemExit(130)


def _is_the_command() -> bool:
    """Whether this process is the ``derive`` command (``python -m derive``, or the
    ``derive`` script), not a program that imports the library."""
    argv, orig = sys.argv, getattr(sys, "orig_argv", [])
    if argv[:1] == ["-m"]:  # ``python -m NAME``, while NAME's package is imported
        for i, arg in enumerate(orig[1:], 1):
            if arg.startswith("-m"):
                name = arg[2:] or (orig[i + 1] if i + 1 < len(orig) else "")
                return name in ("derive", "derive.__main__", "derive.cli")
        return False
    script = argv[0].replace("\\", "/").rsplit("/", 1)[-1] if argv else ""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return script in ("derive", "derive.exe", "derive-script.py") and main_file == argv[0]


# First of all, in the command only: from here on Ctrl-C exits 130 without a traceback,
# until ``main`` installs its own handlers (``derive.cli``); a library user's Ctrl-C is
# left alone, as is a SIGINT that the parent process ignores.
if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler and _is_the_command():
    _signal.signal(_signal.SIGINT, _interrupted_at_start)

import importlib  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:
    from .coupling import CouplingBlock, derive_determinant, derive_inverse, derive_jacobian
    from .derivation import Derivation, Result, Step, StepCheckError
    from .loader import build
    from .material import Question, UnknownQuestionError

    QUESTIONS: dict[str, Question]

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
         "derive_determinant": "coupling", "QUESTIONS": "loader",
         "UnknownQuestionError": "material", "build": "loader"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    home = importlib.import_module(f".{_HOME[name]}", __name__)
    # the registry: the questions of the material in use (derive.loader; the coursework)
    value = home.current().questions if name == "QUESTIONS" else getattr(home, name)
    # the views a derivation shows itself with (str, Jupyter's LaTeX): the typesetting
    # layer registers them, and the derivation layer imports no typesetting
    importlib.import_module("derive.text")
    importlib.import_module("codegen.latex")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
