r"""What students write around their math: the math to read, and the words said.

A whole LaTeX document gives the math of its body (``$...$``, ``\[...\]``, ``\(...\)``,
``equation``, ``align``, ...); nothing in it is executed, and its preamble, comments and
prose are never parsed. An answer without math delimiters is math with the prose taken
out (runs of words, ``\text{...}``); ``\neq`` ends a relation, kept as words. The words
are for marking a verdict said in words (1.3: "not volume preserving in general").

Example:
    >>> split_answer(r"So the inverse is $x_2 = y_2 e^{-s}$. Done.").math
    'x_2 = y_2 e^{-s}'
    >>> split_answer(r"\det J = e^{a} \neq 1 \text{ in general}").words
    'in general neq 1'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Answer", "split_answer"]

_COMMENT = re.compile(r"(?<!\\)%[^\n]*")
_BODY = re.compile(r"\\begin\{document\}(.*?)(?:\\end\{document\}|\Z)", re.S)
_ENVS = ("equation|align|gather|multline|eqnarray|flalign|alignat|displaymath|math|"
         "aligned|gathered|split")
_MATH = re.compile(
    r"\$\$(.+?)\$\$|\$(.+?)\$|\\\[(.+?)\\\]|\\\((.+?)\\\)"
    r"|(\\begin\{(?:" + _ENVS + r")\*?\}.*?\\end\{(?:" + _ENVS + r")\*?\})", re.S)
_TEXT = re.compile(r"\\(?:text|textrm|textit|textbf|emph|mbox|intertext|textnormal|"
                   r"shortintertext)\s*\{([^{}]*)\}")
_NEQ = re.compile(r"(?:\\neq|\\ne(?![a-zA-Z])|\\not\s*=)(.*?)"
                  r"(?=\\\\|\\q?quad(?![a-zA-Z])|&|;|\n|$)", re.S)
#: Words of the course's math that a \text{...} may hold: read as math, not as prose.
_MATH_WORDS = {"diag": r"\operatorname{diag}", "KL": "KL", "det": r"\det", "exp": r"\exp",
               "log": r"\log", "ln": r"\ln"}
_WORD = re.compile(r"(?<![\\_^{A-Za-z])[A-Za-z]{2,}(?:'[a-z]+)?[.,:;!?]?(?![A-Za-z_^{(])")
_PROSE_WORDS = {"so", "and", "then", "where", "hence", "thus", "therefore", "we", "get",
                "have", "is", "the", "in", "general", "iff", "if", "only", "when", "which",
                "with", "for", "all", "not", "it", "this", "that", "as", "of", "by", "to",
                "since", "because", "gives", "giving", "i.e", "ie", "eg", "or",
                "a", "an", "be", "are", "so,", "note", "rearranging", "solving", "volume",
                "preserving", "preserved", "preserves", "preserve", "exactly", "does",
                "doesn't", "isn't", "never", "no", "always", "hold", "holds", "true"}
_KEEP = {"KL", "exp", "log", "ln", "det", "diag", "sin", "cos"}


@dataclass(frozen=True)
class Answer:
    """The math of an answer (LaTeX, for the reader) and its words (prose, for verdicts)."""

    math: str
    words: str


def split_answer(text: str) -> Answer:
    """Separate the math from the prose; see the module doc."""
    text = _COMMENT.sub("", text)
    body = _BODY.search(text)
    if body is not None:
        text = body.group(1)
    words: list[str] = []
    found = list(_MATH.finditer(text))
    if found:
        pieces = [next(g for g in m.groups() if g is not None) for m in found]
        if any("=" in p for p in pieces):  # "since $x_2$ is known": a mention, not an answer
            words += [p for p in pieces if "=" not in p]
            pieces = [p for p in pieces if "=" in p]
        outside = _MATH.sub(" \n ", text)
        words.append(outside)
        math = " \\\\ ".join(pieces)
    else:
        math = text
    math = _TEXT.sub(lambda m: _text(m.group(1), words), math)
    math = _NEQ.sub(lambda m: _neq(m.group(1), words), math)
    if not found:
        math = _prose_runs(math, words)
    said = " ".join(" ".join(w.split()) for w in words if w.strip())
    return Answer(math.strip(), said)


def _text(inner: str, words: list[str]) -> str:
    stripped = inner.strip()
    if stripped in _MATH_WORDS:
        return _MATH_WORDS[stripped]
    words.append(inner)
    return r" \\ "


def _neq(rest: str, words: list[str]) -> str:
    words.append("neq " + rest.strip())
    return " "


def _prose_runs(math: str, words: list[str]) -> str:
    """Take out runs of words (two or more, or one of the usual connectives) from math
    written without delimiters; each becomes a line break."""
    out = []
    for line in math.split("\n"):
        spans = [m for m in _WORD.finditer(line) if m.group(0).rstrip(".,:;!?") not in _KEEP]
        runs: list[tuple[int, int]] = []
        for m in spans:
            if runs and not line[runs[-1][1]:m.start()].strip(" ,.;:-"):
                runs[-1] = (runs[-1][0], m.end())
            else:
                runs.append((m.start(), m.end()))
        kept, last = [], 0
        for a, b in runs:
            run = line[a:b]
            single = len(run.split()) == 1
            if single and run.rstrip(".,:;!?").lower() not in _PROSE_WORDS:
                continue
            kept.append(line[last:a])
            kept.append(r" \\ ")
            words.append(run)
            last = b
        kept.append(line[last:])
        out.append("".join(kept))
    return "\n".join(out)
