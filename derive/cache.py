r"""A cache of rendered derivation results in a private user folder, for ``derive generate``.

Every entry is text (JSON), never a pickle: reading the cache runs no code, and a damaged
or forged entry can at worst be a miss. An entry is found by the SHA-256 of its key, and
the key says everything that determines the entry's content: the entry's kind and name,
the digest of the engine's sources (:func:`source_digest`: every file of ``derive/``,
``codegen/`` and ``kernel_runtime/`` but the ones a key holds by value, with the
versions of Python, SymPy, mpmath, Jinja and NumPy), and any value the key holds. A
change to any of those is a new key, so nothing is ever invalidated by hand.

Where: ``$DERIVE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/derive``, else
``~/.cache/derive``. The folder is created private (0700); one that others may write, or
that is not the user's own, is not used. ``DERIVE_NO_CACHE=1`` (or ``--no-cache``) turns
the cache off; so does a folder that cannot be created, with one warning line.

Safety. An entry is written to a temporary file in its own folder and renamed over the
old one (:func:`os.replace`), so concurrent runs never read half an entry: each sees
the old entry, the new one, or none. An entry starts with a header line that repeats its
full key and holds the length and SHA-256 of its payload; an entry whose header, key,
length, checksum or JSON does not match (truncated, garbled, from another format) is a
miss, and its result is computed again and written over it.

Size. Each version of the sources adds about 2.5 MB; ``derive generate`` prunes the least
recently used entries when they exceed :data:`LIMIT` (200 MB).

Example:
    >>> import tempfile
    >>> store = Store(Path(tempfile.mkdtemp()))
    >>> store.get("kind", ["a", 1]) is None
    True
    >>> store.put("kind", ["a", 1], {"text": "x"})
    >>> store.get("kind", ["a", 1])
    {'text': 'x'}
    >>> import shutil; shutil.rmtree(store.folder)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "LIMIT", "LIBRARIES", "Store", "cache_folder", "open_store",
           "source_digest", "fingerprint", "material_files", "use_material",
           "ENGINE_PACKAGES"]

#: The entry format; a new one is a new subfolder, so old entries are never read.
FORMAT = 1
#: The packages whose files :func:`source_digest` hashes.
ENGINE_PACKAGES = ("derive", "codegen", "kernel_runtime")
#: The size the entries may take before :meth:`Store.prune` removes the least recently
#: used (each version of the engine's sources takes about 2.5 MB).
LIMIT = 200 << 20
#: The libraries whose versions :func:`source_digest` holds: SymPy (and the mpmath it
#: computes with), Jinja (the templates), NumPy (which ``codegen`` imports).
LIBRARIES = ("sympy", "mpmath", "jinja2", "numpy")
_MAGIC = b"derive-cache"
_ROOT = Path(__file__).resolve().parents[1]
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message in _warned:
        return
    _warned.add(message)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        print(f"derive: warning: {message}", file=sys.stderr, flush=True)


def cache_folder(env: dict[str, str] | None = None) -> Path | None:
    """The cache folder the environment names; None when the cache is turned off."""
    env = os.environ if env is None else env
    if env.get("DERIVE_NO_CACHE", "") not in ("", "0"):
        return None
    if env.get("DERIVE_CACHE_DIR"):
        return Path(env["DERIVE_CACHE_DIR"])
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "derive"


def _private(folder: Path) -> str | None:
    """Create ``folder`` (0700); why it cannot be used, or None when it can."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(folder)
    except OSError as err:
        return f"cannot create the cache folder {folder}: {err.strerror or err}"
    if not stat.S_ISDIR(st.st_mode):
        return f"the cache folder {folder} is not a folder"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"the cache folder {folder} belongs to another user"
    if st.st_mode & 0o022:
        return f"others may write to the cache folder {folder} (chmod 700 it)"
    return None


def open_store(no_cache: bool = False) -> Store | None:
    """The user's :class:`Store`, or None: turned off, or its folder is unusable (said in
    one warning line on standard error)."""
    folder = None if no_cache else cache_folder()
    if folder is None:
        return None
    why = _private(folder)
    if why is not None:
        _warn_once(f"{why}; running without the derivation cache")
        return None
    return Store(folder)


def _files(package: Path) -> Iterable[Path]:
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith("."):
            yield path


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


def source_digest(exclude: Iterable[str] = (), root: Path | None = None,
                  packages: Iterable[str] = ENGINE_PACKAGES, material: bool = True,
                  only: Iterable[str] | None = None) -> str:
    """SHA-256 of every file of the engine's ``packages`` under ``root`` (path and bytes)
    but those in ``exclude`` (paths relative to ``root``), and of the versions that
    determine what the engine writes: the engine's, Python's (major.minor) and those of
    :data:`LIBRARIES`; and, unless ``material`` is false, the files of the material in use
    where it is not the default (:func:`use_material`). ``only`` (paths relative to
    ``root``): hash those files alone of the packages' (a result that depends on a few
    modules, such as the accuracy search's)."""
    root = _ROOT if root is None else root
    skip = set(exclude)
    h = hashlib.sha256()
    engine = getattr(sys.modules.get("derive"), "__version__", "")
    for part in (f"format {FORMAT}", f"derive {engine}",
                 f"python {sys.version_info[0]}.{sys.version_info[1]}",
                 *(f"{name} {_version(name)}" for name in LIBRARIES)):
        h.update(part.encode() + b"\0")
    keep = None if only is None else set(only)
    for package in packages:
        for path in _files(root / package):
            rel = path.relative_to(root).as_posix()
            if rel in skip or (keep is not None and rel not in keep):
                continue
            data = path.read_bytes()
            h.update(f"{rel}\0{len(data)}\0".encode("utf-8", "surrogateescape") + data)
    for name, path in _material_files if material else ():
        data = path.read_bytes()
        h.update(f"material {name}\0{len(data)}\0".encode("utf-8", "surrogateescape") + data)
    return h.hexdigest()


