r"""What ``derive generate`` writes, and how: every file rendered, written atomically.

:func:`generated_files` renders every generated file in memory (:func:`generate` does so
through the derivation cache, :mod:`derive.cache`, deriving only what it does not hold);
:func:`write_files` replaces only the files whose bytes changed, each through a temporary
file and a rename (:mod:`derive.output`) so that no reader ever sees a half-written file;
:func:`stale_files` compares bytes without writing and returns a diff (or one line) per
file.

What ``generate`` may delete: a file listed in ``generated/MANIFEST`` (the files it wrote,
with their SHA-256) that the engine no longer produces and that is unchanged since. Every
other file under ``generated/`` is left alone, with a warning when it carries the generated
mark; a file at a path the engine produces is replaced only when it is in the manifest or
starts with the header the engine writes there (mark, source, template, command). A
symlink under ``generated/`` is never followed, written or deleted (at a produced path it
is an error), nor is a file larger than 4 MiB read. While it writes, ``generate`` holds
an exclusive ``flock`` on the ``generated/`` folder (``--check`` a shared one), so
concurrent runs take turns.

Example (through the derivation cache: without one, every question is derived again):
    >>> from derive.cache import open_store
    >>> files = generated_files(open_store())
    >>> "generated/coupling.py" in files
    True
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import hashlib
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from codegen.backends import render_module
from codegen.environment import GENERATED_MARK, environment
from codegen.latex import LatexOptions

from .cache import Store, fingerprint, source_digest
from .document import SHEETS, deriving, part_kinds, render_part, sheet_document
from .loader import all_derivations, current, kernel_modules
from .material import MaterialError, Question
from .notebook import derivations_notebook, search_cell
from .output import OutputError, output_target, write_output

try:
    import fcntl
except ImportError:  # pragma: no cover - no flock (Windows): runs are not serialized
    fcntl = None

__all__ = ["COMMAND", "PACKAGE", "manifest_path", "by_value", "generated_files", "generate",
           "rendered_part", "write_files", "stale_files", "default_root",
           "is_checkout", "GENERATED_MARK", "MANIFEST"]

#: The command that regenerates every generated file; each file's header names it.
COMMAND = "python -m derive generate"
#: The output package's default name: the folder under the root that generate writes.
PACKAGE = "generated"
#: The list of files ``derive generate`` wrote, with their SHA-256; see the module doc.
MANIFEST = "generated/MANIFEST"


def manifest_path(package: str = PACKAGE) -> str:
    """The manifest's path relative to the root, for the output package ``package``."""
    return f"{package}/MANIFEST"


def default_root() -> Path:
    """The repository root: the folder that holds ``derive/`` and ``generated/``."""
    return Path(__file__).resolve().parents[1]


def is_checkout(root: Path) -> bool:
    """Whether ``root`` is a source checkout (not site-packages): it has ``pyproject.toml``."""
    return (root / "pyproject.toml").is_file() and (root / "derive").is_dir()


def generated_files(store: Store | None = None, command: str = COMMAND,
                    package: str = PACKAGE) -> dict[str, str]:
    """Every generated file, by path relative to the root, rendered in memory (through
    the derivation cache ``store`` when given: see :func:`generate`)."""
    return generate(store, command, package)[0]


def by_value() -> tuple[str, ...]:
    """Source files whose content reaches a cached part only as a value that the part's key
    holds: the material's blocks module (:attr:`~derive.material.Material.blocks_module`,
    the coursework's ``derive/coursework/blocks.py``) reaches its derivations and its kernel
    modules only as the :class:`~derive.coupling.CouplingBlock` passed in (within its
    package, only the registry imports it), so adding a block leaves the other blocks'
    parts valid. A block built from a class that file defines is keyed by the file too
    (:func:`_value_key`). Empty when the material names no blocks module under the root.
    """
    import importlib.util

    name = current().blocks_module
    spec = importlib.util.find_spec(name) if name else None
    if spec is None or not spec.origin:
        return ()
    try:
        return (Path(spec.origin).resolve().relative_to(default_root()).as_posix(),)
    except ValueError:
        return ()


