"""``derive check`` on answer files as students hand them in (tests/answers/files/), and
the batch command line: folders, ``--json``, ``--csv``, ``--gradescope`` (validated
against Gradescope's results format), unreadable files, FIFOs and encodings.

The files' expected verdicts are in tests/answers/files/EXPECTED.tsv: prose around the
math, whole documents, ``\\text``, ``\\neq``, ``\\mathbf{0}``, ``\\mathbf{1}^\\top``,
``\\operatorname{diag}``, ``\\oslash``, ``z_i``, Latin-1, Windows-1252, UTF-16 and UTF-8
with a byte-order mark, and typical slips.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from functools import cache
from pathlib import Path

import pytest

from derive.check.batch import decode, mark_files, read_answer_file

from .conftest import ROOT

FILES = ROOT / "tests" / "answers" / "files"


def _expected() -> list[tuple[str, str, str | None, str, str]]:
    rows = []
    for line in (FILES / "EXPECTED.tsv").read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, qid, variant, verdict, words = line.split("\t")
        rows.append((name, qid, None if variant == "-" else variant, verdict,
                     "" if words == "-" else words))
    return rows


EXPECTED = _expected()


@cache
def _marked() -> dict[str, dict]:
    """Every file marked, one batch per (question, variant), with the time each took."""
    out = {}
    groups: dict[tuple[str, str | None], list[str]] = {}
    for name, qid, variant, _v, _w in EXPECTED:
        groups.setdefault((qid, variant), []).append(name)
    for (qid, variant), names in groups.items():
        rows = mark_files(qid, [str(FILES / n) for n in names], variant)
        out.update(zip(names, rows, strict=True))
    return out


def test_the_files_are_at_least_40_with_every_kind():
    assert len(EXPECTED) >= 40
    assert {v for *_, v, _w in EXPECTED} >= {"correct", "incorrect"}


@pytest.mark.parametrize("name, qid, variant, verdict, words", EXPECTED,
                         ids=[e[0] for e in EXPECTED])
def test_a_student_file_is_judged_as_expected(name, qid, variant, verdict, words):
    row = _marked()[name]
    detail = f"{name}: {row['verdict']} {row['read_as']} {row['feedback']}"
    if verdict != "correct":
        assert row["verdict"] != "correct", "a wrong answer judged correct: " + detail
    assert row["verdict"] == verdict, detail
    assert words in " ".join(row["feedback"]), detail
    if verdict == "correct":
        assert row["score"] == row["max_score"] > 0, detail


def test_at_least_95_percent_as_expected_and_no_wrong_answer_correct():
    marked = _marked()
    right = sum(marked[n]["verdict"] == v for n, _q, _var, v, _w in EXPECTED)
    assert right / len(EXPECTED) >= 0.95
    assert not [n for n, _q, _var, v, _w in EXPECTED
                if v != "correct" and marked[n]["verdict"] == "correct"]


# --------------------------------------------------------------------------- reading


def test_encodings_are_decoded():
    text = r"\mu \cdot \sigma"
    assert decode(text.encode("utf-16")) == text
    assert decode(b"\xfe\xff" + text.encode("utf-16-be")) == text
    assert decode(text.encode("utf-8-sig")) == text
    assert decode("é \\mu".encode("latin-1")) == "é \\mu"
    assert decode("“\\mu”".encode("cp1252")) == "“\\mu”"
    with pytest.raises(ValueError, match="NUL"):
        decode(text.encode("utf-16-le"))  # no byte-order mark


def test_a_fifo_and_a_device_are_refused_at_once(tmp_path: Path):
    fifo = tmp_path / "answer.tex"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(ValueError, match="is a FIFO"):
        read_answer_file(str(fifo))
    with pytest.raises(ValueError, match="character device"):
        read_answer_file("/dev/zero")
    assert time.monotonic() - start < 1


# --------------------------------------------------------------------------- command line


def _derive(*args: str, cwd: Path) -> tuple[int, str, str]:
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "derive", "check", *args], cwd=cwd,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return run.returncode, run.stdout, run.stderr


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A class's folder: two answers, a subfolder, a FIFO, a binary file, a non-.tex file."""
    root = tmp_path_factory.mktemp("class")
    (root / "alice.tex").write_text(r"\frac12(\mu^2 + \sigma^2 - 1) - \log\sigma")
    (root / "sub").mkdir()
    (root / "sub" / "bob.tex").write_text(r"KL = 0 \\ KL = \frac12(\mu^2+\sigma^2-1)-\log\sigma")
    (root / "carol.tex").write_bytes("\\mu^2".encode("utf-16"))
    (root / "dave.tex").write_bytes(b"\x00\x01binary")
    os.mkfifo(root / "eve.tex")
    (root / "notes.txt").write_text("not an answer")
    return root


