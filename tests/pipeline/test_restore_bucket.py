"""The restore_bucket command line: the embedded demo, exit codes, flags over the spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
import yaml
from PIL import Image

from jobs.restore_bucket import main
from tests.images import bad_files, photo

pytestmark = pytest.mark.slow


def test_embedded_demo_routes_and_restores_the_samples(ray_local, tmp_path):
    from pipeline.quality import rain_level

    out = tmp_path / "demo"
    assert main(["--output", str(out), "--run-id", "demo"]) == 0
    rows = {
        r["input_uri"].rsplit("/", 1)[-1]: r
        for r in pads.dataset(str(out / "stats"), format="parquet").to_table().to_pylist()
    }
    assert len(rows) == 6 and {r["status"] for r in rows.values()} == {"ok"}
    noisy = ("astronaut.png", "astronaut_rgba.png", "altai.jpg", "canopee gray 16-bit.png")
    for name in noisy:
        # Routed to the bundled denoiser, which removes most of the samples' noise (sigma 25 added).
        assert rows[name]["task"] == "denoise" and rows[name]["noise_after"] < 0.5 * rows[name]["noise_before"]
    rainy = rows["coffee_rain.png"]
    assert (rainy["task"], rainy["action"]) == ("derain", "restored")
    derained = np.asarray(Image.open(out / "images" / "coffee_rain.png"))
    assert rain_level(derained) < 0.5 * rainy["rain_before"]
    shaken = rows["motorcycle_shake.png"]
    assert (shaken["task"], shaken["action"]) == ("deblur", "restored") and shaken["degradation"].startswith("blur ")
    samples = Path(__file__).resolve().parents[2] / "dgunet" / "samples"
    before = np.asarray(Image.open(samples / "motorcycle_shake.png"), np.float64)
    after = np.asarray(Image.open(out / "images" / "motorcycle_shake.png"), np.float64)
    assert after.shape == before.shape and np.abs(after - before).mean() > 1  # sharpened, not passed
    assert len(list((out / "images").rglob("*.png"))) == 6


def _spec(tmp_path, weights, **extra):
    path, widths = weights
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "model": {"weights": path, **widths},
                "input": {"uri": str(tmp_path / "in")},
                "output": {"uri": str(tmp_path / "out")},
                **extra,
            }
        )
    )
    return str(spec)


def test_failures_set_the_exit_code_unless_allowed(ray_local, tmp_path, tiny_weights):
    (tmp_path / "in").mkdir()
    Image.fromarray(photo()).save(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "bad.png").write_bytes(bad_files()["bad/truncated.png"])
    spec = _spec(tmp_path, tiny_weights)
    assert main(["--spec", spec, "--run-id", "a"]) == 1  # written first, then the non-zero exit
    assert (tmp_path / "out" / "images" / "good.png").exists()
    (tmp_path / "in" / "bad2.png").write_bytes(b"")
    assert main(["--spec", spec, "--allow-failed-fraction", "1.0", "--run-id", "b"]) == 0


def test_bad_spec_exits_2_naming_the_key(tmp_path, tiny_weights, capsys):
    spec = _spec(tmp_path, tiny_weights, resources={"max_actor": 2})
    assert main(["--spec", spec]) == 2
    assert "resources.max_actor: unknown key" in capsys.readouterr().err


def test_weights_that_do_not_fit_the_spec_exit_2_naming_the_keys_before_any_work(tmp_path, tiny_weights, capsys):
    (tmp_path / "in").mkdir()
    Image.fromarray(photo()).save(tmp_path / "in" / "a.png")
    path, widths = tiny_weights  # a real checkpoint of n_feat 8
    spec = _spec(tmp_path, (path, {**widths, "n_feat": 16}))
    assert main(["--spec", spec]) == 2
    err = capsys.readouterr().err
    assert "model.weights:" in err and path in err
    assert "basic.shallow_feat2.0.weight: checkpoint (8, 3, 3, 3), model (16, 3, 3, 3)" in err
    assert not (tmp_path / "out").exists()  # no lock, no images, no stats, no run summary


def test_a_task_without_a_bundled_model_or_weights_exits_2_before_any_work(tmp_path, monkeypatch, capsys):
    import dgunet.registry

    (tmp_path / "in").mkdir()
    Image.fromarray(photo()).save(tmp_path / "in" / "a.png")
    monkeypatch.setattr(dgunet.registry, "WEIGHTS", {})  # whichever tasks ship, none does here
    argv = ["--task", "derain", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("model.weights: No trained default model for task 'derain'") and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_paired_reference_gives_psnr_and_ssim(ray_local, tmp_path):
    from dgunet.degrade import add_noise, to_uint8

    rng = np.random.default_rng(3)
    (tmp_path / "noisy" / "set").mkdir(parents=True)
    (tmp_path / "clean" / "set").mkdir(parents=True)
    for i in range(2):
        clean = photo(48, 64, seed=i, noise=0.0)
        Image.fromarray(clean).save(tmp_path / "clean" / "set" / f"{i}.png")
        noisy = to_uint8(add_noise(clean.astype(np.float32) / 255, 25.0, rng))
        Image.fromarray(noisy).save(tmp_path / "noisy" / "set" / f"{i}.png")
    args = [
        "--input",
        str(tmp_path / "noisy"),
        "--reference",
        str(tmp_path / "clean"),
        "--output",
        str(tmp_path / "out"),
    ]
    assert main(args) == 0
    rows = pads.dataset(str(tmp_path / "out" / "stats"), format="parquet").to_table().to_pylist()
    assert len(rows) == 2
    for r in rows:
        assert r["psnr_after"] > r["psnr_before"] + 3 and r["ssim_after"] > r["ssim_before"], r


def test_overlapping_run_exits_3_and_touches_nothing(ray_local, tmp_path, tiny_weights, capsys):
    from pipeline.run.lock import RunLock
    from pipeline.storage import StorageOptions

    (tmp_path / "in").mkdir()
    Image.fromarray(photo()).save(tmp_path / "in" / "a.png")
    with RunLock(str(tmp_path / "out"), "still-running", StorageOptions()):
        assert main(["--spec", _spec(tmp_path, tiny_weights)]) == 3
    assert "Another run (still-running" in capsys.readouterr().err
    assert not (tmp_path / "out" / "images").exists()