def generate(store: Store | None = None, command: str = COMMAND,
             package: str = PACKAGE, jobs: int = 1) -> tuple[dict[str, str], int, int]:
    """Every generated file (as :func:`generated_files`), the number of derivations and
    the number of their steps.

    ``jobs`` > 1 derives the parts a run is missing in that many processes (forked, where
    the platform forks; see :func:`_derive_missing`), with or without ``store``; the
    files are the same bytes either way.

    Without ``store``, everything is derived. With one (:mod:`derive.cache`), the whole
    output is one entry keyed by the digest of every engine source; on a miss, each
    question's variant is one part (its LaTeX as each sheet typesets it: the problem, the
    answer, the aside and the marking scheme of a coursework question's own variant, the
    whole derivation of any other; its notebook outputs, text, step count and kernel
    module), keyed by the digest of the engine sources but :func:`by_value`
    and the variant's block by value, and each section's introduction one part keyed
    alike, with every block's value when it may read them (:func:`_reads_blocks`); only
    the parts missing are derived.
    """
    jobs = jobs if _can_fork() else 1
    key = [source_digest(), command] + ([] if package == PACKAGE else [package])
    whole = store.get("generate", key) if store is not None else None
    if whole is not None:  # the whole output, cached: nothing derived or searched
        return whole["files"], whole["derivations"], whole["steps"]
    from .kernel_search import use_store

    # each kernel output's accuracy search is cached there too; the cache in use before is
    # put back (a temporary one below is removed when generate returns)
    previous = use_store(store)
    try:
        if store is None and jobs <= 1:
            derivations = all_derivations()
            return (_files(None, command, package), len(derivations),
                    sum(len(d.steps) for d in derivations))
        if store is None:  # the processes' parts go through a cache of this run's own
            import tempfile

            with tempfile.TemporaryDirectory(prefix="derive-no-cache-") as folder:
                return generate(Store(Path(folder)), command, package, jobs)
        parts = _Parts(store, source_digest(exclude=by_value()), command)
        if jobs > 1:
            _derive_missing(parts, jobs)
        files = _files(parts, command, package)
        n, steps = len(parts.seen), sum(p["steps"] for p in parts.seen.values())
        store.put("generate", key, {"files": files, "derivations": n, "steps": steps})
        return files, n, steps
    finally:
        use_store(previous)


def rendered_part(store: Store, question: Question, variant: str) -> dict:
    """A question's variant as :func:`generate` caches it (``latex``: kind of part ->
    LaTeX, ``notebook``, ``text``, ``steps``, ``module``), from ``store`` or derived and
    stored."""
    return _Parts(store, source_digest(exclude=by_value())).part(question, variant)


class _Module:
    """What the package template reads of a kernel module, from a cached part."""

    def __init__(self, name: str, title: str) -> None:
        self.name, self.title = name, title


class _Parts:
    """The cached parts of one run of :func:`generate`, each derived on a miss."""

    def __init__(self, store: Store, digest: str, command: str = COMMAND) -> None:
        self.store, self.digest, self.command = store, digest, command
        self.seen: dict[tuple[str, str], dict] = {}

    def key(self, q: Question, variant: str) -> list:
        """The cache key of a question's variant."""
        blocks = current().blocks
        # which kinds the sheets typeset, and a variant's heading, depend on whether it
        # is the question's own and whether the question has others
        return [self.digest, self.command, q.qid, variant, _value_key(blocks.get(variant)),
                variant == q.default, len(q.variants) > 1]

    def part(self, q: Question, variant: str) -> dict:
        if (q.qid, variant) not in self.seen:
            self.seen[q.qid, variant] = self.store.get_or_compute(
                "part", self.key(q, variant), lambda: _part(q, variant, self.command))
        return self.seen[q.qid, variant]

    def intro(self, section: object) -> dict | None:
        from .document import _intro

        key = [self.digest, section.number, section.title,
               _blocks_fingerprint() if _reads_blocks(section.introduction) else None]
        return self.store.get_or_compute(
            "intro", key, lambda: {"intro": _intro(section, LatexOptions())})["intro"]


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