def test_a_folder_is_one_line_per_tex_file_sorted(folder: Path):
    code, out, err = _derive("2.3", ".", cwd=folder)
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "./alice.tex", "./carol.tex", "./dave.tex", "./eve.tex", "./sub/bob.tex"]
    assert lines[0] == "./alice.tex: correct (5/5)"
    assert "incorrect (0/5)" in lines[1]
    assert "unreadable (0/5): the file is not a text file" in lines[2]
    assert "unreadable (0/5): the file is a FIFO" in lines[3]
    assert "two different values, in line 1 (0) and in line 2" in lines[4]
    assert code == 2 and not err


def test_json_is_one_array_with_unreadable_files(folder: Path):
    code, out, _err = _derive("2.3", "alice.tex", "eve.tex", "missing.tex", "--json",
                              cwd=folder)
    rows = json.loads(out)
    assert [r["file"] for r in rows] == ["alice.tex", "eve.tex", "missing.tex"]
    assert [r["verdict"] for r in rows] == ["correct", "unreadable", "unreadable"]
    assert [r["score"] for r in rows] == [5, 0, 0]
    assert all({"file", "verdict", "score", "feedback"} <= set(r) for r in rows)
    assert "No such file" in rows[2]["feedback"][0]
    one = json.loads(_derive("2.3", "eve.tex", "--json", cwd=folder)[1])
    assert one[0]["verdict"] == "unreadable"  # a single unreadable file is JSON too


def test_csv_writes_one_row_per_file(folder: Path, tmp_path: Path):
    import csv

    target = tmp_path / "marks.csv"
    code, out, _err = _derive("2.3", ".", "--csv", str(target), cwd=folder)
    rows = list(csv.DictReader(target.open(encoding="utf-8")))
    assert [r["file"] for r in rows] == ["./alice.tex", "./carol.tex", "./dave.tex",
                                         "./eve.tex", "./sub/bob.tex"]
    assert rows[0]["verdict"] == "correct" and rows[0]["score"] == "5"
    assert f"wrote {target}" in out
    code, _out, err = _derive("2.3", ".", "--csv", str(tmp_path), cwd=folder)
    assert code == 2 and "--csv" in err and "directory" in err


def test_a_fifo_on_the_command_line_is_one_line_at_once(folder: Path):
    start = time.monotonic()
    code, out, err = _derive("2.3", "eve.tex", cwd=folder)
    assert code == 2 and not out
    assert err.strip() == "derive: error: FILE: eve.tex is a FIFO, not an answer file; it " \
                          "is not read"
    assert time.monotonic() - start < 30  # no hang (the interpreter's start-up included)


# --------------------------------------------------------------------------- Gradescope

#: Gradescope's autograder results format (results.json), as documented: the keys and
#: types ``derive check --gradescope`` writes. ``None`` in a tuple: the key is optional.
_VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}
_FORMATS = {"text", "html", "simple_format", "md", "ansi"}
TOP = {"score": ((int, float), True), "execution_time": ((int, float), False),
       "output": (str, False), "output_format": (str, False), "visibility": (str, False),
       "stdout_visibility": (str, False), "tests": (list, True),
       "test_output_format": (str, False), "test_name_format": (str, False),
       "extra_data": (dict, False), "leaderboard": (list, False)}
TEST = {"score": ((int, float), False), "max_score": ((int, float), False),
        "status": (str, False), "name": (str, False), "name_format": (str, False),
        "number": (str, False), "output": (str, False), "output_format": (str, False),
        "tags": (list, False), "visibility": (str, False), "extra_data": (dict, False)}


def validate_results(results: dict) -> None:
    """Raise AssertionError where ``results`` leaves Gradescope's documented format."""
    assert isinstance(results, dict)
    for key, (_kind, required) in TOP.items():
        assert key in results or not required, f"missing {key}"
    for key, value in results.items():
        assert key in TOP, f"unknown top-level key {key}"
        assert isinstance(value, TOP[key][0]) and not isinstance(value, bool), key
    for key in ("visibility", "stdout_visibility"):
        assert results.get(key, "visible") in _VISIBILITY, key
    assert results.get("output_format", "text") in _FORMATS
    for test in results["tests"]:
        for key, value in test.items():
            assert key in TEST, f"unknown test key {key}"
            assert isinstance(value, TEST[key][0]) and not isinstance(value, bool), key
        assert "score" in test or "status" in test
        assert test.get("status", "passed") in ("passed", "failed")
        assert test.get("visibility", "visible") in _VISIBILITY
        assert test.get("output_format", "text") in _FORMATS
        assert test.get("name_format", "text") in _FORMATS
        assert all(isinstance(t, str) for t in test.get("tags", []))
        if "max_score" in test:
            assert 0 <= test["score"] <= test["max_score"]


