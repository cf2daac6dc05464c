"""kernel_runtime's contract: the names generated modules use, its version, checked by each
generated module on import, and tests that use public names only."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import textwrap
from pathlib import Path

import pytest

import kernel_runtime
from codegen.backends import runtime_contract
from derive.files import COMMAND

from .conftest import ROOT

GENERATED = sorted((ROOT / "generated").glob("*.py"))
KERNELS = [p for p in GENERATED if p.name != "__init__.py"]
#: Names of the contract that generated modules do not look up themselves.
NOT_LOOKED_UP = {"CalleeArg", "CONTRACT_VERSION"}


# --- the contract ----------------------------------------------------------------------


def used_names(source: str) -> set[str]:
    """The runtime names a generated module uses: ``_rt.<name>`` and ``from kernel_runtime
    import <name>``."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "_rt":
            names.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module == "kernel_runtime":
            names.update(alias.name for alias in node.names)
    return names


def test_the_package_exports_exactly_what_generated_modules_use():
    used = set().union(*(used_names(p.read_text(encoding="utf-8")) for p in KERNELS))
    assert used == set(kernel_runtime.__all__) - NOT_LOOKED_UP
    assert all(hasattr(kernel_runtime, name) for name in kernel_runtime.__all__)
    assert len(kernel_runtime.__all__) == len(set(kernel_runtime.__all__))


def test_the_version_is_major_dot_minor_and_what_codegen_prints():
    contract = runtime_contract()
    assert re.fullmatch(r"\d+\.\d+", kernel_runtime.CONTRACT_VERSION)
    assert contract.version == kernel_runtime.CONTRACT_VERSION
    for path in KERNELS:
        assert f"needs kernel_runtime contract {contract.version} " in path.read_text(
            encoding="utf-8"), path.name
    with pytest.raises(ValueError, match="expected a contract version 'major.minor'"):
        runtime_contract("2")


def _submodules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(kernel_runtime.__path__,
                                                         "kernel_runtime."))


def test_every_module_has_a_one_line_summary_and_its_public_names():
    assert {m.rsplit(".", 1)[1] for m in _submodules()} >= {
        "fast_numpy", "namespaces", "checks", "callees", "pieces"}
    for name in _submodules():
        module = importlib.import_module(name)
        summary = (module.__doc__ or "").split("\n")[0]
        assert summary.endswith(".") and len(summary) <= 99, name
        assert module.__all__ and all(hasattr(module, n) for n in module.__all__), name
        assert not [n for n in module.__all__ if n.startswith("_")], name
        lines = len(Path(module.__file__).read_text(encoding="utf-8").splitlines())
        assert lines <= 400, f"{name}: {lines} lines; split it by concern"


# --- the check each generated module makes on import -----------------------------------

#: A generated module, and its source without the contract check (to show the test failing).
MODULE = ROOT / "generated" / "coupling.py"
_CHECK = re.compile(r"\n# The kernel_runtime contract .*?\ndel [^\n]*\n", re.S)


def _import_error(source: str, name: str = "generated.coupling") -> ImportError | None:
    """The ImportError that running ``source`` as module ``name`` raises, or None."""
    try:
        exec(compile(source, str(MODULE), "exec"), {"__name__": name})  # noqa: S102
    except ImportError as error:
        return error
    return None


def _refused() -> str | None:
    error = _import_error(MODULE.read_text(encoding="utf-8"))
    return None if error is None else str(error)


def _other_versions() -> tuple[str, str]:
    """A next major version, and the version before the current one."""
    contract = runtime_contract()
    before = f"{contract.major}.{contract.minor - 1}" if contract.minor else \
        f"{contract.major - 1}.9"
    return f"{contract.major + 1}.0", before


def test_a_generated_module_refuses_a_runtime_of_another_contract(monkeypatch):
    contract = runtime_contract()
    for found in _other_versions():
        monkeypatch.setattr(kernel_runtime, "CONTRACT_VERSION", found)
        message = _refused()
        assert message == (
            f"generated.coupling needs kernel_runtime contract {contract.version} (major "
            f"{contract.major}, minor >= {contract.minor}), found {found} in "
            f"{kernel_runtime.__file__}; regenerate with: {COMMAND} (or upgrade "
            "derive-engine)"), message
        assert "\n" not in message
    monkeypatch.delattr(kernel_runtime, "CONTRACT_VERSION")  # a runtime from before versions
    assert "found none in" in _refused()


