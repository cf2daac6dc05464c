r"""Marking a course's answers: files and folders, read safely, marked in one process.

:func:`answer_files` turns the paths given into the answer files to mark (a folder gives
every ``.tex`` file inside it, sorted); :func:`read_answer_file` reads one without ever
blocking (a FIFO, a device or a socket is refused at once, before it is opened for
reading) and decodes UTF-8, UTF-16 or UTF-32 with a byte-order mark, and Windows-1252 or
Latin-1; :func:`mark_files` marks them all in one sandboxed child
(:func:`~derive.check.sandbox.mark_batch`) and returns one row per file, unreadable files
included; :func:`csv_text` and :func:`gradescope_results` are what ``--csv`` and
``--gradescope`` write.

Example:
    >>> decode(b"\xff\xfe\\\x00m\x00u\x00")
    '\\mu'
    >>> decode("\\mu \xb7 \\sigma".encode("latin-1"))
    '\\mu · \\sigma'
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from ..loader import current
from .quantities import SUPPORTED, supported

__all__ = ["AnswerFileError", "answer_files", "read_answer_file", "decode", "mark_files",
           "score", "csv_text", "gradescope_results", "MAX_FILE_BYTES", "MAX_FILES"]

#: A file larger than this is refused without reading it.
MAX_FILE_BYTES = 1 << 20
#: At most this many files are marked in one run.
MAX_FILES = 5000

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
          stat.S_IFDIR: "a folder"}
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
         (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
         (codecs.BOM_UTF16_BE, "utf-16-be"))
_CONTROL = {c for c in range(32) if chr(c) not in "\t\n\r\f"} | {127}


class AnswerFileError(ValueError):
    """A file that cannot be read as an answer; the message is one line saying why."""


def answer_files(paths: Sequence[str]) -> list[str]:
    """The files to mark: each file as given, each folder's ``.tex`` files (recursively,
    sorted, symlinked folders not followed). A path that does not exist is kept: reading
    it reports why."""
    out: list[str] = []
    for path in paths:
        if path != "-" and os.path.isdir(path):
            found = []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                found += [os.path.join(root, f) for f in sorted(files)
                          if f.endswith(".tex") and not f.startswith(".")]
            out += sorted(found, key=lambda p: Path(p).parts)
        else:
            out.append(path)
        if len(out) > MAX_FILES:
            raise AnswerFileError(f"more than {MAX_FILES} answer files")
    return out


def decode(data: bytes) -> str:
    """The text of an answer file: a byte-order mark decides (UTF-8, UTF-16, UTF-32);
    otherwise UTF-8, then Windows-1252, then Latin-1. Control characters and NUL bytes
    (a binary file, or UTF-16 without a byte-order mark) are refused."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom):].decode(encoding)
            except UnicodeDecodeError as err:
                raise AnswerFileError(f"is not {encoding.upper()} text although it starts with "
                                      f"its byte-order mark ({err.reason})") from None
            break
    else:
        for encoding in ("utf-8", "cp1252", "latin-1"):
            try:
                text = data.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
    bad = next((c for c in text if ord(c) in _CONTROL), None)
    if bad is not None:
        what = "NUL bytes" if bad == "\x00" else f"the control character U+{ord(bad):04X}"
        raise AnswerFileError(f"is not a text file: it contains {what} (UTF-16 needs a "
                              "byte-order mark)")
    return text


def read_answer_file(path: str, stdin: object | None = None) -> str:
    """The decoded text of one answer file (``-``: standard input, a binary stream).

    Raises :class:`AnswerFileError` with a one-line reason; never blocks on a FIFO or a
    device: the path is looked at first and opened without waiting.
    """
    if not path:
        raise AnswerFileError("expected a file name or - for standard input, got an empty "
                              "string")
    if path == "-":
        data = stdin.read(MAX_FILE_BYTES + 1)  # type: ignore[union-attr]
    else:
        try:
            st = os.stat(path)
        except OSError as err:
            raise AnswerFileError(f"cannot be read: {err.strerror or err}") from None
        kind = _KINDS.get(stat.S_IFMT(st.st_mode))
        if kind is not None:
            raise AnswerFileError(f"is {kind}, not an answer file; it is not read")
        if st.st_size > MAX_FILE_BYTES:
            raise AnswerFileError(f"is larger than {MAX_FILE_BYTES >> 20} MiB; it is not read")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        except OSError as err:
            raise AnswerFileError(f"cannot be read: {err.strerror or err}") from None
        try:
            now = os.fstat(fd)  # it may have been swapped since it was looked at
            if not stat.S_ISREG(now.st_mode):
                kind = _KINDS.get(stat.S_IFMT(now.st_mode), "not a regular file")
                raise AnswerFileError(f"is {kind}, not an answer file; it is not read")
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as err:
            raise AnswerFileError(f"cannot be read: {err.strerror or err}") from None
        finally:
            os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise AnswerFileError(f"is larger than {MAX_FILE_BYTES >> 20} MiB; it is not read")
    return decode(data)


