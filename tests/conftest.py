"""Shared fixtures: the repository root and seeded generators."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    config.addinivalue_line(
        "markers", "user_block: a coupling block nobody shipped, derived in memory (slow); "
                   "tests/test_simd_paths.py leaves these out of its rerun")
