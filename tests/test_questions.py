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


# --- a question over a kind of the material (Question.over) ------------------------------

def _over_blocks() -> Question:
    """A question over blocks: its callables receive the block itself."""
    def derive(block):
        return Derivation("9.2", "A block's first output", "", [],
                          [Result("y1", block.y1, "y1")], variant=block.name)
    return Question("9.2", "A block's first output", ("mine",), derive, TOY_SECTION,
                    kernels=lambda block: _toy_module(block.name), over="blocks")


def test_a_question_over_blocks_gets_every_loaded_block_as_a_variant():
    """Its own variants first, then every other material's blocks, each derived with the
    block itself; combining again binds the question's own callables, not the bound ones."""
    from derive.api import CouplingBlock, F, Material, x1, x2

    mine = CouplingBlock("mine", "mine", x1 + F, x2)
    theirs = CouplingBlock("theirs", "theirs", 2 * x1 + F, x2)
    third = CouplingBlock("third", "third", 3 * x1 + F, x2)
    one = Material("one", blocks={"mine": mine}, questions={"9.2": _over_blocks()})
    assert one.questions["9.2"].variants == ("mine",)
    both = Material.combine([Material("two", blocks={"theirs": theirs}), one])
    q = both.questions["9.2"]
    assert q.variants == ("mine", "theirs") and q.default == "mine"
    assert build("9.2", "theirs", questions=both.questions).result("y1") == theirs.y1
    assert [m.name for m in kernel_modules(both.questions)] == ["toy_mine", "toy_theirs"]
    again = Material.combine([both, Material("three", blocks={"third": third})])
    assert again.questions["9.2"].variants == ("mine", "theirs", "third")
    assert build("9.2", "third", questions=again.questions).result("y1") == third.y1
    assert build("9.2", "mine", questions=again.questions).variant == "mine"


@pytest.mark.parametrize(("over", "variants", "message"), [
    ("sections", ("mine",), "material 'one': question 9.2 ranges over 'sections'; expected "
                            "one of 'blocks', 'parameterizations'"),
    ("blocks", ("nosuch",), "material 'one': question 9.2 ranges over blocks, but its "
                            "variant 'nosuch' is not one of them"),
])  # (a kind it lacks altogether is refused when loaded, where no other material brings
#    it: tests/test_outside_parameterization.py)
def test_a_question_over_what_the_material_lacks_is_refused_in_one_line(over, variants,
                                                                        message):
    from dataclasses import replace

    from derive.api import CouplingBlock, F, Material, MaterialError, x1, x2

    q = replace(_over_blocks(), over=over, variants=variants)
    with pytest.raises(MaterialError) as error:
        Material("one", blocks={"mine": CouplingBlock("mine", "mine", x1 + F, x2)},
                 questions={"9.2": q})
    assert str(error.value) == message
