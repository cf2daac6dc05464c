"""The README's quickstart is exactly two commands, and CI runs the test one verbatim."""

from __future__ import annotations

import re

from .conftest import ROOT


def _quickstart() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no bash quickstart block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quickstart_is_two_commands():
    commands = _quickstart()
    assert len(commands) == 2
    assert "derive generate" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _quickstart()[1] in ci.splitlines()
    assert "derive generate --check" in ci
