r"""Writing one file where the user said: never over something that is not a file.

:func:`output_target` looks at a path before anything is computed, and says in one line
(an :class:`OutputError`) why it cannot be written; :func:`write_output` then writes it:

- ``-`` and ``/dev/stdout`` mean standard output;
- a symlink is written through, to its target;
- a new file is created atomically (a temporary file in the same folder, then a rename),
  with missing parent folders; an existing one is replaced atomically and keeps its mode
  (and, where permitted, its owner);
- a file with several hard links is rewritten in place, so every link sees the new content
  (its space is reserved first, so a full disk leaves the old content; the write itself is
  not atomic, and Ctrl-C or SIGTERM is held until it is done);
- a read-only file, a folder, a FIFO, a device or a socket is refused.

Temporary names are short (``.derive-XXXXXXXX.tmp``) so a 255-byte file name still works,
and a temporary file is removed on any error or interrupt.

Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> target = output_target(folder + "/new/q.tex")
    >>> write_output(target, b"%\n").real.read_bytes()
    b'%\n'
    >>> output_target(folder)
    Traceback (most recent call last):
    ...
    derive.output.OutputError: ...: Is a directory
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OutputError", "Target", "output_target", "write_output", "STDOUT_NAMES"]

#: Paths that mean standard output (besides ``-``).
STDOUT_NAMES = frozenset({"/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"})
_TMP_PREFIX, _TMP_SUFFIX = ".derive-", ".tmp"

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


class OutputError(OSError):
    """A path that cannot be written; ``str()`` is one line naming the path and why."""

    def __init__(self, path: str, reason: str, code: int = errno.EINVAL) -> None:
        super().__init__(code, reason, path)
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Target:
    """Where :func:`write_output` writes: standard output, or ``real`` (symlinks resolved).

    ``existing`` is the stat of the regular file already there, or None for a new file.
    """

    path: str
    real: Path | None
    existing: os.stat_result | None = None

    @property
    def is_stdout(self) -> bool:
        return self.real is None


def _first_non_folder(path: Path) -> Path | None:
    """The first existing component of ``path``'s parents that is not a folder, if any."""
    for parent in reversed(path.parents):
        if os.path.lexists(parent) and not os.path.isdir(parent):
            return parent
    return None


def _check_folder(folder: Path, path: str) -> None:
    """Raise unless a file can be created in ``folder`` (or in its deepest existing parent)."""
    while not os.path.lexists(folder):
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(path, f"Not a directory: {folder}", errno.ENOTDIR)
    with _signals_held():  # the probe file is always removed
        try:  # the only reliable test (root, read-only mounts, ACLs): create a file there
            fd, probe = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=folder)
        except OSError as err:
            raise OutputError(path, f"cannot create files in {folder}: {err.strerror}",
                              err.errno or errno.EACCES) from None
        os.close(fd)
        os.unlink(probe)


def output_target(path: str | os.PathLike[str], *, in_place: bool = True) -> Target:
    """Check that ``path`` can be written, before anything is computed; see the module doc.

    Raises :class:`OutputError` (one line) for an empty path, a folder, a non-folder used
    as a folder, a read-only file, a FIFO or device, or a folder without write permission.
    ``in_place=False`` (as for :func:`write_output`) checks the folder of a hard-linked file
    too, since it is then replaced rather than rewritten.
    """
    text = os.fspath(path)
    if text == "":
        raise OutputError("''", "empty path; give a file name, or - for standard output")
    if text == "-" or text in STDOUT_NAMES:
        return Target(text, None)
    try:
        st = os.stat(text)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        blocker = _first_non_folder(Path(os.path.abspath(text)))
        raise OutputError(text, f"Not a directory: {blocker or text}", errno.ENOTDIR) from None
    except OSError as err:
        raise OutputError(text, err.strerror or str(err), err.errno or errno.EINVAL) from None
    try:
        real = Path(os.path.realpath(text))
    except OSError as err:  # a relative path, and the working folder was deleted
        raise OutputError(text, f"cannot resolve it: {err.strerror} (was the current folder "
                                "deleted?)", err.errno or errno.ENOENT) from None
    if st is None:
        if text.endswith(os.sep) or (os.altsep and text.endswith(os.altsep)):
            raise OutputError(text, "ends with a slash, so it names a folder, and there is "
                                    "none; give a file name", errno.EISDIR)
        _check_folder(real.parent, text)
        return Target(text, real)
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(text, "Is a directory", errno.EISDIR)
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a file")
        raise OutputError(text, f"is {kind}, not a regular file; refusing to write to it")
    if not st.st_mode & 0o222 or not os.access(real, os.W_OK):
        raise OutputError(text, f"is read-only (mode {stat.S_IMODE(st.st_mode):04o}); "
                                "refusing to overwrite it", errno.EACCES)
    if st.st_nlink == 1 or not in_place:
        _check_folder(real.parent, text)
    return Target(text, real, st)


_HELD = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
              if hasattr(signal, name))


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block is done, then act on the first one
    as its handler would have (a step that must not stop half-way, such as rewriting a file
    in place). Python runs signal handlers in the main thread only, so this holds them even
    where another thread receives the signal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = {}
    for signum in _HELD:
        if signal.getsignal(signum) is None:  # installed outside Python: left as it is
            continue
        with contextlib.suppress(ValueError, OSError):
            old[signum] = signal.signal(signum, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
        if caught:
            handler = old.get(caught[0])
            if callable(handler):
                handler(caught[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(caught[0])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace(path: Path, data: bytes, existing: os.stat_result | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if existing is None:
                os.fchmod(fh.fileno(), 0o666 & ~_umask())
            else:
                os.fchmod(fh.fileno(), stat.S_IMODE(existing.st_mode))
                if (existing.st_uid, existing.st_gid) != (os.geteuid(), os.getegid()):
                    with contextlib.suppress(OSError):
                        os.fchown(fh.fileno(), existing.st_uid, existing.st_gid)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _rewrite_in_place(path: Path, data: bytes) -> None:
    with _signals_held():  # a signal between the write and the truncation mixes two files
        _rewrite_in_place_now(path, data)


def _rewrite_in_place_now(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        if len(data) > size and hasattr(os, "posix_fallocate"):
            try:  # reserve the space first: a full disk then leaves the old content
                os.posix_fallocate(fd, 0, len(data))
            except OSError as err:
                os.ftruncate(fd, size)
                if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise
        view = memoryview(data)
        offset = 0
        while offset < len(view):
            offset += os.pwrite(fd, view[offset:], offset)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_stdout(data: bytes) -> None:
    stream = sys.stdout
    if stream is None:
        raise OutputError("standard output", "it is closed", errno.EBADF)
    stream.flush()
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:
        stream.write(data.decode("utf-8"))
        stream.flush()


def write_output(target: Target | str | os.PathLike[str], data: bytes, *,
                 in_place: bool = True) -> Target:
    """Write ``data`` to ``target`` (a path is checked first by :func:`output_target`).

    ``in_place=False`` replaces a hard-linked file too, so its other names keep the old
    content (``derive generate``: a file it owns, and a ``cp -al`` snapshot stays as it was).
    """
    # Looked at again now: the path may have changed since it was first checked.
    target = output_target(target.path if isinstance(target, Target) else target)
    if target.real is None:
        _write_stdout(data)
    elif in_place and target.existing is not None and target.existing.st_nlink > 1:
        _rewrite_in_place(target.real, data)
    else:
        _replace(target.real, data, target.existing)
    return target
