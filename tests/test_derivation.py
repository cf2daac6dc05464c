"""The derivation core: steps are checked, wrong steps are caught, results match PROBLEM.md."""

from __future__ import annotations

import pytest
import sympy as sp

import derive.derivation as derivation_module
from derive import CouplingBlock, Derivation, Result, Step, StepCheckError, build
from derive.coupling import SpecificationError, derive_determinant, derive_jacobian
from derive.coursework.blocks import BLOCKS
from derive.derivation import check_step
from derive.vocabulary import (
    FB,
    GB,
    JFB,
    JGB,
    X1,
    X2,
    Y1,
    Y2,
    F,
    G,
    S,
    i,
    index_model,
    index_values,
    instantiate,
    j,
    n,
    s,
    x1,
    x2,
)

delta = sp.KroneckerDelta(i, j)


def test_a_wrong_algebra_step_is_caught():
    a = sp.Symbol("a", positive=True)
    with pytest.raises(StepCheckError, match=r"demo, step 1 \('wrong'\)"):
        Derivation("demo", "t", "q", [Step(sp.log(a**2), sp.log(a), "wrong")], [])


def test_the_students_diagonal_jacobian_block_is_caught():
    """The hand-out's student claims dy1/dx2 is diagonal; for dense F, G it is not."""
    block = BLOCKS["coupling"]
    wrong = delta * (sp.Indexed(JFB, i, i) + x1 * sp.exp(G) * sp.Indexed(JGB, i, i))
    step = Step(sp.Derivative(Y1[i], X2[j]), wrong, "all blocks are diagonal",
                given=block.given)
    with pytest.raises(StepCheckError, match="all blocks are diagonal"):
        Derivation("1.2", "t", "q", [step], [], models=[index_model()])


def test_a_wrong_inverse_is_caught():
    block = BLOCKS["coupling"]
    step = Step(X1[i], (Y1[i] - F) * sp.exp(G), "sign slip", given=block.given)
    with pytest.raises(StepCheckError, match="sign slip"):
        Derivation("1.1", "t", "q", [step], [], models=[index_model()])


def test_a_wrong_determinant_is_caught():
    block = BLOCKS["coupling"]
    from derive.vocabulary import DetJacobian

    wrong = sp.exp(sp.Sum(G, (i, 0, n - 1)))  # forgets exp(s)
    with pytest.raises(StepCheckError, match="forgot s"):
        Derivation("1.3", "t", "q", [Step(DetJacobian(block.y1, block.y2), wrong, "forgot s")],
                   [], models=[index_model()])


def test_numeric_fallback_decides_where_simplify_cannot(monkeypatch):
    """With symbolic simplification disabled, the random-point check still decides."""
    monkeypatch.setattr(derivation_module, "_is_zero_symbolic", lambda diff: False)
    t = sp.Symbol("t", real=True)
    ok = Derivation("demo", "t", "q", [Step(sp.sin(t) ** 2 + sp.cos(t) ** 2, 1, "identity")], [])
    assert ok.checks[0].method == "numeric"
    with pytest.raises(StepCheckError):
        Derivation("demo", "t", "q", [Step(sp.sin(t) ** 2, sp.cos(t) ** 2, "no")], [])


def test_each_questions_checker_rejects_its_last_step_made_wrong():
    """The checks of a shipped derivation decide: its last step, off by a positive symbol,
    is rejected in the derivation's own models (one variant per question; the variants of
    a question share its models)."""
    from derive.coursework.questions import QUESTIONS

    wrong = sp.Symbol("wrong_by", positive=True)
    for question in QUESTIONS.values():
        d = question.derive(question.variants[0])
        k, step = len(d.steps), d.steps[-1]
        check_step(step, d.models, seed=k)  # as shipped, it passes
        bad = Step(step.lhs, step.rhs + wrong, "made wrong", given=step.given,
                   models=step.models)
        with pytest.raises(StepCheckError):
            check_step(bad, d.models, seed=k)


# --- question 1's facts from PROBLEM.md ----------------------------------------------


def test_inverse_matches_problem():
    d = build("1.1")
    assert sp.simplify(d.result("x2") - sp.exp(-s) * Y2[i]) == 0
    assert sp.simplify(d.result("x1") - (Y1[i] - F) / sp.exp(G)) == 0


