r"""How ``derive check`` reads answers to the coursework's questions: each question's
:class:`~derive.api.Answers` (what an answer gives, the derived expressions it may equal,
the left-hand sides that name them, the symbols it may write), registered with the
question (:attr:`~derive.api.Question.answers`, ``questions.py``).

Example:
    >>> from derive.api import build
    >>> from derive.coursework.questions import QUESTIONS
    >>> from derive.coursework.gaussian_kl import PARAMETERIZATIONS
    >>> sigma = PARAMETERIZATIONS["sigma"]
    >>> spec = answers_23(sigma, build("2.3", "sigma", questions=QUESTIONS))
    >>> [q.name for q in spec.quantities], spec.quantities[0].references
    (['kl'], (mu**2/2 + sigma**2/2 - log(sigma) - 1/2,))
"""

from __future__ import annotations

import sympy as sp

from derive.api import (
    DIAG,
    IDENTITY,
    JF,
    JG,
    Y1,
    Y2,
    Answers,
    Derivation,
    F,
    G,
    Quantity,
    n,
    s,
    x1,
    x2,
)

from .gaussian_kl import Parameterization

__all__ = ["answers_11", "answers_12", "answers_13", "answers_identity", "answers_23",
           "answers_24"]

X1, X2, S, FB, GB, JFB, JGB = x1.base, x2.base, s.base, F.base, G.base, JF.base, JG.base

_X = r"(?:\\mathbf|\\boldsymbol|\\bm)?\{?x\}?_\{?"
_Y = r"\{?y\}?_\{?"


def answers_11(variant: str, d: Derivation) -> Answers:
    """Question 1.1's answers, for ``variant`` (``d``: its derivation)."""
    quantities = (Quantity("x1", "x1", (d.result("x1"),)),
                  Quantity("x2", "x2", (d.result("x2"),)))
    labels = (
        (_X + r"1(?:,?[ik])?\}?(?:\(y\))?", ("x1",)),
        (_X + r"2(?:,?[ik])?\}?(?:\(y\))?", ("x2",)),
        (r"\(" + _X + r"1\}?," + _X + r"2\}?\)", ("x1", "x2")),
        (r"\(" + _X + r"2\}?," + _X + r"1\}?\)", ("x2", "x1")),
        (r"\\begin" + _X + r"1\}?\\\\" + _X + r"2\}?\\end", ("x1", "x2")),
        (r"\\begin" + _X + r"2\}?\\\\" + _X + r"1\}?\\end", ("x2", "x1")),
    )
    return Answers("1.1", variant, quantities, (), labels, index_form=True,
                   symbols={"x_1": X1, "x_2": X2, "y_1": Y1, "y_2": Y2, "s": S,
                            "F(x_2)": FB, "G(x_2)": GB}, x2=d.result("x2"))


def answers_12(variant: str, d: Derivation) -> Answers:
    """Question 1.2's answers, for ``variant`` (``d``: its derivation)."""
    names = [("y1", "x1"), ("y1", "x2"), ("y2", "x1"), ("y2", "x2")]
    quantities = tuple(
        Quantity(f"d{a}_d{b}", f"d{a}/d{b}", (d.result(f"d{a}_d{b}"),), matrix=True)
        for a, b in names)
    alternates = (Quantity("dy1_dx2_elementwise", "dy1/dx2 (F, G element-wise)",
                           (d.result("dy1_dx2_elementwise"),), matrix=True,
                           part="dy1_dx2"),)
    def part(v: str) -> str:
        return r"\\partial\{?" + v + r"\}?"

    labels = tuple(
        ((r"\\frac\{?" + part(_Y + a[1] + r"\}?") + r"\}?\{?"
          + part(_X + b[1] + r"\}?") + r"\}?"), (f"d{a}_d{b}",))
        for a, b in names)
    labels += tuple((rf"J_\{{?{a[1]}{b[1]}\}}?", (f"d{a}_d{b}",)) for a, b in names)
    labels += ((r"J|\\frac\{?\\partialy\}?\{?\\partialx\}?",
                tuple(f"d{a}_d{b}" for a, b in names)),)
    return Answers("1.2", variant, quantities, alternates, labels, index_form=True,
                   symbols={"x_1": X1, "x_2": X2, "s": S, "F(x_2)": FB, "G(x_2)": GB,
                            "J_F(x_2)": JFB, "J_G(x_2)": JGB, "diag": DIAG, "I": IDENTITY})


def answers_13(variant: str, d: Derivation) -> Answers:
    """Question 1.3's answers, for ``variant`` (``d``: its derivation)."""
    det = Quantity("det", "det J", (d.result("det"),))
    log_det = Quantity("log_abs_det", "log|det J|", (d.result("log_abs_det"),), part="det")
    jac = r"(?:J|\\frac\{?\\partialy\}?\{?\\partialx\}?|\(J\)|\(\\frac.*\))"
    labels = (
        (r"(?:\\log|\\ln)\(?(?:\||\\left\||\\vert|\\lvert)?(?:\\det" + jac + r"|\|" + jac
         + r"\|)(?:\||\\vert|\\rvert)?\)?", ("log_abs_det",)),
        (r"\\det" + jac + r"|\|" + jac + r"\||\\det|\|\\det" + jac + r"\|", ("det",)),
    )
    volume = d.result("volume_condition")
    if volume in (sp.true, sp.false) or isinstance(volume, bool):
        condition: sp.Expr | bool = bool(volume)
    else:
        condition = volume.lhs - volume.rhs
    return Answers("1.3", variant, (det,), (log_det,), labels, index_form=True,
                   symbols={"s_i": S, "G_i(x_2)": GB, "n": n, "d": 2 * n},
                   condition=condition)


