"""The accuracy search at generate time (:mod:`derive.kernel_search`): a kernel output the
search improves is rewritten, by checked steps, and the search is read from the derivation
cache the second time (counted, not timed); cache entries are read without running code.
The end-to-end case (a user's material generated with ``--material``, its kernel accurate
where the output as typed overflows) is in ``tests/test_material_cli.py``."""

from __future__ import annotations

import numpy as np
import sympy as sp

from derive import kernel_search as ks
from derive.cache import Store
from derive.derivation import check_step
from derive.spec import Arg, Kernel, Module, Output

x = sp.Symbol("x", real=True)
sigma = sp.Symbol("sigma", real=True)


def _module(value: sp.Expr, kind: str = "elementwise", name: str = "x") -> Module:
    return Module("demo", "t", "d", (Kernel("f", (Arg(name, kind, "the argument"),),
                                            (Output("v", value, "the value"),), "f."),),
                  "s", "elementwise")


def test_a_search_is_read_from_the_cache_the_second_time(tmp_path):
    store = Store(tmp_path)
    module = _module(sp.log(1 + x ** 2))
    ks._memo.clear()
    first = ks.search_module(module, store)
    (verdict,) = first.verdicts
    assert first.searched == 1 and store.hits == 0
    assert verdict.changed and verdict.before.max_ulp > 1e18 and verdict.after.max_ulp <= 2
    assert verdict.domain == (("x", -ks.LARGEST, ks.LARGEST),)
    for step in verdict.steps:  # each kept step holds (and is checked again here)
        check_step(step)
    new = first.module.kernels[0].outputs[0].value
    assert new != module.kernels[0].outputs[0].value and new.free_symbols == {x}
    ks._memo.clear()
    second = ks.search_module(module, store)
    assert second.searched == 0 and store.hits == 1
    assert second.module == first.module and second.verdicts == first.verdicts


def test_an_output_no_rewrite_improves_is_the_same_object():
    module = _module((1 + 1 / sigma) * (sigma - 1), kind="positive", name="sigma")
    got = ks.search_module(module)
    assert got.module is module
    (verdict,) = got.verdicts
    assert not verdict.changed and verdict.after == verdict.before
    assert verdict.domain == (("sigma", 5e-324, ks.LARGEST),)  # positive: (0, max]


def test_a_forged_cache_entry_is_a_miss_and_runs_no_code():
    forged = {"before": [0, 0, 1, 0], "after": [0, 0, 1, 0], "steps": [],
              "expr": "__import__('os').system('false')"}
    assert ks._read(forged) is None
    assert ks._read({**forged, "expr": ks.write_srepr(sp.log(1 + x ** 2))}) is not None


def test_the_budget_is_counted_never_timed():
    assert all(isinstance(v, (int, tuple)) for v in ks.BUDGET.values())
    assert not np.isinf(ks.GAIN) and ks.GAIN > 1


def test_an_output_sympy_cannot_rebuild_is_left_as_derived_and_said_so(monkeypatch):
    def fails(*_):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(ks, "_variables", fails)  # as an asinh block's output did
    module = _module(sp.log(1 + x ** 2))
    got = ks.search_module(module)
    assert got.module is module
    (verdict,) = got.verdicts
    assert not verdict.changed and "RecursionError" in verdict.note


def test_the_search_measures_in_a_float_model_every_machine_shares():
    """The notes print the errors the search measures, and generate --check compares them
    byte for byte on every machine: the float model is IEEE arithmetic and the C library's
    scalar functions, never NumPy's vector loops, which NumPy picks by the CPU (on an
    AVX-512 machine its exp differs from the C library's on about 4.5% of float64 inputs,
    and a checkout generated on an AVX2 machine failed generate --check there)."""
    import math

    from derive.search import float_function

    x, y = sp.Symbol("x", real=True), sp.Symbol("y", real=True)
    v = np.random.default_rng(3).uniform(-230.0, 230.0, 20_000)
    cases = {sp.exp(x): math.exp, sp.log(sp.Abs(x)): lambda t: math.log(abs(t)),
             sp.tanh(x): math.tanh, x**3: lambda t: math.pow(t, 3)}
    for expr, scalar in cases.items():
        got = float_function(expr, [x])(v)
        assert np.array_equal(got, np.array([scalar(t) for t in v])), expr
    # where the scalar function raises (an overflow, a pole, a domain error): IEEE 754's
    got = float_function(sp.exp(x) + sp.log(y) + x**3, [x, y])(
        np.array([800.0, 0.0, 0.0, 1e200]), np.array([1.0, 0.0, -1.0, 1.0]))
    assert got[0] == math.inf and got[1] == -math.inf and math.isnan(got[2])
    assert got[3] == math.inf
