"""Run the benchmarks of issue 5 and write ``benchmarks.md`` and ``benchmarks.png``.

A progress bar (tqdm, on a terminal) counts the result rows as they are measured.

Usage (from the repository root)::

    python -m bench                 # full run, a few minutes; writes docs/
    python -m bench --quick         # under a minute (CI); same tables, fewer sizes
    python -m bench --quick --out /tmp/bench
    python -m bench --parts kernels,regen

PyTorch (comparison 1) and matplotlib (the plot) come with the ``bench`` extra
(``pip install -e '.[bench]'``); without them those parts are skipped with a note.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

bench = importlib.import_module("bench")  # first: it pins the thread counts before NumPy

import numpy as np  # noqa: E402

from bench import (  # noqa: E402
    accuracy,
    autodiff,
    dense,
    handwritten_xp,
    kernels,
    libraries,
    marking,
    pair,
    regen,
    report,
    targets,
)

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("autodiff", "kernels", "regen", "libraries", "pair", "targets", "accuracy", "marking",
         "dense")

#: Sizes, repeats and timeouts of the two modes.
MODES = {
    "quick": {
        "autodiff": {"dims": [8, 32, 128, 512], "batch": 8, "repeats": 3, "min_sample": 0.005},
        "kernels": {"sizes": [10**3, 10**5, 10**6], "jacobian_max": 10**5, "repeats": 5,
                    "min_sample": 0.005},
        # no cold generate (a slow machine's outlasted the timeout): the warm runs, from
        # the cache the drift check before the benchmarks filled
        "regen": {"sizes": [16], "generate_runs": 1, "generate_timeout": 25.0,
                  "explicit_timeout": 60.0, "cold": False},
        "libraries": {"sizes": [10**3, 10**5], "repeats": 5, "min_sample": 0.005},
        "pair": {"sizes": [10**4, 10**6], "repeats": 5, "min_sample": 0.005},
        # a few cases (the whole table: python -m bench.accuracy --quick, 4 min)
        "accuracy": {"samples": 100, "timeout": 60.0,
                     "names": ["3.1", "3.3.6", "3.7", "softplus", "log1mexp", "logsumexp2"]},
        "targets": {"sizes": [4096, 10**5], "repeats": 5, "min_sample": 0.005},
        "marking": {"stride": 16},
        "dense": {"points": 10_000, "check": 5},
    },
    "full": {
        "autodiff": {"dims": [8, 32, 128, 512], "batch": 64, "repeats": 7, "min_sample": 0.05},
        "kernels": {"sizes": [10**3, 10**4, 10**5, 10**6, 10**7], "jacobian_max": 10**6,
                    "repeats": 15, "min_sample": 0.02},
        "regen": {"sizes": [16, 32, 64], "generate_runs": 5, "generate_timeout": 600.0,
                  "explicit_timeout": 900.0},
        "libraries": {"sizes": [10**3, 10**5, 10**7], "repeats": 9, "large_repeats": 5,
                      "min_sample": 0.02},
        "pair": {"sizes": [10**3, 10**5, 10**7], "repeats": 15, "min_sample": 0.02},
        "accuracy": {"samples": 400, "timeout": 600.0},
        "targets": {"sizes": [4096, 10**5, 10**6, 10**7], "repeats": 11, "min_sample": 0.02},
        "marking": {"stride": 1},
        "dense": {"points": 100_000, "check": 40},
    },
}


def log(message: str) -> None:
    print(message, flush=True)


def _expected_rows(mode: dict[str, dict], parts: list[str], modules: list[str]) -> int:
    """How many result rows (log lines indented by two spaces) the run will print: the
    progress bar's total. An estimate is enough: the bar grows if a part prints more."""
    rows = 0
    if "autodiff" in parts:
        rows += len(mode["autodiff"]["dims"])
    if "kernels" in parts:
        sizes = mode["kernels"]["sizes"]
        jacobian = sum(size <= mode["kernels"]["jacobian_max"] for size in sizes)
        for module in modules:
            count = len(kernels.COUPLING_KERNELS if module == "coupling" else kernels.KL_KERNELS)
            rows += (count * len(sizes) if module != "coupling"
                     else (count - 1) * len(sizes) + jacobian)
    if "regen" in parts:
        rows += 1 + len(mode["regen"]["sizes"])
    if "libraries" in parts:
        # NumPy overhead (5 kernels per shape), PyTorch and JAX (6 kernels per size each),
        # two torch.distributions rows; fewer where a library is missing.
        rows += (5 * len(libraries.OVERHEAD_SHAPES)
                 + 2 * len(handwritten_xp.CASES) * len(mode["libraries"]["sizes"]) + 2)
    if "accuracy" in parts:
        rows += len(mode["accuracy"].get("names") or accuracy.CASES)
    if "targets" in parts:  # NumPy (2 + 2 per size, twice with numba), torch (20), jax
        sizes = mode["targets"]["sizes"]
        rows += 2 + 3 * len(sizes) + 20
        from kernel_runtime.fused import fused_available

        if fused_available():
            rows += 2 + 2 * len(sizes)
    if "dense" in parts:
        rows += 9
    if "marking" in parts:
        rows += 1
    return rows