def test_gradescope_results_validate_and_score_by_the_scheme(tmp_path: Path):
    from derive.check import SUPPORTED
    from derive.check.batch import points
    from derive.coursework.questions import QUESTIONS

    sub = tmp_path / "submission"
    sub.mkdir()
    shutil.copy(FILES / "q11_diag.tex", sub / "1.1.tex")
    shutil.copy(FILES / "q13_words_only_wrong.tex", sub / "1.3.tex")
    shutil.copy(FILES / "q23_document.tex", sub / "2.3.tex")
    os.mkfifo(sub / "2.4.tex")
    (sub / "2.1.tex").write_text(r"so $F(q) = \log p(x) - \mathrm{KL}(q(z) \| p(z \mid x))$")
    (sub / "2.2.tex").write_text(r"$\mathrm{KL}(q \| p) = \mathrm{KL}(q_i \| p_i)$")
    out = tmp_path / "results" / "results.json"
    code, stdout, err = _derive("--gradescope", str(sub), "-o", str(out), cwd=tmp_path)
    assert code == 0, err
    results = json.loads(out.read_text(encoding="utf-8"))
    validate_results(results)
    tests = {t["number"]: t for t in results["tests"]}
    assert list(tests) == list(SUPPORTED)
    # the points are the registry's, the marking sheet's
    assert points("1.1") == dict(QUESTIONS["1.1"].points) == {"x1": 3, "x2": 2}
    assert tests["1.1"]["score"] == tests["1.1"]["max_score"] == 5
    assert tests["1.3"]["score"] == QUESTIONS["1.3"].points["det"] == 2  # the verdict is wrong
    assert tests["1.3"]["max_score"] == 5  # det and volume_condition; log|det J| is det's
    assert tests["1.3"]["status"] == "failed"
    assert tests["2.3"]["score"] == tests["2.3"]["max_score"] == QUESTIONS["2.3"].points["kl"]
    assert tests["2.1"]["score"] == tests["2.1"]["max_score"] == 4  # the registry's points
    assert tests["2.2"]["score"] == 0 and tests["2.2"]["max_score"] == 4
    assert tests["1.2"]["score"] == 0 and "1.2.tex is missing" in tests["1.2"]["output"]
    assert tests["2.4"]["score"] == 0 and "FIFO" in tests["2.4"]["output"]
    assert results["score"] == sum(t["score"] for t in results["tests"])
    assert "points" in stdout


def test_the_validator_rejects_what_gradescope_would():
    good = {"score": 1, "tests": [{"score": 1, "max_score": 2, "name": "a"}]}
    validate_results(good)
    for bad in ({"tests": []} | {"score": "1"}, {"score": 1, "tests": [{"status": "ok"}]},
                {"score": 1, "tests": [], "visibility": "public"},
                {"score": 1, "tests": [{"score": 3, "max_score": 2}]}):
        with pytest.raises(AssertionError):
            validate_results(bad)


# ------------------------------------------------- every question and variant, no traceback

#: A short answer per question (right or wrong does not matter: it must be marked).
_SHORT = {"1.1": r"$x_1 = y_1$ \\ $x_2 = y_2 e^{-s}$",
          "1.2": r"$\frac{\partial y_1}{\partial x_1} = I$",
          "1.3": r"$\det J = \exp(\sum_i G_i + s_i)$, so not volume preserving in general",
          "2.1": r"$F(q) = \log p(x) - \mathrm{KL}(q \| p(z \mid x))$",
          "2.2": r"$\mathrm{KL}(q \| p) = \sum_i \mathrm{KL}(q_i \| p_i)$",
          "2.3": r"$KL = \frac12(\mu^2 + \sigma^2 - 1) - \log\sigma$",
          "2.4": r"$\bar\mu_i = \mu_i$"}


def _every_question_and_variant():
    from derive.coursework.questions import QUESTIONS

    return [(q.qid, v) for q in QUESTIONS.values() for v in q.variants]


@pytest.mark.parametrize(("qid", "variant"), _every_question_and_variant())
def test_every_question_and_variant_is_marked_without_a_traceback(qid, variant, tmp_path,
                                                                  capsys):
    """``derive check --variant V QID FILE`` for every registry entry: a report (0, 1) or a
    one-line refusal (2, a question it does not mark), never a traceback."""
    from derive.check.quantities import SUPPORTED
    from derive.cli import main

    answer = tmp_path / "a.tex"
    answer.write_text(_SHORT.get(qid, r"$\det J = \exp(\sum_i G_i + s_i)$") + "\n")
    args = ["check", qid, str(answer)] + (["--variant", variant] if variant else [])
    code = main(args)  # an exception here is the traceback the command must never show
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if qid in SUPPORTED:
        assert code in (0, 1, 2), (code, out, err)
        assert out.startswith(f"question {qid}\n") and "verdict:" in out, (out, err)
    else:
        assert code == 2 and not out
        assert err.startswith("derive: error: question") and len(err.splitlines()) == 1


