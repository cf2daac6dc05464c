"""No traceback from a documented command, exact messages and exit codes (issue 12).

Each test failed on the code before its fix.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import derive
from derive.cli import main

from .conftest import ROOT

#: Ctrl-C cannot be tested where the tests were started with SIGINT ignored (a shell starts
#: a background job, ``nohup ... &``, so): its children ignore it too.
SIGINT_IGNORED = pytest.mark.skipif(signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
                                    reason="the tests were started with SIGINT ignored "
                                           "(nohup ... &)")

PY = sys.executable


def run(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([PY, "-m", "derive", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)


def shell(command: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True)


def one_line(stderr: str | bytes) -> str:
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def fake_tex(tmp_path: Path, body: str, engines: tuple[str, ...] = ("pdflatex", "latexmk"),
             ) -> tuple[Path, str]:
    """Fake TeX engines and a hermetic PATH; returns a marker (touched when one runs) and PATH.

    The PATH holds the fake engines and a folder of links to the few tools their scripts
    run (`touch`, `sleep`), nothing else: a machine's own `latexmk` or `pdflatex` can never
    be found behind the fakes (issue 19).
    """
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    tools = bin_dir / "tools"
    tools.mkdir()
    for tool in ("touch", "sleep"):
        found = shutil.which(tool)
        assert found, f"the fake TeX scripts need {tool!r} on the PATH"
        (tools / tool).symlink_to(found)
    marker = tmp_path / "tex-ran"
    for name in engines:
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\ntouch '{marker}'\n{body}\n")
        script.chmod(0o755)
    return marker, f"{bin_dir}:{tools}"


# -- signals --------------------------------------------------------------------------

_SLOW_REPLACE = """
import os, sys, time
real = os.replace
root = os.path.realpath(sys.argv[-1])  # generate --root ROOT: its writes, not the cache's
def slow(src, dst):
    if not os.path.realpath(dst).startswith(root + os.sep):
        return real(src, dst)
    sys.stderr.write("replacing\\n"); sys.stderr.flush(); time.sleep(60); real(src, dst)
os.replace = slow
from derive.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143),
                                       pytest.param(signal.SIGINT, 130, marks=SIGINT_IGNORED)])
def test_a_signal_during_generate_leaves_no_temporary_file(tmp_path, sig, code):
    # the run's derivation cache (warm after the first generate) is read and written as
    # usual: only the writes under the root are slowed
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([PY, "-c", _SLOW_REPLACE, "generate", "--root", str(tmp_path)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr.readline() == "replacing\n"
    assert [p.name for p in (tmp_path / "generated").iterdir()]  # the temporary file
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert list((tmp_path / "generated").iterdir()) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143),
                                       pytest.param(signal.SIGINT, 130, marks=SIGINT_IGNORED)])
def test_a_signal_during_pdf_leaves_no_scratch_folder(tmp_path, sig, code):
    marker, path = fake_tex(tmp_path, "exec sleep 30")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch),
           "PATH": path}
    proc = subprocess.Popen([PY, "-m", "derive", "latex", "1.3", "--pdf", "-o",
                             str(tmp_path / "q.pdf")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p.name for p in scratch.iterdir() if p.name.startswith("derive-tex-")]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and "Traceback" not in err, err
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "q.pdf").exists()


# -- the output path is checked before compiling -----------------------------------------

@pytest.fixture
def tex_marker(tmp_path, monkeypatch) -> Path:
    marker, path = fake_tex(tmp_path, "exit 1")
    monkeypatch.setenv("PATH", path)
    return marker


def _pdf_error(capsys, output: str) -> tuple[int, str]:
    code = main(["latex", "1.3", "--pdf", "-o", output])
    return code, one_line(capsys.readouterr().err)


def test_pdf_into_a_directory(tmp_path, tex_marker, capsys):
    code, err = _pdf_error(capsys, str(tmp_path))
    assert code == 2 and "Is a directory" in err and not tex_marker.exists()


def test_pdf_under_a_file(tmp_path, tex_marker, capsys):
    (tmp_path / "file.tex").write_text("x")
    code, err = _pdf_error(capsys, str(tmp_path / "file.tex" / "x.pdf"))
    assert code == 2 and "Not a directory" in err and not tex_marker.exists()


def test_empty_output_path(tex_marker, capsys):
    code, err = _pdf_error(capsys, "")
    assert code == 2 and "empty" in err and not tex_marker.exists()
    assert main(["latex", "1.3", "-o", ""]) == 2
    assert "empty" in one_line(capsys.readouterr().err)


def _unwritable_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o500)
        return d
    try:  # root ignores permission bits; /sys refuses new files even to root
        (Path("/sys") / "derive-probe").touch()
    except OSError:
        return Path("/sys")
    pytest.skip("no unwritable folder available as root")


