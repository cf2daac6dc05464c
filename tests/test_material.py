"""The material: the coursework is one package written against ``derive.api`` alone, and
the engine loads it (or any ``--material MODULE``) through one loader.

:func:`material_violations` reads a material package's imports with :mod:`ast` (every
``import`` and ``from ... import`` anywhere in a module, deferred or under
``TYPE_CHECKING``, and literal ``importlib.import_module`` calls, as
``tests/test_layers.py`` reads them) and reports each import of anything but
``derive.api``, the package's own modules, SymPy and the standard library. It is shown
failing on a planted violation, in a copy of the coursework and in synthetic sources.
"""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import pytest

from .conftest import ROOT
from .test_layers import _imports, _literal_import, _resolve

#: What a material package may import besides itself (top-level names, and ``derive.api``).
ALLOWED_THIRD_PARTY = ("sympy", "mpmath")
API = "derive.api"


def material_violations(package_dir: Path, package: str) -> list[str]:
    """Every import in the package at ``package_dir`` (named ``package``) of a module other
    than ``derive.api``, its own modules, SymPy (and mpmath) and the standard library."""
    problems = []
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, kind in _imports(tree):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                found = [_resolve(name, is_package, node.level, node.module or "")]
            else:
                literal, _ = _literal_import(node)
                level = len(literal) - len(literal.lstrip("."))
                found = [_resolve(name, is_package, level, literal[level:])]
            for target in found:
                top = target.split(".")[0]
                if (target == API or target.startswith(API + ".")
                        or target == package or target.startswith(package + ".")
                        or top in sys.stdlib_module_names or top == "__future__"
                        or top in ALLOWED_THIRD_PARTY):
                    continue
                problems.append(f"{name} imports {target} (line {node.lineno}, {kind}): a "
                                f"material package imports only {API}")
    return problems


def test_the_coursework_imports_only_the_api():
    assert material_violations(ROOT / "derive" / "coursework", "derive.coursework") == []


def test_a_planted_import_in_a_copy_of_the_coursework_is_reported(tmp_path):
    copy = tmp_path / "coursework"
    shutil.copytree(ROOT / "derive" / "coursework", copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    blocks = copy / "blocks.py"
    blocks.write_text(blocks.read_text() + "\n\ndef _late():\n"
                      "    from derive.vocabulary import x1\n    return x1\n")
    problems = material_violations(copy, "derive.coursework")
    assert problems == ["derive.coursework.blocks imports derive.vocabulary (line "
                        f"{len(blocks.read_text().splitlines()) - 1}, deferred): a material "
                        "package imports only derive.api"]


@pytest.mark.parametrize("source, found", [
    ("from derive.api import x1\nimport sympy as sp\nimport math\nfrom . import sibling\n", []),
    ("from ..coupling import CouplingBlock\n", ["derive.coupling"]),
    ("import codegen.latex\n", ["codegen.latex"]),
    ("import numpy\n", ["numpy"]),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from derive.spec import Arg\n",
     ["derive.spec"]),
    ("import importlib\nimportlib.import_module('derive.files')\n", ["derive.files"]),
    ("from derive import api\n", ["derive"]),  # the front door, not the API module
])
def test_the_checker_on_synthetic_sources(tmp_path, source, found):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "sibling.py").write_text("")
    (package / "mod.py").write_text(source)
    problems = material_violations(package, "derive.pkg")
    assert [p.split(" imports ")[1].split(" ")[0] for p in problems] == found


def test_the_engine_never_imports_the_coursework():
    """Only the loader names it (by module name, as it loads any ``--material``)."""
    from .test_layers import PACKAGES, import_graph

    graph = import_graph(ROOT, PACKAGES)
    importers = {e.src for edges in graph.values() for e in edges
                 if e.dst.startswith("derive.coursework") and not e.src.startswith(
                     "derive.coursework")}
    assert importers == set()


def test_the_coursework_is_the_default_material():
    from derive import loader
    from derive.coursework import MATERIAL

    assert loader.current() is MATERIAL
    assert list(MATERIAL.questions)[:3] == ["1.1", "1.2", "1.3"]
    assert set(MATERIAL.blocks) >= {"coupling", "coupling_affine"}
    assert set(MATERIAL.parameterizations) == {"sigma", "logvar"}


def test_materials_combine_and_refuse_a_name_defined_twice():
    from derive.api import Material, MaterialError
    from derive.coursework import MATERIAL

    other = Material("mine", blocks={"coupling": MATERIAL.blocks["coupling"]})
    with pytest.raises(MaterialError) as err:
        Material.combine([MATERIAL, other])
    assert str(err.value) == ("material 'derive.coursework' and material 'mine' both define "
                              "block 'coupling'")
    assert "\n" not in str(err.value)
