"""The remembered verdicts of the symbolic step check (:mod:`derive.verdicts`): a hit
decides a step as its check did, a wrong step is never a hit, a damaged entry is a miss,
a material's own function is keyed by its source, and ``--no-cache`` remembers nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import sympy as sp

from derive import derivation, verdicts
from derive.cache import Store
from derive.derivation import Derivation, Step, StepCheckError

from .conftest import ROOT

X = sp.Symbol("x", real=True)
#: A true step SymPy takes a moment to decide (simplify), so its verdict is remembered.
RIGHT = (sp.log(sp.exp(X) + 1) - sp.log(1 + sp.exp(-X)), X)
WRONG = (sp.log(sp.exp(X) + 1) - sp.log(1 + sp.exp(-X)), 2 * X)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(derivation, "_REMEMBER_AFTER", 0.0)  # remember every verdict
    verdicts.use(Store(tmp_path))
    yield Store(tmp_path)
    verdicts.use(None)  # nothing of these tests is saved elsewhere
    verdicts.reset()


def _build(step: tuple[sp.Expr, sp.Expr]) -> Derivation:
    return Derivation("t", "T", "", [Step(*step, "a step")], [])


def _decisions(monkeypatch) -> list[sp.Basic]:
    seen: list[sp.Basic] = []
    decide = derivation._decide_zero_symbolic
    monkeypatch.setattr(derivation, "_decide_zero_symbolic",
                        lambda diff: seen.append(diff) or decide(diff))
    return seen


def test_a_verdict_is_decided_once_then_recalled_from_the_cache(store, monkeypatch):
    seen = _decisions(monkeypatch)
    _build(RIGHT)
    assert len(seen) == 1
    verdicts.save()
    verdicts.use(store)  # as a new process would: read from the cache's entry
    _build(RIGHT)
    assert len(seen) == 1, "the second check was decided again, not recalled"


def test_a_wrong_step_is_never_a_hit_and_still_fails(store, monkeypatch):
    _build(RIGHT)
    verdicts.save()
    seen = _decisions(monkeypatch)
    with pytest.raises(StepCheckError, match="is false"):
        _build(WRONG)
    assert seen  # decided, not recalled: another difference


def test_a_remembered_false_is_false_again(store):
    with pytest.raises(StepCheckError):
        _build(WRONG)
    verdicts.save()
    verdicts.use(store)
    with pytest.raises(StepCheckError):
        _build(WRONG)


def test_a_damaged_entry_is_a_miss_and_every_step_is_checked(store, tmp_path, monkeypatch):
    _build(RIGHT)
    verdicts.save()
    for entry in (tmp_path / "v1").glob("*/*"):
        entry.write_bytes(entry.read_bytes()[:-3] + b"xyz")  # its checksum fails now
    verdicts.use(store)
    seen = _decisions(monkeypatch)
    _build(RIGHT)
    assert len(seen) == 1


def test_a_forged_true_under_the_right_key_is_not_read_without_its_checksum(store, tmp_path,
                                                                              monkeypatch):
    """An entry whose payload says every wrong step is true, written without the header's
    checksum, is a miss: the wrong step still fails."""
    _build(RIGHT)
    verdicts.save()
    for entry in (tmp_path / "v1").glob("*/*"):
        head, _, payload = entry.read_bytes().partition(b"\n")
        entry.write_bytes(head + b"\n" + payload.replace(b"true", b"true ").replace(
            b"false", b"true"))
    verdicts.use(store)
    with pytest.raises(StepCheckError):
        _build(WRONG)


def test_a_material_function_is_keyed_by_its_source_file(store, tmp_path, monkeypatch):
    """Two functions of one name whose code differs: each verdict stands for its own
    source (a function that evaluates to 0 makes the step true; another file, another key)."""
    sys.path.insert(0, str(tmp_path))
    try:
        keys = []
        for k, body in enumerate(("return None", "return sp.Integer(0)")):
            name = f"myfunc_mod{k}"
            (tmp_path / f"{name}.py").write_text(textwrap.dedent(f"""
                import sympy as sp
                class myfunc(sp.Function):
                    @classmethod
                    def eval(cls, x):
                        {body}
                """))
            module = __import__(name)
            keys.append(verdicts._key(module.myfunc(sp.Symbol("y")) - 1))
        assert None not in keys and keys[0] != keys[1]
    finally:
        sys.path.remove(str(tmp_path))


def test_no_cache_remembers_nothing(tmp_path):
    """``derive show --no-cache`` checks every step anew and writes no verdict."""
    env = {"DERIVE_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    import os

    done = subprocess.run([sys.executable, "-m", "derive", "show", "1.1", "--no-cache"],
                          cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob("v1/*/*"))