def _progress_bar(total: int):
    """A tqdm bar on stderr (shown on a terminal only); None without tqdm."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="bench", unit="row", disable=None, dynamic_ncols=True)


def _meta(quick: bool) -> dict[str, object]:
    import sympy

    meta = {
        "quick": quick,
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sympy": sympy.__version__,
        "torch": getattr(sys.modules.get("torch"), "__version__", None),
        "threads": ", ".join(f"{v}={os.environ.get(v)}" for v in bench.THREAD_VARIABLES),
        "threads_pinned": bench.THREADS_PINNED,
    }
    return meta


def _timings(value: object) -> object:
    """``value`` read back from JSON with each timing a :class:`~bench.timing.Timing` again
    (its samples are not stored: the median stands for each, so their count is kept)."""
    from bench.timing import Timing

    if isinstance(value, dict):
        if set(value) == {"median", "q1", "q3", "loops", "repeats"}:
            return Timing(value["median"], value["q1"], value["q3"],
                          (value["median"],) * int(value["repeats"]), value["loops"])
        return {k: _timings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_timings(v) for v in value]
    return value


def _keep_other_parts(results: dict, path: Path, parts: list[str],
                      log: Callable[[str], None]) -> None:
    """Take the results of the parts not run now from an earlier run's ``path``, with
    their notes and when and how they were measured (``meta["parts"]``)."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log(f"--update: nothing kept from {path} ({err})")
        return
    old = _timings(old)
    old_meta = old.get("meta", {})
    before = old_meta.get("parts") or {
        p: {"quick": old_meta.get("quick"), "date": old_meta.get("date")} for p in PARTS}
    by_part = old.get("notes_by_part", {})
    for p in PARTS:
        if p in parts or p not in old or p not in before:
            continue
        results[p] = old[p]
        results["meta"]["parts"][p] = {**before[p], "kept": True}
        if by_part.get(p):
            results["notes_by_part"][p] = by_part[p]
    results["meta"]["parts"] = {p: results["meta"]["parts"][p] for p in PARTS
                                if p in results["meta"]["parts"]}


