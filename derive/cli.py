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
import contextlib
import io
import os
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .output import Target

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
  derive latex -o solutions.tex    the solutions sheet (the coursework's answers)
  derive latex --sheet problems -o problems.tex   problems|solutions|notes|marking
  derive latex --pdf -o solutions.pdf
  derive latex 1.3 -o q13.tex      a LaTeX fragment for \\input
  derive generate                  rewrite everything under generated/
  derive generate --check          fail (exit 1) when generated/ is stale
  derive check 2.3 answer.tex      mark a student's LaTeX answer (see derive check --help)
  derive arrange 'exp(x) - 1' --over 'x in [-1, 1]' -o f.py   arrange by measuring
  derive test --material mymat     test a material's kernels against its own equations

exit codes: 0 success, 1 failure, 2 bad arguments (unknown id, unusable path),
130 interrupted (Ctrl-C), 141 standard output closed by its reader, 143 terminated.
derive check has its own: 0 correct, 1 incorrect, 2 unreadable or undecided (or the
report could not be written).
"""


class _Failure(Exception):
    """An error the CLI reports in one line, with its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Terminated(BaseException):
    """SIGTERM or SIGHUP, raised so that temporary files and folders are cleaned up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``derive``."""
    p = argparse.ArgumentParser(
        prog="derive", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"derive {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    listing = sub.add_parser("list", help="list the questions and their variants",
                             description="List every question id with its title and variants.")
    _add_material(listing)

    from .loader import current  # here, not at import: SymPy loads inside main's handlers

    qid_help = f"question id, one of: {', '.join(current().questions)}"
    variant_help = "a variant (block or parameterization); default: the question's own"
    show = sub.add_parser("show", help="print a derivation's checked steps",
                          description="Print a derivation in the terminal: the question, each "
                                      "step with its reason and how it was checked, the results.")
    show.add_argument("qid", help=qid_help)
    show.add_argument("--variant", help=variant_help)
    show.add_argument("--no-cache", action="store_true",
                      help="derive it, neither reading nor writing the derivation cache")
    _add_material(show)

    latex = sub.add_parser("latex", help="typeset a sheet, or one derivation, as LaTeX",
                           description="Without a question id, write a sheet: --sheet "
                                       "problems (the questions, no answers), solutions (the "
                                       "coursework's answers; the default), notes (everything "
                                       "else) or marking (the points of each step and result). "
                                       "With a question id, write that derivation as a fragment "
                                       "to \\input, or with --standalone as a document that "
                                       "compiles. With --pdf, compile it with pdflatex.")
    latex.add_argument("qid", nargs="?", help=qid_help + " (default: a whole sheet)")
    latex.add_argument("--sheet", choices=("problems", "solutions", "notes", "marking"),
                       default=None,
                       help="which sheet to write without a question id (default: solutions)")
    latex.add_argument("--variant", help=variant_help)
    latex.add_argument("-o", "--output", metavar="FILE",
                       help="write to FILE instead of stdout (- for stdout; /dev/stderr and "
                            "/dev/fd/N write to that stream, appending where it goes to a "
                            "file); a symlink is written through, an existing file keeps its "
                            "mode, a folder, FIFO, device or read-only file is refused")
    latex.add_argument("--standalone", action="store_true",
                       help="wrap the fragment in a complete document")
    latex.add_argument("--odot", action="store_true",
                       help=r"write the element-wise product as \odot instead of \circ")
    latex.add_argument("--pdf", action="store_true",
                       help="compile with pdflatex (or latexmk) and write the PDF to --output")
    _add_material(latex)

    gen = sub.add_parser("generate", help="regenerate every file under generated/",
                         description="Derive every question, check every step, and rewrite the "
                                     "generated kernels and documents under generated/. Files "
                                     "are written atomically and only when they change. A file "
                                     "is deleted only if generated/MANIFEST lists it, the "
                                     "engine no longer produces it and it is unchanged; other "
                                     "files are left alone (with a warning when they look "
                                     "generated). Concurrent runs take turns (a lock on "
                                     "generated/).")
    gen.add_argument("--check", action="store_true",
                     help="write nothing; exit 1 naming the stale files (with a diff) when "
                          "generated/ differs from what the engine produces")
    gen.add_argument("--root", default=None, metavar="PATH",
                     help="the repository root holding generated/ (default: this checkout)")
    gen.add_argument("--package", default=None, metavar="NAME",
                     help="the output package: the folder under --root that is written "
                          "(a Python identifier; default: generated)")
    gen.add_argument("--no-cache", action="store_true",
                     help="derive everything, neither reading nor writing the derivation "
                          "cache ($DERIVE_CACHE_DIR, else $XDG_CACHE_HOME/derive or "
                          "~/.cache/derive; DERIVE_NO_CACHE=1 also turns it off)")
    gen.add_argument("--jobs", "-j", type=_jobs, default=None, metavar="N",
                     help="derive what the cache does not hold in N processes, a block or "
                          "parameterization each (default: the CPUs this process may use, "
                          "at most 4; 1 derives everything in this process); the files are "
                          "the same bytes for every N")
    _add_material(gen)
    gen.add_argument("--only", action="append", default=None, metavar="MODULE",
                     help="write only what the material of MODULE (one of the --material "
                          "options) brings: its own questions, and the questions of the "
                          "other materials in the variants that are its blocks or "
                          "parameterizations (an outside parameterization's KL kernels "
                          "without the rest of the coursework); repeat it for several")

    _add_test_parser(sub)

    from .check.command import add_parser as add_check_parser

    _add_material(add_check_parser(sub))
    _add_arrange_parser(sub)
    return p


def _add_material(p: argparse.ArgumentParser) -> None:
    p.add_argument("--material", action="append", default=None, metavar="MODULE",
                   help="use the material of MODULE (an importable module exposing MATERIAL, "
                        "a derive.api.Material, or the name of an installed entry point of "
                        "the group derive.material) instead of the shipped coursework; "
                        "repeat it to combine several")


def _use_material(args: argparse.Namespace) -> None:
    """Load ``--material`` as the engine's material (without it, the default: an earlier
    ``main`` in this process may have chosen another); a bad one is one line."""
    from .loader import DEFAULT, MaterialError, is_default, use

    names = getattr(args, "material", None)
    only = getattr(args, "only", None) or ()
    if not names and not only and is_default():
        return
    for name in only:
        if name not in (names or ()):
            raise _Failure(_shown(f"--only {name}: not a --material of this run (expected "
                                  f"one of: {', '.join(names or ()) or 'none given'})"), code=2)
    try:
        # derive test of a material that brings blocks alone tests the engine's kernels
        use(names or DEFAULT, only, empty=getattr(args, "command", None) == "test")
    except MaterialError as err:
        raise _Failure(_shown(str(err)), code=2) from None


# --- derive test: the tests that come free with material (issue 21) ----------------------

_TEST_DESCRIPTION = """\
Generate the material's kernels into a temporary package (as generate --material does)
and test them against references taken from the material's own equations in mpmath:
for every block, forward, inverse and log-det on grids over x1 (0 and 1e-300 to 1e300,
both signs) and G (-800 to 800), finite wherever the truth is, float32 kept, batches
broadcast, the dense Jacobian against central differences; for every parameterization
with a generated module, kl, kl_grad and the estimators (and the learned prior's
module); for any other kernel, finite on random inputs, float32 kept, batches, a
declared gradient against central differences. Errors are in ulp (bounds: docs/cli.md).
A parameterization gets its modules from the questions that range over
parameterizations (the coursework's 2.3 to 2.4p): load such a material beside it, and
--only to check what your material brings alone. Progress goes to standard error, a
summary table to standard output.
"""

_TEST_EPILOG = """\
examples:
  derive test --material mymat               every block, parameterization and kernel of mymat
  derive test --material mymat --points 30   a denser grid over x1 (and the scale)
  derive test --material derive.coursework --material mykl --only mykl
                                             mykl's parameterization, through the
                                             coursework's KL questions
  derive test                                the shipped coursework

exit codes: 0 every check passed, 1 a check failed (each failure is one line: the block
or module, the kernel, the point, the error), 2 bad arguments or a refused material.
"""


def _add_test_parser(sub: argparse._SubParsersAction) -> None:
    test = sub.add_parser(
        "test", help="test a material's generated kernels against its own equations",
        description=_TEST_DESCRIPTION,
        epilog=_TEST_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    test.add_argument("--points", type=_points, default=15, metavar="N",
                      help="grid points over x1 (and 8N over a parameterization's scale); "
                           "default 15, from 3 to 400")
    test.add_argument("--jobs", "-j", type=_jobs, default=None, metavar="N",
                      help="derive what the cache does not hold in N processes (as generate; "
                           "default: the CPUs this process may use, at most 4)")
    _add_material(test)
    test.add_argument("--only", action="append", default=None, metavar="MODULE",
                      help="check only what the material of MODULE (one of the --material "
                           "options) brings: its blocks, its parameterizations and its "
                           "questions' kernels; repeat it for several")


def _points(text: str) -> int:
    """``--points``: a whole number from 3 to 400."""
    if not text.isdigit() or not 3 <= int(text) <= 400:
        raise argparse.ArgumentTypeError(f"expected a whole number from 3 to 400, got {text!r}")
    return int(text)


def _cmd_test(args: argparse.Namespace) -> tuple[str, int]:
    from .selftest import run

    # the headers generate writes without --root: the derivation cache's parts are shared
    # with derive generate (the coursework's) and with the previous derive test
    command = _generate_command(argparse.Namespace(material=args.material, root=None,
                                                   package=None, only=args.only))
    report = run(points=args.points, jobs=args.jobs or _default_jobs(),
                 progress=lambda line: _to_stderr(f"derive test: {_shown(line)}"),
                 command=command, only=args.only or ())
    out = report.table() + report.failures()
    failed = sum(not r.ok for r in report.rows)
    skipped = sum(r.skipped for r in report.rows)
    n = len(report.rows) - skipped
    out += (f"{n - failed} of {n} checks passed in {report.seconds:.1f} s"
            + (f", {skipped} skipped" if skipped else "")
            + ("" if report.ok else f"; {failed} failed") + "\n")
    return out, 0 if report.ok else 1


# --- derive arrange: an accuracy-driven arrangement of a user's expression (issue 23) ----


def _add_arrange_parser(sub: argparse._SubParsersAction) -> None:
    arr = sub.add_parser(
        "arrange", help="arrange an expression for floating point, by measuring its error",
        description="Sample the box given by --over as floats are spread, measure EXPR's "
                    "error in ulp against mpmath, and keep the checked rewrites that lower the "
                    "maximum error; print the errors before and after and the steps, and write "
                    "a module with a kernel f(VARS) (any array-API library) with -o.",
        epilog="example: derive arrange 'sqrt(x + 1) - sqrt(x)' --over 'x in [0, 1e300]' "
               "-o f.py")
    arr.add_argument("expr", metavar="EXPR", help="SymPy syntax: numbers, the variables, "
                     "+ - * / **, exp log sqrt cbrt sin cos tan atan sinh cosh tanh asinh "
                     "expm1 log1p softplus sigmoid abs, pi, E")
    arr.add_argument("--over", action="append", required=True, metavar="'x in [a, b]'",
                     help="a variable and its interval (repeat for each; their order is "
                          "f's argument order)")
    arr.add_argument("-o", "--output", metavar="FILE.py", help="write the kernel module here")
    arr.add_argument("--samples", type=int, default=1200,
                     help="points sampled (default 1200; the worst are refined within 64 ulp)")


def _cmd_arrange(args: argparse.Namespace) -> str:
    from .search import arrange, report

    target = _output_target(args.output) if args.output else None
    if not 10 <= args.samples <= 100_000:
        raise _Failure(f"--samples: expected 10 to 100000, got {args.samples}", code=2)
    try:
        found = arrange(args.expr, args.over, samples=args.samples)
    except ValueError as err:
        raise _Failure(_shown(str(err)), code=2) from None
    text = report(found) + "\n"
    if target is not None:
        from codegen.backends import render_module

        command = " ".join(_shell_quote(a) for a in ["python", "-m", "derive", "arrange",
                                                    args.expr, *sum((["--over", o] for o in
                                                                     args.over), []),
                                                    "-o", args.output])
        source = render_module(found.module(), command)
        space: dict[str, object] = {"__name__": "arranged"}
        exec(compile(source, args.output, "exec"), space)  # noqa: S102 - our own output
        text += f"the written kernel f: {found.measure(space['f'])}\n"
        text += _write_output(target, source.encode())
    return text


def _cmd_list() -> str:
    from .loader import current

    lines = []
    for q in current().questions.values():
        lines.append(f"{q.qid:5} {q.title}")
        if any(q.variants):
            lines.append(f"      variants: {', '.join(q.variants)} (default {q.default})")
    return "\n".join(lines) + "\n"


def _derivation(args: argparse.Namespace):
    from .loader import UnknownQuestionError, build

    try:
        return build(args.qid, args.variant)
    except UnknownQuestionError as err:
        raise _Failure(str(err), code=2) from None


def _shown(text: str | os.PathLike[str]) -> str:
    """A path or name as it can be printed: control characters escaped, and characters
    that standard output's encoding lacks written as backslash escapes."""
    text = "".join(c if c.isprintable() or c == " " else
                   f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else  # a raw byte
                   ascii(c)[1:-1] for c in str(text))
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding, "replace")


_SHELL_SAFE = re.compile(r"[\w@%+=:,./-]+", re.ASCII)
_C_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _shell_quote(arg: str) -> str:
    r"""``arg`` quoted for a POSIX shell, on one line (``$'...'`` where it must be).

    Example:
        >>> print(_shell_quote("a b"), _shell_quote("nl\n\\x"))
        'a b' $'nl\n\\x'
    """
    if _SHELL_SAFE.fullmatch(arg):
        return arg
    if arg.isprintable():
        return shlex.quote(arg)
    out = []
    for c in arg:
        if c in _C_ESCAPES:
            out.append(_C_ESCAPES[c])
        elif 0xDC80 <= ord(c) <= 0xDCFF:  # an undecodable byte of the file name
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif not c.isprintable():
            out.append("".join(f"\\x{b:02x}" for b in c.encode("utf-8", "surrogatepass")))
        else:
            out.append(c)
    return "$'" + "".join(out) + "'"


def _output_target(path: str) -> Target:
    """``-o PATH`` checked before anything is computed (exit 2 when it cannot be written)."""
    from .output import OutputError, output_target

    try:
        return output_target(path)
    except OutputError as err:
        raise _Failure(f"--output: {_shown(str(err))}", code=2) from None


def _write_output(target: Target, data: bytes) -> str:
    from .output import write_output

    try:
        write_output(target, data)
    except BrokenPipeError:
        raise
    except OSError as err:
        raise _Failure(f"--output: cannot write {_shown(target.path)}: "
                       f"{_shown(err.strerror or str(err))}") from None
    return "" if target.is_stream else f"wrote {_shown(target.path)}\n"


def _command_line(args: argparse.Namespace) -> str:
    """The ``derive latex`` command that reproduces this output, for the file's header."""
    parts = ["python", "-m", "derive", "latex"]
    for name in args.material or ():
        parts += ["--material", name]
    if args.qid is not None:
        parts.append(args.qid)
    if args.sheet:
        parts += ["--sheet", args.sheet]
    if args.variant:
        parts += ["--variant", args.variant]
    if args.standalone:
        parts.append("--standalone")
    if args.odot:
        parts.append("--odot")
    if args.output is not None:
        parts += ["-o", args.output]
    return " ".join(_shell_quote(p) for p in parts)


def _cmd_show(args: argparse.Namespace) -> str:
    """The derivation as text: from the derivation cache when it holds it."""
    from .cache import open_store
    from .loader import UnknownQuestionError, resolve

    # the cache's keys hold the engine's sources and those of the material in use
    store = open_store(no_cache=args.no_cache)
    if store is None:
        from .text import render_text

        return render_text(_derivation(args))
    from .files import rendered_part

    try:
        question, variant = resolve(args.qid, args.variant)
    except UnknownQuestionError as err:
        raise _Failure(str(err), code=2) from None
    return rendered_part(store, question, variant)["text"]


def _cmd_latex(args: argparse.Namespace) -> str:
    from codegen.latex import LatexOptions, render_derivation, render_fragment

    from .document import sheet_document

    if args.qid is not None and args.sheet:
        raise _Failure("--sheet writes a whole sheet; give it without a question id", code=2)
    if args.qid is None and (args.variant or args.standalone):
        flag = "--variant" if args.variant else "--standalone"
        raise _Failure(f"{flag} needs a question id; without one a whole sheet is "
                       "written, and it is always standalone", code=2)
    if args.pdf and args.output is None:
        raise _Failure("--pdf needs -o/--output FILE.pdf", code=2)
    target = _output_target(args.output) if args.output is not None else None
    options = LatexOptions(hadamard=r"\odot" if args.odot else r"\circ")
    command = _command_line(args)
    if args.qid is None:
        text = sheet_document(args.sheet or "solutions", options, command=command)
    elif args.standalone or args.pdf:
        text = render_derivation(_derivation(args), standalone=True, options=options,
                                 command=command)
    else:
        text = render_fragment(_derivation(args), options=options, command=command)
    if not args.pdf:
        if target is None or target.is_stdout:
            return text
        return _write_output(target, text.encode("utf-8"))
    from .pdf import PdfError, pdf_bytes

    try:
        pdf = pdf_bytes(text)
    except PdfError as err:
        raise _Failure(_shown(str(err))) from None
    return _write_output(target, pdf)


def _generate_root(args: argparse.Namespace) -> Path:
    from .files import default_root, is_checkout

    if args.root is None:
        root = default_root()
        if not is_checkout(root):
            raise _Failure(f"{_shown(root)} is not a source checkout (derive is installed "
                           "there, not editable), and generate never writes into an "
                           "installation: pass --root PATH (the folder holding generated/), "
                           "or use an editable install (pip install -e .)", code=2)
        return root
    if args.root == "":
        raise _Failure("--root: empty path; give the folder that holds generated/", code=2)
    try:
        if not os.path.isdir(args.root):
            os.stat(args.root)
            raise NotADirectoryError(20, "Not a directory")
    except OSError as err:
        raise _Failure(f"--root: {_shown(args.root)}: {err.strerror}", code=2) from None
    try:
        return Path(args.root).resolve()
    except OSError as err:  # a relative path, and the working folder was deleted
        raise _Failure(f"--root: {_shown(args.root)}: cannot resolve it: {err.strerror} "
                       "(was the current folder deleted?)", code=2) from None


def _to_stderr(line: str) -> None:
    """Print ``line`` on standard error; a closed, full or broken one is ignored (the exit
    code still says what happened)."""
    if sys.stderr is None:
        return
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        _quiet(sys.stderr)


def _warn(message: str) -> None:
    _to_stderr(f"derive: warning: {_shown(message)}")  # it may name a user's file


def _jobs(text: str) -> int:
    """``--jobs``: a whole number from 1 to 64."""
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 64, got {text!r}")
    return int(text)


def _default_jobs() -> int:
    """The CPUs this process may use, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 4))


def _cmd_generate(args: argparse.Namespace) -> str:
    from .cache import open_store
    from .files import generate, stale_files, write_files
    from .output import OutputError

    root = _generate_root(args)
    package = _package(args)
    command = _generate_command(args)
    start = time.perf_counter()
    # the cache's keys hold the engine's sources and those of the material in use
    store = open_store(no_cache=args.no_cache)
    files, n_derivations, n_steps = generate(store, command, package,
                                             jobs=args.jobs or _default_jobs())
    elapsed = time.perf_counter() - start
    if store is not None and store.misses:
        store.prune()
    if store is not None and not store.misses:
        summary = (f"read {n_derivations} derivations, {n_steps} steps (each checked when it "
                   f"was derived) and {len(files)} files from the derivation cache in "
                   f"{elapsed:.1f} s")
    else:
        cached = "" if store is None else (
            f" (derivation cache: {store.hits} hits, {store.misses} misses)")
        summary = (f"derived {n_derivations} derivations, {n_steps} steps, every step "
                   f"checked; rendered {len(files)} files in {elapsed:.1f} s{cached}")
    try:
        if args.check:
            stale = stale_files(root, files, warn=_warn, command=command, package=package)
        else:
            written = write_files(root, files, warn=_warn, command=command, package=package)
    except OutputError as err:
        raise _Failure(f"cannot write under {_shown(root)}: {_shown(str(err))}") from None
    except OSError as err:
        raise _Failure(f"cannot write under {_shown(root)}: "
                       f"{_shown(err.strerror or str(err))}") from None
    if args.check:
        if stale:
            diffs = "".join(stale.values())
            names = ", ".join(stale)
            raise _Failure(f"{diffs}\n{package}/ is stale: {names}\n"
                           f"run `{command}` and commit the result")
        return f"{summary}\n{package}/ is up to date ({len(files)} files)\n"
    changed = ", ".join(written) if written else "none"
    return f"{summary}\nchanged: {changed}\n"


def _package(args: argparse.Namespace) -> str:
    """``--package NAME`` checked: a Python identifier (default ``generated``)."""
    from .files import PACKAGE

    if args.package is None:
        return PACKAGE
    if not args.package.isidentifier():
        raise _Failure(f"--package: expected a Python identifier, got {_shown(args.package)!r}",
                       code=2)
    return args.package


def _generate_command(args: argparse.Namespace) -> str:
    """The command that regenerates these files, for their headers: the default command
    for the shipped coursework (its files are the same wherever they are written), and
    with ``--material``, ``--root`` and ``--package`` when another material is used."""
    from .files import COMMAND

    if not args.material:
        return COMMAND
    parts = ["python", "-m", "derive", "generate"]
    for name in args.material:
        parts += ["--material", name]
    for name in getattr(args, "only", None) or ():
        parts += ["--only", name]
    if args.root is not None:
        parts += ["--root", args.root]
    if args.package is not None:
        parts += ["--package", args.package]
    return " ".join(_shell_quote(p) for p in parts)


def _cmd_check(args: argparse.Namespace) -> tuple[str, int]:
    """``derive check``: mark; write ``--csv`` and ``--gradescope``'s ``-o`` safely."""
    from .check.command import outputs, validate

    stdin_used = "-" in (args.paths or [])
    if stdin_used and sys.stdin is None:
        raise _Failure("FILE: cannot read standard input: it is closed", code=2)
    try:
        validate(args)
    except ValueError as err:
        raise _Failure(_shown(str(err)), code=2) from None
    targets = {}
    for flag, path in (("--csv", args.csv), ("--output", args.output)):
        if path is not None:
            targets[path] = _output_target(path) if flag == "--output" else _csv_target(path)
    try:
        out, code, files = outputs(args, getattr(sys.stdin, "buffer", None))
    except ValueError as err:  # it may quote the file name: control characters escaped
        raise _Failure(_shown(str(err)), code=2) from None
    except OSError as err:  # standard input open for writing only
        if not stdin_used:
            raise
        raise _Failure(f"FILE: cannot read standard input: {err.strerror or err}",
                       code=2) from None
    notes = []
    for path, data in files.items():
        note = _write_output(targets[path], data)
        if note and args.json:  # standard output is one JSON document
            continue
        notes.append(note)
    return out + "".join(notes), code


def _csv_target(path: str) -> Target:
    from .output import OutputError, output_target

    try:
        return output_target(path)
    except OutputError as err:
        raise _Failure(f"--csv: {_shown(str(err))}", code=2) from None


def _run(args: argparse.Namespace) -> tuple[str, int]:
    """Dispatch to the subcommand; return what goes to standard output, and the exit code.
    An error raised in a material's own code (a question whose derivation raises) is one
    line naming the material's file and line, exit 2; one raised in the engine is not
    caught here."""
    _use_material(args)
    try:
        return _dispatch(args)
    except Exception as err:  # noqa: BLE001 - re-raised unless the material's code raised it
        where = _material_frame(err)
        if where is None or isinstance(err, _Failure) or (
                isinstance(err, ValueError) and _refusal(err) is not None):
            raise  # (a refusal the engine words, as main shows it)
        raise _Failure(_shown(f"--material {' --material '.join(args.material or ())}: "
                              f"{where}: {type(err).__name__}: {err}"), code=2) from None


def _material_frame(err: BaseException) -> str | None:
    """``file:line in function`` of the innermost frame of ``err``'s traceback that is a
    material's own code (under a loaded material's folder, installed or not; or in neither
    the engine nor an installed package), or None."""
    from .loader import material_paths

    engine = Path(__file__).resolve().parent.parent
    installed = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix)}
    materials = material_paths()
    found = None
    tb = err.__traceback__
    while tb is not None:
        path = Path(tb.tb_frame.f_code.co_filename)
        try:
            path = path.resolve()
        except OSError:
            path = None
        if path is not None and path.is_file() and (
                any(path == m or path.is_relative_to(m) for m in materials)
                or (not any(path.is_relative_to(engine / d)
                            for d in ("derive", "codegen", "kernel_runtime"))
                    and not any(path.is_relative_to(p) for p in installed))):
            found = f"{path.name}:{tb.tb_lineno} in {tb.tb_frame.f_code.co_name}"
        tb = tb.tb_next
    return found


