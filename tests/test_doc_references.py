"""Every page or section that the package's strings point a user to exists: error messages,
help texts and generated files that say "see docs/models.md, section 'Endpoint files'" or
"README, section 'Install'" lead somewhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "taskmem_lab"

# docs/page.md, docs/page.md#anchor, docs/page.md, section 'Heading'
DOC_REF = re.compile(r"(docs/[\w.-]+\.md)(?:#([\w-]+)|,? section ['\"]([^'\"]+)['\"])?")
# README, section 'Heading' / README.md, section "Heading"
README_REF = re.compile(r"README(?:\.md)?,? (?:section )?['\"]([^'\"]+)['\"]")


def headings(page: Path) -> list[str]:
    """The page's markdown headings, without the #s, outside code blocks."""
    out, fenced = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            out.append(line.lstrip("#").strip())
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.lower())
    return text.replace(" ", "-")


def package_strings() -> list[tuple[str, str]]:
    """(file:line, text) of every string literal in the package, f-string parts joined."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                text = "".join(
                    v.value if isinstance(v, ast.Constant) else "{}" for v in node.values
                )
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            else:
                continue
            found.append((f"{path.relative_to(ROOT)}:{node.lineno}", text))
    return found


def references() -> list[tuple[str, str, str | None, str | None]]:
    """(where, page, anchor, section) of every doc reference in the package's strings."""
    refs = []
    for where, text in package_strings():
        flat = " ".join(text.split())
        for m in DOC_REF.finditer(flat):
            refs.append((where, m.group(1), m.group(2), m.group(3)))
        for m in README_REF.finditer(flat):
            refs.append((where, "README.md", None, m.group(1)))
    return sorted(set(refs), key=str)


def test_the_package_points_to_some_pages():
    pages = {page for _, page, _, _ in references()}
    assert {"docs/install.md", "docs/models.md"} <= pages


@pytest.mark.parametrize(("where", "page", "anchor", "section"), references())
def test_every_doc_reference_exists(where, page, anchor, section):
    path = ROOT / page
    assert path.is_file(), f"{where} points to {page}, which does not exist"
    titles = headings(path)
    if section is not None:
        assert section in titles, f"{where}: {page} has no section {section!r}"
    if anchor is not None:
        assert anchor in {slug(t) for t in titles}, f"{where}: {page} has no #{anchor}"


def test_the_checker_sees_a_missing_section():
    text = "(see the README, section 'Models')"
    assert README_REF.search(text).group(1) == "Models"
    assert "Models" not in headings(ROOT / "README.md")
    m = DOC_REF.search("see docs/install.md, section 'Sample media'")
    assert m.groups() == ("docs/install.md", None, "Sample media")
