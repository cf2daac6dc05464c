"""The fused kernels (``generated.<module>.fused.<kernel>``, compiled by numba): the bounds
docs/numerics.md states, measured densely over every piece and every boundary (+-64 ulp)
against the long-double reference checked against mpmath (the machinery of
``tests/test_dense_bounds.py``, each KL kernel replaced by its fused one); float32 stays
float32; broadcasting and memory layouts; the same errors as the kernels; other input
goes to the kernel; without numba, an ImportError naming the extra."""

from __future__ import annotations

import numpy as np
import pytest

import kernel_runtime.fused as runtime_fused
from generated import gaussian_kl, gaussian_kl_logvar, gaussian_kl_pair, gaussian_kl_pair_logvar
from tests.dense_cases import assert_within_bound, case_id, kl_cases
from tests.kl_reference import HAS_EXTENDED, kl_logvar_ld, kl_sigma_ld, relative_error_in_eps

numba = pytest.importorskip("numba")

MODULES = (gaussian_kl, gaussian_kl_logvar, gaussian_kl_pair, gaussian_kl_pair_logvar)
KERNELS = ("kl", "kl_grad", "kl_grad_reparam", "kl_grad_stl")


def test_every_element_wise_kernel_has_a_fused_kernel():
    for module in MODULES:
        assert sorted(vars(module.fused)) == sorted(KERNELS), module.__name__


def test_kernels_the_fused_backend_cannot_print_have_none():
    """Callables and block matrices (the coupling kernels), sums over an axis, and functions
    with no element form: no fused body, no ``fused`` namespace."""
    import sympy as sp

    from codegen.fused_backend import FusedPrinter, lower_fused
    from codegen.plan import plan_kernel
    from derive.nodes import ComponentSum, softplus
    from derive.spec import Arg, Kernel, Output
    from generated import coupling

    assert not hasattr(coupling, "fused")
    x = sp.Symbol("x", real=True)
    # NumPy's forms of these (maximum, minimum, sign) name nothing Python's math has: a
    # user's kernel holding one keeps its NumPy body (it failed when numba compiled it)
    for value in (ComponentSum(x), softplus(x), sp.Max(x, 1) + x, sp.Min(x, 1) * x,
                  sp.sign(x) * x):
        k = Kernel("f", (Arg("x", "elementwise", "x"),), (Output("y", value, "y"),), "")
        assert lower_fused(plan_kernel(k), FusedPrinter()) is None, value
    k = Kernel("f", (Arg("x", "elementwise", "x"),), (Output("y", sp.exp(x) + 1, "y"),), "")
    low = lower_fused(plan_kernel(k), FusedPrinter())
    assert low["hoisted"] == (("_v0", "numpy.exp(x)"),)
    assert [lp["statements"][0]["code"] for lp in low["loops"]] == ["_v0 + 1"]


@pytest.fixture
def fused_modules(monkeypatch):
    """Every KL kernel replaced by its fused kernel, where the dense cases look them up."""
    for module in MODULES:
        for name in KERNELS:
            monkeypatch.setattr(module, name, getattr(module.fused, name))


@pytest.mark.skipif(not HAS_EXTENDED, reason="long double is float64 on this platform")
@pytest.mark.parametrize("case", kl_cases(), ids=case_id)
def test_fused_kernel_within_the_stated_bound_over_every_piece_and_boundary(case,
                                                                            fused_modules):
    assert_within_bound(case)


@pytest.mark.skipif(not HAS_EXTENDED, reason="long double is float64 on this platform")
def test_the_dense_measure_fails_on_a_wrong_fused_kernel(monkeypatch):
    """The same measure on a fused kl whose series piece is one ulp off exceeds 0.5 eps."""
    from bench import dense
    case = kl_cases()[0]
    fused = gaussian_kl.fused.kl
    monkeypatch.setattr(gaussian_kl, "kl", lambda mu, s: np.nextafter(fused(mu, s), np.inf)
                        * (1 + 2e-16))
    off = dense.Case(case.module, case.output, case.call, case.inputs, case.ld, case.mp,
                     case.priors, case.ranges[2:3], (), 0.5)
    assert dense.measure_case(off, 1000, 1, np.random.default_rng(0))["max_eps"] > 0.5