def _dispatch(args: argparse.Namespace) -> tuple[str, int]:
    if getattr(args, "no_cache", False):
        from . import verdicts

        verdicts.use(None)  # every step checked anew, none remembered
    if args.command == "list":
        return _cmd_list(), 0
    if args.command == "show":
        return _cmd_show(args), 0
    if args.command == "latex":
        return _cmd_latex(args), 0
    if args.command == "check":
        return _cmd_check(args)
    if args.command == "arrange":
        return _cmd_arrange(args), 0
    if args.command == "test":
        return _cmd_test(args)
    return _cmd_generate(args), 0


def _quiet(stream: object) -> None:
    """After a failed write, point ``stream`` at /dev/null so that the interpreter's final
    flush of what is still buffered cannot fail (no "Exception ignored" message)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def _quiet_stdout() -> None:
    _quiet(sys.stdout)


def _emit(text: str) -> int:
    """Write ``text`` to standard output; a reader that went away is not an error (141)."""
    stream = sys.stdout
    if stream is None:
        if not text:
            return 0
        raise _Failure("cannot write to standard output: it is closed")
    try:
        if text:  # an empty write still reaches the file: /dev/full fails it
            stream.write(text)
        stream.flush()
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except UnicodeEncodeError as err:
        bad = err.object[err.start:err.end]
        raise _Failure(f"cannot write to standard output: its encoding ({err.encoding}) "
                       f"cannot represent {ascii(bad)}; set PYTHONIOENCODING=utf-8") from None
    except OSError as err:
        _quiet_stdout()
        raise _Failure(f"cannot write to standard output: {err.strerror or err}") from None
    return 0


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into an exception for the duration, so that cleanup runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise _Terminated(signum)

    names = [s for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s)]
    old = {name: signal.signal(getattr(signal, name), terminate) for name in names}
    try:
        yield
    finally:
        for name, handler in old.items():
            signal.signal(getattr(signal, name), handler)


def _end_start_up() -> None:
    """Hand Ctrl-C back to Python (KeyboardInterrupt, handled by :func:`main`) where the
    package set its start-up handler (exit 130 quietly during the imports)."""
    from . import _interrupted_at_start

    if signal.getsignal(signal.SIGINT) is _interrupted_at_start:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; ``--help`` and ``--version`` print to standard output here, where a closed
    or broken one is handled (argparse would fall back to standard error)."""
    closed = sys.stdout is None
    if closed:
        sys.stdout = io.StringIO()
    try:
        # --help lists the questions of the material in use: load it before the parser
        given = list(sys.argv[1:] if argv is None else argv)
        if "-h" in given or "--help" in given:
            names = [given[k + 1] for k, a in enumerate(given[:-1]) if a == "--material"]
            names += [a.split("=", 1)[1] for a in given if a.startswith("--material=")]
            _use_material(argparse.Namespace(material=names or None))
        return parser().parse_args(argv)
    except SystemExit as exit_:
        if exit_.code not in (0, None):  # a usage error, said on standard error: exit 2
            raise
        if closed and sys.stdout.getvalue():
            raise _Failure("cannot write to standard output: it is closed") from None
        _emit("")
        raise
    finally:
        if closed:
            sys.stdout = None