#: What a forked process of :func:`_derive_missing` derives: the parts of one variant.
_GROUPS: list[list[tuple[Question, str]]] = []


def _derive_group(index: int) -> tuple[str | None, list[str]]:
    """In a forked process: the parts of ``_GROUPS[index]``, each as JSON text; or the
    error's text (the parent then derives the group itself, so that the error is raised
    there as in one process)."""
    import json

    from .verdicts import save

    try:
        texts = [json.dumps(_part(q, variant, _GROUPS_COMMAND[0]), sort_keys=True,
                            ensure_ascii=False) for q, variant in _GROUPS[index]]
        save()  # the step checks' verdicts (a pool's process ends without its exit hooks)
        return None, texts
    except BaseException as exc:  # noqa: BLE001 - reported, then raised again in the parent
        return f"{type(exc).__name__}: {exc}", []


_GROUPS_COMMAND: list[str] = [COMMAND]


def _default_signals() -> None:
    """In a forked process: the default handling of the signals the CLI catches (its
    handlers report to the user; a worker ended by its pool ends quietly)."""
    import signal

    for name in ("SIGTERM", "SIGHUP", "SIGINT", "SIGPIPE"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name),
                          signal.SIG_IGN if name == "SIGINT" else signal.SIG_DFL)


def _derive_missing(parts: _Parts, jobs: int) -> None:
    """Derive the parts that ``parts.store`` does not hold in ``jobs`` forked processes and
    store them (the parent then reads every part from the store).

    The parts are grouped by variant (a block, a parameterization): a variant's questions
    build on one another (1.3 on 1.2, 2.4 on 2.3), and each process keeps what it derived
    in memory, as one process would. The largest groups go first. A group whose process
    fails is derived again in the parent, so an error is raised as without ``jobs``.
    """
    import json
    import multiprocessing

    groups: dict[str, list[tuple[Question, str]]] = {}
    for q in current().questions.values():
        for variant in q.variants:
            value = parts.store.get("part", parts.key(q, variant))  # a miss counts here
            if value is None:
                groups.setdefault(variant, []).append((q, variant))
            else:
                parts.seen[q.qid, variant] = value
    if len(groups) < 2:
        return
    _GROUPS[:] = sorted(groups.values(), key=lambda g: (-len(g), g[0][1]))
    _GROUPS_COMMAND[:] = [parts.command]
    try:
        pool = multiprocessing.get_context("fork").Pool(min(jobs, len(_GROUPS)),
                                                         initializer=_default_signals)
        try:
            results = pool.map(_derive_group, range(len(_GROUPS)), chunksize=1)
            pool.close()
        finally:
            pool.terminate()  # after close: the processes have ended; on an error: end them
            pool.join()
        for group, (error, texts) in zip(_GROUPS, results, strict=True):
            if error is not None:  # derived (and raised) here when the files ask for it,
                parts.store.misses -= len(group)  # a miss counted again then
                continue
            for (q, variant), text in zip(group, texts, strict=True):
                value = json.loads(text)
                parts.store.put("part", parts.key(q, variant), value)
                parts.seen[q.qid, variant] = value
    finally:
        _GROUPS.clear()