@pytest.mark.skipif(not HAS_EXTENDED, reason="long double is float64 on this platform")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_broadcasting_and_layouts_within_the_bound(dtype):
    """Broadcast shapes, 0-d arrays, transposed, strided and read-only inputs: the shape
    and dtype of the broadcast, each entry within the stated bound (4 eps in float64, 10
    in float32) of the long-double reference."""
    rng = np.random.default_rng(1)
    bound = 4 if dtype is np.float64 else 10
    mu = rng.standard_normal((5, 1)).astype(dtype)
    sigma = np.exp(rng.standard_normal((3, 1, 4)) * 3).astype(dtype)
    square = np.exp(rng.standard_normal((6, 6))).astype(dtype)
    readonly = square.copy()
    readonly.flags.writeable = False
    for m, s in ((mu, sigma), (mu[0, 0][()], sigma), (np.asarray(mu[0, 0]), sigma[0, 0, 0]),
                 (square.T, square), (square[::2, ::3], square[1::2, ::3]),
                 (readonly, readonly.T)):
        got = gaussian_kl.fused.kl(m, s)
        shape = np.broadcast_shapes(np.shape(m), np.shape(s))
        assert type(got) is np.ndarray and got.shape == shape and got.dtype == dtype
        ref = kl_sigma_ld(np.broadcast_to(m, shape).reshape(-1),
                          np.broadcast_to(s, shape).reshape(-1))
        assert np.max(relative_error_in_eps(got.reshape(-1), ref, dtype)) <= bound
    v = np.asarray(rng.standard_normal((4, 3)) * 20, dtype)
    got = gaussian_kl_logvar.fused.kl(mu[:4], v)
    assert got.dtype == dtype
    assert np.max(relative_error_in_eps(got, kl_logvar_ld(mu[:4], v), dtype)) <= bound


def test_outputs_are_new_arrays_of_the_working_dtype():
    mu, sigma = np.zeros(3, np.float32), np.ones(3, np.float32)
    d_mu, d_sigma = gaussian_kl.fused.kl_grad(mu, sigma)
    assert d_mu is not mu and not np.shares_memory(d_mu, mu)
    assert d_mu.dtype == d_sigma.dtype == np.float32
    assert d_sigma.flags.writeable


@pytest.mark.parametrize(("args", "message"), [
    ((np.zeros(3), -np.ones(3)), "sigma: expected every entry > 0"),
    ((np.array([0.0, np.nan]), np.ones(2)), "mu:"),
    ((np.zeros(3), np.ones(4)), "broadcast"),
])
def test_bad_input_raises_the_kernels_error(args, message):
    with pytest.raises(ValueError, match=message) as fused_error:
        gaussian_kl.fused.kl(*args)
    with pytest.raises(ValueError) as kernel_error:
        gaussian_kl.kl(*args)
    assert str(fused_error.value) == str(kernel_error.value)


def test_check_finite_false_skips_the_value_checks():
    with np.errstate(invalid="ignore"):  # log of -1, as the kernel's NumPy body
        out = gaussian_kl.fused.kl(np.zeros(2), np.array([1.0, -1.0]), check_finite=False)
    assert out.shape == (2,) and out[0] == 0


def test_other_input_goes_to_the_kernel():
    """Lists, integers, keyword arguments and other libraries: the kernel's own result."""
    assert gaussian_kl.fused.kl([0.0, 1.0], [1, 2]).dtype == np.float64
    assert gaussian_kl.fused.kl(mu=np.zeros(2), sigma=np.ones(2)).tolist() == [0.0, 0.0]
    torch = pytest.importorskip("torch")
    out = gaussian_kl.fused.kl(torch.zeros(2), torch.ones(2))
    assert isinstance(out, torch.Tensor) and out.tolist() == [0.0, 0.0]


