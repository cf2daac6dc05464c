"""The coupling derivations' text fits the block: reasons from structure, symbols as math."""

from __future__ import annotations

import re

import pytest

from codegen.latex import render_derivation
from derive.coursework.blocks import BLOCKS
from derive.loader import build
from derive.text import render_text

#: Code identifiers that must appear only inside math in the typeset prose.
_IDENTIFIER = re.compile(r"(?<![\\\w])(x1|x2|y1|y2|dy/dx|F|G|u|j|mu|sigma|logvar)(?![\w])"
                         r"|\w+\(")


def _prose(tex: str) -> list[str]:
    text = re.sub(r"\$[^$]*\$", "", tex)
    text = re.sub(r"\\\[.*?\\\]", "", text, flags=re.S)
    text = re.sub(r"\\texttt\{[^}]*\}", "", text)
    keep = ("\\intertext", "\\item", "\\paragraph", "\\noindent", "The Jacobian")
    return [line for line in text.splitlines() if line.startswith(keep)]


@pytest.mark.parametrize("qid", ["1.1", "1.2", "1.3", "1.3n"])
@pytest.mark.parametrize("block", list(BLOCKS))
def test_no_bare_identifiers_in_the_prose(qid, block):
    for line in _prose(render_derivation(build(qid, block))):
        assert not _IDENTIFIER.search(line.replace(r"\intertext{", "")), line


@pytest.mark.parametrize("block", list(BLOCKS))
def test_reasons_fit_the_block(block):
    text = render_text(build("1.3", block))
    exponential_scales = block in ("coupling", "coupling_affine", "coupling_soft_clamp")
    assert ("product of exponentials" in text) == exponential_scales
    assert "prod_i(1)" not in text and "log|1|" not in text  # an identity block is said to be 1
    if block != "coupling":  # y2 = x2: the identity block
        assert "contributes 1" in text or "identity matrices" in text


def test_volume_conditions_are_simplified():
    assert "Never volume preserving" in build("1.3", "coupling_glow").conclusion
    clamp = build("1.3", "coupling_soft_clamp").result("volume_condition")
    assert "pi" not in str(clamp)  # the constant factor 4/pi is divided out
    # (the additive block's condition, True, is tested in test_derivation.py::test_relatives)