#: The files of the material in use beyond the engine's (:func:`use_material`): a key
#: of another material holds their bytes as well as the engine's.
_material_files: tuple[tuple[str, Path], ...] = ()


def material_files(module_file: str | os.PathLike | None) -> tuple[tuple[str, Path], ...]:
    """The files of a material module's package, each ``(name, path)``: every file of the
    folder of a package's ``__init__.py`` (or of the package holding a plain module),
    named from that folder; a module outside any package is its own file."""
    if module_file is None:
        return ()
    path = Path(module_file).resolve()
    folder = path.parent
    if path.name != "__init__.py" and not (folder / "__init__.py").exists():
        return ((path.name, path),)
    return tuple((f"{folder.name}/{p.relative_to(folder).as_posix()}", p)
                 for p in _files(folder))


def use_material(files: Iterable[tuple[str, Path]]) -> None:
    """Make ``files`` (:func:`material_files` of each module of the material in use) part
    of every :func:`source_digest`; empty for the default material, which is the
    engine's own."""
    global _material_files
    _material_files = tuple(files)


def fingerprint(value: object) -> str:
    """A text that determines ``value``: a dataclass by its class and fields, a SymPy value
    by ``srepr`` (which names every node and symbol, assumptions included)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ", ".join(f"{f.name}={fingerprint(getattr(value, f.name))}"
                           for f in dataclasses.fields(value))
        return f"{type(value).__module__}.{type(value).__qualname__}({fields})"
    if type(value).__module__.split(".")[0] == "sympy" or hasattr(value, "free_symbols"):
        from sympy import srepr

        return srepr(value)
    return repr(value)


class Store:
    """Entries of JSON values under ``folder``, each found by its kind and key."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0

    def _path(self, kind: str, key: Any) -> tuple[Path, bytes]:
        text = json.dumps([kind, key], sort_keys=True, ensure_ascii=True)
        name = hashlib.sha256(text.encode()).hexdigest()
        return self.folder / f"v{FORMAT}" / name[:2] / name, text.encode()

    def get(self, kind: str, key: Any) -> Any:
        """The value stored for ``key``; None when there is none or it does not verify."""
        path, full_key = self._path(kind, key)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            self.misses += 1
            return None
        value = _decode(data, full_key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
            with contextlib.suppress(OSError):
                os.utime(path)  # last used: what :meth:`prune` keeps
        return value

    def prune(self, limit: int = LIMIT) -> int:
        """Remove the least recently used entries while the entries take more than
        ``limit`` bytes (down to half of it), and temporary files older than a day; return
        how many files were removed. Failures are ignored."""
        import time

        entries, total, removed = [], 0, 0
        for path in self.folder.glob(f"v{FORMAT}/*/*"):
            with contextlib.suppress(OSError):
                st = path.stat()
                if path.name.startswith(".tmp-"):
                    if st.st_mtime < time.time() - 86400:  # left by a killed run
                        path.unlink()
                        removed += 1
                    continue
                entries.append((st.st_mtime, st.st_size, path))
                total += st.st_size
        if total <= limit:
            return removed
        for _, size, path in sorted(entries):
            if total <= limit // 2:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
                total -= size
        return removed

    def put(self, kind: str, key: Any, value: Any) -> None:
        """Store ``value`` for ``key`` atomically; a failure to write is ignored (the value
        is then computed again next time)."""
        path, full_key = self._path(kind, key)
        payload = json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8")
        header = json.dumps({"key": full_key.decode(), "size": len(payload),
                             "sha256": hashlib.sha256(payload).hexdigest()}).encode()
        tmp = None
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(_MAGIC + b" " + header + b"\n" + payload)
            os.replace(tmp, path)
            tmp = None
        except OSError as err:
            _warn_once(f"cannot write to the derivation cache in {self.folder}: "
                       f"{err.strerror or err}")
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def get_or_compute(self, kind: str, key: Any, compute: Callable[[], Any]) -> Any:
        """The stored value for ``key``, or ``compute()`` stored and returned."""
        value = self.get(kind, key)
        if value is None:
            value = compute()
            self.put(kind, key, value)
        return value


def _decode(data: bytes, full_key: bytes) -> Any:
    """The payload of an entry; None unless its magic, key, length and checksum match."""
    line, sep, payload = data.partition(b"\n")
    if not sep or not line.startswith(_MAGIC + b" "):
        return None
    try:
        header = json.loads(line[len(_MAGIC) + 1:])
        if not (isinstance(header, dict) and header.get("key") == full_key.decode()
                and header.get("size") == len(payload)
                and header.get("sha256") == hashlib.sha256(payload).hexdigest()):
            return None
        return json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