def test_without_numba_a_one_line_import_error_naming_the_extra(monkeypatch):
    monkeypatch.setattr(runtime_fused, "fused_available", lambda: False)
    with pytest.raises(ImportError, match=r"derive-engine\[fast\]") as error:
        gaussian_kl.fused.kl(np.zeros(2), np.ones(2))
    assert "\n" not in str(error.value) and "gaussian_kl.fused.kl" in str(error.value)
    # the module's own kernels do not need numba
    assert gaussian_kl.kl(np.zeros(2), np.ones(2)).tolist() == [0.0, 0.0]


def test_the_generated_modules_import_without_numba():
    """A generated module imports no numba (a fresh interpreter where it cannot be found)."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['numba'] = None\n"
            "import numpy as np\n"
            "from generated import gaussian_kl\n"
            "print(gaussian_kl.kl(np.zeros(1), np.ones(1))[0])\n"
            "try:\n    gaussian_kl.fused.kl(np.zeros(1), np.ones(1))\n"
            "except ImportError as e:\n    print('ImportError', e)\n")
    from pathlib import Path
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "0.0"
    assert "ImportError" in run.stdout and "derive-engine[fast]" in run.stdout


def test_exp_and_expm1_in_pieces_are_hoisted_so_the_loop_calls_nothing():
    """The cost fact the fused route rests on (issue 24), read from the lowering, never
    from a timing: a piecewise statement whose every call is TOTAL (exp, expm1) on the
    kernel's arrays has them evaluated by NumPy before its loop, which then calls nothing
    (LLVM vectorizes it); one whose piece calls log keeps its calls in the loop (log of a
    non-positive entry, where that piece is not taken, would be NaN and a warning)."""
    import sympy as sp
    from sympy.codegen.cfunctions import expm1

    from codegen.fused_backend import FusedPrinter, lower_fused
    from codegen.plan import plan_kernel
    from derive.spec import Arg, Kernel, Output

    v = sp.Symbol("v", real=True)
    def lowered(value):
        k = Kernel("f", (Arg("v", "elementwise", "v"),),
                   (Output("x", v, "x"), Output("y", value, "y")), "")
        return lower_fused(plan_kernel(k), FusedPrinter())

    low = lowered(sp.Piecewise((v**2, sp.Abs(v) < 1), (expm1(v) - sp.exp(v / 2), True)))
    assert low["quiet"] and [c for _, c in low["hoisted"]] == ["numpy.exp((1/2)*v)",
                                                               "numpy.expm1(v)"]
    codes = [b["code"] for lp in low["loops"] for st in lp["statements"]
             for b in st.get("branches", ())]
    assert not any("math." in c for c in codes), codes
    low = lowered(sp.Piecewise((v**2, v < 1), (sp.log(v) + sp.exp(v), True)))
    assert not low["quiet"] and low["hoisted"] == ()
    assert any("math.log(v)" in b["code"] for lp in low["loops"] for st in lp["statements"]
               for b in st.get("branches", ()))


def _lowered_logs(value):
    from codegen.fused_backend import FusedPrinter, lower_fused
    from codegen.plan import plan_kernel
    from derive.spec import Arg, Kernel, Output

    k = Kernel("f", (Arg("v", "positive", "v"),), (Output("y", value, "y"),), "")
    return lower_fused(plan_kernel(k), FusedPrinter())


def test_a_piecewise_of_logs_takes_them_for_every_entry_before_its_loop():
    """Issue 24: where every piece of a piecewise value calls log (or log1p, written with a
    log by a checked rule), a loop chooses each piece's argument, NumPy takes the log of
    every entry (in place, in float64), and the loop that evaluates the pieces calls
    nothing: neither loop is kept from being vectorized."""
    import sympy as sp
    from sympy.codegen.cfunctions import log1p

    v = sp.Symbol("v", positive=True)
    low = _lowered_logs(sp.Piecewise((2 * log1p(v - 1), sp.Abs(v - 1) < sp.Rational(1, 2)),
                                     (sp.log(v) - sp.log(v + 1), True)))
    first, second = low["loops"]
    assert first["before"] == () and first["outputs"] == ("_w0", "_w1")
    assert first["wide"] == (0, 1)
    assert second["before"] == (("_l0", "numpy.log(_w0, out=_w0)"),
                                ("_l1", "numpy.log(_w1, out=_w1)"))
    codes = [b["code"] for lp in low["loops"] for st in lp["statements"]
             for b in st.get("branches", ())]
    assert not any("math." in c for c in codes), codes
    # the first piece's argument is 1 + (v - 1), and so is its correction's
    assert first["statements"][0]["branches"][0]["code"] == "1 + (v - 1)"
    assert "(((1 + (v - 1)) - 1) - (v - 1))" in second["statements"][0]["branches"][0]["code"]
    # a piece without a log, or another call: the logs stay in the loop
    low = _lowered_logs(sp.Piecewise((v**2, v < 1), (sp.log(v), True)))
    assert all(lp["before"] == () for lp in low["loops"])


def test_one_expm1_a_piece_is_one_pass_of_its_own_arguments():
    """gaussian_kl_logvar's kl_grad: expm1(logvar)/2 below 88, expm1(logvar - 88) shifted
    above. Each piece's argument is chosen per entry, and NumPy takes one expm1 pass (the
    old rule evaluated both calls everywhere: two passes, the second for a rare piece),
    in the input's dtype (no correction reads the argument again)."""
    import sympy as sp
    from sympy.codegen.cfunctions import expm1

    v = sp.Symbol("v", positive=True)
    low = _lowered_logs(sp.Piecewise((expm1(v) / 2, v < 88),
                                     (sp.exp(88) * (expm1(v - 88) / 2 + sp.Rational(1, 2)),
                                      True)))
    assert low["hoisted"] == () and not low["quiet"]
    first, second = low["loops"]
    assert [b["code"] for b in first["statements"][0]["branches"]] == ["v", "v - 88"]
    assert first["wide"] == ()
    assert second["before"] == (("_l0", "numpy.expm1(_w0, out=_w0)"),)
    assert "math." not in str(second["statements"])