def _json_default(obj):
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    raise TypeError(type(obj).__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer sizes and repeats: finishes in under a minute")
    parser.add_argument("--out", type=Path, default=ROOT / "docs",
                        help="directory for benchmarks.md/.png/.json (default: docs/)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--update", action="store_true",
                        help="keep the other parts' results from OUT/benchmarks.json and "
                             "rewrite the report with the parts run now (the report says "
                             "which run each part comes from)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    mode = MODES["quick" if args.quick else "full"]
    os.chdir(ROOT)  # the kernels import from this checkout, derive runs on it
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

    start = time.perf_counter()
    results: dict[str, object] = {"notes": [], "notes_by_part": {}}
    current = ["setup"]
    early: list[str] = []
    modules = kernels.available_modules(log=early.append) if "kernels" in parts else []
    bar = _progress_bar(_expected_rows(mode, parts, modules))

    def note(message: str) -> None:
        if bar is None or bar.disable:
            log(message)
        else:  # above the bar, which then redraws
            bar.write(message, file=sys.stdout)
            if message.startswith("  "):  # a result row
                bar.total = max(bar.total, bar.n + 1)
                bar.update(1)
        if message.startswith(("note:", "WARNING:")):
            results["notes_by_part"].setdefault(current[0], []).append(
                message.split(":", 1)[1].strip())

    def part(title: str, name: str) -> None:
        current[0] = name
        note(title)
        if bar is not None:
            bar.set_description(f"bench: {name}")

    for message in early:
        note(message)
    if "autodiff" in parts:
        part("1. log-determinant: closed form vs PyTorch autodiff", "autodiff")
        results["autodiff"] = autodiff.run(**mode["autodiff"], log=note)
    if "kernels" in parts:
        part("2./3. generated kernels vs hand-written NumPy and the copy floor", "kernels")
        results["kernels"] = kernels.run(**mode["kernels"], modules=modules, log=note)
    if "regen" in parts:
        part("4. regeneration", "regen")
        results["regen"] = regen.run(**mode["regen"], log=note)
    if "libraries" in parts:
        part("5. per-call overhead; the kernels in PyTorch and JAX", "libraries")
        results["libraries"] = libraries.run(**mode["libraries"], log=note)
    if "pair" in parts:
        part("6. the KL from a learned prior vs torch.distributions and the NumPy one-liner",
             "pair")
        results["pair"] = pair.run(**mode["pair"], log=note)
    if "targets" in parts:
        part("7. the targets of issue 24: eager PyTorch, NumPy and jax.jit at users' sizes",
             "targets")
        results["targets"] = targets.run(**mode["targets"], log=note)
    if "accuracy" in parts:
        part("8. accuracy of derive arrange: Hamming ch. 3 (FPBench) and ML expressions, in ulp",
             "accuracy")
        results["accuracy"] = accuracy.run(**mode["accuracy"], log=note)
    if "marking" in parts:
        part("9. marking: derive check's time per answer in a batch", "marking")
        results["marking"] = marking.run(**mode["marking"], log=note)
    if "dense" in parts:
        part("10. dense measured bounds of the KL kernels: every piece and boundary, in eps",
             "dense")
        results["dense"] = dense.run(**mode["dense"], log=note)
    if bar is not None:
        bar.close()

    meta = _meta(args.quick)
    meta["elapsed"] = time.perf_counter() - start
    meta["parts"] = {p: {"quick": args.quick, "date": meta["date"]} for p in parts}
    results["meta"] = meta
    if args.update:
        _keep_other_parts(results, args.out / "benchmarks.json", parts, log)
    results["notes"] = [n for notes in results["notes_by_part"].values() for n in notes]
    text = (report.markdown(results) + "\n".join(pair.markdown(results.get("pair"))
                                                  + marking.markdown(results.get("marking")))
            + "\n" + "\n".join(dense.section(results.get("dense"))) + "\n")
    issue24 = targets.markdown(results.get("targets"))
    if issue24:  # at the top, before the first section of the report
        head, sep, rest = text.partition("\n## ")
        text = head + "\n" + "\n".join(issue24) + "\n" + sep + rest
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.md").write_text(text, encoding="utf-8")
    (args.out / "benchmarks.json").write_text(
        json.dumps(results, default=_json_default, indent=1), encoding="utf-8")
    wrote = ["benchmarks.md", "benchmarks.json"]
    if results.get("accuracy"):
        (args.out / "arrange.md").write_text(accuracy.document(results["accuracy"]),
                                             encoding="utf-8")
        wrote.append("arrange.md")
    if report.plot(results, args.out / "benchmarks.png", log=log):
        wrote.append("benchmarks.png")
    print()
    print(text)
    log(f"wrote {', '.join(str(args.out / w) for w in wrote)} "
        f"({time.perf_counter() - start:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
