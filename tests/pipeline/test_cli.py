"""The ``dgunet-restore`` console script, as pip installs it, and the job script that shares its code."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _command() -> str:
    """The installed console script beside this interpreter (``pip install -e .`` writes it there)."""
    script = Path(sys.executable).parent / "dgunet-restore"
    assert script.exists(), f"{script} is missing: run pip install --no-deps -e . to install the entry point"
    return str(script)


def _run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_console_script_prints_its_version_and_help():
    done = _run(_command(), "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"dgunet-restore {version('dgunet-restore')}"
    done = _run(_command(), "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: dgunet-restore ")
    for flag in ("--spec", "--input", "--output", "--format", "--run-id", "--address"):
        assert flag in done.stdout


def test_the_job_script_and_the_command_take_the_same_flags():
    def flags(text: str) -> set[str]:
        return {word.strip("[],") for word in text.split() if word.startswith(("--", "[--"))}

    command = _run(_command(), "--help")
    script = _run(sys.executable, "jobs/restore_bucket.py", "--help")
    assert script.returncode == 0 and script.stdout.startswith("usage: restore_bucket.py ")
    assert flags(command.stdout) == flags(script.stdout) and "--version" in flags(script.stdout)


def test_the_command_refuses_a_bad_spec_with_exit_2_from_any_folder(tmp_path):
    # From another folder: the flags over the demo spec, checked before anything starts.
    done = _run(_command(), "--input", str(tmp_path), "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "must not be inside input.uri" in done.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: {uri: /data/in}\noutput: {uri: /data/out}\nresources: {max_actor: 2}\n")
    done = _run(_command(), "--spec", str(bad), cwd=tmp_path)
    assert done.returncode == 2 and "resources.max_actor: unknown key" in done.stderr
