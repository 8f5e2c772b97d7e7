"""Training on Ray Train: checkpoints in the official format, history, and resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dgunet import create_model, load_checkpoint
from pipeline.training.data import split_sources
from pipeline.training.loop import crops_drawn, lr_at, run_training
from pipeline.training.spec import OptimSpec, TrainSpec
from tests.images import photo

pytestmark = pytest.mark.slow


def _spec(tmp_path, steps: int, **data) -> TrainSpec:
    return TrainSpec.model_validate(
        {
            "task": "denoise",
            "model": {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4, "depth": 1},
            "data": {
                "train": str(tmp_path / "clean"),
                "val_fraction": 0.34,
                "val_patch": 32,
                "val_per_image": 2,
                **data,
            },
            "optim": {"steps": steps, "batch_size": 2, "patch": 32, "warmup_steps": 2},
            "checkpoint": {"uri": str(tmp_path / "ckpt"), "every_steps": 2},
            "resources": {"workers": 1, "cpus_per_worker": 1},
        }
    )


def test_train_checkpoint_and_resume(ray_local, tmp_path):
    (tmp_path / "clean").mkdir()
    for i, source in enumerate(["lake", "lake", "city", "forest"]):
        Image.fromarray(photo(48, 64, seed=i)).save(tmp_path / "clean" / f"{source}__{i}.png")
    train, _ = split_sources(sorted(str(p) for p in (tmp_path / "clean").iterdir()), 0.34)
    result = run_training(_spec(tmp_path, steps=4), storage_path=str(tmp_path / "ray"))
    assert result.error is None
    history = [json.loads(line) for line in (tmp_path / "ckpt" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [2, 4] and all(h["val_psnr"] > 0 for h in history)
    model = create_model("denoise", weights=False, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, depth=1)
    info = load_checkpoint(model, tmp_path / "ckpt" / "last.pth")  # the official format, loadable as is
    assert info["epoch"] == 4 * 2 // len(train)  # epochs' worth of crops: steps x batch over the training images
    first = {k: v.clone() for k, v in model.state_dict().items()}

    result = run_training(_spec(tmp_path, steps=6), storage_path=str(tmp_path / "ray"))  # resumes at step 4
    assert result.error is None
    history = [json.loads(line) for line in (tmp_path / "ckpt" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [2, 4, 6]
    raw = torch.load(tmp_path / "ckpt" / "last.pth", weights_only=True)
    assert raw["step"] == 6 and raw["epoch"] == 6 * 2 // len(train) and set(raw) >= {"state_dict", "optimizer"}
    load_checkpoint(model, tmp_path / "ckpt" / "last.pth")
    assert any(not torch.equal(first[k], v) for k, v in model.state_dict().items())


def test_crops_drawn_follow_the_progressive_phases():
    optim = OptimSpec(batch_size=4, progressive=((10, 96, 1), (5, 64, 2)))
    for steps in (0, 3, 5, 7, 10, 20):
        assert crops_drawn(optim, steps, workers=2) == 2 * sum(optim.phase(s)[1] for s in range(steps))
    assert crops_drawn(optim, 20, workers=1) == 5 * 4 + 5 * 2 + 10 * 1


def test_paired_data_on_two_workers(ray_local, tmp_path):
    """Real degradations as input/ and target/ pairs, data-parallel over 2 workers (DDP on gloo)."""
    rng = np.random.default_rng(0)
    for i, source in enumerate(["a", "b", "c"]):
        clean = photo(48, 64, seed=i)
        for sub, img in (("target", clean), ("input", np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255))):
            (tmp_path / "pairs" / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.astype(np.uint8)).save(tmp_path / "pairs" / sub / f"{source}__{i}.png")
    spec = _spec(tmp_path, steps=2, paired=True)
    spec = TrainSpec.model_validate(
        {
            **spec.model_dump(),
            "data": {**spec.data.model_dump(), "train": str(tmp_path / "pairs")},
            "resources": {"workers": 2, "cpus_per_worker": 1},
        }
    )
    result = run_training(spec, storage_path=str(tmp_path / "ray"))
    assert result.error is None
    history = [json.loads(line) for line in (tmp_path / "ckpt" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [2] and np.isfinite(history[0]["val_psnr"])


def test_validation_split_is_by_source():
    uris = [f"/d/{s}__{v}.png" for s in "abcdefghij" for v in ("light", "dark")]
    train, val = split_sources(uris, 0.2)
    assert len(val) == 4 and not {u.split("__")[0] for u in train} & {u.split("__")[0] for u in val}


def test_learning_rate_warms_up_then_decays(tmp_path):
    spec = _spec(tmp_path, steps=100)
    lrs = [lr_at(s, spec) for s in range(100)]
    assert lrs[0] < lrs[1] <= spec.optim.lr and lrs[-1] < 0.01 * spec.optim.lr
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))


def test_a_run_with_a_time_limit_anneals_over_its_time(tmp_path):
    spec = _spec(tmp_path, steps=100_000)  # a horizon the time limit stops long before
    early = lr_at(50, spec, time_fraction=0.0)
    assert early == pytest.approx(lr_at(50, spec)) and early > 0.99 * spec.optim.lr
    assert lr_at(50, spec, time_fraction=0.5) == pytest.approx((spec.optim.lr + spec.optim.lr_min) / 2)
    assert lr_at(50, spec, time_fraction=1.0) == pytest.approx(spec.optim.lr_min)
    assert lr_at(0, spec, time_fraction=0.9) < spec.optim.lr  # warm-up still comes first


@pytest.fixture
def one_thread():
    """One torch thread: with two on a busy machine, OpenMP's spinning threads bill CPU seconds for waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_cpu_budget_counts_training_over_resumes_and_stops_there(tmp_path, one_thread):
    from pipeline.training.loop import fit

    (tmp_path / "clean").mkdir()
    for i, source in enumerate(["lake", "lake", "city", "forest"]):
        Image.fromarray(photo(48, 64, seed=i)).save(tmp_path / "clean" / f"{source}__{i}.png")
    spec = _spec(tmp_path, steps=100_000)
    spec = spec.model_copy(update={"checkpoint": spec.checkpoint.model_copy(update={"every_steps": 100_000})})
    fit(spec, device="cpu", cpu_limit_s=2.0, save_every_cpu_s=0.5, log=lambda _: None)
    history = [json.loads(line) for line in (tmp_path / "ckpt" / "history.jsonl").read_text().splitlines()]
    spent = [h["cpu_s"] for h in history]
    assert len(history) >= 3 and spent == sorted(spent) and spent[-1] >= 2.0 > spent[-2]
    assert history[-1]["step"] < 100_000 and history[-1]["cpu_hours"] == pytest.approx(spent[-1] / 3600)

    fit(spec, device="cpu", cpu_limit_s=2.0, log=lambda _: None)  # already spent: no step, no new line
    assert len((tmp_path / "ckpt" / "history.jsonl").read_text().splitlines()) == len(history)

    fit(spec, device="cpu", cpu_limit_s=3.0, save_every_cpu_s=0.5, log=lambda _: None)  # resumes the count
    more = [json.loads(line) for line in (tmp_path / "ckpt" / "history.jsonl").read_text().splitlines()]
    assert more[: len(history)] == history and more[len(history)]["cpu_s"] > spent[-1]
    assert more[-1]["cpu_s"] >= 3.0 and more[-1]["step"] > history[-1]["step"]


