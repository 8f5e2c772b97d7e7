"""Training DGUNet with Ray Train: data-parallel over N workers, CPU or GPU, resumable.

The loop keeps its own official-format checkpoint (``<checkpoint.uri>/last.pth``: ``epoch``,
``state_dict``, ``optimizer`` plus ``step``, ``config`` and the spec), so that ``dgunet.load_checkpoint``
and the restore pipeline take it as it is, and a restarted job resumes where it stopped. Every
``checkpoint.every_steps`` steps it validates, appends a line to ``history.jsonl`` and reports the same
metrics to Ray Train.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from typing import Any

import numpy as np

from .train_spec import TrainSpec


def source_of(uri: str) -> str:
    """Files of one source share the name part before the last ``__`` (``<source>__<variant>.png``);
    a name without ``__`` is a source of its own."""
    stem = os.path.basename(uri).rsplit(".", 1)[0]
    return stem.rsplit("__", 1)[0]


def split_sources(uris: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Hold out whole sources, chosen by a hash of their name (stable across machines)."""
    sources = sorted({source_of(u) for u in uris}, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    n_val = round(len(sources) * val_fraction)
    val = set(sources[:n_val])
    return [u for u in uris if source_of(u) not in val], [u for u in uris if source_of(u) in val]


def load_rgb(uri: str, *, max_side: int | None = None) -> np.ndarray:
    from PIL import Image, ImageOps

    from .storage import read_bytes

    img = ImageOps.exif_transpose(Image.open(io.BytesIO(read_bytes(uri)))).convert("RGB")
    if max_side and max(img.size) > max_side:
        s = max_side / max(img.size)
        img = img.resize((round(img.width * s), round(img.height * s)), Image.Resampling.BOX)
    return np.asarray(img)


def lr_at(step: int, spec: TrainSpec) -> float:
    """Linear warm-up, then cosine from ``lr`` down to ``lr_min`` at the last step."""
    o = spec.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    t = (step - o.warmup_steps) / max(1, o.steps - o.warmup_steps)
    return o.lr_min + 0.5 * (o.lr - o.lr_min) * (1 + math.cos(math.pi * min(1.0, t)))


def psnr(x, y) -> float:
    mse = float(((x.clamp(0, 1) - y) ** 2).mean())
    return 10 * math.log10(1 / max(mse, 1e-12))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point; ``config["spec"]`` is a :class:`TrainSpec` as a dict."""
    import ray.train
    import ray.train.torch
    import torch

    from dgunet.checkpoint import extract_state_dict, parse_checkpoint, save_checkpoint
    from dgunet.losses import StagesLoss
    from dgunet.patches import PatchSampler, fixed_validation_set
    from dgunet.registry import describe, make_config, model_from_config

    from .storage import exists, join_uri, list_images, read_bytes, write_bytes_atomic

    spec = TrainSpec.model_validate(config["spec"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_worker)))
    device = ray.train.torch.get_device()

    # Data: every worker holds the (small) clean set in memory and draws its own crops.
    degradation = spec.degradation.build()
    if spec.data.paired:
        targets = [u for u, _ in list_images(join_uri(spec.data.train, "target"))]
        train_uris, val_uris = split_sources(targets, spec.data.val_fraction)
        to_input = lambda u: u.replace("/target/", "/input/")  # noqa: E731
        train_clean = [load_rgb(u, max_side=spec.data.max_side) for u in train_uris]
        pairs = [load_rgb(to_input(u), max_side=spec.data.max_side) for u in train_uris]
    else:
        train_uris, val_uris = split_sources([u for u, _ in list_images(spec.data.train)], spec.data.val_fraction)
        train_clean = [load_rgb(u, max_side=spec.data.max_side) for u in train_uris]
        pairs = None
    samplers: dict[tuple[int, int], PatchSampler] = {}

    def sampler_at(step: int) -> PatchSampler:
        patch, batch = spec.optim.phase(step)
        if (patch, batch) not in samplers:
            samplers[(patch, batch)] = PatchSampler(
                train_clean, patch=patch, batch=batch, degradation=degradation, pairs=pairs
            )
        return samplers[(patch, batch)]

    val_degradation = degradation
    if "noise" in degradation.kinds:
        val_degradation = spec.degradation.build(sigma=(spec.data.val_sigma, spec.data.val_sigma))
    val_set = fixed_validation_set(
        [load_rgb(u, max_side=spec.data.max_side) for u in val_uris],
        patch=spec.data.val_patch,
        per_image=spec.data.val_per_image,
        degradation=val_degradation,
        seed=spec.seed,
    )
    if rank == 0:
        print(f"train: {len(train_uris)} images; validation: {len(val_uris)} images from held-out sources")

    cfg = make_config(spec.model.arch, task=spec.task, **spec.model.model_dump(exclude={"arch"}))
    model = model_from_config(cfg)
    memory_format = torch.channels_last if spec.optim.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=spec.optim.lr, betas=spec.optim.betas, weight_decay=spec.optim.weight_decay
    )
    last_uri = join_uri(spec.checkpoint.uri, "last.pth")
    history_uri = join_uri(spec.checkpoint.uri, "history.jsonl")
    start_step, history = 0, []
    if exists(last_uri):
        ckpt = parse_checkpoint(read_bytes(last_uri), name=last_uri)
        model.load_state_dict(extract_state_dict(ckpt))
        optimizer.load_state_dict(ckpt["optimizer"])
        start_step = int(ckpt["step"])
        if exists(history_uri):
            history = [json.loads(line) for line in read_bytes(history_uri).decode().splitlines() if line]
        if rank == 0:
            print(f"resumed from {last_uri} at step {start_step}")
    model = ray.train.torch.prepare_model(model)  # DDP over the workers, on their device
    raw_model = model.module if hasattr(model, "module") else model
    criterion = StagesLoss(edge_weight=spec.optim.edge_weight).to(device)

    def validate() -> tuple[float, float]:
        raw_model.eval()
        losses, psnrs = [], []
        with torch.inference_mode():
            for degraded, clean in val_set:
                degraded = degraded.to(device, memory_format=memory_format)
                clean = clean.to(device)
                stages = raw_model(degraded, return_stages=True)
                losses.append(float(criterion(stages, clean)))
                psnrs.extend(psnr(o[None], c[None]) for o, c in zip(stages[0], clean))
        raw_model.train()
        return float(np.mean(losses)) if losses else float("nan"), float(np.mean(psnrs)) if psnrs else float("nan")

    model.train()
    window_loss, window_start, every = [], time.perf_counter(), spec.checkpoint.every_steps
    for step in range(start_step, spec.optim.steps):
        # A generator per (seed, rank, step): a resumed run draws the batches the uninterrupted one would.
        rng = np.random.default_rng([spec.seed, rank, step])
        degraded, clean = sampler_at(step).sample(rng)
        degraded = degraded.to(device, memory_format=memory_format)
        clean = clean.to(device, memory_format=memory_format)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, spec)
        loss = criterion(model(degraded, return_stages=True), clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window_loss.append(loss.item())
        done = step + 1
        if done % every == 0 or done == spec.optim.steps:
            elapsed = time.perf_counter() - window_start
            metrics = {
                "step": done,
                "epoch": done // every,
                "lr": lr_at(step, spec),
                "patch": spec.optim.phase(step)[0],
                "batch_size": spec.optim.phase(step)[1],
                "train_loss": float(np.mean(window_loss)),
                "seconds_per_step": elapsed / len(window_loss),
            }
            if rank == 0:
                metrics["val_loss"], metrics["val_psnr"] = validate()
                history.append(metrics)
                save_checkpoint(
                    last_uri,
                    raw_model,
                    epoch=metrics["epoch"],
                    optimizer=optimizer,
                    step=done,
                    config=describe(cfg),
                    spec=spec.model_dump(mode="json"),
                    meta={"task": spec.task, "val_psnr": metrics["val_psnr"]},
                )
                write_bytes_atomic(history_uri, "".join(json.dumps(h) + "\n" for h in history).encode())
                print(json.dumps(metrics), flush=True)
            ray.train.report(metrics)
            window_loss, window_start = [], time.perf_counter()


def run_training(spec: TrainSpec, *, name: str = "dgunet-train", storage_path: str | None = None):
    """Run the spec on the connected Ray cluster (``ray.init`` first); returns Ray Train's result."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    res = spec.resources
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec.model_dump(mode="json")},
        scaling_config=ScalingConfig(
            num_workers=res.workers,
            use_gpu=res.use_gpu,
            resources_per_worker={"CPU": res.cpus_per_worker, **({"GPU": 1} if res.use_gpu else {})},
        ),
        run_config=RunConfig(name=name, storage_path=storage_path),
    )
    return trainer.fit()
