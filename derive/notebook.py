r"""A Jupyter notebook of every derivation, its outputs already rendered as LaTeX.

Each code cell builds one derivation; its stored output is what Jupyter shows for it (the
derivation's ``_repr_latex_``, :func:`~codegen.latex.render_notebook`, and its plain
text), so the notebook shows the typeset chain without being run. Where the question has
kernels, a Markdown cell follows with the accuracy search's verdicts on them and the steps
it kept (:func:`~codegen.latex.render_search_markdown`), as the notes do: for user
material as for the coursework.

Example:
    >>> import json
    >>> from derive.loader import current
    >>> one = {"2.1": current().questions["2.1"]}  # by default, every question
    >>> nb = json.loads(derivations_notebook("python -m derive generate", one))
    >>> nb["nbformat"], [cell["cell_type"] for cell in nb["cells"]]
    (4, ['markdown', 'code'])
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from codegen.environment import GENERATED_MARK
from codegen.latex import render_notebook, render_search_markdown

from .loader import current
from .material import Question
from .text import render_text

__all__ = ["derivations_notebook", "search_cell", "search_heading"]


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + [parts[-1]]


#: A cell's outputs, ``(question, variant) -> (LaTeX, plain text)``; the derivation cache
#: (:mod:`derive.files`) passes its own, which derives only on a miss.
Outputs = Callable[[Question, str], "tuple[str, str]"]


#: A variant's Markdown cell of the accuracy search on its kernels, or None (no kernels);
#: the derivation cache passes its own.
Searches = Callable[[Question, str], "str | None"]


def _outputs(q: Question, variant: str) -> tuple[str, str]:
    d = q.derive(variant)
    return render_notebook(d), render_text(d)


def search_heading(qid: str, title: str, variant: str, module: str) -> str:
    """The heading of a search cell (plain text), from the derivation's id and title, the
    variant and the kernel module's name.

    Example:
        >>> search_heading("2.3", "The KL term", "logvar", "gaussian_kl_logvar")
        'Question 2.3: The KL term (logvar), its kernels (gaussian_kl_logvar)'
    """
    return (f"Question {qid}: {title}" + (f" ({variant})" if variant else "")
            + f", its kernels ({module})")


def search_cell(q: Question, variant: str) -> str | None:
    """The Markdown of the accuracy search's verdicts on ``q``'s kernels for ``variant``
    (:mod:`derive.kernel_search`, cached by it), or None where ``q`` has no kernels."""
    if q.kernels is None:
        return None
    from .kernel_search import search_module

    d = q.derive(variant)
    module = q.kernels(variant)
    return render_search_markdown(search_module(module).verdicts,
                                  search_heading(d.qid, d.title, variant, module.name),
                                  names=d.latex_names)


def derivations_notebook(command: str, questions: Mapping[str, Question] | None = None,
                         outputs: Outputs | None = None,
                         searches: Searches | None = None) -> str:
    """The notebook's JSON: a markdown header, then one cell per question and variant of
    ``questions`` (by default the registry), with ``outputs`` (default: derive and
    typeset), each followed, where the question has kernels, by a Markdown cell of
    ``searches`` (default: :func:`search_cell`)."""
    questions = current().questions if questions is None else questions
    outputs = outputs or _outputs
    searches = searches or search_cell
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
            search = searches(q, variant)
            if search is not None:
                cells.append({"cell_type": "markdown", "metadata": {},
                              "source": _lines(search.rstrip("\n"))})
    notebook = {
        "cells": cells,
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 4,
    }
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