@pytest.mark.parametrize(("words", "code", "feedback"), [
    ("so the block is never volume preserving", 0, "verdict: correct (never volume preserving)"),
    ("det J < 1: not volume preserving", 0, "verdict: correct (never volume preserving)"),
    ("so the block is volume preserving", 1, "verdict: wrong: the block is never volume "
                                            "preserving")])
def test_the_glow_block_is_never_volume_preserving(words, code, feedback, tmp_path, capsys):
    from derive.cli import main

    answer = tmp_path / "a.tex"
    answer.write_text(r"$\det J = \prod_i \frac{1}{1 + e^{-G_i - 2}}$, " + words + "\n")
    assert main(["check", "--variant", "coupling_glow", "1.3", str(answer)]) == code
    assert feedback in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["1.3", "--variant", "coupling_glow", "a.tex"],
    ["--variant", "coupling_glow", "1.3", "a.tex"],
    ["1.3", "a.tex", "--variant", "coupling_glow"],
    ["1.3", "--json", "a.tex", "--variant=coupling_glow", "b.tex"]])
def test_options_may_come_anywhere_among_the_positionals(argv, tmp_path, capsys, monkeypatch):
    from derive.cli import main

    monkeypatch.chdir(tmp_path)
    for name in ("a.tex", "b.tex"):
        (tmp_path / name).write_text(r"$\det J = \prod_i \frac{1}{1 + e^{-G_i - 2}}$, never "
                                     r"volume preserving" + "\n")
    assert main(["check", *argv]) == 0
    out, err = capsys.readouterr()
    assert not err
    if "--json" in argv:
        assert [r["verdict"] for r in json.loads(out)] == ["correct", "correct"]
    else:
        assert "verdict:  correct" in out and "5 of 5 points" in out


_WHY_21 = "the identity in line 1 is wrong: "


@pytest.mark.parametrize(("qid", "answer", "verdict", "why"), [
    ("2.1", r"Hence $F(q) = \log p(x) - \mathrm{KL}(q(z) \| p(z \mid x))$.", "correct", ""),
    ("2.1", r"$\mathcal{F}(q) = \ln p(x) - D_{\mathrm{KL}}\left[q(z) \,\|\, p(z|x)\right]$",
     "correct", ""),
    ("2.1", r"\log p(x) = F(q) + \operatorname{KL}(q(z) \Vert p(z \mid x))", "correct", ""),
    ("2.1", "\\begin{align} F(q) &= \\mathbb{E}_q[\\log p(x, z) - \\log q(z)] \\\\\n"
            "&= \\log p(x) - KL(q || p(z|x)) \\end{align}", "correct", ""),
    ("2.1", r"$F(q) = \log p(x) - D_{KL}(q \| p(z))$", "incorrect", "to the prior p(z)"),
    ("2.1", r"$F(q) = \log p(x) + \mathrm{KL}(q(z) \| p(z|x))$", "incorrect", "a sign"),
    ("2.1", r"$F(q) = \log p(x) - \mathrm{KL}(p(z|x) \| q(z))$", "incorrect", "swapped"),
    ("2.1", r"$F(q) = \int q(z) \log \frac{p(x, z)}{q(z)} dz$", "unreadable", "not given"),
    ("2.2", r"$\mathrm{KL}(q(z) \| p(z)) = \sum_{i=1}^{D} \mathrm{KL}(q_i(z_i) \| p_i(z_i))$",
     "correct", ""),
    ("2.2", r"$D_{KL}(q \| p) = \sum_d D_{KL}(q_d \| p_d)$", "correct", ""),
    ("2.2", r"$KL(q||p) = -\sum_i KL(q_i||p_i)$", "incorrect", "a sign"),
    ("2.2", r"$KL(q||p) = KL(q_i||p_i)$", "incorrect", "a sum over i"),
    ("2.2", r"$KL(q||p) = \sum_i KL(p_i||q_i)$", "incorrect", "swapped"),
])
def test_2_1_and_2_2_mark_the_identity(qid, answer, verdict, why, tmp_path, capsys):
    from derive.check.batch import points
    from derive.cli import main
    from derive.coursework.questions import QUESTIONS

    (tmp_path / "a.tex").write_text(answer + "\n")
    code = main(["check", qid, str(tmp_path / "a.tex"), "--json"])
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["verdict"], code) == (verdict, {"correct": 0, "incorrect": 1}.get(verdict, 2))
    assert row["max_score"] == sum(QUESTIONS[qid].points.values()) == sum(
        points(qid).values())
    assert row["score"] == (row["max_score"] if verdict == "correct" else 0)
    assert why in " ".join(row["feedback"])
