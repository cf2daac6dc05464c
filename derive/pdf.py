r"""Compile LaTeX to PDF with the TeX engine on the PATH, in a scratch folder.

Example:
    >>> tex_engine() in (None, "latexmk", "pdflatex")
    True
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PdfError", "tex_engine", "compile_pdf", "INSTALL_HINT"]

#: What to install where no TeX engine is found.
INSTALL_HINT = ("no TeX engine found: install pdflatex, e.g. on Debian `apt-get install "
                "texlive-latex-base texlive-latex-recommended texlive-pictures`")


class PdfError(RuntimeError):
    """LaTeX could not be compiled; the message says why (and what to install)."""


def tex_engine() -> str | None:
    """``"latexmk"`` or ``"pdflatex"``, whichever is on the PATH (latexmk first), or None."""
    for name in ("latexmk", "pdflatex"):
        if shutil.which(name):
            return name
    return None


def compile_pdf(tex: str, output: Path, timeout: float = 120.0) -> Path:
    """Compile ``tex`` and write the PDF atomically to ``output``.

    Raises :class:`PdfError` with the first TeX error line, or with what to install.
    """
    engine = tex_engine()
    if engine is None:
        raise PdfError(INSTALL_HINT)
    with tempfile.TemporaryDirectory(prefix="derive-tex-") as tmp:
        source = Path(tmp) / "document.tex"
        source.write_text(tex, encoding="utf-8")
        if engine == "latexmk":
            cmd = ["latexmk", "-pdf", "-halt-on-error", "-interaction=nonstopmode", source.name]
        else:
            cmd = ["pdflatex", "-halt-on-error", "-interaction=nonstopmode", source.name]
        try:
            run = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PdfError(f"{engine} took longer than {timeout:.0f} s") from None
        pdf = Path(tmp) / "document.pdf"
        if run.returncode != 0 or not pdf.exists():
            errors = [line for line in run.stdout.splitlines() if line.startswith("!")]
            first = errors[0] if errors else f"exit code {run.returncode}"
            raise PdfError(f"{engine} failed: {first}")
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
        os.close(fd)
        os.chmod(partial, 0o644)
        try:
            shutil.copyfile(pdf, partial)
            os.replace(partial, output)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
    return output
