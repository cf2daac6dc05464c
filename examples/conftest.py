"""Collect the examples' doctests only where their dependencies (the ``examples`` extra)
are installed; tests/test_examples.py says what is missing."""

from __future__ import annotations

import importlib.util

_NEEDED = ("torch", "sklearn", "matplotlib", "tqdm")
collect_ignore_glob = (
    ["*.py"] if any(importlib.util.find_spec(m) is None for m in _NEEDED) else [])