def _value_key(value: object) -> list[str]:
    """What a part's key holds of a block: its :func:`~derive.cache.fingerprint`; and
    where the block or any node of its expressions is of a class that the material's
    blocks module defines (whose code the fingerprint does not show), that file's bytes too."""
    import dataclasses
    import hashlib

    import sympy as sp

    types_ = {type(value)}
    if dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            expr = getattr(value, field.name)
            if isinstance(expr, sp.Basic):
                for node in sp.preorder_traversal(expr):
                    types_ |= {type(node), getattr(node, "func", type(node))}
    key = [fingerprint(value)]
    module, files = current().blocks_module, by_value()
    if files and any(getattr(t, "__module__", None) == module for t in types_):
        key.append(hashlib.sha256((default_root() / files[0]).read_bytes()).hexdigest())
    return key


def _blocks_fingerprint() -> str:
    """Every public value of the material's blocks module: what an introduction that reads
    it sees (without a blocks module: every block)."""
    import importlib

    name = current().blocks_module
    if not name:
        return fingerprint({key: fingerprint(b) for key, b in current().blocks.items()})
    blocks = importlib.import_module(name)
    return fingerprint({name: fingerprint(getattr(blocks, name)) for name in blocks.__all__})


def _reads_blocks(function: object) -> bool:
    """Whether ``function`` may read the material's blocks module: True unless it is a
    function of a module beside the blocks module in the material's package (the registry,
    ``derive.coursework.questions`` for the coursework), not a closure, whose code, and
    that of every function of that module it names, names no value of the blocks.

    A function of any other module cannot reach the blocks (within the package only the
    registry imports them; tests/test_cache.py checks it) but through the registry's values,
    which it would name; anything else (a callable object, a function of the engine) may.
    """
    import importlib
    import types

    if function is None:
        return False
    name = current().blocks_module
    if not name:
        return True
    module = getattr(function, "__module__", None) or ""
    if module == name or module.rpartition(".")[0] != name.rpartition(".")[0]:
        return True  # not a module of the material's package beside its blocks
    blocks, registry = importlib.import_module(name), sys.modules.get(module)
    if registry is None:
        return True
    shared = {name for name, value in vars(registry).items()
              if any(value is v for v in vars(blocks).values()
                     if not isinstance(v, types.ModuleType))}
    seen, todo = set(), [function]
    while todo:
        fn = todo.pop()
        if (not isinstance(fn, types.FunctionType) or fn.__module__ != registry.__name__
                or fn.__closure__):  # a closure's cells may hold anything
            return True
        codes, names = [fn.__code__], set()
        while codes:
            code = codes.pop()
            names |= set(code.co_names)
            codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
        if names & shared:
            return True
        for name in names - seen:
            seen.add(name)
            value = vars(registry).get(name)
            if isinstance(value, types.FunctionType) and value.__module__ == registry.__name__:
                todo.append(value)
            elif value is registry or value is blocks:
                return True
    return False


def _part(q: Question, variant: str, command: str = COMMAND) -> dict:
    """A question's variant rendered: what the generated files need of it (``latex``: each
    kind of part the sheets typeset of it, :func:`~derive.document.part_kinds`)."""
    from codegen.latex import render_notebook

    from .text import render_text

    d = q.derive(variant)
    options = LatexOptions()
    part = {"latex": {kind: render_part(q, variant, kind, d, options)
                      for kind in part_kinds(q, variant)},
            "notebook": render_notebook(d), "text": render_text(d), "steps": len(d.steps),
            "module": None}
    if q.kernels is not None:
        from .kernel_search import search_module

        m = search_module(q.kernels(variant)).module  # as the accuracy search leaves it
        part["module"] = {"name": m.name, "title": m.title, "text": render_module(m, command)}
    part["search_notebook"] = search_cell(q, variant)  # (the search is cached: no rerun)
    return part


