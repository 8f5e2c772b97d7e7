"""The device kit's dry run: the same checks, measurements and training loop as on a lent GPU, on the CPU
at tiny sizes, so that the kit is known to work before a GPU is lent to run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from dgunet import create_model
from dgunet.checkpoint import check_state_dict, extract_state_dict, parse_checkpoint, read_bytes
from dgunet.tasks import NAMES
from tests.images import photo

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.mark.timeout(1500)  # a loaded machine: the dry run takes minutes where the GPU run is budgeted
def test_dry_run_checks_measures_and_trains(tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    for i, source in enumerate(["lake", "city", "forest", "field"]):
        Image.fromarray(photo(96, 128, seed=i)).save(data / f"{source}__{i}.png")
    out = tmp_path / "out"
    # The device machine has no Ray and no S3 client: the kit must not need them.
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for module in ("ray", "s3fs", "boto3"):
        (blocked / f"{module}.py").write_text(f"raise ImportError('{module} is not on the device machine')\n")
    proc = subprocess.run(
        [sys.executable, "bench/device_kit.py", "run", "--dry-run", "--out", str(out), "--data", str(data)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1400,
        env={**os.environ, "PYTHONPATH": str(blocked)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    kit = json.loads((out / "kit.json").read_text())
    assert kit["dry_run"] and kit["failures"] == []

    # check: every input kind in every precision, compared with the CPU's float32.
    check = kit["check"]
    kinds = {"rgb8", "rgb16", "gray8", "gray_alpha8", "rgba8", "one_pixel", "flat", "tiled"}
    assert {k.split("/")[0] for k in check if k.endswith("max_err")} == kinds
    assert {k.split("/")[1] for k in check if k.endswith("max_err")} == {"float32", "bfloat16", "float16"}
    assert all(check[f"{k}/float32/max_err"] < 1e-5 for k in kinds)  # the same device: the same numbers
    assert "RestoreModel row kit://tiled.png" in (out / "kit.log").read_text()

    # measure: both models, three precisions, two batch sizes, and the feeding runs.
    rows = kit["measure"]["forward"]
    assert {(r["model"], r["precision"], r["batch"]) for r in rows} == {
        (m, p, b) for m in ("bundled/denoise_small", "tiny") for p in ("float32", "bfloat16", "float16") for b in (1, 2)
    }
    assert all(r["images_per_s"] > 0 and r["tflops"] > 0 for r in rows)
    tiles = kit["measure"]["tiles"]  # one tile per pass against the GPU default, per precision
    assert [(r["precision"], r["tile_batch"]) for r in tiles] == [
        (p, b) for p in ("float32", "float16") for b in (1, 128)
    ] and all(r["seconds_per_image"] > 0 for r in tiles)
    widths = kit["measure"]["widths"]
    assert [r["widths"] for r in widths] == [[16, 8, 8], [32, 16, 16]]
    assert widths[0]["params"] < widths[1]["params"] and all(r["train_step_s"] > 0 for r in widths)
    graphs = kit["measure"]["graphs"]  # no CUDA here: the capture falls back to eager, and says so
    assert graphs["batch"] == 2 and graphs["eager_s"] > 0 and graphs["fallback"].startswith("eager: RuntimeError")
    cost = kit["measure"]["cost"]
    assert set(cost) == {"bundled/denoise_small", "tiny"}
    assert all(
        c["dollars_per_million_12mp"] == pytest.approx(c["gpu_hours_per_million_12mp"] * 3.5) for c in cost.values()
    )
    feeding = kit["measure"]["feeding"]
    assert feeding["cpu_seconds_per_image"] > 0 and [r["threads"] for r in feeding["runs"]][0] == 1
    assert all(0 < r["gpu_busy"] <= 1 for r in feeding["runs"])

    # train: every task's GPU spec at once, each in its own process, two steps of its loop after probing its
    # batch; a refused capture (forced) falls back to eager; the checkpoints come back, resumable and loadable.
    assert set(kit["train"]) == {f"train_{task}_gpu" for task in NAMES}
    spans = {}
    for name, result in kit["train"].items():
        assert [r["batch"] for r in result["batch_probe"]] == [1, 2] and result["batch_size"] in (1, 2)
        assert result["forward"].startswith("eager (compile failed: RuntimeError: fail point train.compile")
        log = (out / f"{name}.log").read_text()
        assert "torch.compile (reduce-overhead) failed at step 0; training on eagerly" in log
        spans[name] = (result["started_at"], result["ended_at"])
        # Noise and blur drawn on the device where the spec asks it (deblur; a camera's noise, rain and JPEG
        # have no device form)
        assert result["spec"]["data"]["device_degradations"] is (name == "train_deblur_gpu")
    assert max(a for a, _ in spans.values()) < min(b for _, b in spans.values())  # all ran at once
    for name in kit["train"]:
        history = [json.loads(line) for line in (out / f"{name}.history.jsonl").read_text().splitlines()]
        assert [h["step"] for h in history] == [1, 2] and all(h["val_psnr"] > 0 for h in history)
        ckpt = parse_checkpoint(read_bytes(out / f"{name}.pth"), name=f"{name}.pth")  # weights_only
        assert ckpt["step"] == 2 and ckpt["spec"]["task"] == name.split("_")[1] and "optimizer" in ckpt
        state = extract_state_dict(ckpt)
        model = create_model("denoise", weights=False, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, depth=1)
        check_state_dict(model, state)  # every key and shape of the dry run's tiny widths
        model.load_state_dict(state)
        with torch.inference_mode():
            assert torch.isfinite(model.eval()(torch.rand(1, 3, 32, 32))).all()
