"""generated/ is what the engine produces, byte for byte, under any hash seed.

Rendered here through the run's derivation cache (which the run's first ``derive generate
--check``, tests/test_cli.py, fills from cold under the run's own hash seed, in forked
processes), and derived under seed 12345 in a fresh process by tests/test_cache.py's
``test_output_is_byte_identical_with_and_without_the_cache`` (with and without the cache,
in one process, against generated/ on disk). (This module derived everything once more
without the cache: a third whole derivation in every run.)
"""

from __future__ import annotations

import shutil
from functools import cache

import pytest

from derive.files import COMMAND, GENERATED_MARK, generated_files, stale_files, write_files

from .conftest import ROOT


@cache
def _files() -> dict[str, str]:
    """Every generated file, rendered in this process through the run's cache (once: the
    tests below only read it)."""
    from derive.cache import open_store

    return generated_files(open_store())


def test_generated_is_up_to_date():
    assert stale_files(ROOT, _files()) == {}


def test_every_generated_file_says_so_and_how_to_regenerate():
    for rel, content in _files().items():
        head = content[:600]
        assert GENERATED_MARK in head, rel
        assert COMMAND in head, rel


def test_check_reports_stale_files_with_a_diff(tmp_path):
    shutil.copytree(ROOT / "generated", tmp_path / "generated")
    files = _files()
    assert stale_files(tmp_path, files) == {}
    target = tmp_path / "generated" / "coupling.py"
    target.write_text(target.read_text().replace("numpy.exp(s)", "numpy.exp(2*s)"))
    orphan = tmp_path / "generated" / "old_block.py"
    orphan.write_text(f"# This file is {GENERATED_MARK}\n")
    keep = tmp_path / "generated" / "notes.txt"
    keep.write_text("hand-written, not generated\n")
    stale = stale_files(tmp_path, files)
    # old_block.py carries the mark but is not in generated/MANIFEST: not the engine's file.
    assert set(stale) == {"generated/coupling.py"}
    assert "-    _J30 = numpy.exp(2*s)" in stale["generated/coupling.py"]
    written = write_files(tmp_path, files)
    assert written == ["generated/coupling.py"]
    assert orphan.exists() and keep.exists()
    assert stale_files(tmp_path, files) == {}
    assert write_files(tmp_path, files) == []


def test_writes_leave_no_temporary_files(tmp_path):
    write_files(tmp_path, _files())
    leftovers = [p.name for p in (tmp_path / "generated").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_a_failed_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    import derive.files as build

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(build.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_files(tmp_path, {"generated/x.py": "print(1)\n"})
    assert list((tmp_path / "generated").iterdir()) == []
