r"""``derive check QUESTION FILE``: the subcommand's parser and what it prints.

Example:
    >>> import argparse
    >>> sub = argparse.ArgumentParser(prog="derive").add_subparsers(dest="command")
    >>> add_parser(sub).prog
    'derive check'
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys

from .batch import MAX_FILE_BYTES
from .latex_reader import NOTATION
from .marking import EXIT_CODES
from .quantities import supported

__all__ = ["add_parser", "validate", "outputs", "output", "run", "render", "line",
           "MAX_FILE_BYTES"]

_DESCRIPTION = """\
Mark students' LaTeX answers to question {questions} against the engine's
derived results, and explain each mistake in the course's notation. PATH is a file, a
folder (every .tex file inside, sorted) or - (standard input); one file prints its full
report, several print one line each (file: verdict (score/max): feedback). A file may be a
bare answer, math with prose around it, or a whole LaTeX document (its math is read,
nothing is executed), in UTF-8, UTF-16/UTF-32 with a byte-order mark, Windows-1252 or
Latin-1; a FIFO or a device is refused at once. Scores are the marking scheme's points
(each question's points in its registry, derive/coursework/questions.py, as the marking
sheet shows them) for the results it reads. All files are marked in one process.

The answer is read against a whitelist (see
below), parsed with SymPy's strict LaTeX parser, and decided by two methods that must
agree: a numeric comparison at random points (50 digits; F and G replaced by random
functions that are not element-wise, sums expanded at n = 1, 2, 3) and
simplify(answer - result) == 0 within a time budget. The decision runs in a child process
limited to 1 GiB of memory, 15 s of CPU time and 15 s of wall-clock time.

A multi-line derivation (a = b \\\\ = c, or an align environment) is checked step by step
with the engine's own step checker, and the first step that does not follow is named.
Question 1.2 is marked when the answer gives the four blocks (as a 2x2 bmatrix or as
four equations d y_1 / d x_1 = ...), in \\operatorname{{diag}}(v), J_F(x_2), J_G(x_2), I.
Questions 2.1 and 2.2 are marked by their identity (F(q) = \\log p(x) - \\mathrm{{KL}}(q(z)
\\| p(z \\mid x)); \\mathrm{{KL}}(q \\| p) = \\sum_i \\mathrm{{KL}}(q_i \\| p_i)), rearranged or
not; every such identity written must be right. Options may come anywhere.
"""

_EPILOG = f"""\
{NOTATION}

exit codes:
  0  correct
  1  incorrect (the feedback names the mistake where it can)
  2  unreadable (refused notation, unknown symbols, over a size limit) or undecided
     (the two methods disagree, or a time or memory limit was reached); also bad usage

With several files the exit code is the highest of the files' codes.

examples:
  derive check 2.3 answer.tex
  derive check 1.1 submissions/ --json
  derive check 1.3 submissions/ --csv marks.csv
  derive check --gradescope /autograder/submission -o /autograder/results/results.json
  echo '\\frac12(\\mu^2 + \\sigma^2 - \\log\\sigma^2 - 1)' | derive check 2.3 -
  derive check 2.3 answer.tex --variant logvar
"""


class _IntermixedParser(argparse.ArgumentParser):
    """Options anywhere among the positionals (``derive check 1.3 --variant V FILE``):
    argparse's ``parse_known_intermixed_args``, which calls back into this method for its
    two passes (those are plain ``parse_known_args``)."""

    _inner = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._inner:
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``check`` to the ``derive`` subcommands; its options may come anywhere."""
    default_class = sub._parser_class
    sub._parser_class = _IntermixedParser
    try:
        p = sub.add_parser("check", help="mark students' LaTeX answers against the derivation",
                           description=_DESCRIPTION.format(questions=", ".join(supported())),
                           epilog=_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    finally:
        sub._parser_class = default_class
    p.add_argument("question", nargs="?",
                   help=f"the question id, one of: {', '.join(supported())} (those of the "
                        "material in use: --material comes before --help)")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="answer files (.tex), folders (every .tex file inside, sorted), or - "
                        "for standard input")
    p.add_argument("--variant", help="the question's variant (block or parameterization); "
                                     "default: the question's own")
    p.add_argument("--json", action="store_true",
                   help="print one JSON array: per file {file, question, verdict, score, "
                        "max_score, feedback, read_as, steps}")
    p.add_argument("--csv", metavar="FILE",
                   help="also write one CSV row per file (file, question, verdict, score, "
                        "max_score, feedback)")
    p.add_argument("--gradescope", metavar="SUBMISSION_DIR",
                   help="mark a Gradescope submission (1.1.tex, 1.2.tex, ... at its top) and "
                        "write Gradescope's results.json to -o FILE")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="with --gradescope: where results.json is written")
    return p