def test_pdf_into_an_unwritable_folder(tmp_path, tex_marker, capsys):
    code, err = _pdf_error(capsys, str(_unwritable_dir(tmp_path) / "q.pdf"))
    assert code == 2 and "Permission denied" in err and not tex_marker.exists()


# -- writing to standard output ----------------------------------------------------------

def test_broken_pipe_is_quiet():
    out = shell(f"{PY} -m derive list | true; {PY} -m derive --help | true")
    assert out.stderr == b""


def test_full_standard_output_is_one_line():
    out = shell(f"{PY} -m derive list > /dev/full")
    assert out.returncode == 1 and "No space left on device" in one_line(out.stderr)


def test_closed_standard_output_is_one_line():
    out = shell(f"{PY} -m derive list >&-")
    assert out.returncode == 1 and "standard output" in one_line(out.stderr)


def test_unencodable_file_name_is_written_and_exits_0(tmp_path):
    out = run("latex", "1.3", "-o", "\N{GRINNING FACE}.tex", cwd=tmp_path,
              env={"PYTHONIOENCODING": "latin-1"})
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert (tmp_path / "\N{GRINNING FACE}.tex").exists()


def test_unencodable_output_is_one_line(monkeypatch, capsys):
    import io

    import derive.cli as cli

    # Today every command prints ASCII; a future title with a sigma must still not crash.
    monkeypatch.setattr(cli, "_cmd_list", lambda: "\N{GREEK SMALL LETTER SIGMA}\n")
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding="latin-1"))
    assert main(["list"]) == 1
    err = one_line(capsys.readouterr().err)
    assert "latin-1" in err and "PYTHONIOENCODING=utf-8" in err


# -- messages that say what happened -----------------------------------------------------

def test_a_file_used_as_a_folder_is_not_a_directory(tmp_path, capsys):
    (tmp_path / "real.tex").write_text("x")
    assert main(["latex", "1.3", "-o", str(tmp_path / "real.tex" / "x.tex")]) == 2
    assert "Not a directory" in one_line(capsys.readouterr().err)


def test_latexmk_exit_12_means_pdflatex_is_missing(tmp_path, monkeypatch, capsys):
    _, path = fake_tex(tmp_path, "exit 12", engines=("latexmk",))
    monkeypatch.setenv("PATH", path)
    assert main(["latex", "1.3", "--pdf", "-o", str(tmp_path / "q.pdf")]) == 1
    err = one_line(capsys.readouterr().err)
    assert "pdflatex" in err and "not found" in err


def test_exit_0_without_a_pdf_says_so(tmp_path, monkeypatch, capsys):
    _, path = fake_tex(tmp_path, "exit 0", engines=("pdflatex",))
    monkeypatch.setenv("PATH", path)
    assert main(["latex", "1.3", "--pdf", "-o", str(tmp_path / "q.pdf")]) == 1
    err = one_line(capsys.readouterr().err)
    assert "no PDF" in err and "exit code 0" not in err


# -- exit codes and --version ------------------------------------------------------------

def test_a_missing_root_is_a_usage_error(tmp_path, capsys):
    assert main(["generate", "--root", str(tmp_path / "nope")]) == 2
    assert "--root" in one_line(capsys.readouterr().err)
    (tmp_path / "file").write_text("x")
    assert main(["generate", "--check", "--root", str(tmp_path / "file")]) == 2
    assert "Not a directory" in one_line(capsys.readouterr().err)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code in (0, None)
    assert capsys.readouterr().out == f"derive {derive.__version__}\n"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'version = {attr = "derive.__version__"}' in pyproject


# -- nothing the user typed can inject TeX -----------------------------------------------

@pytest.mark.parametrize("args", [["latex"], ["latex", "1.3", "--standalone"],
                                  ["latex", "1.3"]])
def test_a_newline_in_the_output_path_cannot_inject_tex(tmp_path, capsys, args):
    target = tmp_path / "nl\n\\typeout{INJECTED}.tex"
    assert main([*args, "-o", str(target)]) == 0
    text = target.read_text()
    assert "INJECTED" in text  # named in the header comment, escaped
    for line in text.splitlines():
        assert "INJECTED" not in line or line.startswith("% Regenerate with:"), line
    assert "$'" in text


# -- what a fragment needs ---------------------------------------------------------------

def _fragment_preamble(fragment: str) -> list[str]:
    return [line[1:].strip() for line in fragment.splitlines()
            if line.startswith("%") and line[1:].strip().startswith("\\use")]


