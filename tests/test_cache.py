"""The derivation cache: hits and misses, what invalidates an entry, damaged entries,
concurrent writers, ``--no-cache``, and byte-identical output with and without it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import derive.coursework.questions
import derive.document
import derive.files
from derive import cache
from derive.cache import Store, cache_folder, open_store, source_digest
from derive.cli import main

from .conftest import ROOT
from .test_layers import PACKAGES, import_graph

# --- the store -------------------------------------------------------------------------


def test_a_value_is_a_miss_then_a_hit(tmp_path):
    store = Store(tmp_path)
    calls = []
    compute = lambda: calls.append(1) or {"text": "é", "n": [1, 2]}  # noqa: E731
    assert store.get_or_compute("part", ["k", 1], compute) == {"text": "é", "n": [1, 2]}
    assert store.get_or_compute("part", ["k", 1], compute) == {"text": "é", "n": [1, 2]}
    assert calls == [1] and (store.hits, store.misses) == (1, 1)
    assert store.get("part", ["k", 2]) is None  # another key
    assert store.get("intro", ["k", 1]) is None  # another kind


def _entry(store: Store, kind: str, key: object) -> Path:
    return store._path(kind, key)[0]


def _damaged(data: bytes) -> dict[str, bytes]:
    head, _, payload = data.partition(b"\n")
    header = json.loads(head.split(b" ", 1)[1])
    other_key = json.dumps({**header, "key": '["part", ["other"]]'}).encode()
    return {
        "empty": b"",
        "truncated": data[: len(data) - 3],
        "header only": head + b"\n",
        "garbled payload": head + b"\n" + payload.replace(b"good", b"evil"),
        "garbled header": b"derive-cache {not json\n" + payload,
        "another format": data.replace(b"derive-cache", b"derive-cache2", 1),
        "another key": b"derive-cache " + other_key + b"\n" + payload,
        "binary": os.urandom(200),
    }


@pytest.mark.parametrize("damage", list(_damaged(b'derive-cache {"key": 1}\n{}')))
def test_a_damaged_entry_is_recomputed_and_replaced(tmp_path, damage):
    store = Store(tmp_path)
    store.put("part", ["k"], {"text": "good"})
    path = _entry(store, "part", ["k"])
    path.write_bytes(_damaged(path.read_bytes())[damage])
    assert store.get("part", ["k"]) is None
    assert store.get_or_compute("part", ["k"], lambda: {"text": "again"}) == {"text": "again"}
    assert store.get("part", ["k"]) == {"text": "again"}


def test_an_entry_with_a_valid_checksum_under_another_key_is_not_trusted(tmp_path):
    """An entry copied to another key's file (checksum intact) is a miss there."""
    store = Store(tmp_path)
    store.put("part", ["a"], {"text": "a"})
    store.put("part", ["b"], {"text": "b"})
    shutil.copy(_entry(store, "part", ["a"]), _entry(store, "part", ["b"]))
    assert store.get("part", ["b"]) is None


def test_concurrent_writers_never_show_half_an_entry(tmp_path):
    """Two processes rewrite one entry with large values while this one reads it: every
    read is a whole value of one of them, and once one is written the entry is never
    missing (a rename replaces it; a write in place would show a truncated file)."""
    writer = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from derive.cache import Store
        store = Store(Path({str(tmp_path)!r}))
        value = {{"text": sys.argv[1] * 300_000}}
        for _ in range(60):
            store.put("part", ["shared"], value)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", writer, c], env=env) for c in "ab"]
    store = Store(tmp_path)
    seen, missing_after = set(), 0
    while any(p.poll() is None for p in procs):
        value = store.get("part", ["shared"])
        if value is not None:
            assert value["text"] in ("a" * 300_000, "b" * 300_000)
            seen.add(value["text"][0])
        elif seen:
            missing_after += 1
    assert [p.wait() for p in procs] == [0, 0]
    assert missing_after == 0
    assert store.get("part", ["shared"])["text"][0] in "ab"
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_prune_removes_the_least_recently_used(tmp_path):
    store = Store(tmp_path)
    for k in range(6):
        store.put("part", [k], {"text": "x" * 1000})
        os.utime(_entry(store, "part", [k]), (1000 + k, 1000 + k))
    store.get("part", [0])  # used now: the most recent
    stale_tmp = _entry(store, "part", [0]).parent / ".tmp-left"
    stale_tmp.write_text("")
    os.utime(stale_tmp, (1000, 1000))
    assert store.prune(limit=10**6) == 1 and not stale_tmp.exists()
    assert store.prune(limit=5000) == 4  # down to half the limit: the two most recent kept
    assert [k for k in range(6) if store.get("part", [k]) is not None] == [0, 5]