def test_the_log1p_rule_is_checked_where_it_is_applied(monkeypatch):
    """The form the fused backend prints for log1p is a checked step: a wrong one (the
    correction's sign flipped) fails generation."""
    import sympy as sp
    from sympy.codegen.cfunctions import log1p

    import codegen.fused_backend as fb
    from derive.derivation import Step, StepCheckError

    right = fb.log1p_as_log

    def wrong(expr, w):
        form, step = right(expr, w)
        bad = form.xreplace({sp.log(w): sp.log(w) + 2 * (w - 1)})
        return bad, Step(step.lhs, bad, step.reason, given=step.given, notes=step.notes)

    monkeypatch.setattr(fb, "log1p_as_log", wrong)
    v = sp.Symbol("v", positive=True)
    with pytest.raises(StepCheckError):
        _lowered_logs(sp.Piecewise((log1p(v - 1), v < 2), (sp.log(v), True)))


@pytest.mark.parametrize("kernel", ["kl", "kl_grad", "kl_grad_reparam", "kl_grad_stl"])
def test_the_pair_loops_call_nothing(kernel):
    """gaussian_kl_pair's x (log1p of the relative difference near 1, the log of the
    ratio elsewhere, two logs where the ratio underflows) is one NumPy log pass per log of
    a piece, and kl_grad's expm1 of x one NumPy pass each, between loops that call nothing
    (they called log1p, log or expm1 once per entry)."""
    import inspect
    import re

    loops = [f for n, f in vars(gaussian_kl_pair).items()
             if re.fullmatch(rf"_{kernel}_loop\d*", n) and inspect.isfunction(f)]
    assert loops
    for f in loops:
        assert not re.search(r"math\.\w+\(", inspect.getsource(f)), f.__name__


