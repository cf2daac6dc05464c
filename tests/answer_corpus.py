"""The answer corpus of ``derive check`` (tests/answers/*.answers), parsed simply."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "answers"
_LINE = re.compile(r"^(correct|incorrect|unreadable|undecided)(?:\((.+?)\))?: (.+)$")


@dataclass(frozen=True)
class Answer:
    """One answer of the corpus: where it is, what it is, what marking it must give."""

    file: str
    line: int
    qid: str
    variant: str | None
    verdict: str
    words: str
    latex: str

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.answers"))


def read_corpus(path: Path) -> list[Answer]:
    """The answers of one file; a malformed line raises ``ValueError`` naming it."""
    qid, _, variant = path.stem.partition("_")
    answers = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            raise ValueError(f"{path.name}:{number}: expected 'VERDICT(WORDS): LATEX', got "
                             f"{line[:60]!r}")
        verdict, words, latex = m.groups()
        if verdict != "correct" and not words:
            raise ValueError(f"{path.name}:{number}: a {verdict} answer needs the words its "
                             "feedback must contain")
        answers.append(Answer(path.name, number, qid, variant or None, verdict, words or "",
                              latex))
    return answers
