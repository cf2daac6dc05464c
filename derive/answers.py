r"""What a question's answer gives, for ``derive check``: the quantities and how they read.

A question says how its answers are read by giving :attr:`~derive.material.Question.answers`,
a function of the variant that returns :class:`Answers`: the quantities an answer must
give (``x1`` and ``x2`` for 1.1), each with the derived expressions it may equal
(:class:`Quantity`, taken from the question's derivation and never typed in), the
patterns of left-hand sides that name them, and the symbols an answer may write. The
answer checker (:mod:`derive.check`) reads these values and nothing else of a question;
the material defines them (the coursework's are in ``derive/coursework/answers.py``).

Example:
    >>> import sympy as sp
    >>> a = sp.Symbol("a", positive=True)
    >>> kl = Quantity("kl", "KL", (a**2 / 2,))
    >>> spec = Answers("9.1", "", (kl,), (), ((r"KL.*", ("kl",)),), index_form=False,
    ...                symbols={"a": a})
    >>> [q.name for q in spec.quantities], spec.symbols["a"]
    (['kl'], a)
    >>> DIAG(a) * IDENTITY
    diag(a)*I
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

__all__ = ["Quantity", "Answers", "DIAG", "IDENTITY"]

#: ``diag(v)``, kept in the order written (matrix products do not commute).
DIAG = sp.Function("diag", commutative=False)
#: The identity matrix, as an answer writes it (``I``).
IDENTITY = sp.Symbol("I", commutative=False)


@dataclass(frozen=True)
class Quantity:
    """One thing an answer gives: its name, how it is shown, what it may equal.

    ``references`` are the derived expressions an answer may equal (an estimator and its
    expectation, say); ``kinds`` names each ("the estimate", ...), for feedback.
    """

    name: str
    display: str
    references: tuple[sp.Expr, ...]
    kinds: tuple[str, ...] = ()
    matrix: bool = False
    #: The part of the marking scheme it scores for (default: its name).
    part: str = ""


@dataclass(frozen=True)
class Answers:
    """What question ``qid`` (in ``variant``) asks for and how its answers are read.

    Arguments:
        quantities: what an answer must give, in order.
        alternates: quantities an answer may give instead (scored for their ``part``).
        labels: ``(pattern, names)``: a left-hand side matching ``pattern`` (in the
            reader's compact token form) names the quantities ``names``.
        index_form: the answer is in index notation (``x_{1,i}``, sums over ``i``).
        symbols: the symbols an answer may write, by how it writes them.
        substitutions: applied to a read answer (``sigma`` in terms of ``logvar``).
        x2: ``x2`` in terms of the outputs, where ``F(x2)`` may be written ``F`` of it.
        condition: 1.3: where the block preserves volume (``expr = 0``), or True/False.
        identity: the result is an identity between KL divergences (2.1, 2.2).
    """

    qid: str
    variant: str
    quantities: tuple[Quantity, ...]
    alternates: tuple[Quantity, ...]
    labels: tuple[tuple[str, tuple[str, ...]], ...]
    index_form: bool
    symbols: dict[str, sp.Basic] = field(default_factory=dict)
    substitutions: dict[sp.Symbol, sp.Expr] = field(default_factory=dict)
    x2: sp.Expr | None = None
    condition: sp.Expr | bool | None = None
    identity: bool = False
