"""Comparison 4: regeneration and explicit derivation times, each in a fresh process.

``run`` times ``python -m derive generate --check`` cold (a new interpreter each time, so
no SymPy or engine cache survives, and ``--no-cache``); with the derivation cache
(:func:`time_cache`, in a copy of the engine with a cache folder of its own): nothing
changed (warm), and after adding one block to the copy's
``derive/coursework/blocks.py`` (each run from the warm cache); and it runs this module
as ``python -m bench.regen N`` for each ``N``, which prints one JSON object with the
seconds it took to

- ``import``: import sympy and the engine;
- ``build``: derive 1.1, 1.2 and 1.3 for the question's block in index notation (every
  step checked, the explicit models at n = 1, 2, 3 included);
- ``logdet_closed``: the log-determinant at size ``N`` from the derived closed form
  (``derive.vocabulary.instantiate`` of 1.3's ``log_abs_det``);
- ``jacobian_explicit``: the explicit ``2N x 2N`` Jacobian of ``y1 = exp(G(x2)) x1 + F(x2)``,
  ``y2 = exp(s) x2`` by ``sympy.Matrix.jacobian``, with ``F_k, G_k`` undefined functions of
  all ``N`` components of ``x2``;
- ``logdet_explicit``: log|det| of that matrix, exploiting that it is block triangular
  with diagonal diagonal blocks (SymPy's generic determinant of a symbolic matrix this
  size does not finish), and a check that it equals the closed form.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["run", "explicit_times", "time_cache", "run_group", "NEW_BLOCK"]

ROOT = Path(__file__).resolve().parent.parent


def explicit_times(n: int) -> dict[str, object]:
    """Seconds for each stage at size ``n`` (see the module docstring); in this process."""
    out: dict[str, object] = {"n": n}
    t = time.perf_counter()
    import sympy as sp

    from derive import build
    from derive import vocabulary as V
    out["import"] = time.perf_counter() - t

    t = time.perf_counter()
    build("1.1")
    build("1.2")
    d13 = build("1.3")
    out["build"] = time.perf_counter() - t

    t = time.perf_counter()
    closed = V.instantiate(d13.result("log_abs_det"), n, {})
    out["logdet_closed"] = time.perf_counter() - t

    t = time.perf_counter()
    vectors = V._model(n)["vectors"]
    y1 = V.explicit_vector(sp.exp(V.G) * V.x1 + V.F, n)
    y2 = V.explicit_vector(sp.exp(V.s) * V.x2, n)
    J = sp.Matrix(y1 + y2).jacobian(list(vectors["x1"]) + list(vectors["x2"]))
    out["jacobian_explicit"] = time.perf_counter() - t

    t = time.perf_counter()
    A, C, D = J[:n, :n], J[n:, :n], J[n:, n:]
    if not (C.is_zero_matrix and A.is_diagonal() and D.is_diagonal()):
        raise AssertionError("the explicit Jacobian is not block triangular with diagonal blocks")
    explicit = sp.expand_log(
        sum(sp.log(sp.Abs(A[k, k])) + sp.log(sp.Abs(D[k, k])) for k in range(n)), force=True)
    out["logdet_explicit"] = time.perf_counter() - t
    out["logdet_agrees"] = sp.simplify(explicit - closed) == 0
    return out


def run_group(cmd: list[str], timeout: float, **kwargs: object
              ) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)``,
    except that the child runs in a session of its own and, on a timeout, the whole
    process group is killed and reaped before :class:`subprocess.TimeoutExpired` is raised.

    ``generate`` forks workers; killing only the parent left them writing into the
    benchmark's temporary cache folder while it was being removed (``OSError: Directory
    not empty``, a red CI run).

    >>> run_group([sys.executable, "-c", "print(1)"], 30).stdout
    '1\\n'
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)  # type: ignore[call-overload]
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        _reap_group(proc.pid)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _reap_group(pgid: int, seconds: float = 10.0) -> None:
    """Wait (up to ``seconds``) until no process of group ``pgid`` is left, killing any
    that is (a forked worker that outlived its parent has been re-parented and is not ours
    to wait for)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _run_json(args: list[str], timeout: float) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    proc = run_group([sys.executable, "-m", "bench.regen", *args], timeout, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.regen {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: The commit issue 20 measured "today's" cold ``generate --check`` on (16-19 s, before the
#: derivation cache and the material split); the cold timing is compared with it, in the same run.
BASELINE_COMMIT = "9dcb73494805768d6bb620b0db3b2e1accef9515"


def _baseline_tree(tmp: Path, log: Callable[[str], None]) -> Path | None:
    """The engine as of :data:`BASELINE_COMMIT`, extracted with ``git archive`` into ``tmp``
    (None, with a note, where the history is not there, as in a shallow clone)."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", BASELINE_COMMIT, "derive", "codegen",
             "kernel_runtime", "generated", "pyproject.toml"],
            capture_output=True, timeout=120, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        log(f"note: no baseline for the cold timing (git archive {BASELINE_COMMIT[:7]}: {exc})")
        return None
    return tmp


def _cold(tree: Path, timeout: float, no_cache: bool) -> tuple[float, float, int, str]:
    """Wall and CPU seconds, exit code and summary line of ``generate --check`` in ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "derive", "generate", "--check"] + (["--no-cache"] if no_cache
                                                                        else [])
    start, cpu = time.perf_counter(), _cpu()
    proc = run_group(cmd, timeout, cwd=tree, env=env)
    return (time.perf_counter() - start, _cpu() - cpu, proc.returncode,
            (proc.stdout.strip().splitlines() or [""])[0])


def time_generate_check(runs: int, timeout: float,
                        log: Callable[[str], None] = print,
                        baseline: bool = True) -> dict[str, object]:
    """Wall and CPU seconds of ``python -m derive generate --check --no-cache`` in a new
    process, ``runs`` times; with ``baseline``, each run is followed by one of the engine as
    of :data:`BASELINE_COMMIT` (no cache existed then), so "no slower than before the cache"
    is a ratio of two medians from the same run (``baseline`` in the result)."""
    walls, cpus, codes, summary = [], [], [], ""
    base: dict[str, list] = {"walls": [], "cpus": [], "codes": []}
    with tempfile.TemporaryDirectory(prefix="derive-baseline-",
                                     ignore_cleanup_errors=True) as tmp:
        tree = _baseline_tree(Path(tmp), log) if baseline else None
        for _ in range(runs):
            try:
                wall, cpu, code, summary = _cold(ROOT, timeout, no_cache=True)
                walls.append(wall)
                cpus.append(cpu)
                codes.append(code)
                if tree is not None:
                    wall, cpu, code, _ = _cold(tree, timeout, no_cache=False)
                    base["walls"].append(wall)
                    base["cpus"].append(cpu)
                    base["codes"].append(code)
            except subprocess.TimeoutExpired:
                log(f"note: derive generate --check took over {timeout:.0f} s; stopped it")
                return {"walls": walls, "codes": codes, "timed_out": timeout,
                        "summary": summary}
    out: dict[str, object] = {
        "walls": walls, "cpus": cpus, "codes": codes, "median": float(np.median(walls)),
        "cpu_median": float(np.median(cpus)), "summary": summary, "timed_out": None}
    if base["walls"]:
        out["baseline"] = {**base, "commit": BASELINE_COMMIT,
                           "median": float(np.median(base["walls"])),
                           "cpu_median": float(np.median(base["cpus"]))}
    return out


#: The block the "after adding one block" timing appends to ``_BLOCKS`` of the copy.
NEW_BLOCK = '''    CouplingBlock(
        "coupling_shifted", "an affine coupling block with a shifted log-scale",
        y1=exp(G + 1) * x1 + F, y2=x2,
        summary="An affine coupling whose log-scale is G + 1 (a benchmark's new block).",
    ),
]
'''


def _cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _generate(tree: Path, cache: Path, timeout: float) -> tuple[float, float, int, str]:
    """Wall and CPU seconds, exit code and summary of ``generate --check`` in ``tree``
    (CPU time says what a loaded machine's wall time hides)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "DERIVE_CACHE_DIR": str(cache)}
    env.pop("DERIVE_NO_CACHE", None)
    start, cpu = time.perf_counter(), _cpu()
    proc = run_group([sys.executable, "-m", "derive", "generate", "--check"], timeout,
                     cwd=tree, env=env)
    wall, cpu = time.perf_counter() - start, _cpu() - cpu
    out = (proc.stdout + proc.stderr).splitlines()
    summary = next((line for line in out if " derivations, " in line), "")
    return wall, cpu, proc.returncode, summary


def _repeat(runs: int, once: Callable[[], tuple[float, float, int, str]]) -> dict[str, object]:
    walls, cpus, codes, summary = [], [], [], ""
    for _ in range(runs):
        wall, cpu, code, summary = once()
        walls.append(wall)
        cpus.append(cpu)
        codes.append(code)
    return {"walls": walls, "cpus": cpus, "codes": codes, "median": float(np.median(walls)),
            "cpu_median": float(np.median(cpus)), "summary": summary}


def time_cache(runs: int, timeout: float,
               log: Callable[[str], None] = print,
               seed: Path | None = None) -> dict[str, object]:
    """Wall seconds of ``derive generate --check`` with the derivation cache, in a copy of
    the engine (``derive/``, ``codegen/``, ``kernel_runtime/``, ``generated/``) with a
    cache folder of its own: ``fill`` from an empty cache (once), ``warm`` with nothing
    changed, and ``one_block`` after appending :data:`NEW_BLOCK` to the copy's
    ``derive/coursework/blocks.py``, each of those runs starting from the warm cache (exit
    1: the new block's module is missing from generated/). With ``seed`` (a cache folder
    that holds this checkout's derivations, as ``derive generate --check`` leaves the
    user's), the copy's cache starts as a copy of it and ``fill`` is not timed: the quick
    mode's way to time the warm runs without a cold one that a slow machine cannot finish
    within its timeout."""
    out: dict[str, object] = {"runs": runs}
    with tempfile.TemporaryDirectory(prefix="derive-bench-",
                                     ignore_cleanup_errors=True) as tmp:
        tree, cache, warm = Path(tmp) / "tree", Path(tmp) / "cache", Path(tmp) / "warm"
        ignore = shutil.ignore_patterns("__pycache__", ".*")
        for name in ("derive", "codegen", "kernel_runtime", "generated"):
            shutil.copytree(ROOT / name, tree / name, ignore=ignore)
        shutil.copy2(ROOT / "pyproject.toml", tree / "pyproject.toml")
        try:
            if seed is not None and seed.is_dir():
                shutil.copytree(seed, cache, ignore=shutil.ignore_patterns("*.lock", "tmp*"))
                out["seeded"] = str(seed)
            else:
                wall, cpu, code, summary = _generate(tree, cache, timeout)
                out["fill"] = {"wall": wall, "cpu": cpu, "code": code, "summary": summary}
            out["warm"] = _repeat(runs, lambda: _generate(tree, cache, timeout))
            shutil.copytree(cache, warm)
            blocks = tree / "derive" / "coursework" / "blocks.py"
            text = blocks.read_text()
            if "    ),\n]\n" not in text:
                raise RuntimeError("derive/coursework/blocks.py has no `_BLOCKS = [...]` list "
                                   "to extend")
            blocks.write_text(text.replace("    ),\n]\n", "    ),\n" + NEW_BLOCK, 1))

            def from_warm() -> tuple[float, float, int, str]:
                shutil.rmtree(cache)
                shutil.copytree(warm, cache)
                return _generate(tree, cache, timeout)

            out["one_block"] = _repeat(runs, from_warm)
        except subprocess.TimeoutExpired:
            log(f"note: derive generate --check with the cache took over {timeout:.0f} s")
            out["timed_out"] = timeout
    return out


def run(sizes: list[int], generate_runs: int, generate_timeout: float, explicit_timeout: float,
        log: Callable[[str], None] = print, cold: bool = True) -> dict[str, object]:
    """Comparison 4 (the module doc). ``cold=False`` (the quick mode) times no cold
    ``generate`` and seeds the cached runs from the user's cache folder, which the
    ``derive generate --check`` before the benchmarks in ``.ci/run`` fills."""
    gen = (time_generate_check(generate_runs, generate_timeout, log) if cold
           else {"timed_out": None, "skipped": "quick mode: no cold run"})
    seed = None
    if not cold:
        from derive.cache import cache_folder

        seed = cache_folder()
    cache = time_cache(generate_runs, generate_timeout, log, seed=seed)
    for label, part in (("warm cache, nothing changed", "warm"),
                        ("after adding one block", "one_block")):
        if part in cache:
            res = cache[part]
            walls = ", ".join(f"{w:.2f}" for w in res["walls"])
            log(f"  derive generate --check, {label}: median {res['median']:.2f} s "
                f"({walls}; CPU {res['cpu_median']:.2f} s): {res['summary']}")
    if gen.get("median") is not None:
        codes = ", ".join(str(c) for c in gen["codes"])
        log(f"  derive generate --check, cold: median {gen['median']:.2f} s over "
            f"{len(gen['walls'])} runs (exit codes {codes}): {gen['summary']}")
    explicit = []
    for n in sizes:
        try:
            res = _run_json([str(n)], explicit_timeout)
        except subprocess.TimeoutExpired:
            log(f"note: the explicit derivation at n = {n} took over {explicit_timeout:.0f} s")
            explicit.append({"n": n, "timed_out": explicit_timeout})
            continue
        except RuntimeError as exc:
            log(f"note: {exc}")
            continue
        explicit.append(res)
        log(f"  explicit n={n}: build {res['build']:.2f} s, log-det (closed form) "
            f"{res['logdet_closed']:.3f} s, Jacobian {res['jacobian_explicit']:.2f} s, "
            f"log-det from it {res['logdet_explicit']:.2f} s, agrees: {res['logdet_agrees']}")
    return {"generate": gen, "cache": cache, "explicit": explicit}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cache"]:  # python -m bench.regen cache [RUNS]: the cache timings alone
        print(json.dumps(time_cache(int(argv[1]) if len(argv) > 1 else 3, 600.0)))
        return 0
    n = int(argv[0]) if argv else 64
    print(json.dumps(explicit_times(n)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
