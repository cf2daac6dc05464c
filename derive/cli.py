r"""The ``derive`` command line: list, show, typeset and generate derivations.

Run ``derive --help`` (or ``python -m derive --help``) for the subcommands, and
``derive SUBCOMMAND --help`` for each one's options.

Example:
    >>> main(["show", "1.1"])  # doctest: +ELLIPSIS
    1.1  Inverting the question's affine coupling block  [coupling]
    ...
    0
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .questions import QUESTIONS, UnknownQuestionError, build

__all__ = ["main", "parser"]

_DESCRIPTION = """\
Derive, check, typeset and generate code for two coursework questions: a reversible
affine coupling block (question 1) and the variational free energy of a VAE (question 2).
Every derivation is an ordered chain of equalities, each checked by SymPy when it is built.
"""

_EPILOG = """\
examples:
  derive list                      the questions and their variants
  derive show 1.2                  the Jacobian derivation, step by step
  derive show 1.3 --variant coupling_additive
  derive latex -o solutions.tex    the whole solutions document
  derive latex --pdf -o solutions.pdf
  derive latex 1.3 -o q13.tex      a LaTeX fragment for \\input
  derive generate                  rewrite everything under generated/
  derive generate --check          fail (exit 1) when generated/ is stale
  derive check 2.3 answer.tex      mark a student's LaTeX answer (see derive check --help)
"""


class _Failure(Exception):
    """An error the CLI reports in one line, with its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``derive``."""
    p = argparse.ArgumentParser(
        prog="derive", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    sub.add_parser("list", help="list the questions and their variants",
                   description="List every question id with its title and variants.")

    qid_help = f"question id, one of: {', '.join(QUESTIONS)}"
    variant_help = "a variant (block or parameterization); default: the question's own"
    show = sub.add_parser("show", help="print a derivation's checked steps",
                          description="Print a derivation in the terminal: the question, each "
                                      "step with its reason and how it was checked, the results.")
    show.add_argument("qid", help=qid_help)
    show.add_argument("--variant", help=variant_help)

    latex = sub.add_parser("latex", help="typeset the solutions, or one derivation, as LaTeX",
                           description="Without a question id, write the whole solutions "
                                       "document. With one, write that derivation as a fragment "
                                       "to \\input, or with --standalone as a document that "
                                       "compiles. With --pdf, compile it with pdflatex.")
    latex.add_argument("qid", nargs="?", help=qid_help + " (default: the whole document)")
    latex.add_argument("--variant", help=variant_help)
    latex.add_argument("-o", "--output", type=Path, help="write to FILE instead of stdout")
    latex.add_argument("--standalone", action="store_true",
                       help="wrap the fragment in a complete document")
    latex.add_argument("--odot", action="store_true",
                       help=r"write the element-wise product as \odot instead of \circ")
    latex.add_argument("--pdf", action="store_true",
                       help="compile with pdflatex (or latexmk) and write the PDF to --output")

    gen = sub.add_parser("generate", help="regenerate every file under generated/",
                         description="Derive every question, check every step, and rewrite the "
                                     "generated kernels and documents under generated/. Files "
                                     "are written atomically and only when they change.")
    gen.add_argument("--check", action="store_true",
                     help="write nothing; exit 1 naming the stale files (with a diff) when "
                          "generated/ differs from what the engine produces")
    gen.add_argument("--root", type=Path, default=None,
                     help="the repository root holding generated/ (default: this checkout)")

    from .check.command import add_parser as add_check_parser

    add_check_parser(sub)
    return p


def _cmd_list() -> str:
    lines = []
    for q in QUESTIONS.values():
        lines.append(f"{q.qid:5} {q.title}")
        if any(q.variants):
            lines.append(f"      variants: {', '.join(q.variants)} (default {q.default})")
    return "\n".join(lines) + "\n"


def _derivation(args: argparse.Namespace):
    try:
        return build(args.qid, args.variant)
    except UnknownQuestionError as err:
        raise _Failure(str(err), code=2) from None


def _write_output(path: Path | None, text: str) -> str:
    if path is None:
        return text
    from .files import _write_atomic

    try:
        _write_atomic(path, text)
    except OSError as err:
        raise _Failure(f"--output: cannot write {path}: {err.strerror or err}") from None
    return f"wrote {path}\n"


def _command_line(args: argparse.Namespace) -> str:
    """The ``derive latex`` command that reproduces this output, for the file's header."""
    parts = ["python -m derive latex"]
    if args.odot:
        parts.append("--odot")
    if args.output is not None:
        parts += ["-o", str(args.output)]
    return " ".join(parts)


def _cmd_latex(args: argparse.Namespace) -> str:
    from codegen.latex import LatexOptions, render_derivation

    from .document import solutions_document

    options = LatexOptions(hadamard=r"\odot" if args.odot else r"\circ")
    if args.qid is None:
        if args.variant or args.standalone:
            flag = "--variant" if args.variant else "--standalone"
            raise _Failure(f"{flag} needs a question id; without one the whole document is "
                           "written, and it is always standalone", code=2)
        text = solutions_document(options, command=_command_line(args))
    else:
        text = render_derivation(_derivation(args), standalone=args.standalone or args.pdf,
                                 options=options)
    if not args.pdf:
        return _write_output(args.output, text)
    if args.output is None:
        raise _Failure("--pdf needs -o/--output FILE.pdf", code=2)
    from .pdf import PdfError, compile_pdf

    try:
        compile_pdf(text, args.output)
    except PdfError as err:
        raise _Failure(str(err)) from None
    return f"wrote {args.output}\n"


def _cmd_generate(args: argparse.Namespace) -> str:
    from .files import default_root, generated_files, stale_files, write_files
    from .questions import all_derivations

    root = (args.root or default_root()).resolve()
    if not root.is_dir():
        raise _Failure(f"--root: {root} is not a directory")
    start = time.perf_counter()
    derivations = all_derivations()
    files = generated_files()
    n_steps = sum(len(d.steps) for d in derivations)
    elapsed = time.perf_counter() - start
    summary = (f"derived {len(derivations)} derivations, {n_steps} steps, every step checked; "
               f"rendered {len(files)} files in {elapsed:.1f} s")
    if args.check:
        stale = stale_files(root, files)
        if stale:
            diffs = "".join(stale.values())
            names = ", ".join(stale)
            raise _Failure(f"{diffs}\ngenerated/ is stale: {names}\n"
                           f"run `python -m derive generate` and commit the result")
        return f"{summary}\ngenerated/ is up to date ({len(files)} files)\n"
    try:
        written = write_files(root, files)
    except OSError as err:
        raise _Failure(f"cannot write under {root}: {err}") from None
    changed = ", ".join(written) if written else "none"
    return f"{summary}\nchanged: {changed}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (0 success, 1 failure, 2 usage)."""
    args = parser().parse_args(argv)
    try:
        if args.command == "list":
            out = _cmd_list()
        elif args.command == "show":
            out = str(_derivation(args))
        elif args.command == "latex":
            out = _cmd_latex(args)
        elif args.command == "check":
            from .check.command import run as run_check

            return run_check(args)
        else:
            out = _cmd_generate(args)
    except _Failure as err:
        print(f"derive: error: {err}", file=sys.stderr)
        return err.code
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