def _refusal(err: ValueError) -> str | None:
    r"""The one line that says why the engine refuses its material (a block that is not
    invertible, a step that fails its check), or None for any other error.

    Example:
        >>> from derive.coupling import SpecificationError
        >>> _refusal(SpecificationError("demo: y1 = G*x1 is not\ninvertible"))
        'refused: demo: y1 = G*x1 is not invertible'
        >>> _refusal(ValueError("something else")) is None
        True
    """
    from .coupling import SpecificationError
    from .derivation import StepCheckError
    from .material import MaterialError

    if isinstance(err, MaterialError):
        return _shown(" ".join(str(err).split()))
    if not isinstance(err, (SpecificationError, StepCheckError)):
        return None
    kind = "refused" if isinstance(err, SpecificationError) else "a step fails its check"
    return f"{kind}: " + _shown(" ".join(str(err).split()))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (see ``derive --help``).

    Every subcommand runs inside the same handlers: a :class:`_Failure` is one line on
    standard error, and so is a refused block or a step that fails its check (exit 2);
    Ctrl-C exits 130 and SIGTERM 143, quietly, after cleaning up; a closed
    or full standard output is one line, a reader that went away (``| head``) is quiet.
    """
    try:
        _end_start_up()
        with _signals():
            args = _parse(argv)
            out, code = _run(args)
            try:
                return _emit(out) or code
            except _Failure as err:
                if args.command == "check":  # 1 would say "incorrect": the report is lost
                    err.code = 2
                raise
    except _Failure as err:
        _to_stderr(f"derive: error: {err}")
        return err.code
    except ValueError as err:
        refusal = _refusal(err)
        if refusal is None:
            raise
        _to_stderr(f"derive: error: {refusal}")
        return 2
    except KeyboardInterrupt:
        return 130
    except _Terminated as sig:
        return 128 + sig.signum
    except BrokenPipeError:
        _quiet_stdout()
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
