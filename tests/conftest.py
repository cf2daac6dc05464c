"""Shared fixtures: the repository root and seeded generators; one derivation cache per run.

The derivation cache (:mod:`derive.cache`). Unless ``DERIVE_CACHE_DIR`` or
``DERIVE_NO_CACHE`` is set, a run uses a private cache folder of its own, made empty when
the run starts and removed when it ends: every test that generates or shows a derivation
(in this process, in a child ``derive`` or in an xdist worker) reads what the first one
derived, and no run reads what an earlier one left. Set ``DERIVE_CACHE_DIR`` to keep the
cache between runs (each entry is keyed by the engine's sources, so a stale entry is never
read).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def fingerprint(value: object) -> str:
    """:func:`derive.cache.fingerprint`: a text that determines ``value``."""
    from derive.cache import fingerprint

    return fingerprint(value)


@cache
def _engine_digest() -> str:
    from derive.cache import source_digest

    return source_digest()


def rendered_once(kind: str, key: list, render: Callable[[], str]) -> str:
    """The text ``render()`` returns (a module the engine renders for a block or a
    parameterization that only a test defines), computed once per run across processes.

    Through the run's derivation cache: keyed by ``kind``, ``key`` (which must determine
    the text: the test's SymPy values by ``derive.cache.fingerprint``) and the digest of the
    engine's sources; a file lock per entry makes a second process (an xdist worker, the
    SIMD rerun's child) wait for the first and read its text instead of deriving it again.
    Without a cache (``DERIVE_NO_CACHE=1``) every call renders.
    """
    from derive.cache import open_store

    store = open_store()
    if store is None:
        return render()
    full_key = [_engine_digest(), *key]
    value = store.get(f"test-{kind}", full_key)
    if value is None:
        locks = store.folder / "test-locks"
        locks.mkdir(mode=0o700, exist_ok=True)
        name = hashlib.sha256(json.dumps([kind, full_key]).encode()).hexdigest()
        with open(locks / name, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            value = store.get(f"test-{kind}", full_key)
            if value is None:
                value = {"text": render()}
                store.put(f"test-{kind}", full_key, value)
    return value["text"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict) -> None:
    doctest_namespace["np"] = np


def pytest_report_header() -> str:
    """Which of NumPy's SIMD code paths this run takes (tests/test_simd_paths.py reruns the
    accuracy tests on the baseline path)."""
    from .test_simd_paths import simd_dispatch

    baseline, enabled = simd_dispatch()
    off = os.environ.get("NPY_DISABLE_CPU_FEATURES", "")
    return (f"numpy {np.__version__} SIMD: baseline {' '.join(baseline)}; dispatch targets "
            f"enabled: {' '.join(enabled) or 'none'}"
            + (f" (NPY_DISABLE_CPU_FEATURES={off})" if off else ""))


def pytest_configure(config: pytest.Config) -> None:
    # the controller (or a run without xdist) makes the run's cache folder; the workers
    # it starts inherit the variable, and so does every child process a test starts
    if (not hasattr(config, "workerinput") and not os.environ.get("DERIVE_CACHE_DIR")
            and os.environ.get("DERIVE_NO_CACHE", "") in ("", "0")):
        folder = tempfile.mkdtemp(prefix="derive-test-cache-")  # private: mode 0700
        os.environ["DERIVE_CACHE_DIR"] = folder
        config._derive_test_cache = folder  # type: ignore[attr-defined]
    config.addinivalue_line(
        "markers", "user_block: a coupling block nobody shipped, derived in memory (slow); "
                   "tests/test_simd_paths.py leaves these out of its rerun")
    config.addinivalue_line(
        "markers", "simd_independent: in an accuracy module, a test whose outcome does not "
                   "depend on the last bits of NumPy's SIMD loops (a Monte Carlo mean, "
                   "quadrature, PyTorch); tests/test_simd_paths.py leaves these out of its "
                   "rerun")


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = getattr(config, "_derive_test_cache", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        if os.environ.get("DERIVE_CACHE_DIR") == folder:
            del os.environ["DERIVE_CACHE_DIR"]


# --- xdist: the tests that share a costly per-process value run in one worker -------------

#: Modules whose tests are grouped by the first name in their parameter id: a user block
#: (its derivation, and the mpmath reference of its equations) or a user parameterization
#: (its module and mpmath references) is computed once, by the one worker that runs its
#: tests. Elsewhere each test is its own unit, as in ``--dist load``.
GROUPED_MODULES = ("tests/test_coupling_blocks.py", "tests/test_kl_user_parameterizations.py")
#: Modules that are one unit: their tests share a module-scoped fixture that is costly to
#: make in each worker (the worked example material, generated by a child ``derive``; what
#: ``derive generate`` writes, from the cache or, in test_generate, derived without it;
#: Dask's chunk-by-chunk total; the coursework generated with an outside parameterization).
ONE_UNIT_MODULES = ("tests/test_example_material.py", "tests/test_cli_attacks.py",
                    "tests/test_file_safety.py", "tests/test_generate.py", "tests/test_dask.py",
                    "tests/test_outside_parameterization.py")
_FIRST_NAME = re.compile(r"[\[-]([A-Za-z_][A-Za-z0-9_]*)(?=[-\]])")
#: Tests whose ids do not name the group whose costly values they use: the wrong and the
#: right steps of 2.3c, 2.3n and 2.3np are those of the softplus parameterization (its
#: derivations, cached in the process, are most of the softplus group's time).
GROUP_OF_TEST = {
    "tests/test_kl_user_parameterizations.py::test_each_new_check_fails_on_a_wrong_step":
        "tests/test_kl_user_parameterizations.py::softplus",
    "tests/test_kl_user_parameterizations.py::test_the_same_steps_pass_when_right":
        "tests/test_kl_user_parameterizations.py::softplus",
    "tests/test_eager_gradients.py::test_a_softplus_parameterization_has_a_finite_kl_grad_far_left":
        "tests/test_kl_user_parameterizations.py::softplus",
    # every student file marked (test_check_files._marked: a sandboxed child per question)
    "tests/test_check_files.py::test_a_student_file_is_judged_as_expected":
        "tests/test_check_files.py::_marked",
    "tests/test_check_files.py::test_at_least_95_percent_as_expected_and_no_wrong_answer_correct":
        "tests/test_check_files.py::_marked",
}
#: Modules grouped by the answer file their ids begin with (each file's answers are marked
#: in one sandboxed child, test_check_corpus._reports)
_ANSWER_FILE = re.compile(r"\[([^\]:]+\.answers):")
GROUPED_BY_FILE = ("tests/test_check_corpus.py",)


def group_of(nodeid: str) -> str:
    """The scheduling unit of ``nodeid`` under ``pytest -n``.

    >>> group_of("tests/test_coupling_blocks.py::test_round_trip[0.0--800.0-user_cubic]")
    'tests/test_coupling_blocks.py::user_cubic'
    >>> group_of("tests/test_kl_user_parameterizations.py::test_user_estimators_against_mpmath"
    ...          "[sigmoid--1.5]")
    'tests/test_kl_user_parameterizations.py::sigmoid'
    >>> group_of("tests/test_kl_user_parameterizations.py::"
    ...          "test_each_new_check_fails_on_a_wrong_step[2.3np r]")
    'tests/test_kl_user_parameterizations.py::softplus'
    >>> group_of("tests/test_cli.py::test_list")
    'tests/test_cli.py::test_list'
    >>> group_of("tests/test_dask.py::test_chunks[4]")
    'tests/test_dask.py'
    >>> group_of("tests/test_check_corpus.py::test_corpus_answer[1.2.answers:3]")
    'tests/test_check_corpus.py::1.2.answers'
    """
    function = nodeid.partition("[")[0]
    if function in GROUP_OF_TEST:
        return GROUP_OF_TEST[function]
    module, _, rest = nodeid.partition("::")
    if module in ONE_UNIT_MODULES:
        return module
    if module in GROUPED_BY_FILE and (found := _ANSWER_FILE.search(rest)):
        return f"{module}::{found.group(1)}"
    found = _FIRST_NAME.search(rest) if module in GROUPED_MODULES else None
    return f"{module}::{found.group(1)}" if found else nodeid


#: The units that take longest: about the CPU seconds each takes on a quiet machine with a
#: cold derivation cache (measured with --junitxml on a loaded one and scaled; a key ending
#: in "::" weighs each unit it begins). Under ``pytest -n`` they are handed out first,
#: longest first (longest processing time first), and every other unit after them in
#: collection order: no long unit starts while the other worker is about to run out of
#: work, and the run ends on short tests.
LONG_UNITS: dict[str, float] = {
    # derives the shipped material into the run's cache, which every later generate, show,
    # latex and check reads: first, so that no two tests derive it at once from cold
    "tests/test_cli.py::test_generate_check_passes_on_this_checkout": 100,
    "tests/test_kl_user_parameterizations.py::softplus": 60,
    # a child process that reads the run's cache (after the first generate has filled it)
    # and derives a small material twice
    "tests/test_cache.py::test_output_is_byte_identical_with_and_without_the_cache": 6,
    # a child derive generate of the worked example, then check and LaTeX children
    "tests/test_example_material.py": 50,
    # an outside parameterization generated with --only beside the coursework, then
    # derive test (25 s of CPU with no cache and no remembered verdicts)
    "tests/test_outside_parameterization.py": 25,
    "tests/test_check_files.py::_marked": 20,
    "tests/test_generate.py": 3,
    "tests/test_check_corpus.py::": 10,
    "tests/test_simd_paths.py::": 25,
    "tests/test_kl_user_parameterizations.py::test_the_pair_module_of_exp_plus_c_is_not_built":
        25,
    "tests/test_kl_user_parameterizations.py::softplus_plus_c": 23,
    "tests/test_coupling_blocks.py::user_tanh_sigmoid": 20,
    "tests/test_kl_user_parameterizations.py::log_sigma": 18,
    "tests/test_kl_user_parameterizations.py::square": 15,
    "tests/test_kl_user_parameterizations.py::reciprocal": 15,
    "tests/test_kl_user_parameterizations.py::sigmoid": 14,
    "tests/test_kl_user_parameterizations.py::exp_plus_c": 14,
    "tests/test_coupling_blocks.py::user_cubic": 4,
    "tests/test_coupling_blocks.py::user_sinh": 8,
    "tests/test_coupling_blocks.py::user_asinh": 7,
    "tests/test_coupling_blocks.py::user_sigmoid_floor": 5,
    "tests/test_coupling_blocks.py::user_exp_sigmoid": 5,
    "tests/test_coupling_blocks.py::user_softplus_floor": 4,
    "tests/test_coupling_blocks.py::user_": 2,
}


def weight(unit: str) -> float:
    """The seconds :data:`LONG_UNITS` gives ``unit`` (0 for a short one).

    >>> weight("tests/test_coupling_blocks.py::user_cubic"), weight("tests/test_cli.py::t")
    (4, 0)
    >>> weight("tests/test_coupling_blocks.py::user_sqrt_exp")
    2
    """
    if unit in LONG_UNITS:
        return LONG_UNITS[unit]
    return max((w for key, w in LONG_UNITS.items() if key.endswith(("::", "_"))
                and unit.startswith(key)), default=0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long units first, longest first; the rest in collection order (a stable sort).
    Every xdist worker sorts its collection alike, and the scheduler keeps this order."""
    items.sort(key=lambda item: -weight(group_of(item.nodeid)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist load`` (what ``-n`` implies), with :func:`group_of`'s units, handed out in
    the order of the collection (:func:`pytest_collection_modifyitems`).

    (xdist's own ``--dist loadgroup`` marks a test by rewriting its node id, which pytest 9.2
    no longer takes: the groups are silently ignored, pytest-xdist issue 1386. Its
    ``loadscope`` reorders units by their number of tests, largest first, which put the
    coupling grid's 86-test groups of fast tests before every long single test.)
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False

    class Grouped(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return Grouped(config, log)
