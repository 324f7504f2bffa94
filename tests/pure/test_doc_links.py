"""Every relative link in README.md and docs/ resolves: the file exists and, with a #fragment, a heading of that
file has that anchor (GitHub's rule: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks (a `[x](y)` inside one is code, not a link)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    found: dict[str, int] = {}
    result = set()
    for line in _prose(path.read_text()):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading[1])  # a link in a heading anchors by its text
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        count = found.get(slug, 0)
        found[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links(path: Path) -> list[str]:
    return [m[1] for line in _prose(path.read_text()) for m in _LINK.finditer(line)]


def test_the_slug_rule():
    page = ROOT / "docs" / "policy.md"
    assert "production-stacks-have-a-dr-stack" in anchors(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check offline
            continue
        path_part, _, fragment = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            broken.append(f"{target}: no such file {destination.relative_to(ROOT)}")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"{target}: {destination.relative_to(ROOT)} has no heading with anchor #{fragment}")
    assert broken == [], f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_readme_is_short_enough_to_read_in_ten_minutes():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
