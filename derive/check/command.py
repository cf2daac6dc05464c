r"""``derive check QUESTION FILE``: the subcommand's parser and what it prints.

Example:
    >>> import argparse
    >>> sub = argparse.ArgumentParser(prog="derive").add_subparsers(dest="command")
    >>> add_parser(sub).prog
    'derive check'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .latex_reader import LIMITS as READ_LIMITS
from .latex_reader import NOTATION
from .quantities import SUPPORTED

__all__ = ["add_parser", "output", "run", "MAX_FILE_BYTES"]

#: A file larger than this is refused without reading it.
MAX_FILE_BYTES = 1 << 20

_DESCRIPTION = f"""\
Mark a student's LaTeX answer to question {", ".join(SUPPORTED)} against the engine's
derived result, and explain the mistake. The answer is read against a whitelist (see
below), parsed with SymPy's strict LaTeX parser, and decided by two methods that must
agree: a numeric comparison at random points (50 digits; F and G replaced by random
functions that are not element-wise, sums expanded at n = 1, 2, 3) and
simplify(answer - result) == 0 within a time budget. The decision runs in a child process
limited to 1 GiB of memory, 15 s of CPU time and 15 s of wall-clock time.

A multi-line derivation (a = b \\\\ = c, or an align environment) is checked step by step
with the engine's own step checker, and the first step that does not follow is named.
Question 1.2 is marked when the answer gives the four blocks (as a 2x2 bmatrix or as
four equations d y_1 / d x_1 = ...), in \\operatorname{{diag}}(v), J_F(x_2), J_G(x_2), I.
"""

_EPILOG = f"""\
{NOTATION}

exit codes:
  0  correct
  1  incorrect (the feedback names the mistake where it can)
  2  unreadable (refused notation, unknown symbols, over a size limit) or undecided
     (the two methods disagree, or a time or memory limit was reached); also bad usage

examples:
  derive check 2.3 answer.tex
  echo '\\frac12(\\mu^2 + \\sigma^2 - \\log\\sigma^2 - 1)' | derive check 2.3 -
  derive check 2.3 answer.tex --variant logvar --json
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``check`` to the ``derive`` subcommands."""
    p = sub.add_parser("check", help="mark a student's LaTeX answer against the derivation",
                       description=_DESCRIPTION, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("question", help=f"the question id, one of: {', '.join(SUPPORTED)}")
    p.add_argument("file", help="the answer's LaTeX file, or - for standard input")
    p.add_argument("--variant", help="the question's variant (block or parameterization); "
                                     "default: the question's own")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object {verdict, read_as, feedback, steps}")
    return p


def _read(name: str) -> str:
    if not name:
        raise ValueError("FILE: expected a file name or - for standard input, got an empty "
                         "string")
    if name == "-":
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    else:
        path = Path(name)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as err:
            raise ValueError(f"FILE: cannot read {name}: {err.strerror or err}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"FILE: {name} is larger than {MAX_FILE_BYTES >> 20} MiB; answers "
                         f"are at most {READ_LIMITS['characters']} characters")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"FILE: {name} is not UTF-8 text ({err.reason} at byte "
                         f"{err.start})") from None


def output(args: argparse.Namespace) -> tuple[str, int]:
    """Mark the answer; return the report's text and the exit code (0, 1 or 2).

    Raises ValueError (one line, exit code 2) for a question it does not mark or a file it
    cannot read.
    """
    from ..questions import UnknownQuestionError
    from .marking import EXIT_CODES
    from .sandbox import mark_one

    if args.question not in SUPPORTED:
        raise ValueError(f"question {args.question!r} is not marked by derive check; it "
                         f"marks {', '.join(SUPPORTED)}")
    try:
        text = _read(args.file)
        report = mark_one(args.question, text, args.variant)
    except UnknownQuestionError as err:
        raise ValueError(str(err)) from None
    out = (json.dumps(report, ensure_ascii=False) + "\n" if args.json
           else render(args.question, report))
    return out, EXIT_CODES[report["verdict"]]


def run(args: argparse.Namespace) -> int:
    """Mark the answer, print the report; return the exit code (0, 1 or 2)."""
    try:
        out, code = output(args)
    except ValueError as err:
        print(f"derive: error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(out)
    return code


def render(qid: str, report: dict) -> str:
    """The report as text: what was read, the verdict, the feedback, the steps."""
    lines = [f"question {qid}",
             f"read as:  {report['read_as'] or '(nothing could be read)'}",
             f"verdict:  {report['verdict']}"]
    lines += [f"  - {f}" for f in report["feedback"]]
    steps = report["steps"]
    if len(steps) > 1:
        marks = {True: "ok", False: "does not follow", None: "not checked"}
        lines.append("steps:    " + ", ".join(f"line {s['line']} {marks[s['ok']]}"
                                              for s in steps))
    return "\n".join(lines) + "\n"
