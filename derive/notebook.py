r"""A Jupyter notebook of every derivation, its outputs already rendered as LaTeX.

Each code cell builds one derivation; its stored output is what Jupyter shows for it (the
derivation's ``_repr_latex_``, :func:`~codegen.latex.render_notebook`, and its plain
text), so the notebook shows the typeset chain without being run.

Example:
    >>> import json
    >>> nb = json.loads(derivations_notebook("python -m derive generate"))
    >>> nb["nbformat"], len(nb["cells"]) > 10
    (4, True)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from codegen.environment import GENERATED_MARK
from codegen.latex import render_notebook

from .loader import current
from .material import Question
from .text import render_text

__all__ = ["derivations_notebook"]


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + [parts[-1]]


#: A cell's outputs, ``(question, variant) -> (LaTeX, plain text)``; the derivation cache
#: (:mod:`derive.files`) passes its own, which derives only on a miss.
Outputs = Callable[[Question, str], "tuple[str, str]"]


def _outputs(q: Question, variant: str) -> tuple[str, str]:
    d = q.derive(variant)
    return render_notebook(d), render_text(d)


def derivations_notebook(command: str, questions: Mapping[str, Question] | None = None,
                         outputs: Outputs | None = None) -> str:
    """The notebook's JSON: a markdown header, then one cell per question and variant of
    ``questions`` (by default the registry), with ``outputs`` (default: derive and
    typeset)."""
    questions = current().questions if questions is None else questions
    outputs = outputs or _outputs
    cells = [{
        "cell_type": "markdown", "metadata": {},
        "source": _lines(f"This notebook is {GENERATED_MARK}\n"
                         f"Regenerate with: `{command}`\n\n"
                         "# The derivations\n\nEach cell builds a derivation; every step was "
                         "checked by SymPy when it was built."),
    }]
    count = 0
    for q in questions.values():
        for variant in q.variants:
            count += 1
            tex, text = outputs(q, variant)
            call = f"build({q.qid!r}" + (f", {variant!r})" if variant else ")")
            cells.append({
                "cell_type": "code", "execution_count": count, "metadata": {},
                "source": _lines(("from derive import build\n\n" if count == 1 else "") + call),
                "outputs": [{
                    "output_type": "execute_result", "execution_count": count, "metadata": {},
                    "data": {"text/latex": _lines(tex),
                             "text/plain": _lines(text.rstrip("\n"))},
                }],
            })
    notebook = {
        "cells": cells,
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 4,
    }
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
