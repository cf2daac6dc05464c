"""The command line under attack: standard streams, read-only targets, Ctrl-C (issue 25).

- ``-o /dev/stderr``, ``-o /dev/fd/N`` (and a path that is the file a standard
  stream goes to) never truncate or replace the file the stream is redirected to.
- Ctrl-C at any moment of start-up exits 130 quietly (no traceback).
- ``derive generate`` checks every target before writing any: a read-only
  generated file leaves the whole tree (and ``generated/MANIFEST``) as it was.

Each test failed on the code before its fix.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from derive.cache import open_store
from derive.cli import main
from derive.files import generated_files, write_files
from derive.output import OutputError, output_target

from .conftest import ROOT

PY = sys.executable
IMPORTANT = "IMPORTANT: the user's log\n"


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# -- -o naming a standard stream -------------------------------------------------------

@pytest.mark.parametrize("path, redirect", [
    ("/dev/stderr", "2>>log"),
    ("/dev/fd/2", "2>>log"),
    ("/proc/self/fd/2", "2>>log"),
    ("/dev/fd/3", "3>>log"),
    ("/dev/stdout", ">>log"),
])
def test_a_stream_redirected_to_a_file_is_appended_to_not_truncated(tmp_path, path,
                                                                           redirect):
    # Before: /dev/stderr and /dev/fd/3 resolved to `log`, which was replaced: IMPORTANT lost.
    log = tmp_path / "log"
    log.write_text(IMPORTANT)
    out = shell(f"{PY} -m derive latex 1.3 -o {path} {redirect}", tmp_path)
    assert out.returncode == 0, out.stderr
    text = log.read_text()
    assert text.startswith(IMPORTANT), text[:200]
    fragment = text[len(IMPORTANT):]
    assert fragment.startswith("% This fragment") and r"\det" in fragment
    assert "wrote" not in out.stdout + fragment  # no "wrote /dev/stderr" line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]


def test_a_symlink_to_dev_stderr_writes_to_standard_error(tmp_path):
    log = tmp_path / "log"
    log.write_text(IMPORTANT)
    (tmp_path / "err.tex").symlink_to("/dev/stderr")
    out = shell(f"{PY} -m derive latex 1.3 -o err.tex 2>>log", tmp_path)
    assert out.returncode == 0, out.stderr
    assert log.read_text().startswith(IMPORTANT + "% This fragment")
    assert os.readlink(tmp_path / "err.tex") == "/dev/stderr"


def test_dev_stderr_on_a_pipe_is_written(tmp_path):
    # Before: standard error a pipe, so /dev/stderr was refused as "a FIFO".
    out = shell(f"{PY} -m derive latex 1.3 -o /dev/stderr", tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith("% This fragment") and out.stdout == ""


def test_the_file_standard_error_goes_to_is_refused_by_name(tmp_path):
    # `-o log 2>>log`: replacing log would drop what is in it (and what derive writes to
    # standard error after); refused in one line, exit 2, log kept.
    log = tmp_path / "log"
    log.write_text(IMPORTANT)
    out = shell(f"{PY} -m derive latex 1.3 -o log 2>>log", tmp_path)
    assert out.returncode == 2
    text = log.read_text()
    assert text.startswith(IMPORTANT)
    line = one_line(text[len(IMPORTANT):])
    assert "--output: log:" in line and "standard error" in line and "/dev/stderr" in line


@pytest.mark.parametrize("path, why", [
    ("/dev/fd/7", "not open"),
    ("/dev/stdin", "standard input"),
    ("/dev/fd/0", "standard input"),
])
def test_a_closed_or_input_descriptor_is_refused_in_one_line(tmp_path, path, why):
    out = shell(f"{PY} -m derive latex 1.3 -o {path} < /dev/null", tmp_path)
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert line.startswith(f"derive: error: --output: {path}: ") and why in line, line


def test_a_descriptor_open_for_reading_only_is_refused(tmp_path):
    log = tmp_path / "log"
    log.write_text(IMPORTANT)
    out = shell(f"{PY} -m derive latex 1.3 -o /dev/fd/3 3<log", tmp_path)
    assert out.returncode == 2 and "reading" in one_line(out.stderr)
    assert log.read_text() == IMPORTANT


# -- generate checks every target before writing any ----------------------------------

def _snapshot(gen: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(gen.iterdir())}


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    # what generate writes, as test data: from the derivation cache when it holds it
    # (tests/test_generate.py derives them without it)
    return generated_files(open_store())


def test_a_read_only_generated_file_leaves_the_tree_as_it_was(tmp_path, files, capsys):
    # Before: coupling.py was rewritten, then gaussian_kl.py (0444) failed and MANIFEST
    # stayed stale: a half-updated tree.
    write_files(tmp_path, files)
    gen = tmp_path / "generated"
    for name in ("coupling.py", "gaussian_kl.py"):
        (gen / name).write_text((gen / name).read_text() + "# stale\n")
    (gen / "gaussian_kl.py").chmod(0o444)
    before = _snapshot(gen)
    assert main(["generate", "--root", str(tmp_path)]) == 1
    line = one_line(capsys.readouterr().err)
    assert "generated/gaussian_kl.py" in line and "read-only" in line, line
    assert _snapshot(gen) == before
    assert stat.S_IMODE((gen / "gaussian_kl.py").stat().st_mode) == 0o444
    manifest = (gen / "MANIFEST").read_text()
    digest = hashlib.sha256(before["coupling.py"]).hexdigest()
    assert f"{digest}  generated/coupling.py" not in manifest  # nothing new recorded
    (gen / "gaussian_kl.py").chmod(0o644)  # once writable, everything is written
    assert main(["generate", "--root", str(tmp_path)]) == 0
    assert (gen / "coupling.py").read_text() == files["generated/coupling.py"]


def test_a_read_only_manifest_is_refused_before_anything_is_written(tmp_path, files):
    write_files(tmp_path, files)
    gen = tmp_path / "generated"
    (gen / "coupling.py").unlink()  # missing: written again, and MANIFEST rewritten
    (gen / "MANIFEST").write_text((gen / "MANIFEST").read_text() + "\n")
    (gen / "MANIFEST").chmod(0o444)
    before = _snapshot(gen)
    with pytest.raises(OutputError, match="MANIFEST.*read-only"):
        write_files(tmp_path, files)
    assert _snapshot(gen) == before


def test_an_unchanged_read_only_file_is_not_an_error(tmp_path, files):
    write_files(tmp_path, files)
    (tmp_path / "generated" / "gaussian_kl.py").chmod(0o444)
    assert write_files(tmp_path, files) == []
    with pytest.raises(OutputError):
        output_target(tmp_path / "generated" / "gaussian_kl.py")


# -- Ctrl-C at start-up --------------------------------------------------------------

#: A sitecustomize that stops the import of module $PAUSE_AT (says so on standard error,
#: then sleeps), so that Ctrl-C lands exactly there.
_PAUSE = '''
import os, sys, time

class _Pause:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ.get("PAUSE_AT"):
            sys.stderr.write("paused\\n"); sys.stderr.flush(); time.sleep(60)
        return None

sys.meta_path.insert(0, _Pause())
'''

_SCRIPT = Path(sys.executable).parent / "derive"  # the console script of the install


def _start(command: list[str], tmp_path: Path, pause_at: str = "") -> subprocess.Popen:
    (tmp_path / "sitecustomize.py").write_text(_PAUSE)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}", "PAUSE_AT": pause_at}
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _commands() -> list[list[str]]:
    commands = [[PY, "-m", "derive", "list"]]
    if _SCRIPT.is_file():
        commands.append([str(_SCRIPT), "list"])
    return commands


@pytest.mark.skipif(signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
                    reason="the tests were started with SIGINT ignored (nohup ... &)")
@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(Path(c[0]).name
                                                                        for c in [c]))
@pytest.mark.parametrize("pause_at", ["derive.__main__", "derive.cli", "argparse", "shlex"])
def test_ctrl_c_during_the_imports_exits_130_quietly(tmp_path, command, pause_at):
    # Before: a KeyboardInterrupt traceback through derive/__main__.py and derive/cli.py.
    if pause_at == "derive.__main__" and command[0] != PY:
        pytest.skip("the console script does not import derive.__main__")
    proc = _start(command, tmp_path, pause_at)
    assert proc.stderr.readline() == "paused\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err == "" and out == "", (proc.returncode, err)


@pytest.mark.skipif(signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
                    reason="the tests were started with SIGINT ignored (nohup ... &)")
@pytest.mark.parametrize("command", _commands(), ids=lambda c: Path(c[0]).name)
def test_ctrl_c_at_any_early_moment_prints_no_derive_traceback(tmp_path, command):
    # A signal before Python has a handler kills the process quietly (-2). One that lands
    # in Python's own start-up (site, the editable install's finder), before the first line
    # of derive runs, is Python's to report; from derive's first line on, exit 130 quietly.
    for delay in (0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3):
        proc = _start(command, tmp_path)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        outcome = (delay, proc.returncode, err)
        assert f"{ROOT}{os.sep}derive{os.sep}" not in err, outcome
        if "Traceback" in err:  # in Python's start-up, before derive: not derive's
            continue
        assert proc.returncode in (130, -signal.SIGINT), outcome
        assert err == "" and out == "", outcome
