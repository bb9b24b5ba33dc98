"""The README and the pages under docs/: every relative link points to a file that exists (and to a heading that
exists, when it names one), pages link only inside docs/ (the site `mkdocs build --strict` builds), and the site's
navigation lists every page. A broken link fails here even without mkdocs installed."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
import yaml
from conftest import REPO

DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FILES = [REPO / "README.md", *PAGES]
LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans removed."""
    lines, fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if not fence:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return lines


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension (MkDocs) gives a heading; GitHub's agrees on these headings."""
    text = re.sub(r"[`*]|<[^>]+>", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for line in prose(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            name, n = base, 0
            while name in found:
                n += 1
                name = f"{base}_{n}"
            found.add(name)
    return found


def links(path: Path) -> list[str]:
    return [m.group(1) for line in prose(path.read_text(encoding="utf-8")) for m in LINK.finditer(line)]


def test_the_slug_matches_mkdocs():
    assert slug("The map: label fraction x teachers' labels x student size (five seeds)") == \
        "the-map-label-fraction-x-teachers-labels-x-student-size-five-seeds"
    assert slug("When does distillation pay?") == "when-does-distillation-pay"
    assert slug("How pskd rebuilds them [ours]") == "how-pskd-rebuilds-them-ours"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(path):
    problems = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{target}: no such file")
            continue
        if path.parent == DOCS and DOCS.resolve() not in resolved.parents:
            problems.append(f"{target}: outside docs/, which the site cannot link to")
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading with anchor #{anchor}")
    assert not problems, f"{path.relative_to(REPO)}: " + "; ".join(problems)


def test_the_readme_points_to_every_page():
    readme = set(links(REPO / "README.md"))
    index = set(links(DOCS / "index.md"))
    for page in PAGES:
        if page.name != "index.md":
            assert page.name in index, f"docs/index.md does not list {page.name}"
    assert "docs/index.md" in readme


def test_the_site_navigation_lists_every_page():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = {next(iter(entry.values())) for entry in config["nav"]}
    assert nav == {page.name for page in PAGES}


def test_nothing_points_into_the_readme_any_more():
    """Sections moved to docs/: code, configs and scripts name the page that holds the text now."""
    offenders = []
    for folder in ("src", "configs", "benchmarks", "scripts"):
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file() and path.suffix in {".py", ".yaml", ".yml", ".sh"}:
                if "README" in path.read_text(encoding="utf-8", errors="replace"):
                    offenders.append(str(path.relative_to(REPO)))
    assert not offenders
