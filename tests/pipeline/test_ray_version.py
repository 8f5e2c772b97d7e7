"""A Ray without token auth (older than 2.52) is refused before it starts, with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.run.ray_version import MIN_RAY, RayVersionError, check_ray_version
from tests.jobs import save_photos

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("version", ["2.51.1", "2.50.0", "1.13.1", "garbage"])
def test_a_ray_without_token_auth_is_refused_with_the_fix(version):
    with pytest.raises(RayVersionError) as err:
        check_ray_version(version)
    message = str(err.value)
    assert "\n" not in message and "2.52 or newer" in message and f"Ray {version}" in message
    assert "pip install" in message


@pytest.mark.parametrize("version", ["2.52.0", "2.60.0", "3.0.0.dev0"])
def test_a_ray_with_token_auth_passes(version):
    assert check_ray_version(version) == version


def test_the_installed_ray_passes():
    import ray

    assert check_ray_version() == ray.__version__ and MIN_RAY == (2, 52)


def test_the_job_refuses_an_old_ray_before_starting_one(tmp_path):
    """The job run as a user would, where the installed Ray says it is 2.51.0 (a distribution's metadata ahead
    of the real one on the path): exit 2, one line, nothing written."""
    old = tmp_path / "old" / "ray-2.51.0.dist-info"
    old.mkdir(parents=True)
    (old / "METADATA").write_text("Metadata-Version: 2.1\nName: ray\nVersion: 2.51.0\n")
    save_photos(tmp_path / "in", 1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(old.parent), str(ROOT)])}
    env.pop("RAY_ADDRESS", None)
    argv = [sys.executable, "jobs/restore_bucket.py", "--input", f"{tmp_path}/in", "--output", f"{tmp_path}/out"]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "got Ray 2.51.0 instead" in lines[0], done.stderr
    assert not (tmp_path / "out" / "images").exists() and not (tmp_path / "out" / "runs").exists()
