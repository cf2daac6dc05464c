r"""The one jinja2 environment every renderer uses, built once.

Example:
    >>> environment().get_template("module.py.jinja").name
    'module.py.jinja'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

import jinja2

__all__ = ["environment", "tex_escape", "one_line", "fill", "PLACEHOLDER"]


@cache
def environment() -> jinja2.Environment:
    """The template environment: strict about undefined names, no stray whitespace."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("codegen", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["tex"] = tex_escape
    env.filters["one_line"] = one_line
    return env


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    r"""Plain text made safe for LaTeX.

    Example:
        >>> tex_escape("x_1 & 50%")
        'x\\_1 \\& 50\\%'
    """
    return "".join(_TEX_SPECIAL.get(c, c) for c in text)


def one_line(text: str) -> str:
    r"""Text made safe for a one-line comment: control characters, line separators and
    undecodable bytes are written as escapes, so nothing can end the comment.

    Example:
        >>> print(one_line("a\nb\x00c"))
        a\nb\x00c
    """
    return "".join(c if c.isprintable() or c == " " else ascii(c)[1:-1] for c in text)


#: A placeholder in prose: ``{0}`` (a step's note) or ``{name}`` (a derivation's result).
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def fill(template: str, math: Callable[[str], str], escape: Callable[[str], str] = str) -> str:
    """Fill ``{0}`` / ``{name}`` placeholders with ``math(key)``, escaping the prose between.

    Example:
        >>> fill("see {0} and {kl}", lambda k: f"<{k}>", str.upper)
        'SEE <0> AND <kl>'
    """
    parts = PLACEHOLDER.split(template)
    return "".join(escape(part) if k % 2 == 0 else math(part) for k, part in enumerate(parts))