def validate(args: argparse.Namespace) -> None:
    """Usage errors, before anything is read or marked (ValueError, one line, exit 2)."""
    if args.gradescope is not None:
        if args.question is not None or args.paths:
            raise ValueError("--gradescope takes a submission folder and no QUESTION or PATH")
        if args.output is None:
            raise ValueError("--gradescope needs -o FILE (Gradescope reads "
                             "/autograder/results/results.json)")
        if args.variant or args.csv or args.json:
            raise ValueError("--gradescope marks every question in its own variant; "
                             "--variant, --csv and --json do not apply")
        if not os.path.isdir(args.gradescope):
            raise ValueError(f"--gradescope: {args.gradescope} is not a folder")
        return
    if args.output is not None:
        raise ValueError("-o/--output is for --gradescope; --csv FILE writes a table")
    if args.question is None:
        raise ValueError("expected QUESTION PATH..., or --gradescope SUBMISSION_DIR -o FILE")
    if args.question not in supported():  # the material in use (--material)
        raise ValueError(f"question {args.question!r} is not marked by derive check; it "
                         f"marks {', '.join(supported())}")
    if not args.paths:
        raise ValueError("expected at least one answer file or folder after the question")
    if args.paths.count("-") > 1:
        raise ValueError("standard input (-) can be read once")


def outputs(args: argparse.Namespace, stdin: object | None = None
            ) -> tuple[str, int, dict[str, bytes]]:
    """Mark; return what goes to standard output, the exit code, and the files to write
    (``--csv``, ``--gradescope``'s ``-o``), by path.

    Raises ValueError (one line, exit code 2) for bad usage, a question it does not mark,
    or -- one file given, without ``--json`` -- a file it cannot read.
    """
    from ..loader import UnknownQuestionError
    from .batch import (
        AnswerFileError,
        answer_files,
        csv_text,
        gradescope_json,
        gradescope_results,
        mark_files,
        read_answer_file,
    )

    validate(args)
    try:
        if args.gradescope is not None:
            results = gradescope_results(args.gradescope)
            done = sum(1 for t in results["tests"] if "missing" not in t["output"])
            out = (f"marked {done} of {len(results['tests'])} answers: {results['score']} of "
                   f"{sum(t['max_score'] for t in results['tests'])} points\n")
            return out, 0, {args.output: gradescope_json(results).encode("utf-8")}
        files = answer_files(args.paths)
        if "-" in files and stdin is not None:  # read once: it is looked at, then marked
            stdin = io.BytesIO(stdin.read(MAX_FILE_BYTES + 1))  # type: ignore[attr-defined]
        single = len(args.paths) == 1 and files == args.paths
        if single and not args.json:
            try:
                read_answer_file(files[0], stdin)  # refused at once, in one line
                if isinstance(stdin, io.BytesIO):
                    stdin.seek(0)
            except AnswerFileError as err:
                where = "standard input" if files[0] == "-" else files[0]
                raise ValueError(f"FILE: {where} {err}" if not str(err).startswith(
                    "expected") else f"FILE: {err}") from None
        if not files:
            raise ValueError(f"no .tex files in {', '.join(args.paths)}")
        rows = mark_files(args.question, files, args.variant, stdin)
    except (UnknownQuestionError, AnswerFileError) as err:
        raise ValueError(str(err)) from None
    written = {args.csv: csv_text(rows).encode("utf-8")} if args.csv else {}
    code = max(EXIT_CODES[r["verdict"]] for r in rows)
    if args.json:
        out = json.dumps(rows, ensure_ascii=False) + "\n"
    elif single:
        out = render(args.question, rows[0])
    else:
        out = "".join(line(r) for r in rows)
    return out, code, written


def output(args: argparse.Namespace) -> tuple[str, int]:
    """Mark the answers; return the text for standard output and the exit code."""
    out, code, _files = outputs(args, getattr(sys.stdin, "buffer", None))
    return out, code


def line(row: dict) -> str:
    """One file's line: ``file: verdict, score/max: the first feedback``."""
    feedback = "; ".join(f for f in row["feedback"] if not f.endswith(": correct")
                         and " correct (" not in f)
    score = f"{_n(row['score'])}/{row['max_score']}"
    name = row["file"].replace("\n", "\\n")
    return f"{name}: {row['verdict']} ({score})" + (f": {feedback}" if feedback else "") + "\n"


def _n(x: float) -> str:
    return f"{x:g}"


def run(args: argparse.Namespace) -> int:
    """Mark the answers, print the report; return the exit code (0, 1 or 2)."""
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
    if report.get("max_score"):
        lines.append(f"score:    {_n(report['score'])} of {report['max_score']} points")
    lines += [f"  - {f}" for f in report["feedback"]]
    steps = report["steps"]
    if len(steps) > 1:
        marks = {True: "ok", False: "does not follow", None: "not checked"}
        lines.append("steps:    " + ", ".join(f"line {s['line']} {marks[s['ok']]}"
                                              for s in steps))
    return "\n".join(lines) + "\n"
