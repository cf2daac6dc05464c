"""The one question registry: a question registered once appears everywhere, or the build
says why not. Each test builds its own temporary registry."""

from __future__ import annotations

import json

import pytest
import sympy as sp

from derive.api import Introduction, Question, Section
from derive.coursework.questions import QUESTIONS
from derive.derivation import Derivation, Result, Step
from derive.document import DocumentError, sheet_document, solutions_document
from derive.loader import build, kernel_modules
from derive.notebook import derivations_notebook
from derive.spec import Arg, Kernel, Module, Output

a = sp.Symbol("a", positive=True)


def _toy(variant: str) -> Derivation:
    return Derivation("9.1", "A toy question", "Simplify a logarithm.",
                      [Step(sp.log(a**2), 2 * sp.log(a), "the logarithm of a power")],
                      [Result("value", 2 * sp.log(a), "the simplified logarithm")],
                      variant=variant)


def _toy_module(variant: str) -> Module:
    x = sp.Symbol("x", real=True)
    return Module(f"toy_{variant}", "Toy kernels.", "For the registry test.",
                  (Kernel("double", (Arg("x", "elementwise", "the input."),),
                          (Output("y", 2 * x, "twice x."),), "Twice the input."),),
                  "tests", "elementwise")


TOY_SECTION = Section("9", "A toy section",
                      lambda: Introduction("The toy equation:", ((sp.log(a**2), 2 * sp.log(a),
                                                                  False),)),
                      beyond=True)


def test_a_question_without_a_place_stops_the_document_with_a_clear_message():
    registry = {"2.2": QUESTIONS["2.2"],
                "9.1": Question("9.1", "A toy question", ("one",), _toy)}
    with pytest.raises(DocumentError, match=r"question 9\.1 has no place in the solutions "
                                            r"document: register each with a section"):
        solutions_document(questions=registry)


def test_a_registered_question_appears_in_the_document_notebook_and_kernels():
    toy = Question("9.1", "A toy question", ("one", "two"), _toy, TOY_SECTION,
                   kernels=_toy_module)
    registry = {"2.2": QUESTIONS["2.2"], "9.1": toy}
    # beyond the coursework: in the notes, every variant in its section
    tex = sheet_document("notes", questions=registry)
    assert r"\section*{Question 9: A toy section (beyond the coursework)}" in tex
    assert "The toy equation:" in tex
    assert tex.index("A toy section") < tex.index("A toy question, variant one") < tex.index(
        "A toy question, variant two")
    assert "A toy section" not in solutions_document(questions=registry)
    cells = json.loads(derivations_notebook("test", registry))["cells"]
    calls = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert any("build('9.1', 'one')" in c for c in calls)
    assert any("build('9.1', 'two')" in c for c in calls)
    assert [m.name for m in kernel_modules(registry)] == ["toy_one", "toy_two"]
    assert build("9.1", "two", questions=registry).variant == "two"


def test_every_shipped_question_has_a_place():
    assert all(q.section is not None for q in QUESTIONS.values())