def answers_identity(variant: str, d: Derivation) -> Answers:
    """2.1 and 2.2: one result, the identity, marked by the checker's identities."""
    name = d.results[0].name  # "identity" (2.1), "decomposition" (2.2)
    display = "the identity"
    return Answers(d.qid, variant, (Quantity(name, display, (d.result(name),)),), (),
                   (), index_form=False, identity=True)


def _kl_symbols(expr: sp.Basic) -> dict[str, sp.Basic]:
    by_name = {str(s): s for s in expr.free_symbols}
    names = {"mu": "mu", "sigma": "sigma", "lambda": "logvar", "epsilon": "eps"}
    return {written: by_name[engine] for written, engine in names.items()
            if engine in by_name}


def _own_scale(param: Parameterization, symbols: dict[str, sp.Basic]) -> None:
    """A scale that none of the names above reads (another material's parameterization's,
    ``rho``) may be written by its own name, where that is a name a reader can write (a
    Greek letter or a word: ``\\rho_i``, ``\\tau``)."""
    if param.scale not in symbols.values() and param.scale.name.isalpha():
        symbols.setdefault(param.scale.name, param.scale)


def _sigma_substitution(param: Parameterization, symbols: dict[str, sp.Basic]) -> dict:
    """Under the logvar variant an answer may still use sigma = exp(logvar / 2)."""
    if param.scale.name == "sigma":
        return {}
    sigma = sp.Symbol("sigma", positive=True)
    symbols["sigma"] = sigma
    return {sigma: param.sigma}


def _sample(param: Parameterization, symbols: dict[str, sp.Basic], subs: dict) -> None:
    """The question's sample ``z_i = mu_i + sigma_i eps_i`` may be written by its name."""
    if not {"mu", "epsilon"} <= set(symbols):
        return
    z = sp.Symbol("z", real=True)
    symbols["z"] = z
    subs[z] = symbols["mu"] + param.sigma * symbols["epsilon"]


def answers_23(p: Parameterization, d: Derivation) -> Answers:
    """Question 2.3's answers, in parameterization ``p`` (``d``: its derivation)."""
    kl = d.result("kl")
    symbols = _kl_symbols(kl)
    _own_scale(p, symbols)
    subs = _sigma_substitution(p, symbols)
    labels = ((r"(?:D_\{?KL\}?|KL|D|\\mathrm\{?KL\}?|KL_\{?i\}?).*", ("kl",)),)
    return Answers("2.3", d.variant, (Quantity("kl", "KL_i", (kl,)),), (), labels,
                   index_form=False, symbols=symbols, substitutions=subs)


def answers_24(p: Parameterization, d: Derivation) -> Answers:
    """Question 2.4's answers, in parameterization ``p`` (``d``: its derivation)."""
    names = [r.name for r in d.results if r.name.startswith("grad_")]
    quantities = []
    every: dict[str, sp.Basic] = {}
    for name in names:
        estimate = d.result(name)
        # the step "its expectation is the exact gradient": the expectation of the
        # estimate, written as is or as its adjoint symbol given the estimate
        expected = [st.rhs for st in d.steps
                    if getattr(st.lhs, "args", ()) and type(st.lhs).__name__ == "Expectation"
                    and (st.lhs.args[0] == estimate
                         or dict(st.given).get(st.lhs.args[0]) == estimate)]
        refs = (estimate, *expected[:1])
        kinds = ("the one-sample estimate", "its expectation, the exact gradient")[:len(refs)]
        par = name.removeprefix("grad_")
        quantities.append(Quantity(name, f"d KL / d {par}", refs, kinds))
        for r in refs:
            every.update(_kl_symbols(r))
    _own_scale(p, every)
    subs = _sigma_substitution(p, every)
    _sample(p, every, subs)
    pars = [name.removeprefix("grad_") for name in names]
    written = {"mu": r"\\mu", "sigma": r"\\sigma", "logvar": r"\\lambda"}
    labels = []
    for name, par in zip(names, pars, strict=True):
        p = written.get(par, par)
        labels.append((r"(?:\\bar|\\overline)\{?" + p + r"(?:_\{?i\}?)?\}?(?:_\{?i\}?)?",
                       (name,)))
        labels.append((r"(?:\\nabla_\{?" + p + r"(?:_\{?i\}?)?\}?|\\frac\{?\\partial.*\}?\{?"
                       r"\\partial" + p + r"(?:_\{?i\}?)?\}?).*", (name,)))
    labels.append((r"(?:\\nabla|\\hat|\\bar|g|\\overline).*", tuple(names)))
    return Answers("2.4", d.variant, tuple(quantities), (), tuple(labels),
                   index_form=False, symbols=every, substitutions=subs)


