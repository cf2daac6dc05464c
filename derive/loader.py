r"""Where the engine gets its material: one loader, by module name or entry point.

The engine (the command line, the files it writes, the documents, the notebook, the
answer checker) never imports a material package: it asks :func:`current` for the
:class:`~derive.material.Material` in use. That is the shipped coursework
(:data:`DEFAULT`, the module ``derive.coursework``) unless the command line's
``--material MODULE`` options chose others (:func:`use` with :func:`load`). A module is
material when it exposes ``MATERIAL``, a :class:`derive.api.Material`; an installed package
may also register one under a name in the entry-point group ``derive.material``
(:data:`ENTRY_POINTS`), and ``--material NAME`` then loads that entry point. Several
materials combine; two that define the same name are refused in one line
(:meth:`~derive.material.Material.combine`).

The registry functions below (:func:`build`, :func:`resolve`, :func:`marking`, ...) are
those of :mod:`derive.material` with the current material's questions as the default.

Example:
    >>> sorted(current().questions)[:3]
    ['1.1', '1.2', '1.3']
    >>> build("1.3", "coupling_additive").result("log_abs_det")
    0
    >>> load(["nosuch"])
    Traceback (most recent call last):
    ...
    derive.material.MaterialError: --material nosuch: cannot import it (No module named 'nosuch')
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from .cache import material_files, use_material
from .derivation import Derivation
from .material import Mark, Material, MaterialError, Question, UnknownQuestionError
from .material import all_derivations as _all_derivations
from .material import build as _build
from .material import kernel_modules as _kernel_modules
from .material import marking as _marking
from .material import resolve as _resolve
from .spec import Module

__all__ = ["DEFAULT", "ENTRY_POINTS", "load", "load_one", "use", "current", "is_default",
           "build", "resolve", "marking", "all_derivations", "kernel_modules",
           "UnknownQuestionError", "MaterialError"]

#: The material the engine uses when none is named: the shipped coursework.
DEFAULT: tuple[str, ...] = ("derive.coursework",)
#: The entry-point group under which installed packages register material.
ENTRY_POINTS = "derive.material"

_current: Material | None = None
_names: tuple[str, ...] = DEFAULT
#: The file of each material module loaded, by the name it was given as.
_files: dict[str, str | None] = {}


def _entry_point(name: str) -> object | None:
    """The entry point ``name`` of the group :data:`ENTRY_POINTS`, if one is installed."""
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=ENTRY_POINTS) if ep.name == name]
    return found[0] if found else None


def load_one(name: str) -> Material:
    """The ``MATERIAL`` of module ``name`` (or of the installed entry point so named).

    Raises :class:`MaterialError`, in one line, when it cannot be imported, has no
    ``MATERIAL``, or that is not a :class:`~derive.material.Material`."""
    label = f"--material {name}"
    entry = _entry_point(name) if name not in DEFAULT else None
    try:
        value = entry.load() if entry is not None else importlib.import_module(name)
    except Exception as err:  # any failure to import it is the material's, said in one line
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MaterialError(f"{label}: cannot import it ({reason})") from None
    module = entry.module if entry is not None else name
    _files[name] = getattr(sys.modules.get(module), "__file__", None)
    material = value if isinstance(value, Material) else getattr(value, "MATERIAL", None)
    if material is None:
        raise MaterialError(f"{label}: the module has no MATERIAL (expected a "
                            "derive.api.Material named MATERIAL)")
    if not isinstance(material, Material):
        raise MaterialError(f"{label}: MATERIAL is a {type(material).__name__}, expected a "
                            "derive.api.Material")
    return material


def load(names: Iterable[str] = DEFAULT) -> Material:
    """The materials of modules ``names``, combined (default: the coursework); a name given
    twice is refused, as are two materials defining one name (:class:`MaterialError`)."""
    names = tuple(names) or DEFAULT
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise MaterialError(f"--material {twice[0]}: given more than once")
    material = Material.combine([load_one(name) for name in names])
    for q in material.questions.values():
        if not q.variants:  # one over a kind no loaded material brings
            raise MaterialError(f"question {q.qid} ranges over {q.over}, and no material "
                                f"given brings any (loaded: {', '.join(names)})")
    return material


def use(names: Iterable[str], only: Iterable[str] = (), empty: bool = False) -> Material:
    """Load ``names`` (:func:`load`) and make them the engine's material for this process;
    with ``only`` (some of ``names``), cut to what those bring (:meth:`Material.only`;
    ``empty``: a cut with no question is no error)."""
    global _current, _names
    material = load(names)
    only = tuple(only)
    if only:
        material = material.only([load_one(name) for name in only], empty=empty)
    _current, _names = material, tuple(names) or DEFAULT
    # another material's derivations depend on its own files: the cache's keys hold them
    use_material(() if _names == DEFAULT else
                 tuple(f for name in _names for f in material_files(_files.get(name))))
    return material


def current() -> Material:
    """The material in use: what :func:`use` chose, by default the coursework."""
    global _current
    if _current is None:
        _current = load(_names)
    return _current


def material_paths() -> tuple[Path, ...]:
    """Where the code of the materials in use (other than the default) lives: a package's
    folder, or a module's file; installed ones (site-packages, an entry point) included.

    >>> material_paths() if is_default() else ()
    ()
    """
    out = []
    for name in _names:
        file = _files.get(name)
        if name in DEFAULT or not file:
            continue
        path = Path(file).resolve()
        out.append(path.parent if path.name == "__init__.py" else path)
    return tuple(out)


def is_default() -> bool:
    """Whether the material in use is the default (the shipped coursework)."""
    return _names == DEFAULT


def _questions(questions: Mapping[str, Question] | None) -> Mapping[str, Question]:
    return current().questions if questions is None else questions


def build(qid: str, variant: str | None = None,
          questions: Mapping[str, Question] | None = None) -> Derivation:
    """:func:`derive.material.build` over the current material's questions by default."""
    return _build(qid, variant, questions=_questions(questions))


def resolve(qid: str, variant: str | None = None,
            questions: Mapping[str, Question] | None = None) -> tuple[Question, str]:
    """:func:`derive.material.resolve` over the current material's questions by default."""
    return _resolve(qid, variant, questions=_questions(questions))


def marking(qid: str, questions: Mapping[str, Question] | None = None,
            derivation: Derivation | None = None) -> list[Mark]:
    """:func:`derive.material.marking` over the current material's questions by default.

    Example:
        >>> [(m.kind, m.key, m.points) for m in marking("1.1")]
        [('step', '1', 1), ('step', '2', 1), ('result', 'x2', 2), ('result', 'x1', 3)]
    """
    return _marking(qid, _questions(questions), derivation)


def all_derivations(questions: Mapping[str, Question] | None = None) -> list[Derivation]:
    """Every question in every variant, in a fixed order (:mod:`derive.material`)."""
    return _all_derivations(_questions(questions))


def kernel_modules(questions: Mapping[str, Question] | None = None) -> list[Module]:
    """The kernel module of every question that produces one, per variant, in order."""
    return _kernel_modules(_questions(questions))
