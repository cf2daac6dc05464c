"""``derive check`` against the answer corpus in tests/answers/ (see its README.md).

Each file's answers are marked in one sandboxed child process (the real sandbox, with its
limits); every answer must get its expected verdict, and every answer that is not correct
must get feedback containing its expected words. No wrong answer may be judged correct.
"""

from __future__ import annotations

from functools import cache

import pytest

from derive.check import mark_batch

from .answer_corpus import Answer, corpus_files, read_corpus

ANSWERS = [a for path in corpus_files() for a in read_corpus(path)]
#: Per file, a few correct answers made wrong by "+ 1" at the end: none may stay correct.
MUTATED = [a for path in corpus_files()
           for a in [a for a in read_corpus(path) if a.verdict == "correct"
                     and "\\end" not in a.latex][:2]]


def _mutate(latex: str) -> str:
    return latex.rstrip(". $") + " + 1"


@cache
def _reports(file: str) -> tuple[dict[int, dict], dict[int, dict]]:
    """The file's answers and their mutations, marked in one sandboxed child."""
    answers = [a for a in ANSWERS if a.file == file]
    mutated = [a for a in MUTATED if a.file == file]
    tasks = [(a.qid, a.latex, a.variant) for a in answers]
    tasks += [(a.qid, _mutate(a.latex), a.variant) for a in mutated]
    reports = mark_batch(tasks)
    return ({a.line: r for a, r in zip(answers, reports[:len(answers)], strict=True)},
            {a.line: r for a, r in zip(mutated, reports[len(answers):], strict=True)})


@pytest.mark.parametrize("answer", ANSWERS, ids=[a.id for a in ANSWERS])
def test_corpus_answer(answer: Answer):
    report = _reports(answer.file)[0][answer.line]
    detail = f"{answer.latex}\nread as {report['read_as']}\nfeedback {report['feedback']}"
    if answer.verdict != "correct":
        assert report["verdict"] != "correct", "a wrong answer judged correct:\n" + detail
    assert report["verdict"] == answer.verdict, detail
    assert answer.words in " ".join(report["feedback"]), detail
    assert set(report) == {"verdict", "read_as", "feedback", "steps", "parts"}
    assert all(set(s) == {"line", "ok"} for s in report["steps"])


@pytest.mark.parametrize("answer", MUTATED, ids=[a.id for a in MUTATED])
def test_a_correct_answer_plus_one_is_not_correct(answer: Answer):
    report = _reports(answer.file)[1][answer.line]
    assert report["verdict"] != "correct", (_mutate(answer.latex), report)
    assert report["verdict"] in ("incorrect", "unreadable"), (_mutate(answer.latex), report)


def test_corpus_covers_every_supported_question():
    from derive.check import SUPPORTED

    assert {a.qid for a in ANSWERS} == set(SUPPORTED)
    for qid in SUPPORTED:
        verdicts = {a.verdict for a in ANSWERS if a.qid == qid}
        assert {"correct", "incorrect"} <= verdicts, qid