def _one_writer(pairs: list[tuple[Question, str]], names: list[str]) -> None:
    """Refuse, in one line (:class:`~derive.material.MaterialError`), two of the questions'
    variants ``pairs`` writing one kernel module (``names``, in the same order): the second
    file would silently replace the first."""
    seen: dict[str, tuple[Question, str]] = {}
    for (q, v), name in zip(pairs, names, strict=True):
        if name in seen:
            (q0, v0) = seen[name]
            raise MaterialError(
                f"question {q0.qid}" + (f" ({v0})" if v0 else "") + f" and question {q.qid}"
                + (f" ({v})" if v else "") + f" both write the kernel module {name!r}; "
                "give one of them another module name")
        seen[name] = (q, v)


def _files(parts: _Parts | None = None, command: str = COMMAND,
           package: str = PACKAGE) -> dict[str, str]:
    if parts is None:
        # the registry says which question produces which module; each as the accuracy
        # search leaves it
        from .kernel_search import search_module

        modules = [search_module(m).module for m in kernel_modules()]
        _one_writer([(q, v) for q in current().questions.values() if q.kernels
                     for v in q.variants], [m.name for m in modules])
        texts = {m.name: render_module(m, command) for m in modules}
        rendered = deriving()  # each variant derived once for the four sheets
        documents = {sheet: sheet_document(sheet, command=command, rendered=rendered)
                     for sheet in SHEETS}
        notebook = derivations_notebook(command)
    else:
        pairs = [(q, v) for q in current().questions.values() if q.kernels
                 for v in q.variants]
        found = [parts.part(q, v)["module"] for q, v in pairs]
        _one_writer(pairs, [m["name"] for m in found])
        modules = [_Module(m["name"], m["title"]) for m in found]
        texts = {m["name"]: m["text"] for m in found}
        documents = {sheet: sheet_document(
            sheet, command=command, rendered=lambda q, v, kind: parts.part(q, v)["latex"][kind],
            intro=parts.intro) for sheet in SHEETS}
        notebook = derivations_notebook(
            command, outputs=lambda q, v: (parts.part(q, v)["notebook"],
                                           parts.part(q, v)["text"]),
            searches=lambda q, v: parts.part(q, v)["search_notebook"])
    files = {f"{package}/{name}.py": text for name, text in texts.items()}
    files[f"{package}/__init__.py"] = environment().get_template("package.py.jinja").render(
        modules=modules, command=command)
    for sheet, document in documents.items():  # problems, solutions, notes, marking
        files[f"{package}/{sheet}.tex"] = document
    files[f"{package}/derivations.ipynb"] = notebook
    return dict(sorted(files.items()))



Warn = Callable[[str], None]
_MANIFEST_LINE = re.compile(
    r"([0-9a-f]{64})  ([A-Za-z_][A-Za-z0-9_]*/[A-Za-z0-9_][A-Za-z0-9_.-]*)")
_HEAD = 300  # the generated mark is within a file's first this many bytes
_MAX_SIZE = 4 << 20  # no generated file comes near this (the largest is ~200 KB)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(files: dict[str, bytes], command: str = COMMAND, package: str = PACKAGE) -> bytes:
    lines = [f"# This file is {GENERATED_MARK}",
             f"# Regenerate with: {command}",
             "# The files `derive generate` wrote, with their SHA-256 (as `sha256sum` prints",
             "# them). It deletes a file only when the file is listed here, no longer produced",
             f"# and unchanged since; every other file under {package}/ is left alone."]
    lines += [f"{_digest(data)}  {rel}" for rel, data in files.items()]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _encoded(files: dict[str, str], command: str = COMMAND,
             package: str = PACKAGE) -> dict[str, bytes]:
    """The files as UTF-8 bytes, with the manifest that lists them."""
    manifest = manifest_path(package)
    data = {rel: text.encode("utf-8") for rel, text in sorted(files.items()) if rel != manifest}
    data[manifest] = _manifest(data, command, package)
    return data


