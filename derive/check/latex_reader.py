r"""Reading a student's LaTeX safely: a whitelist normalizer, then SymPy's strict parser.

The text is cut into tokens and every token is checked against a whitelist *before*
anything parses it. Notation SymPy's ``parse_latex`` misreads is rewritten to what it
reads correctly (``\circ``, ``\odot``, ``\times`` become ``\cdot``; ``\mathcal{G}`` and
``\mathrm{e}`` become letters; ``x^a_b`` becomes ``x_b^a``; a bare ``\sum`` or ``\sum_i``
becomes ``\sum_{i=1}^{n}``; decimals become fractions; a letter that is not a function
name is never read as a function call); everything else is refused, naming the token.
The result is split into lines (``\\``, ``;``, ``\quad``, ``,``, ``align``) and sides
(``=``); a side may be a vector (``pmatrix``, ``bmatrix`` or a tuple). Each expression is
parsed with ``parse_latex(..., strict=True)`` and its *unevaluated* tree is inspected
(node types, size, depth, numbers, exponents, towers) before anything evaluates it.

Example:
    >>> line = read_answer(r"x_2 = y_2 \circ e^{-s}").lines[0]
    >>> line.sides
    ((x_{2},), (y_{2}/e**s,))
    >>> read_answer(r"\input{/etc/passwd}")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    derive.check.latex_reader.Unreadable: \input is not read: only arithmetic, ...
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sympy as sp

__all__ = ["Unreadable", "Line", "Document", "read_answer", "parse_expression", "LIMITS",
           "NOTATION"]

#: Hard limits on what is read at all (larger inputs are refused before any parsing).
LIMITS = {
    "characters": 4000,     # the whole answer
    "lines": 60,
    "expression_characters": 600,
    "nesting": 24,          # braces and brackets
    "nodes": 400,           # nodes of one parsed expression
    "depth": 40,            # depth of one parsed tree
    "digits": 12,           # digits of one number
    "exponent": 64,         # |numeric exponent|
    "tower": 2,             # exponentials nested in exponents
    "sum_depth": 2,         # nested sums/products
}

#: What the reader accepts, for ``derive check --help``.
NOTATION = r"""notation read:
  arithmetic + - * / ^, \frac{a}{b}, \sqrt{a}, parentheses and brackets, |a|;
  products written \cdot, \circ, \odot, \times, * or by juxtaposition (element-wise);
  \exp(a), e^{a}, \mathrm{e}^{a} (e is Euler's number); \log, \ln (natural logarithms);
  \tanh, \sinh, \cosh (\tanh^2(a) is tanh(a) squared);
  decimals (0.5), read exactly;
  \sum and \prod as \sum_{i=1}^{n}, \sum_i or bare \sum (read as i = 1..n); n, d/2, D/2;
  in \sum_i a_i + b_i the term b_i, which uses the index, belongs to the sum;
  Greek letters (\mu, \sigma, \epsilon, \varepsilon, \lambda, ...), subscripts in either
  order (\sigma^2_i = \sigma_i^2), \mathcal{F}, \mathrm{X}, \mathbf{x}, \boldsymbol{x};
  question 1: x_1, x_2, y_1, y_2, s (x_{1,i} for a component), F(x_2), F_i(x_2), G_i;
  in 1.1 also F(y_2 \odot e^{-s}): F at an argument that equals x2;
  question 2: \mu_i, \sigma_i, \epsilon_i and \lambda_i (= log sigma_i^2, --variant logvar);
  several equations separated by \\, ;, \quad or a comma; chains a = b \\ = c and
  align environments (&, \\); vectors as pmatrix, bmatrix or a tuple (a, b);
  left-hand sides (x_1 =, \det J =, \log|\det J| =, D_{KL}(q_i||p_i) =, \bar\mu_i =,
  \nabla_\theta =, \frac{\partial y_1}{\partial x_2} =) say which quantity is meant.
  Anything else (\input, \def, \text, \int, ...) is refused, naming what is refused."""


class Unreadable(ValueError):
    """The answer cannot be read; the message says what was refused, and where."""


_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi",
    "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega",
}
_GREEK_ALIASES = {"varepsilon": "epsilon", "vartheta": "theta", "varphi": "phi",
                  "varsigma": "sigma", "varrho": "rho"}
_PRODUCTS = {"cdot", "circ", "odot", "times", "ast", "bullet"}
_SPACES = {",", ";", ":", "!", " ", "enspace", "thinspace", "medspace", "thickspace"}
_SIZES = {"left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr",
          "biggl", "biggr", "Biggl", "Biggr", "middle", "displaystyle", "nonumber",
          "notag"}
_FUNCTIONS = {"exp", "log", "ln", "sqrt", "tanh", "sinh", "cosh"}
_FONTS = {"mathcal", "mathrm", "mathbf", "boldsymbol", "bm", "mathit", "mathsf",
          "operatorname", "mathnormal", "pmb"}
_ENV_VECTOR = {"pmatrix", "bmatrix", "matrix", "Bmatrix"}
_ENV_LINES = {"align", "align*", "aligned", "equation", "equation*", "split", "gather",
              "gather*", "gathered", "eqnarray", "eqnarray*", "multline", "multline*",
              "alignat", "alignat*", "flalign", "flalign*"}
#: Commands a left-hand side may use (it is matched, never parsed).
_LABEL_ONLY = {"det", "partial", "nabla", "bar", "overline", "hat", "tilde", "mathbb",
               "Vert", "|", "lVert", "rVert", "lvert", "rvert", "vert", "mid", "top",
               "intercal", "mathrm", "operatorname", "text", "mathsf", "mathcal"}
_UNICODE = {"σ": r"\sigma", "μ": r"\mu", "ε": r"\epsilon", "λ": r"\lambda", "θ": r"\theta",
            "∘": r"\circ", "⊙": r"\odot", "·": r"\cdot", "×": r"\times", "−": "-",
            "∑": r"\sum", "∏": r"\prod", "²": "^2", " ": " "}
_ALLOWED_CHARS = set("+-*/^_(){}[]|=,;&'.<>") | {"\\\\"}
_WRAPPERS = re.compile(r"\$\$|\$|\\\[|\\\]|\\\(|\\\)")
_TOKEN = re.compile(r"\\[A-Za-z]+\*?|\\\\|\\.|[A-Za-z]|\d+(?:\.\d+)?|\s+|.", re.S)

#: Letters read as function names when followed by ``(``; every other letter is a factor.
FUNCTION_LETTERS = {"F", "G", "J"}


@dataclass(frozen=True)
class Line:
    """One written line: an optional left-hand side (as text) and its sides.

    ``sides`` holds one entry per ``=``-separated part after the label; each entry is a
    tuple of unevaluated SymPy trees (one for a scalar, several for a vector). ``label``
    is ``None`` where the line has no left-hand side, ``""`` where it starts with ``=``.
    ``error`` says why a line was not read (only when read tolerantly).
    """

    number: int
    label: str | None
    sides: tuple[tuple[sp.Basic, ...], ...]
    text: str
    error: str = ""


@dataclass(frozen=True)
class Document:
    """The lines of an answer, in the order written."""

    lines: tuple[Line, ...]


# --------------------------------------------------------------------------- tokens


def _tokens(text: str) -> list[str]:
    for bad, good in _UNICODE.items():
        text = text.replace(bad, good)
    out = []
    for tok in _TOKEN.findall(text):
        if tok.isspace():
            out.append(" ")
        elif len(tok) == 1 and not (tok.isascii() and (tok.isalnum() or tok in _ALLOWED_CHARS)):
            if tok in "%#~":
                raise Unreadable(f"the character {tok!r} is not read (comments, macros and "
                                 "ties are refused)")
            raise Unreadable(f"the character {tok!r} (U+{ord(tok):04X}) is not read")
        else:
            out.append(tok)
    return out


def _group(toks: list[str], k: int) -> tuple[list[str], int]:
    """The brace group (or single token) starting at ``toks[k]``; returns it and the end."""
    while k < len(toks) and toks[k] == " ":
        k += 1
    if k >= len(toks):
        raise Unreadable("the answer ends where an argument is expected")
    if toks[k] != "{":
        return [toks[k]], k + 1
    depth, start = 0, k
    for m in range(k, len(toks)):
        depth += {"{": 1, "}": -1}.get(toks[m], 0)
        if depth == 0:
            return toks[start + 1:m], m + 1
    raise Unreadable("a brace { is never closed")


def _letters(group: list[str]) -> str:
    return "".join(t for t in group if t != " ")


def _check_nesting(toks: list[str]) -> None:
    depth = 0
    for t in toks:
        if t in ("{", "(", "["):
            depth += 1
            if depth > LIMITS["nesting"]:
                raise Unreadable(f"brackets nest deeper than {LIMITS['nesting']} levels")
        elif t in ("}", ")", "]"):
            depth -= 1


def _normalize(toks: list[str], label: bool = False) -> list[str]:
    """The whitelisted, rewritten tokens; raises :class:`Unreadable` naming a refused one."""
    out: list[str] = []
    k = 0
    while k < len(toks):
        t = toks[k]
        k += 1
        if not t.startswith("\\") or t == "\\\\":
            if t == "'" and not label:
                raise Unreadable("a prime ' is not read; write the derivative's name")
            if t in "<>!" and len(t) == 1:
                raise Unreadable(f"the character {t!r} is not read")
            if t == "." and not label:
                continue  # a full stop ends a sentence
            if re.fullmatch(r"\d+\.\d+", t):
                whole, frac = t.split(".")
                t = "{\\frac{" + (whole + frac).lstrip("0") + "}{1" + "0" * len(frac) + "}}"
                if len(whole + frac) > LIMITS["digits"]:
                    raise Unreadable(f"the number {toks[k - 1]} has too many digits")
            elif t.isdigit() and len(t) > LIMITS["digits"]:
                raise Unreadable(f"the number {t[:20]}... has more than {LIMITS['digits']} "
                                 "digits")
            out.append(t)
            continue
        name = t[1:]
        if name in _GREEK or name in _GREEK_ALIASES:
            out.append("\\" + _GREEK_ALIASES.get(name, name))
        elif name in _PRODUCTS:
            out.append("\\cdot")
        elif name == "oslash" and not label:
            out.append("/")  # element-wise division
        elif name in ("frac", "dfrac", "tfrac"):
            out.append("\\frac")
        elif name in _FUNCTIONS or name in ("sum", "prod", "begin", "end"):
            out.append(t)
        elif name in _SIZES or name in _SPACES:
            if name in _SPACES:
                out.append(" ")
        elif name == "pi" or name == "infty" and label:
            out.append(t)
        elif name in _FONTS:
            group, k = _group(toks, k)
            word = _letters(group)
            if word in ("exp", "log", "ln"):
                out.append("\\" + word)
            elif word == "diag" and not label:
                out += ["F", "_", "{", "d", "i", "a", "g", "}"]  # read back as diag
            elif len(word) == 1 and word.isalpha():
                out.append(word)
            elif word == "1" and not label and _transposed(toks, k):
                # \mathbf{1}^\top v is the sum of v's components
                _, k = _group(toks, _skip(toks, k) + 1)
                out.append("\\sum")
            elif word in ("0", "1"):
                out.append(word)  # \mathbf{0}: a zero block
            elif re.fullmatch(r"\\[A-Za-z]+", word) and word[1:] in _GREEK | set(_GREEK_ALIASES):
                out.append("\\" + _GREEK_ALIASES.get(word[1:], word[1:]))
            elif label and name in _LABEL_ONLY:
                out.append(word)
            else:
                raise Unreadable(f"\\{name}{{{word}}} is not read")
        elif label and (name in _LABEL_ONLY or name in ("infty", "to")):
            out.append(t)
        else:
            raise Unreadable(
                f"{t} is not read: only arithmetic, \\frac, \\exp, \\log, \\sum, \\prod and "
                "the notation of derive check --help are")
    return out


def _skip(toks: list[str], k: int) -> int:
    while k < len(toks) and toks[k] == " ":
        k += 1
    return k


def _transposed(toks: list[str], k: int) -> bool:
    r"""Whether ``toks[k:]`` starts with ``^\top`` (or ``^T``, ``^{\intercal}``, ...)."""
    k = _skip(toks, k)
    if k >= len(toks) or toks[k] != "^":
        return False
    group, _ = _group(toks, k + 1)
    return _letters(group) in ("\\top", "T", "\\intercal", "\\mathsf{T}", "\\mathrm{T}",
                               "\\mathsfT", "\\mathrmT")


def _reorder_scripts(toks: list[str]) -> list[str]:
    """``x^a_b`` to ``x_b^a`` (``parse_latex`` drops a subscript after a superscript)."""
    out = list(toks)
    k = 0
    while k < len(out):
        if out[k] == "^":
            sup, end = _group(out, k + 1)
            m = end
            while m < len(out) and out[m] == " ":
                m += 1
            if m < len(out) and out[m] == "_":
                sub, end2 = _group(out, m + 1)
                out[k:end2] = ["_", "{", *sub, "}", "^", "{", *sup, "}"]
                k += len(sub) + 3
                continue
        k += 1
    return out


def _subscripts(toks: list[str]) -> list[str]:
    """Subscripts as one word: ``x_{1,i}`` to ``x_{1i}`` (the parser refuses the comma)."""
    out = list(toks)
    k = 0
    while k < len(out):
        if out[k] == "_":
            group, end = _group(out, k + 1)
            word = [t for t in group if t not in (",", " ")]
            if word and all(re.fullmatch(r"[A-Za-z0-9]+|\\[A-Za-z]+", t) for t in word):
                out[k + 1:end] = ["{", *word, "}"]
                k += len(word) + 2
                continue
        k += 1
    return out


def _limits(toks: list[str]) -> list[str]:
    r"""``\sum_i`` and a bare ``\sum`` to ``\sum_{i=1}^{n}``; ``\sum_{i}^{n}`` keeps n."""
    out: list[str] = []
    k = 0
    while k < len(toks):
        t = toks[k]
        out.append(t)
        k += 1
        if t not in ("\\sum", "\\prod"):
            continue
        m = k
        while m < len(toks) and toks[m] == " ":
            m += 1
        lower: list[str] | None = None
        upper: list[str] | None = None
        for _ in range(2):
            if m < len(toks) and toks[m] in ("_", "^"):
                which = toks[m]
                group, m = _group(toks, m + 1)
                if which == "_":
                    lower = group
                else:
                    upper = group
                while m < len(toks) and toks[m] == " ":
                    m += 1
        if lower is None:
            lower = ["i"]
        if "=" not in lower:
            var = [t for t in lower if t != " "]
            if len(var) != 1 or not var[0].isalpha():
                raise Unreadable(f"the index of a sum, {''.join(lower)}, is not one letter")
            lower = [var[0], "=", "1"]
        if upper is None:
            upper = ["n"]
        out += ["_", "{", *lower, "}", "^", "{", *upper, "}", " "]
        k = m
    return out


def _no_calls(toks: list[str]) -> list[str]:
    """A letter (with scripts) before ``(`` is a factor unless it names a function."""
    out: list[str] = []
    k = 0
    while k < len(toks):
        t = toks[k]
        out.append(t)
        k += 1
        is_atom = (len(t) == 1 and t.isalpha()) or (t.startswith("\\") and t[1:] in _GREEK)
        if not is_atom or (out[-2:-1] and out[-2] in ("_", "^")):
            continue
        m = k
        scripts: list[str] = []
        while m < len(toks) and toks[m] in ("_", "^"):
            group, end = _group(toks, m + 1)
            scripts += [toks[m], "{", *group, "}"]
            m = end
        n = m
        while n < len(toks) and toks[n] == " ":
            n += 1
        if n < len(toks) and toks[n] in ("(", "[") and t not in FUNCTION_LETTERS:
            out += scripts + ["\\cdot"]
            k = m
        elif scripts:
            out += scripts
            k = m
    return out


# --------------------------------------------------------------------------- structure


def _split_top(toks: list[str], seps: set[str], brackets: bool = True) -> list[list[str]]:
    """Split at separators outside any braces, environments (and brackets, by default)."""
    opening = ("{", "(", "[", "\\begin") if brackets else ("{", "\\begin")
    closing = ("}", ")", "]", "\\end") if brackets else ("}", "\\end")
    parts: list[list[str]] = [[]]
    depth = 0
    for t in toks:
        if t in opening:
            depth += 1
        elif t in closing:
            depth -= 1
        if depth == 0 and t in seps:
            parts.append([])
        else:
            parts[-1].append(t)
    return parts


def _environments(toks: list[str]) -> list[str]:
    r"""Drop line environments; keep vector environments as ``\begin ... \end`` markers."""
    out: list[str] = []
    k = 0
    while k < len(toks):
        t = toks[k]
        k += 1
        if t in ("\\begin", "\\end"):
            group, k = _group(toks, k)
            env = _letters(group)
            if env in _ENV_LINES:
                if env.startswith("alignat") and t == "\\begin":
                    _, k = _group(toks, k)  # the column count
                out.append("\\\\")
                continue
            if env in _ENV_VECTOR:
                out.append(t)
                continue
            raise Unreadable(f"the environment {env!r} is not read")
        out.append(t)
    return out


def _strip(toks: list[str]) -> list[str]:
    while toks and toks[0] == " ":
        toks = toks[1:]
    while toks and toks[-1] in (" ", ".", ","):
        toks = toks[:-1]
    return toks


def _vector(toks: list[str]) -> list[list[str]] | None:
    """The components of a side written as a vector, or ``None`` for a scalar."""
    toks = _strip(toks)
    if toks[:1] == ["\\begin"] and toks[-1:] == ["\\end"]:
        rows = _split_top(toks[1:-1], {"\\\\", "&"})
        return [r for r in (_strip(r) for r in rows) if r]
    if toks[:1] in (["("], ["["]) and toks[-1:] in ([")"], ["]"]):
        inner = toks[1:-1]
        if not _closes_early(inner):
            parts = _split_top(inner, {","})
            if len(parts) > 1:
                return [_strip(p) for p in parts]
    return None


def _closes_early(inner: list[str]) -> bool:
    depth = 0
    for t in inner:
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(t, 0)
        if depth < 0:
            return True
    return False


def _lines(toks: list[str]) -> Iterator[list[str]]:
    # A line ends at \\ even where a bracket is left open (parentheses never span lines).
    for line in _split_top(toks, {"\\\\", ";", "\\quad", "\\qquad"}, brackets=False):
        for part in _split_top(line, {","}):
            part = [t for piece in _split_top(_strip(part), {"&"}) for t in piece]
            if part:
                yield part


# --------------------------------------------------------------------------- parsing

_ALLOWED_NODES: tuple[type, ...] = (
    sp.Add, sp.Mul, sp.Pow, sp.Symbol, sp.Integer, sp.Rational, sp.exp, sp.log, sp.Abs,
    sp.tanh, sp.sinh, sp.cosh,
    sp.Sum, sp.Product, sp.Tuple, sp.Eq, sp.core.function.AppliedUndef,
    sp.core.numbers.Exp1, sp.core.numbers.Pi, sp.core.numbers.NegativeOne,
    sp.core.numbers.One, sp.core.numbers.Zero, sp.core.numbers.Half,
)


def _inspect(tree: sp.Basic, text: str) -> None:
    """Refuse a parsed tree that is too large or could make evaluation explode.

    Walks the tree as parsed, without evaluating any of it.
    """
    count = 0

    def walk(e: sp.Basic, depth: int, sums: int) -> int:
        """The exponential height of ``e`` (0: no exponentials)."""
        nonlocal count
        count += 1
        if count > LIMITS["nodes"]:
            raise Unreadable(f"{text[:40]}...: more than {LIMITS['nodes']} terms and factors")
        if depth > LIMITS["depth"]:
            raise Unreadable(f"{text[:40]}...: nested deeper than {LIMITS['depth']} levels")
        if not isinstance(e, _ALLOWED_NODES):
            raise Unreadable(f"{_describe(e)} is not read (in {text[:60]})")
        if isinstance(e, sp.Integer) and abs(int(e)) > 10 ** LIMITS["digits"]:
            raise Unreadable(f"the number in {text[:60]} is too large")
        if isinstance(e, (sp.Sum, sp.Product)):
            sums += 1
            if sums > LIMITS["sum_depth"]:
                raise Unreadable(f"sums nest deeper than {LIMITS['sum_depth']} levels")
            for lim in e.args[1:]:
                for bound in lim.args[1:]:
                    if bound.free_symbols - {sp.Symbol(c) for c in "ndD"}:
                        raise Unreadable(f"the limit {bound} of a sum is not n, d/2 or a "
                                         "number")
                    if any(isinstance(a, sp.Integer) and abs(int(a)) > 20
                           for a in sp.preorder_traversal(bound)):
                        raise Unreadable("a sum's limits are at most 20 (or n)")
        heights = [walk(a, depth + 1, sums) for a in e.args]
        height = max(heights, default=0)
        if isinstance(e, sp.Pow):
            base, expo = e.args
            if expo.is_Number:
                if abs(expo) > LIMITS["exponent"]:
                    raise Unreadable(f"the exponent {expo} is larger than "
                                     f"{LIMITS['exponent']}")
                if abs(_power_of(e)) > LIMITS["exponent"] ** 2:
                    raise Unreadable(f"powers of powers in {text[:40]} exceed the exponent "
                                     f"{LIMITS['exponent'] ** 2}")
            elif not (base.is_Symbol and str(base) == "e"):
                height = max(heights[0], heights[1] + 1)
            else:
                height = heights[1] + 1
            if isinstance(expo, sp.Pow) and expo.args[0].is_Number and base.is_Number:
                raise Unreadable(f"the power tower {text[:40]} is not read")
        elif isinstance(e, (sp.exp, sp.sinh, sp.cosh)):  # each grows like an exponential
            height += 1
        if height > LIMITS["tower"]:
            raise Unreadable(f"exponentials nest more than {LIMITS['tower']} levels deep")
        return height

    walk(tree, 0, 0)


def _power_of(e: sp.Basic) -> sp.Rational:
    """The product of the numeric exponents of ``((b^p)^q)^r``, read without evaluating."""
    total = sp.Integer(1)
    while isinstance(e, sp.Pow) and e.args[1].is_Number:
        total, e = total * abs(e.args[1]), e.args[0]
        while isinstance(e, (sp.Mul, sp.Add)) and len(e.args) == 1:
            e = e.args[0]
    return total


def _describe(e: sp.Basic) -> str:
    names = {"Derivative": "a derivative", "Integral": "an integral", "Limit": "a limit",
             "factorial": "a factorial", "conjugate": r"\overline (conjugate)",
             "Float": "a floating-point number"}
    kind = type(e).__name__
    if kind in ("Infinity", "NegativeInfinity", "ComplexInfinity"):
        return r"\infty"
    return names.get(kind, f"the function {kind}" if isinstance(e, sp.Function) else kind)


def parse_expression(toks: list[str]) -> sp.Basic:
    """One expression's tokens, parsed strictly and inspected (never evaluated)."""
    from sympy.parsing.latex import LaTeXParsingError, parse_latex

    text = "".join(toks).strip()
    if not text:
        raise Unreadable("an empty expression")
    if len(text) > LIMITS["expression_characters"]:
        raise Unreadable(f"one expression is longer than {LIMITS['expression_characters']} "
                         "characters")
    _check_nesting(toks)
    if text.count("\\sum") + text.count("\\prod") > 8:
        raise Unreadable("more than 8 sums and products in one expression")
    try:
        tree = parse_latex(text, strict=True)
    except LaTeXParsingError as err:
        first = str(err).splitlines()[0] if str(err) else "not LaTeX"
        raise Unreadable(f"cannot parse {text!r}: {first}") from None
    except (RecursionError, ValueError, TypeError, AttributeError, SyntaxError) as err:
        raise Unreadable(f"cannot parse {text!r} ({type(err).__name__})") from None
    if not isinstance(tree, sp.Basic):
        raise Unreadable(f"cannot parse {text!r}")
    _inspect(tree, text)
    return tree


def _parse_side(toks: list[str]) -> tuple[sp.Basic, ...]:
    vec = _vector(toks)
    parts = vec if vec is not None else [toks]
    return tuple(parse_expression(_no_calls(_limits(p))) for p in parts)


def read_answer(text: str, is_label: Callable[[str], bool | None] | None = None,
                tolerant: bool = False) -> Document:
    r"""Read an answer into lines of parsed, inspected expressions.

    Arguments:
        text: the LaTeX of the answer.
        is_label: decides whether the text before the first ``=`` of a line names a
            quantity (then it is kept as text, never parsed); by default a side that does
            not parse as an expression is a label.
        tolerant: a line that cannot be read becomes a :class:`Line` with an ``error``
            instead of failing the whole answer (limits on the whole answer still raise).
    """
    if len(text) > LIMITS["characters"]:
        raise Unreadable(f"the answer has {len(text)} characters; at most "
                         f"{LIMITS['characters']} are read")
    text = _WRAPPERS.sub(" ", text)
    toks = _environments(_tokens(text))
    _check_nesting(toks)
    raw_lines = list(_lines(toks))
    if not raw_lines:
        raise Unreadable("the answer is empty")
    if len(raw_lines) > LIMITS["lines"]:
        raise Unreadable(f"the answer has more than {LIMITS['lines']} lines")
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = _read_line(number, raw, is_label)
        except Unreadable as err:
            label = "" if _strip(raw)[:1] == ["="] else None
            line = Line(number, label, (), "".join(raw).strip(), str(err))
        if line.error and not tolerant:
            raise Unreadable(line.error)
        lines.append(line)
    return Document(tuple(lines))


def _read_line(number: int, raw: list[str], is_label: Callable[[str], bool | None] | None
               ) -> Line:
    parts = [_strip(p) for p in _split_top(raw, {"="})]
    label: str | None = None
    if len(parts) > 1:
        head = parts[0]
        if not head:
            label = ""
            parts = parts[1:]
        else:
            head_text = "".join(head).strip()
            labelled = is_label(head_text) if is_label else None
            if labelled is None:
                try:
                    _parse_side(_scripts(_normalize(head)))
                    labelled = False
                except Unreadable:
                    labelled = True
            if labelled:
                _normalize(head, label=True)
                label = head_text
                parts = parts[1:]
    sides = []
    try:
        for part in parts:
            if not part:
                raise Unreadable(f"line {number} has an empty side of '='")
            sides.append(_parse_side(_scripts(_normalize(part))))
    except Unreadable as err:
        return Line(number, label, (), "".join(raw).strip(), str(err))
    return Line(number, label, tuple(sides), "".join(raw).strip())


def _scripts(toks: list[str]) -> list[str]:
    return _subscripts(_reorder_scripts(toks))


def label_tokens(label: str) -> str:
    """A label's whitelisted tokens as one compact string (for matching)."""
    return "".join(t for t in _normalize(_tokens(label), label=True) if t != " ")
