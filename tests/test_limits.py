"""The house's size limits (../shared/STYLE.md): no file of ``pipeline/``, ``dgunet/`` or ``jobs/`` over 450
lines, and no function or method in them over 60 (from its ``def`` line to its last, decorators not
counted). A feature that would break them gets a function or a module of its own instead."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "dgunet", "jobs")
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 60


def _sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _offenders(path: Path) -> list[str]:
    """``path``'s breaches of the limits, each named with its size."""
    text = path.read_text()
    name = path.relative_to(ROOT).as_posix()
    found = []
    lines = len(text.splitlines())
    if lines > MAX_FILE_LINES:
        found.append(f"{name}: {lines} lines (limit {MAX_FILE_LINES})")
    for node in ast.walk(ast.parse(text, filename=name)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            size = node.end_lineno - node.lineno + 1
            if size > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno} {node.name}: {size} lines (limit {MAX_FUNCTION_LINES})")
    return found


def test_the_packages_have_sources():
    assert {path.relative_to(ROOT).parts[0] for path in _sources()} == set(PACKAGES)


def test_no_file_or_function_is_over_the_house_s_size_limits():
    offenders = [o for path in _sources() for o in _offenders(path)]
    assert not offenders, "over the size limits:\n" + "\n".join(offenders)
