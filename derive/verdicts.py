r"""Remembered verdicts of the symbolic step check, kept in the derivation cache.

Checking a step symbolically (``simplify(lhs - rhs) == 0`` and the cheaper tries before
it) is most of the time a derivation takes: about 20 s of the planar flow's 21 in the
worked example, every time ``derive check`` or a test builds it again. The verdict is a
function of the difference alone, of the engine's code that decides it, and of SymPy's
version, so it can be remembered like any derived result:

- A verdict is found by the SHA-256 of the difference's ``srepr`` (which names every
  node and symbol, assumptions included) and of the source file of every class in it
  that is neither SymPy's nor the engine's (a material's own function, whose ``eval`` or
  ``rewrite`` may decide the check: its code is in the key, not only its name). A
  difference holding a class without a source file is never remembered.
- The verdicts of one version of the engine (:func:`derive.cache.source_digest` of its
  packages, without the material) are one entry of the derivation cache, written
  atomically: a damaged or forged entry is a miss, and then every step is checked again.
- Both verdicts are remembered: a step found false is found false again. A wrong step
  (its difference is another) is never a hit, so the checks that must fail still do.

The cache's switches hold: ``DERIVE_NO_CACHE=1`` or ``--no-cache`` checks every step anew
(:func:`use` with ``None``). New verdicts are saved every few seconds of checking and
when the process ends; concurrent processes merge theirs into the entry (a verdict
lost in a race is computed again, never wrong).

Example:
    >>> import tempfile, sympy as sp
    >>> from derive.cache import Store
    >>> use(Store(tempfile.mkdtemp()))
    >>> x = sp.Symbol("x")
    >>> key, verdict = recall(sp.sin(x)**2 + sp.cos(x)**2 - 1)
    >>> verdict is None
    True
    >>> remember(key, True, seconds=0.1)
    >>> recall(sp.sin(x)**2 + sp.cos(x)**2 - 1)[1]
    True
    >>> use(None)
"""

from __future__ import annotations

import atexit
import hashlib
import sys
from pathlib import Path

import sympy as sp
from sympy.core.function import AppliedUndef

from .cache import ENGINE_PACKAGES, Store, open_store, source_digest

__all__ = ["use", "reset", "recall", "remember", "save"]

#: Seconds of checking whose new verdicts are saved at once (besides at exit).
SAVE_EVERY = 2.0
_KIND = "step-verdicts"


class _Memo:
    def __init__(self, store: Store | None) -> None:
        self.store = store
        self.key = [source_digest(material=False)] if store is not None else None
        self.known: dict[str, bool] = {}
        self.new: dict[str, bool] = {}
        self.unsaved_seconds = 0.0
        if store is not None:
            self.known.update(_entries(store.get(_KIND, self.key)))

    def save(self) -> None:
        if self.store is None or not self.new:
            return
        merged = _entries(self.store.get(_KIND, self.key))
        merged.update(self.new)
        self.store.put(_KIND, self.key, dict(sorted(merged.items())))
        self.known.update(merged)
        self.new.clear()
        self.unsaved_seconds = 0.0


def _entries(value: object) -> dict[str, bool]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, bool)}


_memo: _Memo | None = None
_file_digests: dict[str, str | None] = {}


def use(store: Store | None) -> None:
    """Remember verdicts in ``store`` from now on; ``None``: remember none (check every
    step anew). Unless called, the user's cache (:func:`derive.cache.open_store`) is used
    on the first check."""
    global _memo
    if _memo is not None:
        _memo.save()
    _memo = _Memo(store)


def reset() -> None:
    """Save the new verdicts and forget the choice of :func:`use`: the next check uses
    the user's cache again (as at start)."""
    global _memo
    save()
    _memo = None


def _current() -> _Memo:
    global _memo
    if _memo is None:
        _memo = _Memo(open_store())
    return _memo


def _module_digest(module: str) -> str | None:
    if module not in _file_digests:
        path = getattr(sys.modules.get(module), "__file__", None)
        try:
            _file_digests[module] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except (OSError, TypeError):
            _file_digests[module] = None
    return _file_digests[module]


def _key(diff: sp.Basic) -> str | None:
    """The verdict's key: ``srepr`` and the source of the classes not SymPy's or the
    engine's; None where a class has no source file (never remembered)."""
    h = hashlib.sha256(sp.srepr(diff).encode())
    modules = set()
    for node in sp.preorder_traversal(diff):
        cls = type(node)
        if isinstance(node, AppliedUndef):
            continue  # an undefined function: its name is all it is
        top = cls.__module__.split(".")[0]
        if top not in ("sympy", *ENGINE_PACKAGES):
            modules.add(cls.__module__)
    for module in sorted(modules):
        digest = _module_digest(module)
        if digest is None:
            return None
        h.update(f"\0{module}\0{digest}".encode())
    return h.hexdigest()


def recall(diff: sp.Basic) -> tuple[str | None, bool | None]:
    """The key of the verdict on ``diff == 0`` (None: not to be remembered) and the
    verdict remembered (None: none)."""
    memo = _current()
    if memo.store is None:
        return None, None
    key = _key(diff)
    return key, None if key is None else memo.known.get(key)


def remember(key: str | None, verdict: bool, seconds: float) -> None:
    """Remember the verdict of :func:`recall`'s ``key`` (found in ``seconds``)."""
    memo = _current()
    if memo.store is None or key is None:
        return
    memo.known[key] = memo.new[key] = verdict
    memo.unsaved_seconds += seconds
    if memo.unsaved_seconds >= SAVE_EVERY:
        memo.save()


def save() -> None:
    """Write the new verdicts to the cache (also done at exit)."""
    if _memo is not None:
        _memo.save()


atexit.register(save)