def test_a_generated_module_accepts_a_later_minor_version(monkeypatch):
    contract = runtime_contract()
    later = f"{contract.major}.{contract.minor + 3}"
    monkeypatch.setattr(kernel_runtime, "CONTRACT_VERSION", later)
    assert _refused() is None
    namespace = {"__name__": "generated.coupling"}
    exec(compile(MODULE.read_text(encoding="utf-8"), str(MODULE), "exec"), namespace)  # noqa: S102
    assert not {"_found", "_major", "_minor", "_"} & set(namespace)  # no names left behind


def test_without_the_check_a_mismatched_runtime_goes_unnoticed(monkeypatch):
    """The refusal above is the check's doing: without it, the import passes silently."""
    source = MODULE.read_text(encoding="utf-8")
    unchecked, count = _CHECK.subn("\n", source)
    assert count == 1 and "CONTRACT_VERSION" not in unchecked
    monkeypatch.setattr(kernel_runtime, "CONTRACT_VERSION", _other_versions()[0])
    assert _import_error(unchecked) is None
    assert _import_error(source) is not None


def test_every_generated_module_checks_the_contract_before_using_the_runtime():
    for path in KERNELS:
        source = path.read_text(encoding="utf-8")
        check = _CHECK.search(source)
        assert check is not None, path.name
        assert "_rt." not in source[:check.start()] and "from kernel_runtime" not in source


# --- tests use public names only -------------------------------------------------------


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _private(name: str) -> bool:
    return name.startswith("_") and not _dunder(name)


_DOTTED = re.compile(r"^kernel_runtime(\.\w+)*$")


def private_runtime_uses(source: str) -> list[str]:
    """Every use of a private ``kernel_runtime`` name in ``source``, as ``"line: what"``:
    ``import kernel_runtime._m``, ``from kernel_runtime[.m] import _x``, ``rt._x`` (``rt``
    any name bound to the package or one of its modules), ``getattr``/``setattr``/
    ``monkeypatch.setattr(rt, "_x", ...)`` and dotted strings ``"kernel_runtime.m._x"``."""
    tree = ast.parse(source)
    aliases: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "kernel_runtime":
                    aliases.add(alias.asname or "kernel_runtime")
                    if any(_private(part) for part in alias.name.split(".")):
                        found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] == "kernel_runtime":
            if any(_private(part) for part in node.module.split(".")):
                found.append(f"{node.lineno}: from {node.module} import ...")
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
                else:  # possibly a submodule (from kernel_runtime import checks)
                    aliases.add(alias.asname or alias.name)

    def runtime(node: ast.AST) -> bool:
        """Whether ``node`` names the package or one of its modules."""
        if isinstance(node, ast.Name):
            return node.id in aliases
        return isinstance(node, ast.Attribute) and not _private(node.attr) and \
            runtime(node.value)

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and runtime(node.value):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and len(node.args) >= 2 and runtime(node.args[0]):
            name = node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and \
                    _private(name.value):
                found.append(f"{node.lineno}: {ast.unparse(node.func)}(..., {name.value!r})")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                _DOTTED.match(node.value) and any(_private(p) for p in node.value.split(".")):
            found.append(f"{node.lineno}: {node.value!r}")
    return sorted(found, key=lambda f: int(f.split(":")[0]))


def test_tests_use_public_runtime_names_only():
    found = {path.name: uses for path in sorted((ROOT / "tests").glob("*.py"))
             if (uses := private_runtime_uses(path.read_text(encoding="utf-8")))}
    assert not found, found


def test_the_scan_finds_planted_private_uses():
    planted = textwrap.dedent("""\
        import kernel_runtime as rt
        import kernel_runtime._hidden
        from kernel_runtime import _namespace, eager
        from kernel_runtime import checks
        from kernel_runtime.checks import _check_xp

        rt._namespace(("x",), (1,))
        kernel_runtime.checks._passes_torch
        checks._check_positive
        def test(monkeypatch):
            monkeypatch.setattr(rt, "_values_pass", None)
            getattr(checks, "_refuse_minimum")
            monkeypatch.setattr("kernel_runtime.fast_numpy._ndarray", None)
        """)
    assert [f.split(":")[0] for f in private_runtime_uses(planted)] == [
        "2", "3", "5", "7", "8", "9", "11", "12", "13"]
    public = textwrap.dedent("""\
        import kernel_runtime as rt
        from kernel_runtime import fast_numpy
        rt.eager, rt.__file__, fast_numpy.values_pass
        def test(monkeypatch):
            monkeypatch.setattr(rt, "mostly", None)
            monkeypatch.setattr(fast_numpy, "values_pass", None)
        other = object()
        other._private
        """)
    assert private_runtime_uses(public) == []
