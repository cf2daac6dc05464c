r"""The one jinja2 environment every renderer uses, built once.

Example:
    >>> environment().get_template("module.py.jinja").name
    'module.py.jinja'
"""

from __future__ import annotations

from functools import cache

import jinja2

__all__ = ["environment"]


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