def test_jacobian_blocks_match_problem():
    d = build("1.2")
    assert sp.simplify(d.result("dy1_dx1") - delta * sp.exp(G)) == 0
    expected = JFB[i, j] + x1 * sp.exp(G) * JGB[i, j]
    assert sp.simplify(d.result("dy1_dx2") - expected) == 0
    assert d.result("dy2_dx1") == 0
    assert sp.simplify(d.result("dy2_dx2") - delta * sp.exp(s)) == 0
    assert "upper-triangular" in d.conclusion
    # the element-wise special case is diagonal
    assert d.result("dy1_dx2_elementwise").has(sp.KroneckerDelta)


def test_determinant_matches_problem():
    d = build("1.3")
    log_det = sp.Sum(G, (i, 0, n - 1)) + sp.Sum(s, (i, 0, n - 1))
    assert sp.simplify(d.result("log_abs_det") - log_det) == 0
    assert sp.simplify(d.result("det") - sp.exp(log_det)) == 0
    # the condition simplified: one sum
    assert d.result("volume_condition") == sp.Eq(sp.Sum(G + s, (i, 0, n - 1)), 0)
    assert "Not volume preserving" in d.conclusion


@pytest.mark.parametrize("name, log_det", [
    ("coupling_affine", sp.Sum(G, (i, 0, n - 1))),
    ("coupling_additive", sp.Integer(0)),
])
def test_relatives(name, log_det):
    d = derive_determinant(BLOCKS[name])
    assert sp.simplify(d.result("log_abs_det") - log_det) == 0
    if log_det == 0:
        assert d.result("volume_condition") is sp.true
        assert d.conclusion.startswith("Volume preserving")


# --- the derivation holds for every n: cross-check explicitly at n = 1..4 ----------------


def _explicit(block: CouplingBlock, size: int):
    """The explicit 2n x 2n Jacobian, built from the block's equations alone."""
    xs1 = sp.symbols(f"x1_0:{size}", real=True)
    xs2 = sp.symbols(f"x2_0:{size}", real=True)
    ss = sp.symbols(f"s_0:{size}", real=True)
    Fs = [sp.Function(f"F_{k}", real=True)(*xs2) for k in range(size)]
    Gs = [sp.Function(f"G_{k}", real=True)(*xs2) for k in range(size)]

    def comp(expr, k):
        return expr.xreplace({X1[i]: xs1[k], X2[i]: xs2[k], S[i]: ss[k], FB[i]: Fs[k],
                              GB[i]: Gs[k]})

    ys = [comp(block.y1, k) for k in range(size)] + [comp(block.y2, k) for k in range(size)]
    return sp.Matrix(ys).jacobian(list(xs1) + list(xs2))


@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_cross_check_against_explicit_jacobian(name, size):
    block = BLOCKS[name]
    J = _explicit(block, size)
    det_d = derive_determinant(block)
    derived_det = instantiate(det_d.result("det"), size, index_values(0))
    # softplus and sigmoid are checked through their definitions
    assert sp.simplify((J.det(method="berkowitz") - derived_det).rewrite(sp.exp)) == 0
    jac = derive_jacobian(block)
    for r, out in enumerate(("y1", "y2")):
        for c, inp in enumerate(("x1", "x2")):
            entry = jac.result(f"d{out}_d{inp}")
            for a in range(size):
                for b in range(size):
                    value = instantiate(entry, size, index_values(a, b))
                    assert sp.simplify(J[r * size + a, c * size + b] - value) == 0


# --- specifications -----------------------------------------------------------------


def test_a_fourth_block_costs_a_few_lines():
    shift = CouplingBlock("coupling_scaled", "a scaled additive block",
                          y1=sp.exp(s) * x1 + F, y2=x2)
    assert sp.simplify(derive_determinant(shift).result("log_abs_det")
                       - sp.Sum(s, (i, 0, n - 1))) == 0


