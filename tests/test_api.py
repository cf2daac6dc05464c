"""The public API, ``derive.api``: every name it exports is documented with an example.

The examples themselves run as doctests (``pytest --doctest-modules``, pyproject.toml);
this test checks that each name in ``__all__`` has one: a ``>>>`` example that uses the
name, in the name's own docstring or in the module docstring.
"""

from __future__ import annotations

import doctest
import inspect
import io
import tokenize
import types

import derive.api as api


def _names_used(source: str) -> set[str]:
    """The identifiers an example's source uses."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, IndentationError):
        return set()
    return {t.string for t in tokens if t.type == tokenize.NAME}


def _examples_use(docstring: str | None, name: str) -> bool:
    """Whether some ``>>>`` example of ``docstring`` uses ``name``."""
    examples = doctest.DocTestParser().get_examples(docstring or "")
    return any(name in _names_used(e.source) for e in examples)


def _own_docstring(obj: object) -> str | None:
    """The docstring ``obj`` itself defines (not one inherited from its type or a base)."""
    if inspect.isclass(obj):
        return vars(obj).get("__doc__")
    if inspect.isfunction(obj):
        return obj.__doc__
    return None  # a symbol or another instance: its __doc__ is its class's


def undocumented(module: types.ModuleType) -> list[str]:
    """The names of ``module.__all__`` with no ``>>>`` example that uses them."""
    return [name for name in module.__all__
            if not (_examples_use(module.__doc__, name)
                    or _examples_use(_own_docstring(getattr(module, name)), name))]


def test_all_is_explicit_and_complete():
    assert len(api.__all__) == len(set(api.__all__))
    missing = [name for name in api.__all__ if not hasattr(api, name)]
    assert not missing, missing
    public = {name for name, value in vars(api).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)
              and name != "annotations"}
    assert public == set(api.__all__), public ^ set(api.__all__)


def test_the_names_the_issue_asks_for_are_exported():
    wanted = {"sigmoid", "softplus", "Step", "Result", "Derivation", "CouplingBlock",
              "Parameterization", "Question", "Section", "Kernel", "Arg", "Output", "Module",
              "Material"}
    assert wanted <= set(api.__all__)


def test_every_name_has_an_example():
    assert undocumented(api) == []


def test_a_name_without_an_example_is_reported():
    module = types.ModuleType("planted", """Planted.

        >>> documented(1)
        1
        >>> # undocumented(2) is only a comment
    """)

    def documented(x):
        return x

    def undocumented_(x):
        return x

    class WithExample:
        """A class.

        >>> WithExample()  # doctest: +ELLIPSIS
        <...>
        """

    class Inherits(WithExample):
        pass

    module.documented, module.undocumented, module.WithExample = (
        documented, undocumented_, WithExample)
    module.Inherits, module.symbol = Inherits, api.x1
    module.__all__ = ["documented", "undocumented", "WithExample", "Inherits", "symbol"]
    assert undocumented(module) == ["undocumented", "Inherits", "symbol"]


def test_the_api_reexports_the_engine_s_own_objects():
    from derive import coupling, derivation, material, nodes, parameterization, spec

    assert api.Parameterization is parameterization.Parameterization
    assert api.Question is material.Question and api.Section is material.Section
    assert api.Material is material.Material
    assert api.Step is derivation.Step and api.CouplingBlock is coupling.CouplingBlock
    assert api.Kernel is spec.Kernel and api.softplus is nodes.softplus