def _read(path: Path) -> bytes | str | None:
    """The file's bytes; None when missing; a one-line reason when it is not a regular file
    (a symlink is not followed: generate writes and deletes only inside generated/) or is
    larger than any file the engine writes (it is not read)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"cannot read: {err.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return ("is a symlink; `derive generate` writes only regular files in generated/ "
                "and never follows a link (remove it)")
    if stat.S_ISDIR(st.st_mode):
        return "is a directory"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_size > _MAX_SIZE:
        return (f"is larger than {_MAX_SIZE >> 20} MiB ({st.st_size} bytes), which "
                "`derive generate` never writes; move it away")
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_SIZE + 1)
    except OSError as err:
        return f"cannot read: {err.strerror}"
    if len(data) > _MAX_SIZE:
        return f"is larger than {_MAX_SIZE >> 20} MiB; move it away"
    return data


def _has_mark(data: bytes) -> bool:
    return GENERATED_MARK in data[:_HEAD].decode("utf-8", errors="replace")


def _header(data: bytes) -> bytes:
    """The lines up to the one saying how to regenerate the file (CRLF read as LF): what
    names the file's source, template and command; empty without such a line."""
    head = data[:2 * _HEAD].replace(b"\r\n", b"\n")
    at = head.find(b"Regenerate with:")
    end = head.find(b"\n", at)
    return b"" if at < 0 or end < 0 else head[:end + 1]


def _recorded(root: Path, package: str = PACKAGE) -> dict[str, str]:
    """What the manifest on disk lists: path -> SHA-256 (only plain names in the package)."""
    manifest = manifest_path(package)
    data = _read(root / manifest)
    if not isinstance(data, bytes):
        return {}
    recorded = {}
    for line in data.decode("utf-8", errors="replace").splitlines():
        match = _MANIFEST_LINE.fullmatch(line)
        if (match and match.group(2) != manifest
                and match.group(2).partition("/")[0] == package):
            recorded[match.group(2)] = match.group(1)
    return recorded


def _others(root: Path, files: dict[str, bytes],
            package: str = PACKAGE) -> tuple[list[str], dict[str, str]]:
    """Files under the package the engine does not produce: (to delete, left alone -> why)."""
    gen = root / package
    if not gen.is_dir():
        return [], {}
    recorded = _recorded(root, package)
    delete, kept = [], {}
    for path in sorted(gen.iterdir()):
        rel = f"{package}/{path.name}"
        if rel in files or path.name.startswith("."):  # temporary files of other runs
            continue
        data = _read(path)
        if not isinstance(data, bytes):
            continue
        if rel in recorded:
            if _digest(data) == recorded[rel]:
                delete.append(rel)
            else:
                kept[rel] = ("no longer produced, but changed since `derive generate` wrote "
                             "it; left alone (delete it yourself if it is not needed)")
        elif _has_mark(data):
            kept[rel] = (f"carries the generated mark, but `derive generate` did not write it "
                         f"(not in {manifest_path(package)}); left alone")
    return delete, kept


@contextlib.contextmanager
def _locked(root: Path, exclusive: bool, warn: Warn | None,
            package: str = PACKAGE) -> Iterator[None]:
    """Hold ``flock`` on ``root/<package>`` (created when ``exclusive``) for the block."""
    gen = root / package
    if exclusive:
        try:
            gen.mkdir(exist_ok=True)
        except FileExistsError:
            why = ("a symlink to a folder that does not exist" if gen.is_symlink() else
                   "Not a directory")
            raise OutputError(package, why, 20) from None
    if fcntl is None or not gen.is_dir():
        yield
        return
    fd = os.open(gen, os.O_RDONLY)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if warn:
                warn(f"waiting for another `derive generate` (it holds a lock on {package}/)")
            fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # releases the lock


def _check_targets(root: Path, rels: list[str]) -> None:
    """Raise :class:`~derive.output.OutputError` (naming the file relative to ``root``)
    unless every one of ``rels`` can be written: not read-only, its folder writable."""
    for rel in rels:
        try:
            output_target(str(root / rel), in_place=False)
        except OutputError as err:
            raise OutputError(rel, err.reason, err.errno or errno.EINVAL) from None