@pytest.mark.parametrize("y1, y2, message", [
    (x1 + F, x2 + x1, "y2 must not depend on x1"),
    (x1 + F, x2 * sp.exp(G), "y2 must not depend on G"),
    (F + x2, x2, "does not depend on x1"),
    (x1**2 + F, x2, r"its slope dy1/dx1 = 2\*x1\[i\] is 0 where x1\[i\] = 0"),
    (sp.sinh(G) * x1 + F, x2, r"slope dy1/dx1 = sinh\(G\[i\]\) is 0 where G\[i\] = 0"),
    (G * x1 + F, x2, r"is 0 where G\[i\] = 0"),
    (sp.exp(G) * x1 + F, x2 * s, r"y2 = s\[i\]\*x2\[i\] is not invertible for x2\[i\]"),
    (x1 + sp.tanh(x1) / 2 + F, x2, "SymPy finds no closed-form inverse"),
    (sp.Piecewise((x1, x1 < 0), (2 * x1, True)) + F, x2, "is piecewise"),
    # one rational-quadratic spline bin is monotone on its bin only, not on the reals
    ((x1**2 + sp.exp(G) * x1 * (1 - x1)) / (1 + (sp.exp(G) - sp.Rational(3, 2)) * x1
                                             * (1 - x1)) + F, x2, "changes sign"),
])
def test_bad_specifications_are_explained(y1, y2, message):
    with pytest.raises(SpecificationError, match=message):
        block = CouplingBlock("bad", "bad", y1=y1, y2=y2)
        build_all = [derive_determinant, derive_jacobian]
        from derive.coupling import derive_inverse

        derive_inverse(block)
        for f in build_all:
            f(block)


def test_a_refusal_comes_at_construction_in_one_line():
    """Not invertible, or no closed-form inverse: said when the block is written, in one
    line, before any derivation starts."""
    for y1 in (sp.sinh(G) * x1 + F, x1 + sp.tanh(x1) / 2 + F):
        with pytest.raises(SpecificationError) as err:
            CouplingBlock("bad", "bad", y1=y1, y2=x2)
        assert "\n" not in str(err.value) and str(err.value).startswith("bad: ")


@pytest.mark.parametrize("y1, inverse", [
    (x1 + x1**3 / 3 + F, None),
    (sp.asinh(x1) * sp.exp(G) + F, sp.sinh((Y1[i] - F) * sp.exp(-G))),
    (sp.sinh(x1) * sp.exp(G) + F, sp.asinh((Y1[i] - F) * sp.exp(-G))),
])
def test_a_monotone_block_is_inverted_on_the_reals(y1, inverse):
    """Of the solutions of y1 = ... for x1, the one real for real inputs is chosen."""
    block = CouplingBlock("monotone", "a monotone block", y1=y1, y2=x2)
    from derive.coupling import derive_inverse

    got = derive_inverse(block).result("x1")
    if inverse is not None:
        assert sp.simplify(got - inverse) == 0
    for y, f in ((-3.5, 0.25), (0.0, 0.0), (2.0, -1.0), (40.0, 3.0)):
        point = {Y1[i]: sp.Rational(y), F: sp.Rational(f), G: sp.Rational(1, 3)}
        value = sp.N(got.xreplace(point), 40)
        assert value.is_real
        assert abs(sp.N(y1.xreplace({X1[i]: value}).xreplace(point), 40) - y) < 1e-30


def test_unknown_result_names_the_known_ones():
    with pytest.raises(KeyError, match="it has: x2, x1"):
        build("1.1").result("nope")


def test_result_names_must_be_unique():
    with pytest.raises(ValueError, match="repeat"):
        Derivation("d", "t", "q", [], [Result("a", sp.Integer(1)), Result("a", sp.Integer(2))])


def test_a_frozen_column_index_is_caught():
    """Every column j is checked, also where j appears only as a derivative variable."""
    block = BLOCKS["coupling"]
    wrong = sp.Indexed(JFB, i, 0) + x1 * sp.exp(G) * sp.Indexed(JGB, i, 0)
    step = Step(sp.Derivative(Y1[i], X2[j]), wrong, "column frozen at 0", given=block.given)
    with pytest.raises(StepCheckError, match="column frozen at 0"):
        Derivation("1.2", "t", "q", [step], [], models=[index_model()])
    typo = Step(sp.Derivative(Y1[i], X1[j]), sp.KroneckerDelta(i, 0) * sp.exp(G), "delta typo",
                given=block.given)
    with pytest.raises(StepCheckError, match="delta typo"):
        Derivation("1.2", "t", "q", [typo], [], models=[index_model()])
