r"""Marking 2.1 and 2.2, whose result is an identity between KL divergences, not a value.

2.1: ``F(q) = log p(x) - KL(q(z) || p(z|x))``; 2.2: ``KL(q || p) = Σ_i KL(q_i || p_i)``.
Every identity the answer writes between the terms of the question (``F(q)``,
``\log p(x)``, a KL divergence, a sum of KL divergences) is read as a signed sum of those
terms; an identity is correct when it is the question's, rearranged or not (``\log p(x) =
F(q) + \mathrm{KL}(q \| p(z \mid x))``). Lines of the derivation between (integrals,
expectations) are skipped: a chain ``F(q) = ... = \log p(x) - KL(...)`` states its first
side equal to its last. Every identity read must be right, and at least one is needed.

Example:
    >>> mark_identity("2.1", r"F(q) = \log p(x) - \mathrm{KL}(q(z) \| p(z \mid x))")
    ('correct', ['the identity: correct'])
    >>> mark_identity("2.1", r"F(q) = \log p(x) - D_{KL}(q \| p(z))")[0]
    'incorrect'
"""

from __future__ import annotations

import re

__all__ = ["IDENTITIES", "mark_identity"]

#: The identity of each question, as a signed sum of terms equal to zero.
IDENTITIES = {"2.1": {"F": 1, "log p(x)": -1, "KL(q || p(z|x))": 1},
              "2.2": {"KL(q || p)": 1, "Σ_i KL(q_i || p_i)": -1}}
_SHOWN = {"2.1": "F(q) = log p(x) − KL(q(z) ‖ p(z|x))",
          "2.2": "KL(q ‖ p) = Σ_i KL(q_i ‖ p_i)"}

_NORMAL = [
    (r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])|\\[,;:! ]|&", ""),
    (r"\\(?:mathrm|operatorname|text|mathbb|mathsf|textrm)\{(KL|D)\}", r"\1"),
    (r"(?:D|\\mathcal\{?D\}?)_\{?(?:\\(?:mathrm|text|operatorname)\{)?KL\}?\}?", "K"),
    (r"KL", "K"),
    (r"\\(?:Vert|parallel|lVert|rVert)(?![a-zA-Z])|\\\||\\mid\\mid|\|\|", "#"),
    (r"\\(?:mid|vert|lvert|rvert)(?![a-zA-Z])", "|"),
    (r"\\(?:log|ln)(?![a-zA-Z])|(?<![a-zA-Z\\])(?:log|ln)", "L"),
    (r"\\mathcal\{?([FL])\}?|\\text\{ELBO\}|ELBO", "F"),
    (r"\\(?:lbrace|rbrace)|\\[{}]", ""),
    (r"\\sum(?:_\{?([a-z])(?:=1)?\}?(?:\^\{?[a-zA-Z]\}?)?)?", r"S\1"),
    (r"[{}]", ""),
    (r"[\[]", "("), (r"[\]]", ")"),
    (r"\\(?:phi|theta|psi)", ""),
    (r"\s+", ""),
]

_ARG = r"([qp])(?:_([a-z]))?(?:\((z)?(?:_([a-z]))?(?:\|(x))?\))?"
_KL = re.compile(r"K\(" + _ARG + "#" + _ARG + r"\)")
_TERM = re.compile(r"([+-]?)(?:(S[a-z]?)\(?(?=K))?(?:(F)(?:\(q(?:\(z(?:\|x)?\))?\))?|"
                   r"(Lp\(x\))|(K\([^()]*(?:\([^()]*\)[^()]*)*\)))\)?")


def _normal(latex: str) -> str:
    for pattern, repl in _NORMAL:
        latex = re.sub(pattern, repl, latex)
    return latex


def _arg(m: re.Match, k: int) -> str:
    """One argument of a KL: ``q``, ``p``, ``p(z|x)``, ``q_i``, ... (a name for it)."""
    letter, sub, z, zsub, given = m.group(k, k + 1, k + 2, k + 3, k + 4)
    if sub or zsub:
        return f"{letter}_i"
    if letter == "p" and given:
        return "p(z|x)"
    if letter == "p" and z:
        return "p(z)"
    return letter


