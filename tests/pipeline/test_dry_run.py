"""``--dry-run``: the plan a run would make, its counts, bytes and megapixels, an estimate; nothing written
under the output and no lock taken. Against local folders (and a real run beside it) and SeaweedFS."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pipeline.run.cli import main
from pipeline.run.estimate import FIGURES, estimate
from tests.images import photo
from tests.jobs import write_spec


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: its size and modification time (what a write would change)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _dry(spec: Path, tmp_path: Path, *extra: str) -> dict:
    report = tmp_path / "dry.json"
    assert main(["--spec", str(spec), "--dry-run-json", str(report), *extra]) == 0
    return json.loads(report.read_text())


def _photos(folder: Path, names: list[str], size=(24, 32)) -> None:
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(*size, seed=i)).save(folder / name)


@pytest.mark.slow
def test_a_dry_run_says_what_the_run_then_does_and_writes_nothing(ray_local, tmp_path, tiny_weights, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _photos(src, ["a/1.png", "a/2.png", "b/3.png", "b/4.png", "top.png"])
    res = {"gpus_per_actor": 0, "cpus_per_actor": 1, "max_actors": 1, "batch_size": 2}
    spec = write_spec(tmp_path / "spec.yaml", tiny_weights, input_uri=str(src), output={"uri": str(out)}, resources=res)

    first = _dry(spec, tmp_path, "--price-per-hour", "0.5")
    assert not out.exists()  # nothing under the output: no lock, no folder
    assert (first["listed"], first["to_restore"], first["new"], first["skipped"]) == (5, 5, 5, 0)
    assert first["folders"]["a"]["images"] == 2 and first["folders"]["."]["images"] == 1
    assert first["bytes"] == sum(os.path.getsize(p) for p in src.rglob("*.png"))
    assert first["megapixels"] == pytest.approx(5 * 24 * 32 / 1e6)  # every header read
    est = first["estimate"]
    assert est["device"] == "cpu" and est["seconds_per_megapixel"] == FIGURES["cpu"].seconds_per_megapixel
    assert est["cost"] == pytest.approx(first["megapixels"] * est["seconds_per_megapixel"] / 3600 * 0.5)
    assert "docs/performance.md" in est["source"] and first["routes"] is None
    assert main(["--spec", str(spec), "--run-id", "one"]) == 0

    # Between runs: one changed, one added, one deleted, one output removed.
    Image.fromarray(photo(40, 40, seed=9)).save(src / "a" / "1.png")
    _photos(src, ["b/5.png"])
    (src / "top.png").unlink()
    (out / "images" / "b" / "4.png").unlink()
    before = _tree(out)
    second = _dry(spec, tmp_path)
    assert _tree(out) == before  # the dry run wrote nothing, and took no lock
    counts = ("to_restore", "new", "changed", "output_missing", "skipped", "vanished", "to_adopt")
    assert {k: second[k] for k in counts} == {
        "to_restore": 3,
        "new": 1,
        "changed": 1,
        "output_missing": 1,
        "skipped": 2,
        "vanished": 1,
        "to_adopt": 0,
    }
    capsys.readouterr()
    assert main(["--spec", str(spec), "--run-id", "two"]) == 0
    run = json.loads((out / "runs" / "two.json").read_text())
    assert (run["ok"], run["changed"], run["skipped"], run["vanished"]) == (3, 1, 2, 1)

    # Outputs written but never recorded: the dry run reads their provenance as the run would.
    shutil.rmtree(out / "stats")
    third = _dry(spec, tmp_path)
    assert (third["to_adopt"], third["to_restore"], third["skipped"]) == (5, 0, 0)
    assert not (out / "stats").exists()


def test_dry_run_json_to_stdout_and_the_estimate_for_gpus(tmp_path, tiny_weights, capsys):
    src = tmp_path / "in"
    _photos(src, ["x/1.png", "x/2.png"], size=(100, 50))
    res = {"gpus_per_actor": 1, "max_actors": 4}
    out = {"uri": str(tmp_path / "out")}
    spec = write_spec(tmp_path / "spec.yaml", tiny_weights, input_uri=str(src), output=out, resources=res)
    assert main(["--spec", str(spec), "--dry-run-json", "-", "--price-per-hour", "3"]) == 0
    printed = capsys.readouterr()
    report = json.loads(printed.out)  # stdout is the JSON alone; the text goes to stderr
    assert "DRY RUN" in printed.err and report["megapixels"] == pytest.approx(0.01)
    est = report["estimate"]
    assert (est["device"], est["actors"], report["actors"]) == ("gpu", 4, {"min": 1, "max": 4})
    assert est["seconds"] == pytest.approx(0.01 * FIGURES["gpu"].seconds_per_megapixel / 4)
    assert "H100" in est["source"] and est["cost"] == pytest.approx(est["actor_hours"] * 3)
    assert not (tmp_path / "out").exists()


def test_task_auto_says_routes_are_unknown_until_the_run(tmp_path, capsys):
    _photos(tmp_path / "in", ["1.png"])
    argv = ["--task", "auto", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--dry-run"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "routes   unknown until the run" in text and "task auto" in text


def test_each_task_is_estimated_at_its_own_models_cpu_figure():
    def seconds(task, gpus=0):
        return estimate(megapixels=10.0, task=task, gpus_per_actor=gpus, actors=1).seconds

    denoise = seconds("denoise")
    assert denoise == pytest.approx(10.0 * FIGURES["cpu"].seconds_per_megapixel)
    others = {task: seconds(task) for task in ("deblur", "derain", "dejpeg")}
    assert all(s > denoise for s in others.values()), others  # bench/speed.py: each dearer per pixel
    assert seconds("auto") == max(others.values())  # routes unknown: the dearest for every image
    assert estimate(megapixels=1, task="derain", gpus_per_actor=0, actors=1).note.startswith("the denoiser's CPU")
    gpu = {task: seconds(task, gpus=1) for task in ("denoise", "deblur", "auto")}
    assert set(gpu.values()) == {10.0 * FIGURES["gpu"].seconds_per_megapixel}  # one figure, an upper bound


def test_a_json_path_inside_the_output_and_bad_storage_exit_2(tmp_path, tiny_weights, capsys):
    out = tmp_path / "out"
    spec = write_spec(
        tmp_path / "spec.yaml", tiny_weights, input_uri=str(tmp_path / "in"), output={"uri": str(out)}, resources={}
    )
    (tmp_path / "in").mkdir()
    assert main(["--spec", str(spec), "--dry-run-json", str(out / "runs" / "plan.json")]) == 2
    assert "--dry-run-json: expected a path outside output.uri" in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "in").rmdir()
    assert main(["--spec", str(spec), "--dry-run"]) == 2  # as a run: the input does not exist
    assert "input.uri" in capsys.readouterr().err


@pytest.mark.slow
def test_a_dry_run_on_s3_lists_and_reads_headers_and_writes_nothing(s3_endpoint, s3fs_client, tmp_path, tiny_weights):
    fs = s3fs_client
    fs.mkdir("dryrun")
    for i, name in enumerate(["scans/1.png", "scans/2.jpg", "scans/deep/3.png"]):
        local = tmp_path / Path(name).name
        Image.fromarray(photo(60, 80, seed=i)).save(local)
        fs.put(str(local), f"dryrun/in/{name}")
    out = {"uri": "s3://dryrun/out"}
    spec = write_spec(tmp_path / "spec.yaml", tiny_weights, input_uri="s3://dryrun/in", output=out, resources={})
    report = _dry(spec, tmp_path, "--endpoint-url", s3_endpoint)
    assert (report["listed"], report["new"], report["to_restore"]) == (3, 3, 3)
    assert report["folders"] == {"scans": {"images": 3, "bytes": report["bytes"], "megapixels": pytest.approx(0.0144)}}
    fs.invalidate_cache()
    assert not fs.exists("dryrun/out") and fs.find("dryrun/out") == []
    argv = ["--spec", str(spec), "--endpoint-url", s3_endpoint, "--output", "s3://no-such-bucket/out", "--dry-run"]
    assert main(argv) == 2  # a missing output bucket, found by listing it
