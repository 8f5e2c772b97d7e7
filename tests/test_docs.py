"""The documentation holds together: README.md stays a short front page whose first code block is what CI
runs, every relative link in it and in docs/ reaches a file (and a heading, for a #anchor), and
docs/spec.md is what jobs/spec_reference.py writes from the spec schemas now."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

_FENCE = re.compile(r"^(```|~~~)")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans removed."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation but ``-`` and ``_`` dropped, spaces to ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading gets ``-1``, ``-2``, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    lines, fenced = [], False
    for line in page.read_text().splitlines():  # code spans are kept: their text is part of the anchor
        if _FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    for line in lines:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    return [m.group(1) for line in _prose(page.read_text()) for m in _LINK.finditer(line)]


def test_there_are_docs_and_the_readme_links_each_page():
    assert {p.name for p in DOCS} >= {"operations.md", "security.md", "formats.md", "spec.md", "models.md"}
    linked = {(README.parent / target.split("#")[0]).resolve() for target in links(README)}
    assert not [p.name for p in DOCS if p.resolve() not in linked], "docs/ pages the README does not link"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_reaches_a_file_and_its_heading(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, broken


def test_slugs_follow_githubs_rules():
    assert slug("Ray's token, and who can reach Ray") == "rays-token-and-who-can-reach-ray"
    assert slug("The CPU deraining model (not bundled)") == "the-cpu-deraining-model-not-bundled"
    assert slug("The training job (`jobs/train.py`)") == "the-training-job-jobstrainpy"
    assert slug("Training on the CPU: learning curves and budgets") == "training-on-the-cpu-learning-curves-and-budgets"


def test_the_readme_is_short_and_its_first_code_block_is_the_two_commands_ci_runs():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail to docs/"
    fences = [i for i, line in enumerate(lines) if line.startswith("```")]
    first = lines[fences[0] + 1 : fences[1]]  # what .ci/run takes: every line of the first fenced block
    assert len(first) == 2 and all(line.strip() for line in first), first
    assert "jobs/restore_bucket.py" in first[0] and "pytest" in first[1]


def test_the_spec_reference_is_what_the_schemas_give_now():
    from jobs.spec_reference import OUT, render, undescribed

    assert OUT.read_text() == render(), "docs/spec.md is stale: run python jobs/spec_reference.py"
    assert undescribed() == [], "spec keys without a description (Field(description=...)) or comment"