def test_a_fragment_names_the_packages_it_needs(capsys):
    assert main(["latex", "2.4"]) == 0
    preamble = "\n".join(_fragment_preamble(capsys.readouterr().out))
    assert "\\usepackage{amsmath,amssymb}" in preamble and "\\usepackage{tikz}" in preamble
    assert "\\usetikzlibrary{positioning,arrows.meta}" in preamble
    cli_page = (ROOT / "docs" / "cli.md").read_text()
    assert "positioning,arrows.meta" in cli_page and "amsmath" in cli_page


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_fragments_compile_with_exactly_that_preamble(tmp_path, capsys):
    inputs = []
    for qid in ("1.2", "2.4"):
        assert main(["latex", qid, "-o", str(tmp_path / f"q{qid}.tex")]) == 0
        inputs.append(f"\\input{{q{qid}.tex}}")
    preamble = _fragment_preamble((tmp_path / "q2.4.tex").read_text())
    doc = "\n".join(["\\documentclass{article}", *preamble, "\\begin{document}", *inputs,
                     "\\end{document}", ""])
    (tmp_path / "main.tex").write_text(doc)
    out = subprocess.run(["pdflatex", "-halt-on-error", "-interaction=nonstopmode", "main.tex"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:]


# -- an installed (non-editable) derive never writes into site-packages ------------------

def test_generate_refuses_to_write_into_site_packages(tmp_path):
    site = tmp_path / "site-packages"
    for package in ("derive", "codegen"):
        shutil.copytree(ROOT / package, site / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([PY, "-m", "derive", "generate"], cwd=work, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 2
    err = one_line(out.stderr)
    assert "--root" in err and "editable" in err
    assert not (site / "generated").exists()


# -- every documented subcommand: bad paths, closed or full standard output ----------------------

_BAD_PATHS = [
    "latex 1.3 -o {tmp}", "latex 1.3 -o {tmp}/f/x.tex", "latex 1.3 --pdf -o {tmp}/f/x.pdf",
    "latex 1.3 -o ''", "generate --root {tmp}/f", "generate --check --root {tmp}/nope",
]
_OUTPUTS = ["list", "show 1.2", "latex 1.3", "latex 1.3 -o {tmp}/a/b.tex", "--help"]


def _no_traceback(tmp_path: Path, lines: list[str]) -> None:
    (tmp_path / "f").write_text("a file where a folder is expected\n")
    for line in lines:
        line = f"{PY} -m derive {line.format(tmp=tmp_path)}"
        out = shell(line, cwd=tmp_path)
        err = out.stderr.decode("utf-8", "replace")
        assert "Traceback" not in err and "Exception ignored" not in err, (line, err)
        assert len(err.strip().splitlines()) <= 1, (line, err)
        assert out.returncode in (0, 1, 2, 141), (line, out.returncode)


def test_no_traceback_from_any_subcommand_with_a_bad_path(tmp_path, monkeypatch, capsys):
    # in this process (a bad path is not about the process boundary): no exception leaves
    # main, at most one line on standard error, a documented exit code
    (tmp_path / "f").write_text("a file where a folder is expected\n")
    monkeypatch.chdir(tmp_path)
    for line in _BAD_PATHS:
        argv = shlex.split(line.format(tmp=tmp_path))
        code = main(argv)
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) <= 1 and "Traceback" not in err, (argv, err)
        assert code in (0, 1, 2), (argv, code)


@pytest.mark.parametrize("redirect", [">&-", "> /dev/full", "| true"])
def test_no_traceback_from_any_subcommand_with_a_closed_or_full_stdout(tmp_path, redirect):
    _no_traceback(tmp_path, [f"{command} {redirect}" for command in _OUTPUTS])


# -- usage errors, file names, scratch folders, standard streams and Ctrl-C ------------------

def test_a_usage_error_exits_2_whatever_standard_output_is():
    # Before: with stdout on /dev/full the usage error exited 1 and added "cannot write to
    # standard output" (an empty flush fails there); with stdout and stderr closed, 1.
    out = shell(f"{PY} -m derive list --bogus > /dev/full")
    assert out.returncode == 2, out.stderr
    assert b"standard output" not in out.stderr and b"unrecognized" in out.stderr
    assert shell(f"{PY} -m derive list --bogus >&- 2>&-").returncode == 2


@pytest.mark.parametrize("redirect", ["2> /dev/full", "2>&- ", "2>&1 | true"])
def test_an_unwritable_standard_error_keeps_the_exit_code(redirect):
    # Before: the one-line error could not be printed, and the traceback that followed made
    # the exit code 1 (or 120) instead of 2.
    out = shell(f"{PY} -m derive show 9.9 {redirect}; echo \"rc=${{PIPESTATUS[0]}}\"")
    assert out.stdout.strip() == b"rc=2", out


def test_an_output_path_ending_in_a_slash_is_a_folder(tmp_path, capsys):
    # Before: `-o newdir/` wrote a file named `newdir` and said "wrote newdir/".
    assert main(["latex", "1.3", "-o", str(tmp_path / "newdir") + "/"]) == 2
    err = one_line(capsys.readouterr().err)
    assert "newdir/" in err and "folder" in err
    assert list(tmp_path.iterdir()) == []


def test_an_undecodable_file_name_is_shown_with_its_bytes(tmp_path):
    # Before: "wrote bad\udcff.tex" (Python's surrogate escape), not the byte \xff.
    out = shell(f"{PY} -m derive latex 1.3 -o $'bad\\xff.tex'", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout == b"wrote bad\\xff.tex\n", out
    assert os.path.exists(os.fsencode(tmp_path) + b"/bad\xff.tex")


def test_check_escapes_control_characters_in_a_file_name(capsys):
    # Before: the name went raw to the terminal (an escape sequence, a second line).
    assert main(["check", "2.3", "a\x1b[31mb\nc.tex"]) == 2
    err = one_line(capsys.readouterr().err)
    assert "\x1b" not in err and "a\\x1b[31mb\\nc.tex" in err


@pytest.mark.parametrize("args", ["latex 1.3 -o q.tex", "generate --check --root ."])
def test_a_deleted_working_folder_is_one_line(tmp_path, args):
    # Before: a FileNotFoundError traceback from os.path.realpath (os.getcwd fails).
    (tmp_path / "gone").mkdir()
    out = shell(f"cd gone && rmdir ../gone && {PY} -m derive {args}", cwd=tmp_path)
    assert out.returncode == 2 and "folder" in one_line(out.stderr), out.stderr


def test_pdf_with_no_room_for_the_scratch_folder_is_one_line(tmp_path, tex_marker,
                                                                    monkeypatch, capsys):
    # Before: an OSError traceback (found with TMPDIR on a tmpfs without free inodes).
    import errno
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    code, err = _pdf_error(capsys, str(tmp_path / "q.pdf"))
    assert code == 1 and "scratch folder" in err and not tex_marker.exists()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    code, err = _pdf_error(capsys, str(tmp_path / "q.pdf"))
    assert code == 1 and "No space left on device" in err and not tex_marker.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "fakebin"]


def test_a_tex_engine_that_cannot_start_is_one_line(tmp_path, monkeypatch, capsys):
    # Before: a FileNotFoundError traceback from subprocess (a broken #! line).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pdflatex").write_text("#!/nonexistent/interpreter\n")
    (bin_dir / "pdflatex").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    code, err = _pdf_error(capsys, str(tmp_path / "q.pdf"))
    assert code == 1 and "cannot run pdflatex" in err


@pytest.mark.parametrize("redirect", ["<&-", "0> stdin.txt"])
def test_check_with_a_closed_or_write_only_standard_input_is_one_line(tmp_path,
                                                                             redirect):
    # Before: AttributeError ('NoneType' has no 'buffer') or OSError (EBADF) tracebacks.
    out = shell(f"{PY} -m derive check 2.3 - {redirect}", cwd=tmp_path)
    assert out.returncode == 2 and "standard input" in one_line(out.stderr), out.stderr


_SLOW_SYMPY = """
import runpy, sys, time

class Slow:
    def find_spec(self, name, path=None, target=None):
        if name == "sympy":
            sys.stderr.write("importing sympy\\n"); sys.stderr.flush(); time.sleep(60)
sys.meta_path.insert(0, Slow())
sys.argv = ["derive", "list"]
runpy.run_module("derive", run_name="__main__", alter_sys=True)
"""


@SIGINT_IGNORED
def test_ctrl_c_while_sympy_loads_exits_130_quietly():
    # Before: `import derive` loaded SymPy (most of a second) before main's handlers, so
    # Ctrl-C in that time printed a KeyboardInterrupt traceback.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([PY, "-c", _SLOW_SYMPY], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr.readline() == "importing sympy\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err == "", err


@pytest.mark.parametrize("redirect", ["> /dev/full", ">&-"])
def test_check_never_says_incorrect_when_its_report_cannot_be_written(tmp_path,
                                                                             redirect):
    # Before: a correct answer with a full or closed stdout exited 1, check's "incorrect".
    (tmp_path / "ok.tex").write_text(r"$\mu^2/2 + \sigma^2/2 - \log\sigma - 1/2$" + "\n")
    out = shell(f"{PY} -m derive check 2.3 ok.tex {redirect}", cwd=tmp_path)
    assert out.returncode == 2 and "standard output" in one_line(out.stderr), out.stderr
    assert shell(f"{PY} -m derive check 2.3 ok.tex", cwd=tmp_path).returncode == 0
