"""The import rules: the project's own modules form layers, import only downward, and
never in a cycle, deferred or not.

The import graph is read with :mod:`ast`, not by importing: every ``import`` and
``from ... import`` anywhere in a module counts (at module level, inside a function, under
``if TYPE_CHECKING:``), and so does ``importlib.import_module("literal")``. Importing a
module also runs its packages' ``__init__``: the imports an ``__init__`` makes when it
runs are counted as imports of every module of its package, for the layer rule.

Layers, bottom to top (:data:`ORDER`): the neutral symbols and nodes (the math's own SymPy
nodes); derivations and step checking; the material (questions, blocks,
parameterizations); typesetting, code generation and answer checking, which read typed
values from the layers below and never the reverse; the command line on top.
``kernel_runtime`` is the runtime of the generated code, and ``generated`` that code: they
import neither ``derive`` nor ``codegen``, and nothing imports them -- except code generation,
which reads the runtime's contract version (``kernel_runtime.CONTRACT_VERSION``) to print
into each generated module the check it makes on import (:data:`USES_SEPARATE`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import ROOT

#: The project's own packages (``[tool.setuptools] packages`` of pyproject.toml).
PACKAGES = ("derive", "codegen", "kernel_runtime", "generated")

#: The layer of every module. A key names one module; a key ending in ``.*`` names a
#: package and every module under it. The longest key that matches wins; a module that
#: no key matches fails the test.
LAYER_OF: dict[str, str] = {
    # neutral: the math's own symbols and nodes, and where a piecewise value is defined
    "derive.nodes": "nodes",
    "derive.vocabulary": "nodes",
    "derive.probability": "nodes",
    "derive.pieces": "nodes",
    # a stdlib-only store of rendered results (no project import), usable from any layer
    "derive.cache": "nodes",
    "derive.verdicts": "nodes",
    # derivations as checked chains of steps, their floating-point arrangement, the kernel
    # spec they hand on, a scale parameterization (the class; the registry is material),
    # and the coupling block's derivations (for any block)
    "derive.derivation": "derivation",
    "derive.arrangement": "derivation",
    "derive.search": "derivation",
    "derive.kernel_search": "derivation",
    "derive.rules_extra": "derivation",
    "derive.spec": "derivation",
    "derive.parameterization": "derivation",
    "derive.coupling": "derivation",
    # the registry's types (Question, Section, Material, ...) and the public API, what a
    # material author imports: both in the derivation layer, under the material
    "derive.material": "derivation",
    "derive.answers": "derivation",
    "derive.api": "derivation",
    # the material: the coursework's blocks, parameterizations, questions and kernels
    # (written against derive.api alone: tests/test_material.py), and the one loader
    # through which the engine gets its material, the coursework or any --material
    "derive.coursework.*": "material",
    "derive.loader": "material",
    # typesetting: plain text, LaTeX, the solutions document and the notebook
    "derive.text": "typesetting",
    "derive.document": "typesetting",
    "derive.notebook": "typesetting",
    "codegen.latex": "typesetting",
    # code generation: plans, printers, backends, the template environment
    "codegen.*": "codegen",
    # marking a student's answer against the question registry (``derive check``)
    "derive.check.*": "checking",
    # the command line, the files it writes, and the package's front door
    "derive": "cli",
    "derive.__main__": "cli",
    "derive.cli": "cli",
    "derive.files": "cli",
    "derive.output": "cli",
    "derive.pdf": "cli",
    # derive test: a material's kernels against references from its own equations
    "derive.selftest": "cli",
    # the generated code and its runtime
    "kernel_runtime.*": "runtime",
    "generated.*": "generated",
}

#: The layers, bottom to top; layers in one tuple share a level. A module may import
#: its own level and the levels below.
ORDER: tuple[tuple[str, ...], ...] = (
    ("nodes",),
    ("derivation",),
    ("material",),
    ("typesetting", "codegen", "checking"),
    ("cli",),
)

#: Layers outside :data:`ORDER`: what each may import besides itself. Nothing in
#: :data:`ORDER` imports them.
SEPARATE: dict[str, tuple[str, ...]] = {
    "runtime": (),
    "generated": ("runtime",),
}

#: Layers of :data:`ORDER` that may import a separate layer: code generation reads the
#: runtime's contract version, which every generated module checks on import.
USES_SEPARATE: dict[str, tuple[str, ...]] = {
    "codegen": ("runtime",),
}

#: Known violations still to fix, as ``(importer, imported)``, each with the reason.
ALLOWED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    """One import of a project module by another: where, and how it runs."""

    src: str
    dst: str
    line: int
    kind: str  # "module" | "deferred" (inside a function) | "type" (TYPE_CHECKING) | "package"

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst} (line {self.line}, {self.kind})"


def modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name (a package by its own)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module) -> Iterable[tuple[ast.AST, str]]:
    """Each import statement or literal ``import_module`` call, with how it runs."""

    def visit(node: ast.AST, kind: str) -> Iterable[tuple[ast.AST, str]]:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, kind
        elif isinstance(node, ast.Call) and _literal_import(node) is not None:
            yield node, kind
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            kind = "deferred" if kind == "module" else kind
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from visit(child, "type")
            for child in node.orelse:
                yield from visit(child, kind)
            return
        for child in ast.iter_child_nodes(node):
            yield from visit(child, kind)

    yield from visit(tree, "module")


def _literal_import(call: ast.Call) -> tuple[str, str | None] | None:
    """``(name, package)`` of ``importlib.import_module("name"[, package])`` or
    ``__import__("name")`` with a literal name; ``package`` is ``None`` unless given."""
    func = call.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))
    if not named or not call.args:
        return None
    first = call.args[0]
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
        return None
    return first.value, "?" if len(call.args) > 1 else None


def _resolve(module: str, is_package: bool, level: int, name: str) -> str:
    """The absolute name of ``name`` imported with ``level`` leading dots from ``module``."""
    if level == 0:
        return name
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, list[Edge]]:
    """Every import of a project module by a project module, by importer."""
    known = modules(root, packages)
    graph: dict[str, list[Edge]] = {name: [] for name in known}

    def target(name: str) -> str | None:
        """The project module ``name`` loads: itself, or its closest enclosing package."""
        while name:
            if name in known:
                return name
            name = name.rpartition(".")[0]
        return None

    for name, path in known.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, kind in _imports(tree):
            found: list[str] = []
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module or "")
                # ``from package import submodule`` loads the submodule
                found = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                         for alias in node.names]
            else:
                literal, package = _literal_import(node)
                level = len(literal) - len(literal.lstrip("."))
                if level and package is None:
                    continue  # a relative name without its package fails at run time
                found = [_resolve(name, is_package, level, literal[level:])]
            for dst in found:
                dst = target(dst)
                edge = Edge(name, dst, node.lineno, kind)
                if dst is not None and dst != name and edge not in graph[name]:
                    graph[name].append(edge)
    return graph


def with_package_imports(graph: Mapping[str, list[Edge]]) -> dict[str, list[Edge]]:
    """``graph`` plus, for every module, the imports its packages' ``__init__`` make when
    they run (not deferred, not type-only): importing ``a.b.c`` runs ``a`` and ``a.b``."""
    out = {name: list(edges) for name, edges in graph.items()}
    for name in graph:
        parts = name.split(".")
        for k in range(1, len(parts)):
            package = ".".join(parts[:k])
            for edge in graph.get(package, ()):
                if edge.kind == "module" and edge.dst != name:
                    out[name].append(Edge(name, edge.dst, edge.line, f"package {package}"))
    return out


def layer_of(module: str, table: Mapping[str, str]) -> str | None:
    """The layer :data:`LAYER_OF`-style ``table`` gives ``module`` (longest key first)."""
    best, best_len = None, -1
    for key, layer in table.items():
        if key.endswith(".*"):
            stem = key[:-2]
            hit = module == stem or module.startswith(stem + ".")
            length = len(stem)
        else:
            hit, length = module == key, len(key) + 1  # an exact key beats a package key
        if hit and length > best_len:
            best, best_len = layer, length
    return best


def cycles(graph: Mapping[str, list[Edge]]) -> list[list[str]]:
    """The import cycles of ``graph``: each strongly connected component of more than one
    module, as a cycle through it (Tarjan's algorithm, iterative)."""
    succ = {n: sorted({e.dst for e in edges if e.dst in graph}) for n, edges in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(succ[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(succ[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(components)


def _cycle_text(component: list[str], graph: Mapping[str, list[Edge]]) -> str:
    """One cycle through ``component``, each import named with its line and kind."""
    members = set(component)
    path, seen = [component[0]], {component[0]: 0}
    while True:
        edge = next(e for e in graph[path[-1]] if e.dst in members)
        # prefer an edge that closes the cycle or reaches a new module
        for e in graph[path[-1]]:
            if e.dst in members and (e.dst == component[0] or e.dst not in seen):
                edge = e
                break
        if edge.dst in seen:
            steps = path[seen[edge.dst]:] + [edge.dst]
            return " -> ".join(steps) + "  [" + "; ".join(
                str(next(e for e in graph[a] if e.dst == b))
                for a, b in zip(steps, steps[1:], strict=False)) + "]"
        seen[edge.dst] = len(path)
        path.append(edge.dst)


def violations(root: Path, packages: Iterable[str], table: Mapping[str, str],
               order: tuple[tuple[str, ...], ...], separate: Mapping[str, tuple[str, ...]],
               allowed: Mapping[tuple[str, str], str] = {},
               uses: Mapping[str, tuple[str, ...]] = {}) -> list[str]:
    """Every breach of the import rules in ``packages``: a module with no layer, an import
    cycle, an import of a higher layer (or of a separate layer not allowed: ``separate``
    says what each separate layer may import, ``uses`` which separate layers a layer of
    ``order`` may)."""
    graph = import_graph(root, packages)
    level = {layer: k for k, layers in enumerate(order) for layer in layers}
    problems = []
    layers = {}
    for name in sorted(graph):
        layer = layer_of(name, table)
        if layer is None or (layer not in level and layer not in separate):
            problems.append(f"{name}: no layer (add it to the layer table)")
        layers[name] = layer
    kept = {name: [e for e in edges if (e.src, e.dst) not in allowed]
            for name, edges in graph.items()}
    for component in cycles(kept):
        problems.append(f"import cycle: {_cycle_text(component, kept)}"
                        + (f" (one of the cycles among {', '.join(component)})"
                           if len(component) > 2 else ""))
    for _, edges in sorted(with_package_imports(graph).items()):
        for edge in edges:
            src, dst = layers[edge.src], layers[edge.dst]
            if src is None or dst is None or src == dst or (edge.src, edge.dst) in allowed:
                continue
            if src in separate or dst in separate:
                ok = (src in separate and dst in separate[src]) or dst in uses.get(src, ())
            else:
                ok = level[dst] <= level[src]
            if not ok:
                problems.append(f"{src} imports {dst}: {edge}")
    return problems


# --- the project ---------------------------------------------------------------------


def test_the_project_keeps_its_layers_and_has_no_import_cycle():
    problems = violations(ROOT, PACKAGES, LAYER_OF, ORDER, SEPARATE, ALLOWED, USES_SEPARATE)
    assert not problems, "\n".join(problems)


def test_every_allowed_violation_still_exists():
    """An entry of :data:`ALLOWED` that no longer occurs is removed, not kept."""
    graph = import_graph(ROOT, PACKAGES)
    edges = {(e.src, e.dst) for es in with_package_imports(graph).values() for e in es}
    assert not set(ALLOWED) - edges


def test_the_graph_sees_deferred_type_only_and_importlib_imports():
    graph = import_graph(ROOT, PACKAGES)
    kinds = {e.kind for es in graph.values() for e in es}
    assert {"module", "deferred", "type"} <= kinds
    cli = {e.dst for e in graph["derive.cli"]}
    assert {"derive", "derive.loader", "derive.check.command", "codegen.latex"} <= cli


@pytest.mark.parametrize("module", ["derive.derivation", "derive.coursework", "derive.api"])
def test_the_lower_layers_load_no_template_engine_and_no_codegen(module):
    # the derivation layer, the material and the API a material author imports
    code = (f"import {module}, sys; "
            "assert 'jinja2' not in sys.modules, 'jinja2'; "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'codegen'); "
            "assert not loaded, loaded")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr


# --- the checker, shown failing on planted violations ---------------------------------

_PLANTED_TABLE = {"pkg": "high", "pkg.low": "low", "pkg.high": "high", "pkg.sub.*": "low"}
_PLANTED_ORDER = (("low",), ("high",))


def _package(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def _planted(tmp_path: Path, files: Mapping[str, str], **kwargs: object) -> list[str]:
    base = {"pkg/__init__.py": "", "pkg/low.py": "", "pkg/high.py": "from . import low\n",
            "pkg/sub/__init__.py": "", "pkg/sub/leaf.py": ""}
    root = _package(tmp_path, {**base, **files})
    args = {"table": _PLANTED_TABLE, "order": _PLANTED_ORDER, "separate": {}, **kwargs}
    return violations(root, ("pkg",), **args)


def test_a_clean_planted_package_passes(tmp_path):
    assert _planted(tmp_path, {}) == []


def test_a_cycle_behind_a_deferred_import_is_reported(tmp_path):
    problems = _planted(tmp_path, {
        "pkg/sub/leaf.py": "def f():\n    from ..sub import other\n",
        "pkg/sub/other.py": "from pkg.sub import leaf\n",
    })
    assert problems == ["import cycle: pkg.sub.leaf -> pkg.sub.other -> pkg.sub.leaf  "
                        "[pkg.sub.leaf -> pkg.sub.other (line 2, deferred); "
                        "pkg.sub.other -> pkg.sub.leaf (line 1, module)]"]


def test_an_upward_import_is_reported_also_as_the_cycle_it_makes(tmp_path):
    problems = _planted(tmp_path, {"pkg/low.py": """\
        def helper():
            import importlib
            return importlib.import_module("pkg.high")
        """})
    assert problems == [
        "import cycle: pkg.high -> pkg.low -> pkg.high  [pkg.high -> pkg.low (line 1, "
        "module); pkg.low -> pkg.high (line 3, deferred)]",
        "low imports high: pkg.low -> pkg.high (line 3, deferred)"]


def test_an_upward_import_without_a_cycle_is_reported(tmp_path):
    problems = _planted(tmp_path, {"pkg/sub/leaf.py": """\
        from typing import TYPE_CHECKING

        if TYPE_CHECKING:
            from pkg.high import something
        """})
    assert problems == ["low imports high: pkg.sub.leaf -> pkg.high (line 4, type)"]


def test_an_upward_import_of_a_package_init_counts_for_its_modules(tmp_path):
    problems = _planted(tmp_path, {"pkg/sub/__init__.py": "from pkg import high\n"})
    assert problems == [
        "low imports high: pkg.sub -> pkg.high (line 1, module)",
        "low imports high: pkg.sub.leaf -> pkg.high (line 1, package pkg.sub)"]


def test_a_module_without_a_layer_is_reported(tmp_path):
    problems = _planted(tmp_path, {"pkg/stray.py": ""})
    assert problems == ["pkg.stray: no layer (add it to the layer table)"]


def test_a_separate_layer_imports_only_what_it_may(tmp_path):
    table = {**_PLANTED_TABLE, "pkg.runtime": "runtime"}
    problems = _planted(tmp_path, {"pkg/runtime.py": "import pkg.low\n",
                                   "pkg/high.py": "from . import low, runtime\n"},
                        table=table, separate={"runtime": ()})
    assert problems == ["high imports runtime: pkg.high -> pkg.runtime (line 1, module)",
                        "runtime imports low: pkg.runtime -> pkg.low (line 1, module)"]


def test_a_layer_may_import_a_separate_layer_it_uses(tmp_path):
    """``uses`` lets one layer import a separate layer; the others still may not."""
    table = {**_PLANTED_TABLE, "pkg.runtime": "runtime"}
    problems = _planted(tmp_path, {"pkg/runtime.py": "", "pkg/low.py": "import pkg.runtime\n",
                                   "pkg/high.py": "from . import low, runtime\n"},
                        table=table, separate={"runtime": ()}, uses={"high": ("runtime",)})
    assert problems == ["low imports runtime: pkg.low -> pkg.runtime (line 1, module)"]


def test_an_allowed_violation_is_not_reported(tmp_path):
    problems = _planted(tmp_path, {"pkg/low.py": "def f():\n    import pkg.high\n"},
                        allowed={("pkg.low", "pkg.high"): "planted"})
    assert problems == []


def test_the_front_door_shows_a_derivation_typeset():
    """The derivation layer imports no typesetting: the views it shows itself with are
    registered by the typesetting layer, which the front door ``derive`` loads."""
    code = ("import sys, derive.loader as q; d = q.build('1.1'); "
            "assert 'derive.text' not in sys.modules; "
            "assert str(d) == '1.1  Inverting the question\\'s affine coupling block  "
            "[coupling]', str(d); assert d._repr_latex_() is None; "
            "import derive; d = derive.build('1.1'); "
            "assert '[checked: ' in str(d); assert d._repr_latex_().startswith('$$')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
