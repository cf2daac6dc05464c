r"""Writing one file where the user said: never over something that is not a file.

:func:`output_target` looks at a path before anything is computed, and says in one line
(an :class:`OutputError`) why it cannot be written; :func:`write_output` then writes it:

- ``-`` and ``/dev/stdout`` mean standard output, ``/dev/stderr`` standard error, and
  ``/dev/fd/N`` (or ``/proc/self/fd/N``, or a symlink to one of these) the open file
  descriptor ``N``: the bytes are written to the stream as it is, so a file it is
  redirected to (``2>>log``) is added to, never truncated or replaced; standard input,
  a descriptor that is not open or one open for reading only is refused;
- a regular file that standard output or standard error goes to is refused (replacing it
  would lose what the stream writes there): the stream's name writes to it;
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
import re
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: a descriptor's access mode is not checked
    fcntl = None

__all__ = ["OutputError", "Target", "output_target", "write_output", "STDOUT_NAMES"]

#: Paths that mean standard output (besides ``-``).
STDOUT_NAMES = frozenset({"/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"})
_TMP_PREFIX, _TMP_SUFFIX = ".derive-", ".tmp"

#: Paths that name a standard stream, by its file descriptor.
_STREAM_NAMES = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
#: A path that names an open file descriptor of this process (the pid is checked apart).
_FD_PATH = re.compile(r"/(?:dev|proc/(self|thread-self|[0-9]+))/fd/([0-9]+)")
_STREAMS = {0: ("standard input", "/dev/stdin"), 1: ("standard output", "/dev/stdout"),
            2: ("standard error", "/dev/stderr")}

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
    """Where :func:`write_output` writes: an open stream (``fd``), or ``real`` (symlinks
    resolved).

    ``existing`` is the stat of the regular file already there, or None for a new file;
    ``fd`` the file descriptor written to where ``real`` is None (1 standard output, 2
    standard error, or one the caller opened, ``3>>log``).
    """

    path: str
    real: Path | None
    existing: os.stat_result | None = None
    fd: int | None = None

    @property
    def is_stream(self) -> bool:
        """Whether the bytes go to an open stream (no file is created or replaced)."""
        return self.real is None

    @property
    def is_stdout(self) -> bool:
        """Whether the bytes go to standard output."""
        return self.real is None and self.fd == 1


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


def _stream_fd(text: str) -> int | None:
    """The file descriptor that ``text`` names (``/dev/stderr``, ``/dev/fd/3``,
    ``/proc/self/fd/1``, or a chain of symlinks ending at one of these), or None. Read from
    the names alone: following ``/proc/self/fd/2`` would give the file the stream goes to,
    which must not be opened anew (that truncates it, or writes over it from its start)."""
    path = text
    for _ in range(40):  # as the kernel, give up on a longer chain of links
        try:
            name = os.path.normpath(os.path.abspath(path))
        except OSError:  # a relative path, and the working folder was deleted
            return None
        if name in _STREAM_NAMES:
            return _STREAM_NAMES[name]
        match = _FD_PATH.fullmatch(name)
        if match and (match.group(1) in (None, "self", "thread-self")
                      or int(match.group(1)) == os.getpid()):
            return int(match.group(2))
        try:
            link = os.readlink(path)
        except OSError:  # not a link (or not there): a plain path
            return None
        path = os.path.join(os.path.dirname(path), link)
    return None


def _stream_target(text: str, fd: int) -> Target:
    """``text`` names file descriptor ``fd``: check that it can be written to as it is."""
    name = _STREAMS.get(fd, (f"file descriptor {fd}",))[0]
    if fd == 0:
        raise OutputError(text, "is standard input; refusing to write to it", errno.EBADF)
    if fd == 1:
        return Target(text, None, fd=1)  # a closed standard output is said when written
    if fd == 2 and sys.stderr is None:
        raise OutputError(text, "is standard error, and it is closed", errno.EBADF)
    try:
        os.fstat(fd)
        open_here = fd <= 2 or os.get_inheritable(fd)  # derive's own files are not
    except OSError:
        open_here = False
    if not open_here:
        raise OutputError(text, f"is {name}, which is not open (redirect it, e.g. "
                                f"{fd}>>FILE)", errno.EBADF)
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL) if fcntl is not None else os.O_WRONLY
    except OSError:
        flags = os.O_WRONLY  # not known: a failed write is said when it happens
    if flags & os.O_ACCMODE == os.O_RDONLY:
        raise OutputError(text, f"is {name}, which is open for reading only", errno.EBADF)
    return Target(text, None, fd=fd)


def _check_not_a_stream(text: str, st: os.stat_result) -> None:
    """Refuse the regular file that standard output or standard error goes to: replacing
    it would lose what the stream wrote and writes there."""
    for fd in (1, 2):
        try:
            other = os.fstat(fd)
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            name, path = _STREAMS[fd]
            raise OutputError(text, f"is the file {name} goes to, and replacing it would "
                                    f"lose what is written there; write to {path} to add to "
                                    "it, or choose another file")


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
        return Target(text, None, fd=1)
    fd = _stream_fd(text)
    if fd is not None:
        return _stream_target(text, fd)
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
    _check_not_a_stream(text, st)
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


def _write_stream(fd: int, data: bytes) -> None:
    """Write ``data`` to standard output (1), standard error (2) or the open descriptor
    ``fd``, at its current position (appended where it was opened with ``>>``)."""
    if fd not in (1, 2):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        return
    stream = sys.stdout if fd == 1 else sys.stderr
    if stream is None:
        raise OutputError(_STREAMS[fd][0], "it is closed", errno.EBADF)
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
        _write_stream(target.fd if target.fd is not None else 1, data)
    elif in_place and target.existing is not None and target.existing.st_nlink > 1:
        _rewrite_in_place(target.real, data)
    else:
        _replace(target.real, data, target.existing)
    return target
