"""The templates hold no question's name and no decision on a question or a contract.

A template lays out typed values that the plan (:mod:`codegen.plan`) and the derivations
give it: it must not test ``module.contract``, nor name a question, a generated module, a
kernel, an argument of one, or a shape contract (``coupling``, ``elementwise``). The words
are taken from what the engine produces (``generated/``) and from the types, so a new
module or contract is covered without editing this file.
"""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import pytest

from derive.spec import Module

from .conftest import ROOT

TEMPLATES = ROOT / "codegen" / "templates"
#: words of the shipped questions that are not names of a module, kernel or argument
_QUESTION_WORDS = ("gaussian", "kl", "vae", "elbo", "sigma", "mu", "logvar", "dy1", "dx1",
                   "dy2", "dx2", "y1", "y2", "jacobian", "coupling")


def _generated_names() -> set[str]:
    """Module names, kernel names and argument names (of two characters or more) of the
    generated modules."""
    names: set[str] = set()
    for path in sorted((ROOT / "generated").glob("*.py")):
        if path.stem == "__init__":
            continue
        names.add(path.stem)
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                names.add(node.name)
                args = node.args.args + node.args.kwonlyargs
                names |= {a.arg for a in args if len(a.arg) >= 2 and a.arg != "check_finite"}
    return names


def forbidden_words() -> set[str]:
    """What no template may contain, as a word: question and contract names."""
    contracts = set(typing.get_args(typing.get_type_hints(Module)["contract"]))
    return {w.lower() for w in _generated_names() | contracts | set(_QUESTION_WORDS)}


def violations(text: str, words: set[str]) -> list[str]:
    """Each line of ``text`` that tests a module's contract or names a forbidden word."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if "module.contract" in line:
            found.append(f"{number}: tests module.contract: {line.strip()}")
        for word in sorted(words):
            if re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", line,
                         re.IGNORECASE):
                found.append(f"{number}: names {word!r}: {line.strip()}")
    return found


def test_the_forbidden_words_come_from_the_engine():
    words = forbidden_words()
    assert {"coupling", "elementwise", "gaussian_kl", "kl_grad", "forward", "x1", "sigma"} \
        <= words


@pytest.mark.parametrize("path", sorted(TEMPLATES.glob("*.jinja")), ids=lambda p: p.name)
def test_no_template_names_a_question_or_contract(path: Path):
    assert violations(path.read_text(), forbidden_words()) == []


@pytest.mark.parametrize("planted", [
    '{% if module.contract == "coupling" %}',
    '    {{ o.name }} = _finish({{ o.name }}, _batch{{ " + (_n,)" if x }}, _dtype)  # x1',
    "    # Block matrix {{ o.name }} = [[dy1/dx1, dy1/dx2], [dy2/dx1, dy2/dx2]]",
    "The Jacobian as a block matrix",
    "    return kl_grad(mu, sigma)",
])
def test_a_planted_name_is_found(planted: str):
    """The check fails on each thing the templates held before the plan gave them typed
    values (the first three lines are from the old templates)."""
    text = (TEMPLATES / "function.py.jinja").read_text() + planted + "\n"
    assert violations(text, forbidden_words())
