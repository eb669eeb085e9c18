"""README and docs stay true: README is short enough for a newcomer, every relative link in README.md
and docs/*.md points at a file that exists, and every test named in the bad-input tables exists."""
import re
from pathlib import Path

import configure

ROOT = Path(configure.PROJECT_ROOT)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
TEST_REF = re.compile(r"(test_[a-z0-9_]+)\.py::([a-zA-Z0-9_]+)")


def markdown_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_is_at_most_250_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_every_relative_link_resolves():
    broken = []
    for page in markdown_files():
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_every_test_named_in_the_docs_exists():
    sources = {path.stem: path.read_text() for path in (ROOT / "tests").glob("test_*.py")}
    missing = []
    for page in markdown_files():
        for module, name in TEST_REF.findall(page.read_text()):
            if module not in sources or not re.search(rf"def {name}\b", sources[module]):
                missing.append(f"{page.relative_to(ROOT)}: {module}.py::{name}")
    assert missing == []