def test_a_call_on_what_a_loop_computed_is_taken_between_the_loops():
    """exp/expm1/log outside every piece, of a value an earlier loop computes (not one the
    kernel returns): NumPy evaluates it on every entry between the loops, from a float64
    array (the loops compute float32 entries in float64), and the next loop calls
    nothing; two such calls of values computed before the same loop share it."""
    import sympy as sp
    from sympy.codegen.cfunctions import expm1

    from codegen.fused_backend import FusedPrinter, lower_fused
    from codegen.plan import plan_kernel
    from derive.spec import Arg, Kernel, Output

    v = sp.Symbol("v", real=True)
    x = sp.Symbol("x", real=True)
    k = Kernel("f", (Arg("v", "elementwise", "v"),), (
        Output("x", sp.Piecewise((v**2, v < 1), (v, True)), "x", internal=True),
        Output("y", expm1(x / 2) + v, "y"), Output("z", sp.exp(x) * v, "z")), "")
    low = lower_fused(plan_kernel(k), FusedPrinter())
    first, second = low["loops"]
    assert first["outputs"] == ("x",) and first["wide"] == (0,)
    assert second["before"] == (("_e0", "numpy.expm1((1/2)*x)"), ("_e1", "numpy.exp(x)"))
    codes = [st["code"] for st in second["statements"]]
    assert not any("math." in c for c in codes), codes


@pytest.mark.parametrize("module", [gaussian_kl_logvar, gaussian_kl_pair_logvar])
def test_the_logvar_loops_call_no_exp(module):
    """Every loop of the logvar modules' kl and kl_grad (the eager torch route's bodies)
    calls no exp or expm1 per entry: NumPy evaluates them before the loop (several entries
    per instruction), so the fused body is not the slower one at 1e5 entries."""
    import inspect
    import re

    loops = [f for n, f in vars(module).items()
             if re.fullmatch(r"_kl(_grad)?_loop\d*", n) and inspect.isfunction(f)]
    assert loops
    for f in loops:
        assert not re.search(r"math\.(exp|expm1)\(", inspect.getsource(f)), f.__name__


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_overflow_in_an_untaken_hoisted_piece_warns_nothing(dtype):
    """exp/expm1 of a piece evaluated everywhere overflows where that piece is not taken
    (float32 expm1(100)): no warning, and the NumPy body's value bit for bit."""
    import warnings

    v = np.array([-1e3, -171, 0.3, 87, 88, 89, 100, 171, 710, 1e3], dtype)
    mu = np.linspace(-3, 3, v.size).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = gaussian_kl_logvar.fused.kl_grad(mu, v)
        pair = gaussian_kl_pair_logvar.fused.kl_grad(mu, v, mu, v[::-1].copy())
    with np.errstate(all="ignore"):
        want = gaussian_kl_logvar.kl_grad(mu, v)
        want_pair = gaussian_kl_pair_logvar.kl_grad(mu, v, mu, v[::-1].copy())
    for a, b in zip(got + pair, want + want_pair, strict=True):
        assert a.dtype == dtype and np.array_equal(a, b, equal_nan=True)
    # and against the derivative typed in (d/d logvar of (mu**2 + e**v - 1 - v)/2 is
    # expm1(v)/2, in mpmath, rounded to the dtype: inf where it overflows the dtype)
    import mpmath
    want_mu = mu
    with np.errstate(over="ignore"):  # the reference's own cast to float32 overflows
        want_v = np.array([float(mpmath.expm1(mpmath.mpf(float(x))) / 2) for x in v]
                          ).astype(dtype)
    np.testing.assert_array_equal(got[0], want_mu)
    assert np.array_equal(np.isfinite(got[1]), np.isfinite(want_v)), (got[1], want_v)
    finite = np.isfinite(want_v)
    np.testing.assert_allclose(got[1][finite], want_v[finite], rtol=4 * np.finfo(dtype).eps,
                               atol=0)