def _side(text: str) -> dict[str, int] | None:
    """A side of an identity as a signed sum of the question's terms; ``None`` if it is
    not one (an integral, an expectation: a step of the derivation)."""
    terms: dict[str, int] = {}
    at = 0
    while at < len(text):
        m = _TERM.match(text, at)
        if m is None or m.end() == at:
            return None
        sign, summed, f, logp, kl = m.groups()
        if f:
            name = "F"
        elif logp:
            name = "log p(x)"
        else:
            k = _KL.fullmatch(kl)
            if k is None:
                return None
            name = f"KL({_arg(k, 1)} || {_arg(k, 6)})"
            if summed:
                name = "Σ_i " + name
        terms[name] = terms.get(name, 0) + (-1 if sign == "-" else 1)
        at = m.end()
    return terms or None


def _split(line: str) -> list[str]:
    """The sides of ``a = b = c``; an ``=`` inside braces (``\\sum_{i=1}``) is not one."""
    sides, depth, start = [], 0, 0
    for k, c in enumerate(line):
        depth += {"{": 1, "}": -1}.get(c, 0)
        if c == "=" and depth == 0:
            sides.append(line[start:k])
            start = k + 1
    return [*sides, line[start:]]


def _identities(math: str, qid: str) -> list[tuple[int, dict[str, int]]]:
    """The identities written: ``(line, lhs - rhs)``, a chain's first side with its last."""
    chains: list[tuple[int, list[str]]] = []
    math = re.sub(r"\\(?:begin|end)\{[a-z]+\*?\}", " ", math)
    for number, line in enumerate(re.split(r"\\\\|\n", math), 1):
        line = line.replace("&", "").strip()
        if not line:
            continue
        sides = _split(line)
        if line.startswith("=") and chains:
            chains[-1][1].extend(sides[1:])
        else:
            chains.append((number, sides))
    found = []
    for number, sides in chains:
        read = [s for s in (_side(_normal(x)) for x in sides) if s is not None]
        if len(read) >= 2 and any(k.startswith(("KL", "Σ")) for s in read for k in s):
            diff = dict(read[0])
            for k, v in read[-1].items():
                diff[k] = diff.get(k, 0) - v
            if qid == "2.2":  # p(z) is the p of the question (factorised over dimensions)
                diff = {k.replace("p(z)", "p"): v for k, v in diff.items()}
            found.append((number, {k: v for k, v in diff.items() if v}))
    return found


def _why(qid: str, diff: dict[str, int]) -> str:
    target = IDENTITIES[qid]
    if "KL(q || p(z))" in diff:
        return "its KL is to the prior p(z); the identity has the KL to the posterior p(z|x)"
    if any(k.startswith(("KL(p", "Σ_i KL(p")) for k in diff):
        return "the KL's arguments are swapped: KL(q ‖ p), q first"
    if "KL(q || p)" in diff and qid == "2.1":
        return "KL(q ‖ p): say which p; the identity has the posterior p(z|x)"
    if "KL(q_i || p_i)" in diff or "Σ_i KL(q || p)" in diff:
        return "the right-hand side is a sum over i of KL(q_i ‖ p_i), one per dimension"
    if set(diff) == set(target):
        return "a sign is wrong"
    missing = [k for k in target if k not in diff]
    if missing:
        return f"the term {missing[0]} is missing"
    return "it is not the question's identity"


def mark_identity(qid: str, math: str) -> tuple[str, list[str]]:
    """``(state, feedback)`` for the identity of question ``qid`` (2.1 or 2.2) in ``math``
    (the math of the answer): "correct", "incorrect" or "missing"."""
    target = IDENTITIES[qid]
    found = _identities(math, qid)
    if not found:
        return "missing", [f"the identity is not given (or not read): write it as "
                           f"{_SHOWN[qid]}"]
    for number, diff in found:
        if diff != target and diff != {k: -v for k, v in target.items()}:
            return "incorrect", [f"the identity in line {number} is wrong: "
                                 f"{_why(qid, diff)} ({_SHOWN[qid]})"]
    return "correct", ["the identity: correct"]
