"""What the plan decides for the templates and the NumPy lowering, from typed values: the
entry of each shape contract (:func:`codegen.plan.plan_entry`) and whether a piecewise
value's last piece overflows only where it is overwritten
(:func:`codegen.plan.overflow_is_overwritten`), which the material no longer states."""

from __future__ import annotations

import dataclasses
import re

import pytest
import sympy as sp

from codegen.plan import plan_entry, plan_kernel
from derive.derivation import Derivation
from derive.spec import Arg, Kernel, Module, Output

from .conftest import ROOT

x = sp.Symbol("x", real=True)
s = sp.Symbol("s", positive=True)


def _quiet(kernel: Kernel) -> dict[str, bool]:
    return {st.target: st.overwritten_overflow for st in plan_kernel(kernel).statements
            if st.kind == "piecewise"}


def _kernel(*outputs: Output, kind: str = "elementwise") -> Kernel:
    return Kernel("f", (Arg("x", kind, "x"),), outputs, "")


def test_a_last_piece_that_overflows_only_where_overwritten_is_quiet():
    # exp(x) - 1 overflows beyond 709, where the first piece holds
    k = _kernel(Output("y", sp.Piecewise((x, x > 700), (sp.exp(x) - 1, True)), "y"))
    assert _quiet(k) == {"_pw0": True}


def test_a_last_piece_that_overflows_where_it_is_taken_is_not_quiet():
    # exp(x) overflows beyond 709 where it is taken (the first piece holds beyond 1e5 only)
    k = _kernel(Output("y", sp.Piecewise((x, x > 1e5), (sp.exp(x), True)), "y"))
    assert _quiet(k) == {"_pw0": False}


def test_a_last_piece_that_never_overflows_is_not_quiet():
    k = _kernel(Output("y", sp.Piecewise((x, x > 0), (sp.atan(x), True)), "y"))
    assert _quiet(k) == {"_pw0": False}


def test_the_check_computes_the_values_a_piece_reads_from_the_arguments():
    """``t`` is ``log(s)**2``, an intermediate: sampled on its own, ``exp(t)`` would
    overflow where it is taken; computed from ``s``, it overflows only where the first piece
    holds (``t > 700``)."""
    t = sp.Symbol("t", real=True)
    k = Kernel("f", (Arg("s", "positive", "s"),),
               (Output("t", sp.log(s) ** 2, "t", internal=True),
                Output("y", sp.Piecewise((t, t > 700), (sp.exp(t), True)), "y")), "")
    assert _quiet(k) == {"_pw0": True}


def test_the_material_no_longer_states_the_numpy_flag():
    assert "overwritten_overflow" not in {f.name for f in dataclasses.fields(Output)}
    for path in (ROOT / "derive").rglob("*.py"):
        assert "overwritten_overflow" not in path.read_text(), path


def test_each_contract_has_an_entry_and_an_unknown_one_has_none():
    k = _kernel(Output("y", 2 * x, "y"), kind="batch")
    coupling = plan_entry(Module("m", "", "", (k,), "", "coupling"), k, plan_kernel(k))
    assert coupling.shape == ("_batch", "_n", "_dtype")
    assert coupling.outputs["y"].shape == "_batch + (_n,)"
    module = Module("m", "", "", (k,), "", "coupling")
    object.__setattr__(module, "contract", "ragged")
    with pytest.raises(KeyError):
        plan_entry(module, k, plan_kernel(k))


def test_typesetting_reads_typed_attributes_not_data_keys():
    assert "data" not in {f.name for f in dataclasses.fields(Derivation)}
    for rel in ("codegen/latex.py", "derive/document.py", "derive/text.py",
                "derive/notebook.py"):
        source = (ROOT / rel).read_text()
        assert not re.search(r"\.data\b", source), rel
