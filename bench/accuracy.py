"""Accuracy of ``derive arrange`` (issue 23, item 5): error in ulp against mpmath.

For each expression -- Hamming's chapter-3 examples as FPBench collects them
(``benchmarks/hamming-ch3.fpcore``: the expression and its ``:pre`` domain; that file
gives no expert rewrite, so none is shown for them) and the expressions ML code contains
(softplus, log-sigmoid, binary cross-entropy with logits, logsumexp of two,
``log(1 - exp(-x))``, the Gaussian KL and log-density), with domains spanning the floats
-- the search runs on one sample of the domain, and the expression as typed, the expert's
rewrite (for the ML expressions: the form numerical libraries use) and ours are then
measured on another, independent sample: maximum and mean error in ulp, and the points
where a value is not finite though the true value is.

Run alone (writes ``docs/arrange.md`` and ``arrange.json``)::

    python -m bench.accuracy [--quick] [--out docs]

or as the ``accuracy`` part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sympy as sp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # pragma: no cover - run as a script
    sys.path.insert(0, str(ROOT))

from derive import search  # noqa: E402

BIG = 1e300
#: where exp of the variable is formed: beyond, everything over- or underflows in the true
#: value too, and mpmath's exp of 1e300 costs 0.2 s a point
EXP = 1e3


@dataclass(frozen=True)
class Case:
    """One benchmark expression: name, source, SymPy text, domain, expert rewrite."""

    name: str
    source: str
    expr: str
    over: tuple[str, ...]
    expert: str | None = None


def _over(**bounds: tuple[float, float]) -> tuple[str, ...]:
    return tuple(f"{k} in [{lo!r}, {hi!r}]" for k, (lo, hi) in bounds.items())


_ALL = (-BIG, BIG)
_POS = (0.0, BIG)
_EXPD = (-EXP, EXP)

#: Hamming, chapter 3, in FPBench's order (``:pre`` gives the domain; a variable it does
#: not constrain spans the floats, to 1e300 in magnitude, or to 1e3 where exp is formed).
HAMMING = (
    Case("3.1", "NMSE example 3.1", "sqrt(x + 1) - sqrt(x)", _over(x=_POS)),
    Case("3.3", "NMSE example 3.3", "sin(x + eps) - sin(x)", _over(x=_ALL, eps=_ALL)),
    Case("3.4", "NMSE example 3.4", "(1 - cos(x))/sin(x)", _over(x=_ALL)),
    Case("3.5", "NMSE example 3.5", "atan(N + 1) - atan(N)", _over(N=_ALL)),
    Case("3.6", "NMSE example 3.6", "1/sqrt(x) - 1/sqrt(x + 1)", _over(x=_POS)),
    Case("3.3.1", "NMSE problem 3.3.1", "1/(x + 1) - 1/x", _over(x=_ALL)),
    Case("3.3.2", "NMSE problem 3.3.2", "tan(x + eps) - tan(x)", _over(x=_ALL, eps=_ALL)),
    Case("3.3.3", "NMSE problem 3.3.3", "1/(x + 1) - 2/x + 1/(x - 1)", _over(x=_ALL)),
    Case("3.3.4", "NMSE problem 3.3.4", "(x + 1)**(1/3) - x**(1/3)", _over(x=_POS)),
    Case("3.3.5", "NMSE problem 3.3.5", "cos(x + eps) - cos(x)", _over(x=_ALL, eps=_ALL)),
    Case("3.3.6", "NMSE problem 3.3.6", "log(N + 1) - log(N)", _over(N=(6.8e15, BIG))),
    Case("3.3.7", "NMSE problem 3.3.7", "exp(x) - 2 + exp(-x)", _over(x=_EXPD)),
    Case("p42+", "NMSE p42, positive", "(-b + sqrt(b**2 - 4*a*c))/(2*a)",
         _over(a=_ALL, b=_ALL, c=_ALL)),
    Case("p42-", "NMSE p42, negative", "(-b - sqrt(b**2 - 4*a*c))/(2*a)",
         _over(a=_ALL, b=_ALL, c=_ALL)),
    Case("3.2.1+", "NMSE problem 3.2.1, positive", "(-b2 + sqrt(b2**2 - a*c))/a",
         _over(a=_ALL, b2=_ALL, c=_ALL)),
    Case("3.2.1-", "NMSE problem 3.2.1, negative", "(-b2 - sqrt(b2**2 - a*c))/a",
         _over(a=_ALL, b2=_ALL, c=_ALL)),
    Case("3.7", "NMSE example 3.7", "exp(x) - 1", _over(x=_EXPD)),
    Case("3.8", "NMSE example 3.8", "(N + 1)*log(N + 1) - N*log(N) - 1", _over(N=(6.8e15, BIG))),
    Case("3.9", "NMSE example 3.9", "1/x - 1/tan(x)", _over(x=_ALL)),
    Case("3.10", "NMSE example 3.10", "log(1 - x)/log(1 + x)", _over(x=(-1.0, 1.0))),
    Case("3.4.1", "NMSE problem 3.4.1", "(1 - cos(x))/x**2", _over(x=_ALL)),
    Case("3.4.2", "NMSE problem 3.4.2",
         "eps*(exp((a + b)*eps) - 1)/((exp(a*eps) - 1)*(exp(b*eps) - 1))",
         _over(a=_EXPD, b=_EXPD, eps=(-1.0, 1.0))),
    Case("3.4.3", "NMSE problem 3.4.3", "log((1 - eps)/(1 + eps))", _over(eps=(-1.0, 1.0))),
    Case("3.4.4", "NMSE problem 3.4.4", "sqrt((exp(2*x) - 1)/(exp(x) - 1))", _over(x=_EXPD)),
    Case("3.4.5", "NMSE problem 3.4.5", "(x - sin(x))/(x - tan(x))", _over(x=_ALL)),
    Case("3.4.6", "NMSE problem 3.4.6", "(x + 1)**(1/n) - x**(1/n)",
         _over(x=_POS, n=(-1e3, 1e3))),
    Case("3.5", "NMSE section 3.5", "exp(a*x) - 1", _over(a=_EXPD, x=(-1.0, 1.0))),
    Case("3.11", "NMSE section 3.11", "exp(x)/(exp(x) - 1)", _over(x=_EXPD)),
)

#: Expressions ML code contains, typed as they are written, and the libraries' forms.
ML = (
    Case("softplus", "ML", "log(1 + exp(x))", _over(x=_EXPD), "softplus(x)"),
    Case("log-sigmoid", "ML", "log(1/(1 + exp(-x)))", _over(x=_EXPD), "-softplus(-x)"),
    Case("BCE with logits", "ML",
         "-(y*log(1/(1 + exp(-x))) + (1 - y)*log(1 - 1/(1 + exp(-x))))",
         _over(x=_EXPD, y=(0.0, 1.0)),
         "Max(x, 0) - x*y + log1p(exp(-Abs(x)))"),
    Case("logsumexp2", "ML", "log(exp(a) + exp(b))", _over(a=_EXPD, b=_EXPD),
         "Max(a, b) + log1p(exp(-Abs(a - b)))"),
    Case("log1mexp", "ML", "log(1 - exp(-x))", _over(x=(5e-324, EXP)),
         "Piecewise((log(-expm1(-x)), x < log(2)), (log1p(-exp(-x)), True))"),
    Case("gaussian KL", "ML", "(sigma**2 + mu**2 - 1)/2 - log(sigma)",
         _over(mu=(-1e150, 1e150), sigma=(1e-300, 1e150))),
    Case("gaussian KL near the prior", "ML", "(sigma**2 + mu**2 - 1)/2 - log(sigma)",
         _over(mu=(-1e-8, 1e-8), sigma=(0.5, 2.0))),
    Case("gaussian log-density", "ML", "-(x - mu)**2/(2*sigma**2) - log(sigma) - log(2*pi)/2",
         _over(x=(-1e150, 1e150), mu=(-1e150, 1e150), sigma=(1e-150, 1e150))),
    Case("log1p(x^2)", "issue 23", "log(1 + x**2)", _over(x=_ALL)),
    Case("log|sinh|", "issue 23", "log(abs(sinh(x)))", _over(x=(-1e5, 1e5))),
)

CASES = HAMMING + ML

#: Why a case stays above 4 ulp, as far as it is understood (printed under the table).
REASONS = {
    "3.3": "x and eps span the floats independently (FPBench gives no :pre), and the true "
           "value needs sin of x + eps exactly. The search keeps 2 cos(x + eps/2) sin(eps/2) "
           "with x + eps/2 split exactly (TwoSum, s + t) and cos(s + t) = cos(s)cos(t) - "
           "sin(s)sin(t) (rules 'trig difference' and 'trig of an exact sum'): where eps/2 is "
           "below x's ulp, t is eps/2 itself, and where cos(s + t) is small against its two "
           "terms (each a product of values rounded once) they cancel: 6 of 400 points above "
           "4 ulp on this sample, at most 32 (0.0070 true, terms near 0.5). Within 4 ulp it "
           "needs sin and cos with their rounding carried (double-double results, or a "
           "106-bit Payne-Hanek reduction of the exact sum), which no array namespace has",
    "3.3.2": "as 3.3: cos of the exact sum x + eps (in sin(eps)/(cos(x) cos(x + eps))), "
             "which cancels where it is small: 1 of 400 points above 4 ulp (5)",
    "3.3.5": "as 3.3: sin of the exact sum x + eps/2 cancels where it is small: 1 of 400 "
             "points above 4 ulp (54, a true value of 0.015)",
}


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Timeout


def _measure_expr(expr: sp.Expr, variables: tuple[sp.Symbol, ...], points: np.ndarray,
                  true: np.ndarray) -> dict[str, float]:
    fn = search.float_function(expr, variables)
    computed = fn(*[points[:, k].copy() for k in range(points.shape[1])])
    err = search.ulp_error(computed, true)
    m = search.measure(err, computed, true)
    return {"max": m.max_ulp, "mean": m.mean_ulp, "nonfinite": m.nonfinite}


def run_case(case: Case, samples: int, timeout: float,
             log: Callable[[str], None] = print) -> dict[str, object]:
    """Search on one sample, measure the three forms on another; one row."""
    start = time.perf_counter()
    row: dict[str, object] = {"name": case.name, "source": case.source, "expr": case.expr,
                              "over": list(case.over), "expert_expr": case.expert}
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        found = search.arrange(case.expr, list(case.over), samples=samples, seed=0)
        row["ours_expr"] = sp.sstr(found.expr)
        row["steps"] = len(found.derivation.steps)
        row["refused"] = len(found.refused)
        ours = found.expr
    except _Timeout:
        found, ours = None, None
        row["note"] = f"the search took longer than {timeout:.0f} s: kept as typed"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    names = [search.parse_over(o) for o in case.over]
    variables = tuple(sp.Symbol(n, real=True) for n, _, _ in names)
    box = {v: (lo, hi) for v, (_, lo, hi) in zip(variables, names, strict=True)}
    typed = search.parse_expression(case.expr, [v.name for v in variables])
    if ours is None:
        ours = typed
    points = search.sample_box(box, samples, np.random.default_rng(12345))
    true = search.reference(typed, variables, points)
    keep = ~np.isnan(true)
    points, true = points[keep], true[keep]
    row["points"] = int(len(true))
    row["naive"] = _measure_expr(typed, variables, points, true)
    row["ours"] = _measure_expr(ours, variables, points, true)
    if case.expert:
        expert = sp.sympify(case.expert, locals={**search.FUNCTIONS,
                                                 **{v.name: v for v in variables},
                                                 "Max": sp.Max, "Piecewise": sp.Piecewise})
        row["expert"] = _measure_expr(expert, variables, points, true)
    row["seconds"] = time.perf_counter() - start
    log(f"  {case.name:22} naive max {row['naive']['max']:.3g} ulp | ours max "
        f"{row['ours']['max']:.3g} ulp, mean {row['ours']['mean']:.3g} "
        f"({row['seconds']:.1f} s)")
    return row


def run(samples: int = 400, timeout: float = 120.0, log: Callable[[str], None] = print,
        names: list[str] | None = None) -> dict[str, object]:
    """Every case's row, and the summary of issue 23's done-when."""
    rows = [run_case(c, samples, timeout, log) for c in CASES
            if names is None or c.name in names]
    return summarize(rows, samples)


def summarize(rows: list[dict[str, object]], samples: int) -> dict[str, object]:
    """The summary of issue 23's done-when over ``rows`` (rows of separate runs, in
    :data:`CASES` order, may be joined here)."""
    within = [r for r in rows if r["ours"]["max"] <= 4 and r["ours"]["nonfinite"] == 0]
    worse = [r for r in rows if r["ours"]["max"] > r["naive"]["max"]
             or r["ours"]["mean"] > r["naive"]["mean"] * 1.5 + 0.5]
    finite = [r for r in rows if r["ours"]["nonfinite"] == 0]
    return {"rows": rows, "samples": samples, "within_4_ulp": len(within),
            "finite": len(finite), "worse": [r["name"] for r in worse], "total": len(rows)}


def _ulp(v: float) -> str:
    if v >= 2.0 ** 64:
        return "NaN"
    return f"{v:.3g}" if v >= 10 else f"{v:.2g}"


def markdown(result: dict[str, object] | None) -> list[str]:
    """The table and the summary, as Markdown lines."""
    if not result:
        return []
    rows = result["rows"]
    out = ["## Accuracy of `derive arrange` (issue 23)", "",
           f"Error in ulp against mpmath on {result['samples']} points a case, sampled as "
           "floats are spread (where the true value is real); the search ran on another "
           "sample (seed 0, refined around its worst points) than the one measured here "
           "(seed 12345). Each form is evaluated in the search's float model (IEEE 754 "
           "arithmetic and the C library's scalar functions, the same on every machine; not "
           "NumPy's CPU-dependent vector loops). "
           "`max`/`mean`: the distance in float64 steps (NaN: a NaN where the "
           "true value is a number; about 4.6e18: a 0 or an infinity where the true value is "
           "a normal number); `nf`: points not finite where the true value is. "
           "Hamming's examples come from FPBench's "
           "`hamming-ch3.fpcore`, which gives no expert rewrite: that column is empty "
           "for them; for the ML expressions it is the form libraries use.", "",
           "| case | expression | domain | naive max | naive mean | nf | expert max | "
           "expert mean | ours max | ours mean | nf | steps |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ex = r.get("expert")
        out.append(
            f"| {r['name']} | `{r['expr']}` | {'; '.join(r['over'])} | "
            f"{_ulp(r['naive']['max'])} | {_ulp(r['naive']['mean'])} | "
            f"{r['naive']['nonfinite']} | "
            f"{_ulp(ex['max']) if ex else '—'} | {_ulp(ex['mean']) if ex else '—'} | "
            f"{_ulp(r['ours']['max'])} | {_ulp(r['ours']['mean'])} | "
            f"{r['ours']['nonfinite']} | {r.get('steps', '—')} |")
    out += ["", f"Within 4 ulp (max) and finite: **{result['within_4_ulp']} of "
            f"{result['total']}** ({100 * result['within_4_ulp'] / result['total']:.0f}%; "
            "the goal is 90%). Finite wherever the true value is: "
            f"{result['finite']} of {result['total']}. Worse than typed (max, or mean by "
            f"more than half): {', '.join(result['worse']) or 'none'}.", "",
            "Not brought within 4 ulp:", ""]
    for r in rows:
        if not (r["ours"]["max"] <= 4 and r["ours"]["nonfinite"] == 0):
            out.append(f"- {r['name']} `{r['expr']}`: ours max {_ulp(r['ours']['max'])} ulp"
                       + (f" ({r['note']})" if r.get("note") else "")
                       + (f"; why: {REASONS[r['name']]}" if r["name"] in REASONS else "")
                       + (f"; arranged as `{r['ours_expr']}`" if r.get("ours_expr")
                          and len(r["ours_expr"]) < 160 else ""))
    for name in result["worse"]:
        out.append(f"\nWorse than typed: {name}: {REASONS.get(name, 'not understood')}.")
    out.append("")
    return out


def document(result: dict[str, object]) -> str:
    """``arrange.md``: the table and the summary, under a title."""
    return ("# `derive arrange`: accuracy benchmark\n\nRegenerate with "
            "`python -m bench.accuracy` (or as part 8 of `python -m bench`).\n\n"
            + "\n".join(markdown(result)[2:]) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.accuracy",
                                description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="100 points a case (default 400)")
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    p.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    p.add_argument("--update", action="store_true",
                   help="keep the other cases' rows of the existing arrange.json (rerun only "
                        "--cases)")
    args = p.parse_args(argv)
    names = args.cases.split(",") if args.cases else None
    result = run(samples=100 if args.quick else 400, timeout=60.0 if args.quick else 600.0,
                 names=names)
    old = args.out / "arrange.json"
    if args.update and old.exists():
        kept = {r["name"]: r for r in json.loads(old.read_text(encoding="utf-8"))["rows"]}
        kept.update({r["name"]: r for r in result["rows"]})
        result = summarize([kept[c.name] for c in CASES if c.name in kept], result["samples"])
    args.out.mkdir(parents=True, exist_ok=True)
    text = document(result)
    (args.out / "arrange.md").write_text(text, encoding="utf-8")
    (args.out / "arrange.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
