"""Every relative link in the README, the results record and the docs points at a file (and heading) that exists.

The docs were split into reference pages and one results record; a moved section must not leave a dead link.
Anchors follow GitHub's rule: lower-case, punctuation dropped, spaces to hyphens, repeats numbered.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "RESULTS.md", ROOT / "experiments" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```.*?```", re.S)


def anchors(path: Path) -> set[str]:
    out, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.*)$", FENCE.sub("", path.read_text(encoding="utf-8")), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [u for u in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"^[a-z]+://|^mailto:", u)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    dead = []
    for url in links(page):
        target, _, anchor = url.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            dead.append(f"{url} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            dead.append(f"{url} (no such heading)")
    assert not dead, f"{page.name}: " + "; ".join(dead)


def test_reference_docs_carry_no_dated_logs():
    dated = [f"{p.name}:{i}" for p in PAGES[2:] for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"\b20\d\d-\d\d-\d\d\b", line)]
    assert not dated, "dates belong in RESULTS.md: " + ", ".join(dated)