@functools.cache
def points(qid: str, variant: str | None = None) -> dict[str, int]:
    """The points of question ``qid`` (in ``variant``) per part that ``derive check`` marks
    (a result it reads, or 1.3's ``volume_condition``, the verdict): the registry's
    (:attr:`~derive.material.Question.points`, what the marking sheet shows,
    :func:`~derive.material.marking`). Steps, and results it does not read, are marked by
    hand. The registry names the results of the question's own variant; another variant's
    results are matched to them in order (2.4's ``grad_logvar`` is ``grad_sigma``)."""
    from ..loader import build
    from .quantities import question_spec

    question = current().questions[qid]
    spec = question_spec(qid, variant)
    marked = [q.part or q.name for q in spec.quantities + spec.alternates]
    if spec.condition is not None:
        marked.append("volume_condition")
    own = [r.name for r in build(qid).results]
    here = [r.name for r in build(qid, variant).results]
    same = dict(zip(here, own, strict=True)) if len(here) == len(own) else {}
    return {part: question.points[same.get(part, part)] for part in dict.fromkeys(marked)
            if same.get(part, part) in question.points}


def score(qid: str, report: dict, variant: str | None = None) -> tuple[float, int]:
    """``(points earned, points available)``: each part judged correct earns its points."""
    scheme = points(qid, variant)
    parts = report.get("parts", {})
    earned = sum(p for name, p in scheme.items() if parts.get(name) == "correct")
    return earned, sum(scheme.values())


def _row(file: str, qid: str, report: dict, variant: str | None) -> dict:
    earned, available = score(qid, report, variant)
    return {"file": file, "question": qid, "verdict": report["verdict"], "score": earned,
            "max_score": available, "feedback": list(report["feedback"]),
            "read_as": report.get("read_as", ""), "steps": list(report.get("steps", []))}


def unreadable(message: str) -> dict:
    return {"verdict": "unreadable", "read_as": "", "feedback": [message], "steps": [],
            "parts": {}}


def mark_files(qid: str, files: Sequence[str], variant: str | None = None,
               stdin: object | None = None, qids: Sequence[str] | None = None) -> list[dict]:
    """One row per file: ``file``, ``verdict``, ``score``, ``max_score``, ``feedback``.

    Every readable file is marked in one sandboxed child process (a fresh one after an
    answer that breaks a limit); a file that cannot be read is a row with the verdict
    ``unreadable`` and the reason. ``qids`` gives each file its own question.
    """
    from .sandbox import mark_batch

    qids = list(qids) if qids is not None else [qid] * len(files)
    texts: list[str | None] = []
    errors: dict[int, str] = {}
    for k, path in enumerate(files):
        try:
            texts.append(read_answer_file(path, stdin))
        except AnswerFileError as err:
            texts.append(None)
            errors[k] = f"the file {err}" if not str(err).startswith("expected") else str(err)
    tasks = [(qids[k], t, variant) for k, t in enumerate(texts) if t is not None]
    reports = iter(mark_batch(tasks)) if tasks else iter(())
    rows = []
    for k, path in enumerate(files):
        report = unreadable(errors[k]) if k in errors else next(reports)
        rows.append(_row(path, qids[k], report, variant))
    return rows


def csv_text(rows: Sequence[dict]) -> str:
    """One CSV row per file: file, question, verdict, score, max_score, feedback."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", "question", "verdict", "score", "max_score", "feedback"])
    for r in rows:
        writer.writerow([r["file"], r["question"], r["verdict"], _number(r["score"]),
                         r["max_score"], " | ".join(r["feedback"])])
    return out.getvalue()


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


#: The questions a Gradescope submission answers, one file each (``1.1.tex``, ...): those
#: with points that ``derive check`` marks (2.1 and 2.2 by their final identity).
GRADED = tuple(q for q in SUPPORTED
               if q in current().questions and current().questions[q].points)


def graded() -> tuple[str, ...]:
    """:data:`GRADED` for the material in use (``--material``), not the default's."""
    return tuple(q for q in supported() if current().questions[q].points)


def gradescope_results(folder: str, variant: str | None = None,
                       questions: Sequence[str] | None = None) -> dict:
    """Gradescope's autograder ``results.json`` for a submission folder.

    One test per question (default: :func:`graded`, those of the material in use), named
    by its id and title, with the marking scheme's points as ``max_score``; the file
    ``<id>.tex`` (at the top of the folder) is its answer. A missing file scores 0 and
    says so.
    """
    questions = graded() if questions is None else questions
    start = time.monotonic()
    present = {q: os.path.join(folder, f"{q}.tex") for q in questions
               if os.path.lexists(os.path.join(folder, f"{q}.tex"))}
    rows = dict(zip(present, mark_files("", list(present.values()), variant,
                                        qids=list(present)), strict=True))
    tests = []
    for q in questions:
        available = sum(points(q, variant).values())
        title = f"Question {q}: {current().questions[q].title}"
        if q not in rows:
            earned, output = 0, (f"{q}.tex is missing from the submission: no answer to "
                                 f"question {q}, 0 of {available} points.")
        else:
            r = rows[q]
            earned = _number(r["score"])
            output = "\n".join([f"verdict: {r['verdict']} ({earned} of {available} points)",
                                *(f"- {f}" for f in r["feedback"])])
        tests.append({"name": title, "number": q, "score": earned, "max_score": available,
                      "status": "passed" if earned == available else "failed",
                      "output": output, "output_format": "text", "name_format": "text",
                      "visibility": "visible", "tags": [f"question-{q}"]})
    total = sum(t["score"] for t in tests)
    available = sum(t["max_score"] for t in tests)
    return {"score": _number(total),
            "execution_time": max(1, round(time.monotonic() - start)),
            "output": f"derive check marked {len(rows)} of {len(questions)} answers: "
                      f"{_number(total)} of {available} points.",
            "output_format": "text", "visibility": "visible",
            "stdout_visibility": "hidden", "tests": tests}


def gradescope_json(results: dict) -> str:
    return json.dumps(results, ensure_ascii=False, indent=2) + "\n"