# --- a user's kernel: what has no element form keeps its NumPy body ----------------------

def _user_module(name: str, kernels: tuple) -> object:
    """A kernel module of a user's ``Module`` spec, rendered and imported in memory."""
    import sys
    import types

    from codegen.backends import render_module
    from derive.spec import Module

    source = render_module(Module(name, "t", "d", kernels, "src", "elementwise"), "test")
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)  # noqa: S102
    return module


@pytest.mark.parametrize("which", ["logaddexp", "mod", "sinc"])
def test_a_user_function_with_no_math_form_keeps_its_numpy_body(which):
    """NumPy functions that Python's math lacks (logaddexp, mod, sinc) printed with a
    math. prefix: generate failed (KeyError) or numba failed at the first call; now the
    kernel has no fused body, and its value is the hand-written one."""
    import sympy as sp
    from sympy.codegen.numpy_nodes import logaddexp

    from derive.spec import Arg, Kernel, Output

    a, b = sp.symbols("a b", real=True)
    value = {"logaddexp": logaddexp(a, b), "mod": sp.Mod(a, 2) + b, "sinc": sp.sinc(a) + b}
    want = {"logaddexp": np.logaddexp, "mod": lambda x, y: np.mod(x, 2) + y,
            "sinc": lambda x, y: np.sin(x) / x + y}[which]
    args = (Arg("a", "elementwise", "a"), Arg("b", "elementwise", "b"))
    m = _user_module(f"user_{which}", (Kernel("f", args, (Output("y", value[which], "y"),),
                                              "f."),))
    assert not hasattr(m, "fused")
    x, y = np.array([1.5, 2.5, -0.7]), np.array([0.1, 0.2, 3.0])
    np.testing.assert_allclose(m.f(x, y), want(x, y), rtol=4 * np.finfo(float).eps)


def test_a_user_kernel_of_one_argument_backpropagates_in_torch():
    """f = sinc(a) with its derived gradient (one output, not a tuple): torch's backward
    zipped the gradient array's entries with the arguments and raised ValueError."""
    torch = pytest.importorskip("torch", reason="torch is not installed (test extra)")
    import sympy as sp

    from derive.spec import Arg, Kernel, Output

    a = sp.Symbol("a", real=True)
    args = (Arg("a", "elementwise", "a"),)
    m = _user_module("user_sinc_grad", (
        Kernel("f", args, (Output("y", sp.sinc(a), "y"),), "f.", gradient="f_grad"),
        Kernel("f_grad", args, (Output("d_a", sp.diff(sp.sinc(a), a), "d"),), "g.")))
    t = torch.tensor([1.5, 2.5], dtype=torch.float64, requires_grad=True)
    m.f(t).sum().backward()
    x = np.array([1.5, 2.5])
    np.testing.assert_allclose(t.grad.numpy(), (x * np.cos(x) - np.sin(x)) / x**2,
                               rtol=1e-14)


def test_a_user_kernel_with_an_argument_it_does_not_read_has_no_fused_body():
    """f(a, s) = a: the fused body took the arguments the kernel reads, the runtime passes
    every one (TypeError: 3 positional arguments, 4 given); such a kernel keeps its NumPy
    body, and fused.f is not offered."""
    import sympy as sp

    from derive.spec import Arg, Kernel, Output

    a = sp.Symbol("a", real=True)
    args = (Arg("a", "elementwise", "a"), Arg("s", "positive", "s"))
    m = _user_module("user_unread", (Kernel("f", args, (Output("y", a * 2, "y"),), "f."),))
    assert not hasattr(getattr(m, "fused", None), "f")
    np.testing.assert_array_equal(m.f(np.array([1.5]), np.array([2.0])), [3.0])
