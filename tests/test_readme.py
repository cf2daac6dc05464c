"""The README's quickstart is exactly two commands, and CI runs the test one verbatim.

The README is the front door and the reference lives in ``docs/``: every relative link
between them resolves (file and ``#anchor``), and every page opens with its title and a
one-line description.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import ROOT

#: The pages whose links are checked: the README and every hand-written docs page
#: (``docs/benchmarks.md`` is written by ``python -m bench`` and checked there).
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md")
                                     if p.name != "benchmarks.md")]


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


def _prose(text: str) -> str:
    """The page without its fenced code blocks (a link there is code, not a link)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _anchors(text: str) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", _prose(text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(text)):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" \
                and anchor not in _anchors(linked.read_text(encoding="utf-8")):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda p: str(p.relative_to(ROOT)))
def test_each_docs_page_opens_with_a_title_and_one_line(page: Path):
    lines = page.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# ") and lines[1] == "" and lines[2].strip(), page.name
    assert lines[3] == "", f"{page.name}: the description is one line"


def test_the_readme_is_a_front_door():
    """About 150 lines; the reference is in docs/, which the README links."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 170
    assert "![The first page of the generated solutions](docs/solutions-page1.png)" in text
    for page in PAGES[1:]:
        assert f"(docs/{page.name}" in text, f"README.md does not link docs/{page.name}"