def test_a_compile_that_fails_falls_back_to_eager_and_says_so(tmp_path, one_thread, monkeypatch):
    """A capture torch refuses (forced by the fail point) costs nothing but a log line: the run goes on
    eagerly, step for step the run that never tried to compile."""
    from pipeline.training.loop import fit

    (tmp_path / "clean").mkdir()
    for i, source in enumerate(["lake", "lake", "city", "forest"]):
        Image.fromarray(photo(48, 64, seed=i)).save(tmp_path / "clean" / f"{source}__{i}.png")
    weights = {}
    for mode in ("none", "reduce-overhead"):
        spec = _spec(tmp_path, steps=4)
        optim = spec.optim.model_copy(update={"compile": mode})
        ckpt = spec.checkpoint.model_copy(update={"uri": str(tmp_path / mode)})
        spec = spec.model_copy(update={"optim": optim, "checkpoint": ckpt})
        monkeypatch.setenv("DGUNET_FAILPOINTS", "train.compile=denoise")
        lines: list[str] = []
        torch.manual_seed(0)  # the same initial weights
        fit(spec, device="cpu", log=lines.append)
        history = [json.loads(line) for line in (tmp_path / mode / "history.jsonl").read_text().splitlines()]
        assert [h["step"] for h in history] == [2, 4]
        weights[mode] = create_model("denoise", weights=str(tmp_path / mode / "last.pth")).state_dict()
        if mode == "none":
            assert all(h["forward"] == "eager" for h in history)
        else:
            assert any("torch.compile (reduce-overhead) failed at step 0; training on eagerly" in x for x in lines)
            assert history[-1]["forward"].startswith("eager (compile failed: RuntimeError: fail point train.compile")
    assert weights["none"].keys() == weights["reduce-overhead"].keys()
    assert all(torch.equal(weights["none"][k], weights["reduce-overhead"][k]) for k in weights["none"])


def test_noise_drawn_on_the_device_reaches_every_training_step(tmp_path, one_thread, monkeypatch):
    """With ``data.device_degradations`` the loader hands the step clean crops and the noise to add; the
    step adds it on the device before the forward pass, and the run resumes as any other."""
    import dgunet.patches
    from pipeline.training.loop import fit

    (tmp_path / "clean").mkdir()
    for i, source in enumerate(["lake", "lake", "city", "forest"]):
        Image.fromarray(photo(48, 64, seed=i)).save(tmp_path / "clean" / f"{source}__{i}.png")
    seen = []
    apply = dgunet.patches.apply_device_ops

    def spy(x, batch, *, quantize):
        out = apply(x, batch, quantize=quantize)
        seen.append((float(batch.sigma.max()), float((out - x).abs().mean())))
        return out

    monkeypatch.setattr(dgunet.patches, "apply_device_ops", spy)
    spec = _spec(tmp_path, steps=4, device_degradations=True)
    fit(spec, device="cpu", loader_threads=1, log=lambda _: None)
    assert len(seen) == 4 and any(sigma > 1 for sigma, _ in seen)
    assert all(diff > 0 for sigma, diff in seen if sigma > 1)
    history = [json.loads(line) for line in (tmp_path / "ckpt" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [2, 4] and all(h["val_psnr"] > 0 for h in history)
