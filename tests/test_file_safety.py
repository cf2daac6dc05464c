"""What `derive generate` and `-o` may write, replace and delete (issue 12).

Each test failed on the code before its fix.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from derive.cache import open_store
from derive.cli import main
from derive.files import GENERATED_MARK, MANIFEST, generated_files, stale_files, write_files
from derive.output import OutputError, write_output

from .conftest import ROOT

#: Ctrl-C cannot be tested where the tests were started with SIGINT ignored (a shell starts
#: a background job, ``nohup ... &``, so): its children ignore it too.
SIGINT_IGNORED = pytest.mark.skipif(signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
                                    reason="the tests were started with SIGINT ignored "
                                           "(nohup ... &)")



@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    # what generate writes, as test data: from the derivation cache when it holds it
    # (tests/test_generate.py derives them without it)
    return generated_files(open_store())


@pytest.fixture
def root(tmp_path: Path, files: dict[str, str]) -> Path:
    """A root whose generated/ is what `derive generate` wrote."""
    write_files(tmp_path, files)
    return tmp_path


def _collect() -> tuple[list[str], object]:
    messages: list[str] = []
    return messages, messages.append


# -- delete only what the engine wrote ------------------------------------------------

def test_generate_keeps_a_users_copy_and_another_commands_output(root, files, capsys):
    gen = root / "generated"
    backup = gen / "coupling_backup.py"
    shutil.copyfile(gen / "coupling.py", backup)
    odot = gen / "solutions_odot.tex"
    assert main(["latex", "--odot", "-o", str(odot)]) == 0
    assert GENERATED_MARK in odot.read_text()[:300]
    capsys.readouterr()
    warnings, warn = _collect()
    assert stale_files(root, files, warn=warn) == {}
    assert write_files(root, files, warn=warn) == []
    assert backup.exists() and odot.exists()
    assert any("coupling_backup.py" in w and "left alone" in w for w in warnings)
    # The command line says so too, on stderr, and exits 0.
    assert main(["generate", "--root", str(root)]) == 0
    captured = capsys.readouterr()
    assert "changed: none" in captured.out
    assert "warning: generated/solutions_odot.tex" in captured.err
    assert backup.exists() and odot.exists()


def test_generate_deletes_its_own_orphans_only_when_unchanged(root, files):
    gen = root / "generated"
    manifest = (gen / "MANIFEST").read_text()
    assert "generated/coupling_affine.py" in manifest and MANIFEST == "generated/MANIFEST"
    fewer = {k: v for k, v in files.items()
             if k not in ("generated/coupling_affine.py", "generated/coupling_additive.py")}
    (gen / "coupling_additive.py").write_text("# edited after generation\n")
    stale = stale_files(root, fewer)
    assert "generated/coupling_affine.py" in stale
    warnings, warn = _collect()
    written = write_files(root, fewer, warn=warn)
    assert "generated/coupling_affine.py" in written
    assert not (gen / "coupling_affine.py").exists()
    assert (gen / "coupling_additive.py").read_text() == "# edited after generation\n"
    assert any("coupling_additive.py" in w for w in warnings)


def test_a_forged_manifest_cannot_delete_outside_generated(root, files, tmp_path):
    victim = root / "victim.py"
    victim.write_text("keep me\n")
    import hashlib
    digest = hashlib.sha256(victim.read_bytes()).hexdigest()
    with open(root / "generated" / "MANIFEST", "a") as fh:
        fh.write(f"{digest}  generated/../victim.py\n{digest}  victim.py\n")
    write_files(root, files)
    assert victim.read_text() == "keep me\n"


def test_a_users_file_at_a_generated_path_is_not_clobbered(tmp_path, files):
    mine = tmp_path / "generated" / "coupling.py"
    mine.parent.mkdir()
    mine.write_text("# my own notes, not generated\n")
    with pytest.raises(OutputError, match="not written by `derive generate`"):
        write_files(tmp_path, files)
    assert mine.read_text() == "# my own notes, not generated\n"


# -- -o PATH and what is at that path ---------------------------------------------------

def test_writes_through_a_symlink_to_its_target(tmp_path):
    target = tmp_path / "real.tex"
    target.write_text("old\n")
    link = tmp_path / "link.tex"
    link.symlink_to(target)
    write_output(str(link), b"new\n")
    assert link.is_symlink() and target.read_text() == "new\n"


def test_keeps_the_mode_of_an_existing_file(tmp_path):
    target = tmp_path / "private.tex"
    target.write_text("old\n")
    target.chmod(0o600)
    write_output(str(target), b"new\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_text() == "new\n"


def test_refuses_a_read_only_file(tmp_path):
    target = tmp_path / "frozen.tex"
    target.write_text("old\n")
    target.chmod(0o444)
    with pytest.raises(OutputError, match="read-only"):
        write_output(str(target), b"new\n")
    assert target.read_text() == "old\n"


def test_refuses_a_fifo_in_one_line(tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert main(["latex", "1.3", "-o", str(fifo)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a regular file" in err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_refuses_a_device_node(tmp_path):
    dev = tmp_path / "full"
    try:
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except OSError as err:
        pytest.skip(f"cannot create a device node here: {err}")
    with pytest.raises(OutputError, match="character device"):
        write_output(str(dev), b"x\n")
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


def test_a_hard_linked_file_is_rewritten_in_place(tmp_path):
    a, b = tmp_path / "a.tex", tmp_path / "b.tex"
    a.write_text("old\n")
    os.link(a, b)
    write_output(str(a), b"new\n")
    assert b.read_text() == "new\n" and a.stat().st_nlink == 2


def _latex_to(target: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "derive", "latex", "1.3", "-o", target],
                          cwd=cwd, env=env, capture_output=True, text=True)


def test_dash_writes_to_standard_output(tmp_path):
    out = _latex_to("-", tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("%") and r"\det" in out.stdout
    assert list(tmp_path.iterdir()) == []


def test_dev_stdout_writes_to_standard_output(tmp_path):
    out = _latex_to("/dev/stdout", tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("%") and r"\det" in out.stdout
    assert os.path.islink("/dev/stdout") or not os.path.isfile("/dev/stdout")


def test_long_file_names_work(tmp_path):
    for length in (242, 255):
        target = tmp_path / ("q" * (length - 4) + ".tex")
        write_output(str(target), b"x\n")
        assert target.read_bytes() == b"x\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# -- concurrent runs ---------------------------------------------------------------------

def test_never_sweeps_another_runs_temporary_file(root, files):
    in_flight = root / "generated" / ".coupling.py.k2j4h1.tmp"
    in_flight.write_text(files["generated/coupling.py"])
    write_files(root, files)
    assert in_flight.exists()


def test_generate_waits_for_the_lock_on_generated(root, files):
    (root / "generated" / "coupling.py").write_text("# stale\n")
    fd = os.open(root / "generated", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (write_files(root, files), done.set()))
    worker.start()
    try:
        time.sleep(0.5)
        assert not done.is_set()
        assert (root / "generated" / "coupling.py").read_text() == "# stale\n"
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    worker.join(30)
    assert done.is_set()
    assert stale_files(root, files) == {}


# -- drift and corrupted files -------------------------------------------------------

def test_crlf_drift_is_detected_and_restored(root, files):
    target = root / "generated" / "coupling.py"
    good = target.read_bytes()
    target.write_bytes(good.replace(b"\n", b"\r\n"))
    stale = stale_files(root, files)
    assert list(stale) == ["generated/coupling.py"]
    assert "line endings" in stale["generated/coupling.py"]
    assert write_files(root, files) == ["generated/coupling.py"]
    assert target.read_bytes() == good


def test_undecodable_bytes_are_reported_and_restored(root, files, capsys):
    target = root / "generated" / "gaussian_kl.py"
    good = target.read_bytes()
    target.write_bytes(good + b"\xff")
    assert "generated/gaussian_kl.py" in stale_files(root, files)
    assert main(["generate", "--check", "--root", str(root)]) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert write_files(root, files) == ["generated/gaussian_kl.py"]
    assert target.read_bytes() == good


def test_a_directory_where_a_file_should_be_is_one_line(root, files, capsys):
    target = root / "generated" / "gaussian_kl.py"
    target.unlink()
    target.mkdir()
    assert main(["generate", "--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "generated/gaussian_kl.py: is a directory" in err and "Traceback" not in err
    assert main(["generate", "--root", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "generated/gaussian_kl.py" in err[0] and "directory" in err[0]
    assert target.is_dir()


def test_missing_files_are_one_line_each(tmp_path, files, capsys):
    assert main(["generate", "--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "generated/coupling.py: missing" in err
    assert len(err.splitlines()) < len(files) + 6 and len(err) < 5000


# -- symlinks, hard links, huge files and interrupted rewrites ----------------------------------

@pytest.mark.parametrize("rel", ["generated/coupling.py", "generated/MANIFEST"])
def test_generate_never_writes_through_a_symlink_in_generated(root, files, tmp_path, rel):
    # Before: a symlink at a generated path was written through, clobbering the user's file
    # outside generated/ (the manifest lists the path), and a dangling one created folders.
    mine = tmp_path / "elsewhere" / "mine.txt"
    mine.parent.mkdir()
    mine.write_text("my own file\n")
    link = root / rel
    link.unlink()
    link.symlink_to(mine)
    assert "symlink" in stale_files(root, files)[rel]
    with pytest.raises(OutputError, match="symlink"):
        write_files(root, files)
    assert mine.read_text() == "my own file\n" and link.is_symlink()
    link.unlink()
    link.symlink_to(tmp_path / "nowhere" / "x.py")
    with pytest.raises(OutputError, match="symlink"):
        write_files(root, files)
    assert not (tmp_path / "nowhere").exists()


def test_generate_never_deletes_a_symlink_the_manifest_lists(root, files, tmp_path):
    # Before: a listed orphan that is a symlink to a file with the recorded digest was deleted.
    import hashlib

    mine = tmp_path / "mine.py"
    mine.write_text("mine\n")
    digest = hashlib.sha256(mine.read_bytes()).hexdigest()
    with open(root / "generated" / "MANIFEST", "a") as fh:
        fh.write(f"{digest}  generated/old.py\n")
    (root / "generated" / "old.py").symlink_to(mine)
    assert "generated/old.py" not in stale_files(root, files)
    write_files(root, files)
    assert (root / "generated" / "old.py").is_symlink() and mine.read_text() == "mine\n"


def test_a_huge_file_in_generated_is_not_read_whole(root, files, capsys):
    # Before: every file under generated/ was read whole (a 500 MB data file: 590 MB of
    # memory), and --check printed a diff of any size.
    gen = root / "generated"
    with open(gen / "data.bin", "wb") as fh:
        fh.truncate(64 << 20)  # sparse
    with open(gen / "solutions.tex", "ab") as fh:
        fh.truncate(64 << 20)
    stale = stale_files(root, files)
    assert list(stale) == ["generated/solutions.tex"] and "larger than" in stale[
        "generated/solutions.tex"] and len(stale["generated/solutions.tex"]) < 200
    with pytest.raises(OutputError, match="larger than"):
        write_files(root, files)
    assert (gen / "data.bin").stat().st_size == 64 << 20


@SIGINT_IGNORED
def test_ctrl_c_during_an_in_place_rewrite_leaves_old_or_new_content(tmp_path,
                                                                             monkeypatch):
    # Before: Ctrl-C right after the write of a hard-linked file, before its truncation,
    # left the new content followed by the old file's tail.
    import signal

    a, b = tmp_path / "a.tex", tmp_path / "b.tex"
    a.write_bytes(b"old " * 1000)
    os.link(a, b)
    real_pwrite = os.pwrite

    def interrupted(fd: int, data: bytes, offset: int) -> int:
        n = real_pwrite(fd, data, offset)
        os.kill(os.getpid(), signal.SIGINT)
        return n

    monkeypatch.setattr(os, "pwrite", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_output(str(a), b"new\n")
    assert b.read_bytes() in (b"old " * 1000, b"new\n")


def test_generate_leaves_a_hard_linked_snapshot_alone(root, files, tmp_path):
    # Before: generate rewrote a hard-linked generated file in place, so a `cp -al` snapshot
    # (or `ln generated/coupling.py backup.py`) lost its content.
    target = root / "generated" / "coupling.py"
    target.write_text(target.read_text() + "# my experiment\n")
    backup = tmp_path / "backup.py"
    os.link(target, backup)
    assert write_files(root, files) == ["generated/coupling.py"]
    assert backup.read_text().endswith("# my experiment\n")
    assert target.read_text() == files["generated/coupling.py"]


def test_a_warning_escapes_control_characters_in_a_file_name(root, capsys):
    # Before: the name of a copy in generated/ went raw to the terminal.
    gen = root / "generated"
    shutil.copyfile(gen / "coupling.py", gen / "x\x1b[31m\ny.py")
    assert main(["generate", "--check", "--root", str(root)]) == 0
    err = capsys.readouterr().err
    assert "\x1b" not in err and "x\\x1b[31m\\ny.py" in err and len(err.splitlines()) == 1


def test_a_marked_copy_at_a_newly_produced_path_is_not_clobbered(root, files):
    # Before: any file carrying the generated mark at a produced path outside the manifest
    # was replaced, e.g. a user's edited copy of coupling.py saved under a name the engine
    # starts producing later. Now its header must be the one generate writes there.
    gen = root / "generated"
    manifest = gen / "MANIFEST"
    manifest.write_text("".join(line for line in manifest.read_text().splitlines(True)
                                if "coupling_glow.py" not in line))
    mine = (gen / "coupling.py").read_text() + "# my edits\n"
    (gen / "coupling_glow.py").write_text(mine)
    with pytest.raises(OutputError, match="not written by `derive generate`"):
        write_files(root, files)
    assert (gen / "coupling_glow.py").read_text() == mine
    # A file with generate's own header there (here with CRLF line ends) is restored.
    crlf = files["generated/coupling_glow.py"].replace("\n", "\r\n") + "# edited\r\n"
    (gen / "coupling_glow.py").write_bytes(crlf.encode())
    assert "generated/coupling_glow.py" in write_files(root, files)
    assert (gen / "coupling_glow.py").read_text() == files["generated/coupling_glow.py"]


def test_a_dangling_generated_symlink_is_named(tmp_path, files):
    # Before: "generated: Not a directory" for a symlink whose folder was removed.
    (tmp_path / "generated").symlink_to(tmp_path / "gone")
    with pytest.raises(OutputError, match="symlink to a folder that does not exist"):
        write_files(tmp_path, files)
    assert not (tmp_path / "gone").exists()