def write_files(root: Path, files: dict[str, str], warn: Warn | None = None,
                command: str = COMMAND, package: str = PACKAGE) -> list[str]:
    """Write the files whose bytes differ under ``root``; return the paths written or removed.

    A file the engine no longer produces is removed only if the manifest lists it and it is
    unchanged; other files are left alone, and ``warn`` (if given) is told about each one
    that carries the generated mark. Raises :class:`~derive.output.OutputError` (one line)
    where a folder or other non-file stands at a generated path, or a file that the engine
    did not write, or where a file to be changed is read-only (or its folder is not
    writable): every target is checked before any is written, so either every changed file
    is written or none is.
    """
    data = _encoded(files, command, package)
    manifest = manifest_path(package)
    with _locked(root, exclusive=True, warn=warn, package=package):
        recorded = _recorded(root, package)
        changed = []
        for rel, content in data.items():
            old = _read(root / rel)
            if isinstance(old, str):
                raise OutputError(rel, old)
            if old == content:
                continue
            if old is not None and rel not in recorded and not (
                    _has_mark(old) and _header(old) == _header(content)):
                raise OutputError(rel, "exists and was not written by `derive generate` "
                                       "(not in its manifest, and its header is not the one "
                                       "generate writes there); move it away first")
            changed.append(rel)
        delete, kept = _others(root, data, package)
        _check_targets(root, changed)  # every one before any is written: all or nothing
        for rel in changed:
            if rel != manifest:  # a hard link elsewhere (a snapshot) keeps the old content
                write_output(str(root / rel), data[rel], in_place=False)
        for rel in delete:
            (root / rel).unlink()
        if manifest in changed:  # last: an interrupted run leaves the old list
            write_output(str(root / manifest), data[manifest], in_place=False)
    for rel, why in kept.items():
        if warn:
            warn(f"{rel}: {why}")
    return [rel for rel in changed if rel != manifest] + delete + (
        [manifest] if manifest in changed else [])


def _diff(rel: str, old: bytes, new: bytes) -> str:
    if old.replace(b"\r\n", b"\n") == new:
        return f"{rel}: differs only in line endings (CRLF on disk)\n"
    note = ""
    try:
        old_text = old.decode("utf-8")
    except UnicodeDecodeError as err:
        old_text = old.decode("utf-8", errors="replace")
        note = f"{rel}: not valid UTF-8 on disk (byte {err.start})\n"
    diff = difflib.unified_diff(old_text.splitlines(keepends=True),
                                new.decode("utf-8").splitlines(keepends=True),
                                fromfile=f"{rel} (on disk)", tofile=f"{rel} (derived)", n=2)
    return note + ("".join(diff) or f"{rel}: differs\n")


def stale_files(root: Path, files: dict[str, str], warn: Warn | None = None,
                command: str = COMMAND, package: str = PACKAGE) -> dict[str, str]:
    """Paths whose bytes on disk differ from ``files``, each with a diff or one line.

    A missing file is one line (``missing``), as is a folder where a file should be. A file
    that ``write_files`` would delete counts as stale; files it would leave alone do not
    (``warn``, if given, is told about those that carry the generated mark).
    """
    data = _encoded(files, command, package)
    stale = {}
    with _locked(root, exclusive=False, warn=warn, package=package):
        for rel, content in data.items():
            old = _read(root / rel)
            if old is None:
                stale[rel] = f"{rel}: missing\n"
            elif isinstance(old, str):
                stale[rel] = f"{rel}: {old}\n"
            elif old != content:
                stale[rel] = _diff(rel, old, content)
        delete, kept = _others(root, data, package)
    for rel in delete:
        stale[rel] = f"{rel}: written earlier by `derive generate`, no longer produced\n"
    for rel, why in kept.items():
        if warn:
            warn(f"{rel}: {why}")
    return stale
