"""The accuracy bounds hold on NumPy's baseline code too, not only on this CPU's SIMD paths.

NumPy picks its ``log``, ``exp`` and ``expm1`` loops by CPU at import (AVX2, AVX-512, or the
baseline build), and their last bits differ, so a bound measured on one machine can fail
on another (issue 19). This module reruns the accuracy tests with every SIMD target this
NumPy dispatches to switched off (``NPY_DISABLE_CPU_FEATURES``), so the suite covers both
the paths this CPU takes and the baseline every CPU NumPy supports can take.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT

#: The tests whose bounds are stated in ulp or eps of NumPy's float arithmetic (the fused
#: kernels' too: their loops read NumPy's exp, expm1 and log, taken before them).
ACCURACY_TESTS = ("tests/test_gaussian_kl.py", "tests/test_gaussian_kl_pair.py",
                  "tests/test_coupling_blocks.py", "tests/test_kl_adversarial.py",
                  "tests/test_fused.py")
#: Left out of the rerun: the coupling grid's user blocks, each derived in memory (minutes
#: in all; the shipped blocks and the README's text blocks stay), and the tests marked
#: ``simd_independent``, whose outcome cannot turn on the last bits of NumPy's ``exp``,
#: ``log`` or ``expm1``: Monte Carlo means (5 standard errors), quadrature
#: (1e-9), PyTorch's autograd.
RERUN_SELECTION = ("-m", "not user_block and not simd_independent")


def simd_dispatch() -> tuple[list[str], list[str]]:
    """This NumPy's baseline features and the dispatch targets this CPU enables.

    >>> baseline, enabled = simd_dispatch()
    >>> isinstance(baseline, list) and isinstance(enabled, list)
    True
    """
    from numpy._core import _multiarray_umath as umath

    features = umath.__cpu_features__
    return list(umath.__cpu_baseline__), [t for t in umath.__cpu_dispatch__ if features.get(t)]


@pytest.mark.parametrize("path", ACCURACY_TESTS)
def test_the_accuracy_tests_pass_on_numpys_baseline_code(path):
    """One child per file: under ``pytest -n`` the four reruns spread over the workers
    (tests/conftest.py starts them first), not one long child at the end of the run."""
    baseline, enabled = simd_dispatch()
    if not enabled:
        pytest.skip(f"this CPU takes NumPy's baseline code ({' '.join(baseline)}) already: the "
                    "default run covers it")
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(enabled),
           "PYTHONPATH": str(ROOT)}
    probe = subprocess.run(
        [sys.executable, "-c", "from tests.test_simd_paths import simd_dispatch; "
                               "print(' '.join(simd_dispatch()[1]))"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "", f"still enabled: {probe.stdout}"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header",
         "-o", "addopts=", *RERUN_SELECTION, path],
        cwd=ROOT, env=env, capture_output=True, text=True)
    tail = "\n".join(run.stdout.splitlines()[-30:])
    assert run.returncode == 0, f"with {' '.join(enabled)} off:\n{tail}\n{run.stderr[-2000:]}"
    assert " passed" in tail and "failed" not in tail, tail