# --- where it lives -------------------------------------------------------------------


def test_the_folder_the_environment_names():
    assert cache_folder({"DERIVE_CACHE_DIR": "/x/y"}) == Path("/x/y")
    assert cache_folder({"XDG_CACHE_HOME": "/c"}) == Path("/c/derive")
    assert cache_folder({}) == Path(os.path.expanduser("~")) / ".cache" / "derive"
    assert cache_folder({"DERIVE_CACHE_DIR": "/x", "DERIVE_NO_CACHE": "1"}) is None
    assert cache_folder({"DERIVE_CACHE_DIR": "/x", "DERIVE_NO_CACHE": "0"}) == Path("/x")


def test_the_folder_is_created_private(tmp_path, monkeypatch):
    monkeypatch.setenv("DERIVE_CACHE_DIR", str(tmp_path / "new" / "cache"))
    monkeypatch.delenv("DERIVE_NO_CACHE", raising=False)
    store = open_store()
    assert store is not None
    assert stat.S_IMODE(os.stat(store.folder).st_mode) == 0o700
    assert open_store(no_cache=True) is None


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_a_folder_others_may_write_or_that_cannot_be_made_is_not_used(tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.delenv("DERIVE_NO_CACHE", raising=False)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("DERIVE_CACHE_DIR", str(shared))
    assert open_store() is None
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("DERIVE_CACHE_DIR", str(tmp_path / "file" / "cache"))
    assert open_store() is None
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(line.startswith("derive: warning: ") for line in lines)
    assert "others may write" in lines[0] and "running without" in lines[1]


# --- what a key holds -----------------------------------------------------------------


def _engine_copy(tmp_path: Path) -> Path:
    for package in ("derive", "codegen", "kernel_runtime"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_any_source_change_changes_the_digest_but_an_excluded_file(tmp_path):
    root = _engine_copy(tmp_path)
    before = source_digest(root=root)
    by_value = source_digest(exclude=derive.files.by_value(), root=root)
    assert before == source_digest(root=ROOT)  # the paths count, not where the copy is
    for rel in ("codegen/templates/package.py.jinja", "kernel_runtime/__init__.py",
                "derive/coursework/blocks.py", "derive/coursework/gaussian_kl/stable.py"):
        path = root / rel
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        assert source_digest(root=root) != before, rel
        changed = source_digest(exclude=derive.files.by_value(), root=root) != by_value
        assert changed == (rel not in derive.files.by_value()), rel
        path.write_bytes(original)
    (root / "derive" / "new_module.py").write_text("")
    assert source_digest(root=root) != before
    (root / "derive" / "__pycache__").mkdir()
    (root / "derive" / "__pycache__" / "x.pyc").write_bytes(b"compiled")
    (root / "derive" / "new_module.py").unlink()
    assert source_digest(root=root) == before  # compiled files do not count


@pytest.mark.parametrize("package", ["sympy", "mpmath", "jinja2", "numpy"])
def test_the_versions_count(monkeypatch, package):
    before = source_digest()
    version = cache._version
    monkeypatch.setattr(cache, "_version",
                        lambda name: "0.0-other" if name == package else version(name))
    assert source_digest() != before
    monkeypatch.undo()
    monkeypatch.setattr(sys, "version_info", (sys.version_info[0], 99, 0))
    assert source_digest() != before
    monkeypatch.undo()
    monkeypatch.setattr(sys.modules["derive"], "__version__", "9.9.9")
    assert source_digest() != before


def test_which_introductions_may_read_the_blocks(monkeypatch):
    from derive.coursework import questions
    from derive.files import _reads_blocks

    sections = questions.SECTIONS
    assert _reads_blocks(sections["coupling"].introduction)
    assert not _reads_blocks(sections["vae"].introduction)
    assert not _reads_blocks(sections["prior"].introduction)
    assert not _reads_blocks(None)

    for fn in (_helper, _through_a_helper, _plain):
        monkeypatch.setattr(fn, "__module__", "derive.coursework.questions")
    assert not _reads_blocks(_plain)
    assert _reads_blocks(_helper)  # names the blocks
    assert not _reads_blocks(_through_a_helper)  # the registry has no _named_helper
    monkeypatch.setattr(questions, "_named_helper", _helper, raising=False)
    assert _reads_blocks(_through_a_helper)  # names a function of the registry that does
    assert _reads_blocks(lambda: 1)  # not a function of the registry: it may
    cell = sections["vae"]
    assert _reads_blocks(lambda: cell)  # a closure: it may


def _helper():
    return derive.coursework.questions.BLOCKS


def _named_helper():
    return None


def _through_a_helper():
    return _named_helper()


def _plain():
    return 1


def test_a_block_of_a_class_the_blocks_file_defines_is_keyed_by_that_file_too():
    import sympy as sp

    from derive.coursework.blocks import BLOCKS
    from derive.files import _value_key
    from derive.vocabulary import G, x1, x2

    plain = BLOCKS["coupling_glow"]
    assert len(_value_key(plain)) == 1 and _value_key(None) == ["None"]

    class clamp(sp.Function):  # as if derive/coursework/blocks.py defined it
        pass

    clamp.__module__ = "derive.coursework.blocks"
    own = type(plain)("own", "own", sp.exp(clamp(G)) * x1, x2)
    assert len(_value_key(own)) == 2  # its code is not in the fingerprint: the file is


def test_only_the_registry_and_generate_import_the_blocks():
    """What :func:`derive.files.by_value` relies on: a block reaches a derivation only as
    the value the registry passes, which the parts' keys hold (the engine imports no
    material: it reads the blocks module by the name the material gives)."""
    importers = {src for src, edges in import_graph(ROOT, PACKAGES).items()
                 for e in edges if e.dst == "derive.coursework.blocks"}
    assert importers <= {"derive.coursework.questions"}
    assert derive.files.by_value() == ("derive/coursework/blocks.py",)


# --- generate through the cache, with parts that cost nothing ----------------------


@pytest.fixture
def fake_parts(monkeypatch):
    """Parts and introductions made up instead of derived; the calls, by (qid, variant)."""
    calls: list[tuple[str, str]] = []

    def part(q, variant, command=None):
        calls.append((q.qid, variant))
        name = f"m_{q.qid}_{variant}".replace(".", "_")
        text = f"{q.qid} {variant}"
        latex = {kind: f"{text} {kind}" for kind in derive.document.part_kinds(q, variant)}
        return {"latex": latex, "notebook": text, "text": text, "steps": 2,
                "module": {"name": name, "title": text, "text": text} if q.kernels else None,
                "search_notebook": f"{text} search" if q.kernels else None}

    def intro(section, options):
        calls.append(("intro", section.title))
        return None

    monkeypatch.setattr(derive.files, "_part", part)
    monkeypatch.setattr(derive.document, "_intro", intro)
    return calls


def test_generate_derives_only_what_is_missing(tmp_path, fake_parts, monkeypatch):
    from derive.coursework.blocks import BLOCKS
    from derive.coursework.questions import QUESTIONS

    n_parts = sum(len(q.variants) for q in QUESTIONS.values())
    store = Store(tmp_path)
    files, n, steps = derive.files.generate(store)
    assert (n, steps) == (n_parts, 2 * n_parts)
    parts = [c for c in fake_parts if c[0] != "intro"]
    assert len(parts) == len(set(parts)) == n_parts  # each derived once
    fake_parts.clear()
    assert derive.files.generate(store) == (files, n, steps)
    assert fake_parts == [] and store.hits >= 1

    # a file held by value changes (say, a block added): the parts stay valid
    digest = derive.files.source_digest
    monkeypatch.setattr(derive.files, "source_digest",
                        lambda exclude=(): digest(exclude) + ("" if exclude else "+block"))
    derive.files.generate(store)
    assert fake_parts == []

    # one block's value changes (so does derive/coursework/blocks.py): that block's parts alone are
    # derived again
    fake_parts.clear()
    monkeypatch.setattr(derive.files, "source_digest",
                        lambda exclude=(): digest(exclude) + ("" if exclude else "+glow"))
    changed = BLOCKS["coupling_glow"]
    monkeypatch.setitem(BLOCKS, "coupling_glow",
                        type(changed)(changed.name, changed.title, changed.y1 + 1, changed.y2,
                                      changed.summary))
    derive.files.generate(store)
    parts = {c for c in fake_parts if c[0] != "intro"}
    assert parts == {(q, "coupling_glow") for q in ("1.1", "1.2", "1.3", "1.3n")}
    # and of the introductions, the one that shows a block
    assert [c for c in fake_parts if c[0] == "intro"] == [
        ("intro", "A reversible affine coupling block")]

    # any other engine source changes: everything is derived again
    fake_parts.clear()
    monkeypatch.setattr(derive.files, "source_digest", lambda exclude=(): "other engine")
    derive.files.generate(store)
    assert len([c for c in fake_parts if c[0] != "intro"]) == n_parts


def test_a_damaged_whole_output_is_rebuilt_from_its_parts(tmp_path, fake_parts):
    store = Store(tmp_path)
    files = derive.files.generate(store)
    whole = _entry(store, "generate", [derive.files.source_digest(), derive.files.COMMAND])
    whole.write_bytes(whole.read_bytes()[:-10])
    fake_parts.clear()
    assert derive.files.generate(store) == files
    assert fake_parts == [] or all(c[0] == "intro" for c in fake_parts)


# --- the command line -----------------------------------------------------------------


def _on_disk() -> dict[str, str]:
    return {f"generated/{p.name}": p.read_text(encoding="utf-8")
            for p in sorted((ROOT / "generated").iterdir())
            if p.is_file() and p.name != "MANIFEST"}


@pytest.mark.parametrize(("argv", "env", "cached"), [
    ([], {}, True),
    (["--no-cache"], {}, False),
    ([], {"DERIVE_NO_CACHE": "1"}, False),
])
def test_generate_uses_the_cache_unless_told_not_to(tmp_path, monkeypatch, capsys, argv, env,
                                                    cached):
    monkeypatch.setenv("DERIVE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("DERIVE_NO_CACHE", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    seen = []
    monkeypatch.setattr(derive.files, "generate",
                        lambda store, *_, **__: seen.append(store) or (_on_disk(), 3, 4))
    assert main(["generate", "--check", *argv]) == 0
    assert len(seen) == 1 and (seen[0] is not None) == cached
    if cached:
        assert seen[0].folder == tmp_path
    assert ("derivation cache" in capsys.readouterr().out) == cached


# --- the same bytes with and without the cache ---------------------------------------

_DUMP = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path
    import derive.files as f
    from derive import loader, verdicts
    from derive.cache import open_store
    store = open_store()
    out = {}
    out["cached"] = f.generate(store)[0]
    # the parts alone: the whole output's entry left out
    get = store.get
    store.get = lambda kind, key: None if kind == "generate" else get(kind, key)
    out["parts"] = f.generate(store)[0]
    # a small material, derived into a cold store (forked), then without any cache and
    # with no verdict remembered, in this one process
    from derive.cache import Store
    store = Store(Path(sys.argv[1]))  # its own, cold whatever the run's cache holds
    loader.use(["smallmat"])
    class Groups(list):  # how many groups the forked processes were handed
        forked = 0
        def __setitem__(self, key, value):
            Groups.forked = max(Groups.forked, len(value))
            super().__setitem__(key, value)
    f._GROUPS = Groups()
    out["small"] = f.generate(store, jobs=2)[0]
    sheets = [out["small"][f"generated/{sheet}.tex"]
              for sheet in ("problems", "solutions", "marking")]
    sections = all("Two blocks" in s and s.count("\\subsection") >= 2 for s in sheets)
    verdicts.use(None)
    out["uncached"] = f.generate(None, jobs=1)[0]
    hashed = {k: {p: hashlib.sha256(t.encode()).hexdigest() for p, t in v.items()}
              for k, v in out.items()}
    print(json.dumps({**hashed, "forked": Groups.forked, "sections": sections}))
""")

#: A material of two blocks and two questions, one with kernels, in a numbered section (so
#: a coursework's: problem, answer, aside and marking scheme typeset): small enough to
#: derive twice in a test, through every path of :func:`derive.files.generate` (two
#: variants: the cold run forks a process for each).
_SMALL = textwrap.dedent("""
    from derive.api import (CouplingBlock, Material, Question, Section, F, G,
                            coupling_kernels, derive_determinant, derive_inverse, x1, x2)
    import sympy as sp
    BLOCKS = {'my_scaled': CouplingBlock('my_scaled', 'a scale block', sp.exp(G) * x1 + F, x2),
              'my_shift': CouplingBlock('my_shift', 'a shift block', x1 + F, x2)}
    SECTION = Section('9', 'Two blocks')
    QUESTIONS = {
        '9.1': Question('9.1', 'Invert it', tuple(BLOCKS),
                        lambda variant: derive_inverse(BLOCKS[variant]), SECTION,
                        points={'x1': 2, 'x2': 1}, step_points=1),
        '9.2': Question('9.2', 'Its determinant', tuple(BLOCKS),
                        lambda variant: derive_determinant(BLOCKS[variant]), SECTION,
                        kernels=lambda variant: coupling_kernels(
                            BLOCKS[variant], f'smallmat.BLOCKS[{variant!r}]', package=None),
                        points={'det': 1, 'log_abs_det': 1, 'volume_condition': 1},
                        step_points=1),
    }
    MATERIAL = Material('smallmat', blocks=BLOCKS, questions=QUESTIONS,
                        sections={'blocks': SECTION})
""")


def test_output_is_byte_identical_with_and_without_the_cache(tmp_path):
    """Under another hash seed (12345) in a fresh process: the files read whole from the
    run's cache and rebuilt from its parts alone are the bytes of generated/ on disk; and
    a small material's files derived through a cold cache (forked) and without any cache
    (no step verdict remembered either; in one process, ``jobs=1``) are the same bytes.

    The shipped material derived from cold (derive, store, write; forked processes) under
    this hash seed too is the run's first ``derive generate --check``
    (:func:`tests.test_cli.test_generate_check_passes_on_this_checkout`, scheduled first),
    compared with generated/. (This test derived the whole material a second time without
    the cache: 40 s of the suite's CPU, for a path the small material takes as well.)"""
    on_disk = {p: hashlib.sha256(t.encode()).hexdigest()
               for p, t in _on_disk().items()}
    (tmp_path / "smallmat.py").write_text(_SMALL)
    env = {**os.environ, "PYTHONHASHSEED": "12345",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}",
           "DERIVE_CACHE_DIR": os.environ.get("DERIVE_CACHE_DIR") or str(tmp_path)}
    env.pop("DERIVE_NO_CACHE", None)
    done = subprocess.run([sys.executable, "-c", _DUMP, str(tmp_path / "small-cache")],
                          cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout.strip().splitlines()[-1])
    assert run["cached"] == on_disk
    assert run["parts"] == on_disk
    assert run["small"] == run["uncached"]
    # its kernels and its coursework's sheets, through both paths
    assert {"generated/my_scaled.py", "generated/my_shift.py"} <= set(run["small"])
    assert run["forked"] == 2, "the cold run derives each variant in a process of its own"
    assert run["sections"], "the problems, solutions and marking sheets hold both questions"


def test_jobs_is_a_whole_number(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--check", "--jobs", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--jobs" in err and "expected a whole number from 1 to 64, got '0'" in err
    assert "Traceback" not in err


def test_a_failing_group_is_derived_again_in_the_parent(monkeypatch):
    """A forked process that fails hands its group back: the parent derives it and raises
    the error as one process would (here: a part that cannot be derived)."""
    calls = []

    def broken(q, variant, command=None):
        calls.append(variant)
        raise ValueError(f"cannot derive {variant}")

    monkeypatch.setattr(derive.files, "_part", broken)
    with pytest.raises(ValueError, match="cannot derive"):
        derive.files.generate(None, jobs=2)
    assert calls  # the parent tried again after the forked processes failed
