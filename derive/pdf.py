r"""Compile LaTeX to PDF with the TeX engine on the PATH, in a scratch folder.

The scratch folder and the engine's processes are removed on any error or interrupt.

Example:
    >>> tex_engine() in (None, "latexmk", "pdflatex")
    True
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from .output import write_output

__all__ = ["PdfError", "tex_engine", "pdf_bytes", "compile_pdf", "INSTALL_HINT"]

_INSTALL = ("install pdflatex, e.g. on Debian `apt-get install texlive-latex-base "
            "texlive-latex-recommended texlive-pictures`")
#: What to install where no TeX engine is found.
INSTALL_HINT = f"no TeX engine found: {_INSTALL}"


class PdfError(RuntimeError):
    """LaTeX could not be compiled; the message says why (and what to install)."""


def tex_engine() -> str | None:
    """``"latexmk"`` or ``"pdflatex"``, whichever is on the PATH (latexmk first), or None."""
    for name in ("latexmk", "pdflatex"):
        if shutil.which(name):
            return name
    return None


def _run(cmd: list[str], cwd: str, timeout: float) -> subprocess.CompletedProcess:
    """Run the TeX engine in its own process group, and kill the whole group on any error
    or interrupt (latexmk starts pdflatex: both must be gone before the folder is removed).
    """
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                start_new_session=True)
    except OSError as err:  # found on the PATH, but it does not start (a broken #! line)
        raise PdfError(f"cannot run {cmd[0]}: {err.strerror}; {_INSTALL}") from None
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


def pdf_bytes(tex: str, timeout: float = 120.0) -> bytes:
    """Compile ``tex`` in a scratch folder (removed afterwards, also on a signal).

    Raises :class:`PdfError` with the first TeX error line, or with what to install.
    """
    engine = tex_engine()
    if engine is None:
        raise PdfError(INSTALL_HINT)
    if engine == "latexmk" and shutil.which("pdflatex") is None:
        raise PdfError(f"latexmk is installed but pdflatex was not found; {_INSTALL}")
    try:
        scratch = tempfile.TemporaryDirectory(prefix="derive-tex-", ignore_cleanup_errors=True)
    except OSError as err:
        raise PdfError(f"cannot create a scratch folder in {tempfile.gettempdir()}: "
                       f"{err.strerror} (point TMPDIR at another folder)") from None
    with scratch as tmp:
        source = Path(tmp) / "document.tex"
        try:
            source.write_text(tex, encoding="utf-8")
        except OSError as err:
            raise PdfError(f"cannot write the LaTeX source in the scratch folder {tmp}: "
                           f"{err.strerror} (point TMPDIR at another folder)") from None
        if engine == "latexmk":
            cmd = ["latexmk", "-pdf", "-halt-on-error", "-interaction=nonstopmode", source.name]
        else:
            cmd = ["pdflatex", "-halt-on-error", "-interaction=nonstopmode", source.name]
        try:
            run = _run(cmd, tmp, timeout)
        except subprocess.TimeoutExpired:
            raise PdfError(f"{engine} took longer than {timeout:.0f} s") from None
        pdf = Path(tmp) / "document.pdf"
        if run.returncode == 0 and pdf.is_file():
            try:
                return pdf.read_bytes()
            except OSError as err:
                raise PdfError(f"cannot read the PDF {engine} wrote: {err.strerror}") from None
        errors = [line for line in run.stdout.splitlines() if line.startswith("!")]
        if errors:
            raise PdfError(f"{engine} failed: {errors[0]}")
        if engine == "latexmk" and run.returncode == 12:  # latexmk: "could not run pdflatex"
            raise PdfError(f"latexmk could not run pdflatex (exit code 12): is pdflatex "
                           f"installed and on the PATH? {_INSTALL}")
        if run.returncode != 0:
            raise PdfError(f"{engine} failed with exit code {run.returncode}")
        empty = "No pages of output." in run.stdout
        raise PdfError(f"{engine} reported success but produced no PDF"
                       + (" (the document has no pages)" if empty else ""))


def compile_pdf(tex: str, output: str | os.PathLike[str], timeout: float = 120.0) -> Path:
    """Compile ``tex`` and write the PDF to ``output`` (see :func:`~derive.output.write_output`).

    Raises :class:`PdfError` with the first TeX error line, or with what to install.
    """
    target = write_output(output, pdf_bytes(tex, timeout))
    return target.real if target.real is not None else Path(os.fspath(output))
