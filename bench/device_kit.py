"""The device kit: one command that checks, measures and trains on a lent GPU, then brings results back.

A GPU is lent only to some sessions, for minutes, on a bare machine without Ray or network; this script
is ready before it is. Three sections run in order under one deadline, each recorded even when another
fails (the exit code is 1 when any check failed):

1. **check**: ``restore`` on CUDA for every input kind the CPU tests cover (8/16-bit, gray, gray+alpha,
   RGBA, odd sizes, tiled), float32 against bfloat16 and float16 autocast, channels_last, the mergeblock
   solve kept in float32, no NaN; :class:`pipeline.stages.model.RestoreModel` on CUDA with a batch of mixed
   sizes; a real ``torch.OutOfMemoryError`` under a memory cap, recovered in tiles.
2. **measure**: forward throughput of the bundled model and each official preset at 256x256, 1280x720
   and 1920x1080, per precision and batch size: images/s, megapixels/s, TFLOP/s and its fraction of the
   card's peak, peak memory; ``torch.compile`` against eager; then how many CPU threads of PNG decode and
   encode keep the GPU busy, and the busy fraction reached.
3. **train**: :func:`pipeline.training.loop.fit` (the loop of ``jobs/train.py``, without Ray) on each training
   spec given, for the time left, checkpointing every minute; the checkpoints and histories come back
   for evaluation on the CPU.

Prepare here, then run there (the device tool's ``run``, carrying ``.kit``)::

    python bench/device_kit.py pack                       # .kit/: training photos and pydantic wheels
    bash bench/device_kit.sh                              # on the device: installs .kit/wheels, runs all
    python bench/device_kit.py run --dry-run --out /tmp/kit   # the same code on this CPU, tiny sizes (CI)

Results: ``$OUT/kit.json`` (every number), ``$OUT/kit.log``, and per training spec
``$OUT/<spec name>.pth`` (the whole checkpoint; ``.safetensors``, the weights alone, where it is too big
to come back) and ``$OUT/<spec name>.history.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgunet.inference import PRECISIONS  # noqa: E402 (after the path to this checkout)
from dgunet.registry import TASKS  # noqa: E402

KIT = Path(".kit")
MAX_RETURNED = 15 * 2**20  # a file the device tool brings back is at most 16 MiB
TRAIN_SPECS = tuple(f"jobs/specs/train_{task}_gpu.yaml" for task in TASKS)
# Dense peak TFLOP/s by card and dtype (vendor figures, without sparsity); float32 runs on TF32 tensor
# cores when torch allows it, so both are given.
PEAKS = {
    "H100": {"bfloat16": 989.0, "float16": 989.0, "tf32": 494.0, "float32": 67.0},
    "H200": {"bfloat16": 989.0, "float16": 989.0, "tf32": 494.0, "float32": 67.0},
}


class Kit:
    """Collects results and failures; every section writes into ``self.results[section]``."""

    def __init__(self, out: Path, deadline: float, dry_run: bool, compile: bool = False, measure_share: float = 0.3):
        import torch

        self.out, self.deadline, self.dry, self.compile = out, deadline, dry_run, compile
        self.measure_share = measure_share  # of the time left when forward timing starts
        self.device = torch.device("cuda" if torch.cuda.is_available() and not dry_run else "cpu")
        self.results: dict[str, Any] = {"dry_run": dry_run, "device": self.describe_device(), "failures": []}
        out.mkdir(parents=True, exist_ok=True)
        self.log_file = open(out / "kit.log", "a")  # noqa: SIM115 (kept open for the whole run)

    def describe_device(self) -> dict[str, Any]:
        import torch

        d: dict[str, Any] = {"torch": torch.__version__, "cpus": os.cpu_count()}
        if self.device.type == "cuda":
            p = torch.cuda.get_device_properties(0)
            d.update(name=p.name, memory_gib=round(p.total_memory / 2**30, 1), sms=p.multi_processor_count)
        return d

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def expect(self, ok: bool, what: str) -> None:
        """A check: recorded, and a failure makes the kit exit 1, but the run goes on."""
        self.log(("ok   " if ok else "FAIL ") + what)
        if not ok:
            self.results["failures"].append(what)

    def section(self, name: str, fn) -> None:
        t0 = time.monotonic()
        self.log(f"== {name} ({self.left():.0f} s left)")
        try:
            fn(self)
        except Exception:
            self.expect(False, f"{name}: {traceback.format_exc(limit=4)}")
        self.results.setdefault("seconds", {})[name] = round(time.monotonic() - t0, 1)
        self.save()

    def save(self) -> None:
        (self.out / "kit.json").write_text(json.dumps(self.results, indent=1, default=str))


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------- check


def input_kinds(rng, dry: bool) -> dict[str, Any]:
    """The layouts the CPU tests decode to: 8/16-bit, gray, gray+alpha, RGBA, odd and tiny sizes."""
    import numpy as np

    h, w = (37, 53) if dry else (123, 517)
    photo = (rng.random((h, w, 3)) * 60 + np.linspace(40, 190, w)[None, :, None]).astype(np.uint8)
    alpha = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
    return {
        "rgb8": photo,
        "rgb16": photo.astype(np.uint16) * 257,
        "gray8": photo[..., :1].copy(),
        "gray_alpha8": np.concatenate([photo[..., :1], alpha], -1),
        "rgba8": np.concatenate([photo, alpha], -1),
        "one_pixel": photo[:1, :1].copy(),
        "flat": np.full((h, w, 3), 128, np.uint8),
    }


def check(kit: Kit) -> None:
    import dataclasses

    import numpy as np
    import torch

    from dgunet import InferenceOptions, create_model, restore

    dev, rng = kit.device, np.random.default_rng(0)
    res = kit.results.setdefault("check", {})
    model_cpu = create_model("denoise")
    model = create_model("denoise", device=dev)
    base = InferenceOptions(max_pixels=1 << 30, tile=128, overlap=32)
    kinds = input_kinds(rng, kit.dry)
    tiled_side, tile = ((90, 110), 64) if kit.dry else ((700, 900), 256)
    kinds["tiled"] = (rng.random((*tiled_side, 3)) * 255).astype(np.uint8)
    tolerance = {"float32": 5e-3, "bfloat16": 6e-2, "float16": 2e-2}  # of the [0, 1] range; TF32 in float32
    for name, img in kinds.items():
        opts = dataclasses.replace(base, max_pixels=tile * tile, tile=tile, overlap=16) if name == "tiled" else base
        ref = restore(model_cpu, img, options=opts).astype(np.float64)
        scale = 65535.0 if img.dtype == np.uint16 else 255.0
        for precision in PRECISIONS:
            out = restore(model, img, options=dataclasses.replace(opts, precision=precision))
            err = float(np.abs(out.astype(np.float64) - ref).max() / scale)
            res[f"{name}/{precision}/max_err"] = err
            same = out.shape == img.shape and out.dtype == img.dtype
            kit.expect(same and np.isfinite(out).all(), f"{name} {precision}: shape, dtype and no NaN")
            if name in ("rgba8", "gray_alpha8"):
                kit.expect(np.array_equal(out[..., -1], img[..., -1]), f"{name} {precision}: alpha kept")
            kit.expect(err <= tolerance[precision], f"{name} {precision}: max error {err:.2e} vs CPU float32")

    x = torch.rand(2, 3, 64, 96, device=dev)
    with torch.inference_mode():
        a = model(x)
        b = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    model.to(memory_format=torch.contiguous_format)
    diff = float((a - b).abs().max())
    res["channels_last/max_diff"] = diff
    kit.expect(diff < 1e-3, f"channels_last agrees with contiguous ({diff:.1e})")

    solve_dtypes = []
    real_solve = torch.linalg.solve

    def spy(a_, b_, *args, **kwargs):
        solve_dtypes.append((a_.dtype, b_.dtype))
        return real_solve(a_, b_, *args, **kwargs)

    torch.linalg.solve = spy
    try:
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16):
            y = model(x)
    finally:
        torch.linalg.solve = real_solve
    kit.expect(
        bool(solve_dtypes) and all(d == (torch.float32, torch.float32) for d in solve_dtypes),
        f"mergeblock solve in float32 under bfloat16 autocast ({len(solve_dtypes)} solves)",
    )
    kit.expect(bool(torch.isfinite(y).all()), "bfloat16 forward has no NaN")
    threads = torch.get_num_threads()
    check_model_stage(kit, kinds)  # RestoreModel sets the process's torch threads to its own count
    torch.set_num_threads(threads)
    if dev.type == "cuda":
        check_oom(kit)
    else:
        kit.log("skip out-of-memory check: no CUDA")


def decoded_batch(images: dict[str, Any]) -> dict[str, Any]:
    """A batch as the decode stage hands it to the model stage."""
    import numpy as np

    names = list(images)
    return {
        "input_uri": np.array([f"kit://{n}.png" for n in names], dtype=object),
        "status": np.array(["ok"] * len(names), dtype=object),
        "error": np.array([""] * len(names), dtype=object),
        "pixels": np.array([images[n].tobytes() for n in names], dtype=object),
        "shape": np.array([images[n].shape for n in names], dtype=np.int64),
        "dtype": np.array([images[n].dtype.name for n in names], dtype=object),
    }


def model_stage(kit: Kit, **inference):
    from pipeline.stages.model import RestoreModel, resolve_model

    return RestoreModel(
        ref=resolve_model("denoise", arch="dgunet", weights=None),
        inference=inference,
        threads=2,
        use_gpu=kit.device.type == "cuda",
    )


def check_model_stage(kit: Kit, kinds: dict[str, Any]) -> None:
    from pipeline.rows import pixels_of

    stage = model_stage(kit)
    kit.expect(stage.device.type == kit.device.type, f"RestoreModel runs on {stage.device}")
    same_size = {f"{k}_copy": v for k, v in list(kinds.items())[:2]}  # two equal sizes: one tensor batch
    batch = decoded_batch({**kinds, **same_size})
    out = stage(batch)
    for i, uri in enumerate(out["input_uri"]):
        ok = out["status"][i] == "ok"
        if ok:
            img = pixels_of(out["restored"][i], batch["shape"][i], batch["dtype"][i])
            ok = img.shape == tuple(batch["shape"][i])
        kit.expect(ok, f"RestoreModel row {uri}: {out['status'][i]} {out['error'][i]}")


def check_oom(kit: Kit) -> None:
    """A 1 GiB cap makes a whole 4k image run out of memory (its activations take several GiB); the stage
    retries it in tiles of the weights' recommended size, which fit."""
    import numpy as np
    import torch

    from dgunet import InferenceOptions, create_model, restore

    img = (np.random.default_rng(1).random((2160, 3840, 3)) * 255).astype(np.uint8)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, 2**30 / total))  # 1 GiB
    try:
        model = create_model("denoise", device="cuda")
        raised = False
        try:
            restore(model, img, options=InferenceOptions(max_pixels=1 << 30))
        except torch.OutOfMemoryError:  # not kept: its traceback would hold the tensors that filled memory
            raised = True
        kit.expect(raised, "a whole 3840x2160 image under a 1 GiB cap raises torch.OutOfMemoryError")
        del model
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        stage = model_stage(kit, max_pixels=1 << 30)
        out = stage(decoded_batch({"big": img}))
        kit.expect(out["status"][0] == "ok", f"RestoreModel recovers it in tiles: {out['status'][0]} {out['error'][0]}")
        kit.results["check"]["oom_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------- measure


def forward_flops(model, h: int, w: int, device) -> float:
    """FLOPs of one forward pass at ``h x w`` (multiply-adds counted as 2), by torch's counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, h, w, device=device))
    return float(counter.get_total_flops())


def time_forward(
    model, x, precision: str, device, *, min_iters: int, min_seconds: float, max_seconds: float = 10.0
) -> float:
    """Seconds per forward pass (after a warm-up), under autocast ``precision``: at least ``min_iters``
    passes and ``min_seconds``, unless they pass ``max_seconds`` (one pathologically slow case, such as the
    batched solve that took 22 s a pass before the mergeblock was fixed, must not eat the kit's minutes)."""
    import torch

    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        model(x)
        sync(device)
        n, t0 = 0, time.perf_counter()

        def more() -> bool:
            spent = time.perf_counter() - t0
            return n == 0 or (n < min_iters or spent < min_seconds) and spent < max_seconds

        while more():
            model(x)
            n += 1
            if time.perf_counter() - t0 > max_seconds / 2:
                sync(device)  # queued kernels count towards the cap
        sync(device)
    return (time.perf_counter() - t0) / n


def measure(kit: Kit) -> None:
    import torch

    from dgunet import create_model
    from dgunet.registry import PRESETS

    dev = kit.device
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    rows = kit.results.setdefault("measure", {}).setdefault("forward", [])
    models = {"bundled/denoise_small": lambda: create_model("denoise")}
    for (task, arch), _ in sorted(PRESETS.items()):
        models[f"preset/{task}/{arch}"] = lambda task=task, arch=arch: create_model(task, arch=arch, weights=False)
    if kit.dry:  # the bundled model and a tiny stand-in for the presets
        tiny = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4, "depth": 1}
        models = {
            "bundled/denoise_small": models["bundled/denoise_small"],
            "tiny": lambda: create_model("denoise", weights=False, **tiny),
        }
        sizes = {"64x64": (64, 64, (1, 2))}
        grids = {m: (sizes, PRECISIONS) for m in models}
    else:
        sizes = {"256x256": (256, 256, (1, 4, 16)), "1280x720": (720, 1280, (1, 4)), "1920x1080": (1080, 1920, (1, 2))}
        # The bundled model on the whole grid; the presets (5-30x its compute) where archives run.
        grids = {m: ({"1280x720": sizes["1280x720"]}, ("bfloat16",)) for m in models}
        grids["bundled/denoise_small"] = (sizes, PRECISIONS)
    name = kit.results["device"].get("name", "")
    peaks = next((v for k, v in PEAKS.items() if k in name), None)
    budget = kit.left() * (kit.measure_share if not kit.dry else 1.0)  # the rest: compile, feeding, training
    stop_at = time.monotonic() + budget
    for mname, make in models.items():
        model = make().eval().to(dev, memory_format=torch.channels_last)
        flops_per_px = forward_flops(model, 64, 64, dev) / (64 * 64)
        model_sizes, precisions = grids[mname]
        for size, (h, w, batches) in model_sizes.items():
            for precision in precisions:
                for b in batches:
                    if time.monotonic() > stop_at:
                        kit.log(f"measure: budget spent, skipping {mname} {size} {precision} b{b}")
                        continue
                    row = {"model": mname, "size": size, "precision": precision, "batch": b}
                    try:
                        if dev.type == "cuda":
                            torch.cuda.reset_peak_memory_stats()
                        x = torch.rand(b, 3, h, w, device=dev).contiguous(memory_format=torch.channels_last)
                        s = time_forward(model, x, precision, dev, min_iters=3, min_seconds=0.3 if not kit.dry else 0)
                    except torch.OutOfMemoryError:
                        row["error"] = "out of memory"
                        rows.append(row)
                        torch.cuda.empty_cache()
                        continue
                    tflops = flops_per_px * h * w * b / s / 1e12
                    row.update(
                        images_per_s=b / s,
                        megapixels_per_s=b * h * w / s / 1e6,
                        tflops=tflops,
                        peak_gib=torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None,
                    )
                    if peaks:
                        row["fraction_of_peak"] = tflops / peaks["tf32" if precision == "float32" else precision]
                    rows.append(row)
                    kit.log(json.dumps(row))
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    measure_tiles(kit)
    measure_widths(kit)
    try:  # opt-in: compiling takes a minute or two of a GPU's few minutes, which training needs more
        measure_compile(kit)
    except Exception as exc:  # a compiler missing on a bare machine must not cost the rest of the kit
        kit.log(f"torch.compile failed: {type(exc).__name__}: {str(exc)[:300]}")
        kit.results["measure"]["compile"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    measure_feeding(kit)


def measure_tiles(kit: Kit) -> None:
    """A 1920x1080 image through the bundled weights' recommended tiles (128 px), one tile per forward pass
    against the model stage's GPU default (:func:`pipeline.stages.model.gpu_tile_batch`)."""
    import dataclasses

    import torch

    from dgunet import create_model
    from dgunet.inference import recommended_options, restore_tensor
    from pipeline.stages.model import gpu_tile_batch

    model = create_model("denoise").to(kit.device, memory_format=torch.channels_last)
    h, w = (96, 128) if kit.dry else (1080, 1920)
    x = torch.rand(1, 3, h, w)
    base = recommended_options(model)
    rows = kit.results["measure"].setdefault("tiles", [])
    for precision in ("float32", "float16"):
        for tile_batch in (1, gpu_tile_batch(base.tile)):
            if kit.left() < 200 and not kit.dry:
                return
            opts = dataclasses.replace(base, precision=precision, tile_batch=tile_batch)
            with torch.inference_mode():
                restore_tensor(model, x, opts)  # warm-up (cuDNN's choice of kernels per shape)
                sync(kit.device)
                t0 = time.perf_counter()
                restore_tensor(model, x, opts)
                sync(kit.device)
            row = {"size": f"{w}x{h}", "tile": base.tile, "precision": precision, "tile_batch": tile_batch}
            row["seconds_per_image"] = time.perf_counter() - t0
            rows.append(row)
            kit.log(f"tiles: {json.dumps(row)}")


WIDTHS = ((16, 8, 8), (32, 16, 16), (48, 24, 24), (64, 32, 32))


def measure_widths(kit: Kit) -> None:
    """What wider networks cost on this card: one training step (batch 32 of 128 px, bfloat16 autocast,
    the loss over all stages) and inference images/s at 256x256, per width, on random data. The bundled
    model uses a few percent of a GPU, so a wider one may cost little more time: this is the trade-off
    the next model's width is chosen by."""
    import torch

    from dgunet import create_model
    from dgunet.losses import StagesLoss

    rows = kit.results["measure"].setdefault("widths", [])
    batch, patch = (2, 32) if kit.dry else (32, 128)
    for n_feat, unet, orsnet in WIDTHS[:2] if kit.dry else WIDTHS:
        if kit.left() < 180 and not kit.dry:
            return
        model = create_model("denoise", weights=False, n_feat=n_feat, scale_unetfeats=unet, scale_orsnetfeats=orsnet)
        model = model.to(kit.device, memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        loss_fn = StagesLoss()
        x = torch.rand(batch, 3, patch, patch, device=kit.device).contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(kit.device.type, dtype=torch.bfloat16, enabled=kit.device.type == "cuda")
        _train_step(model, opt, loss_fn, x, autocast)
        sync(kit.device)
        n, t0 = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - t0 < (0 if kit.dry else 2.0):
            _train_step(model, opt, loss_fn, x, autocast)
            n += 1
        sync(kit.device)
        row = {"widths": [n_feat, unet, orsnet], "params": sum(p.numel() for p in model.parameters())}
        row["train_step_s"] = (time.perf_counter() - t0) / n
        model.eval()
        side = 32 if kit.dry else 256
        y = torch.rand(2 if kit.dry else 16, 3, side, side, device=kit.device).contiguous(
            memory_format=torch.channels_last
        )
        s = time_forward(model, y, "bfloat16", kit.device, min_iters=3, min_seconds=0 if kit.dry else 0.5)
        row["infer_images_per_s_256"] = y.shape[0] / s
        rows.append(row)
        kit.log(f"widths: {json.dumps(row)}")
        del model, opt
        if kit.device.type == "cuda":
            torch.cuda.empty_cache()


def _train_step(model, opt, loss_fn, x, autocast) -> None:
    """One step of the training loop's shape: the loss over every stage, restoring ``x`` to itself."""
    with autocast:
        stages = model(x, return_stages=True)
    loss = loss_fn([s.float() for s in stages], x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def best_forward(kit: Kit, model: str, size: str) -> dict[str, Any] | None:
    rows = [
        r
        for r in kit.results["measure"]["forward"]
        if r["model"] == model and r["size"] == size and "images_per_s" in r
    ]
    return max(rows, key=lambda r: r["images_per_s"], default=None)


def measure_compile(kit: Kit) -> None:
    """``torch.compile`` of the bundled model against eager, at the best measured setting."""
    import torch

    from dgunet import create_model

    size = "64x64" if kit.dry else "1280x720"
    best = best_forward(kit, "bundled/denoise_small", size)
    if not kit.compile or best is None or kit.left() < 300:
        kit.log("skip torch.compile: not asked for (--compile), no eager number, or too little time")
        return
    h, w = (64, 64) if kit.dry else (720, 1280)
    model = create_model("denoise").to(kit.device, memory_format=torch.channels_last)
    x = torch.rand(best["batch"], 3, h, w, device=kit.device).contiguous(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    compiled = torch.compile(model)
    first = time_forward(compiled, x, best["precision"], kit.device, min_iters=1, min_seconds=0)
    compile_s = time.perf_counter() - t0 - first
    s = time_forward(compiled, x, best["precision"], kit.device, min_iters=3, min_seconds=0.3 if not kit.dry else 0)
    eager = best["batch"] / best["images_per_s"]
    kit.results["measure"]["compile"] = {
        "size": size,
        "precision": best["precision"],
        "batch": best["batch"],
        "compile_seconds": compile_s,
        "eager_s": eager,
        "compiled_s": s,
        "speedup": eager / s,
    }
    kit.log(f"torch.compile: {eager / s:.2f}x eager, compiled in {compile_s:.0f} s")


def measure_feeding(kit: Kit) -> None:
    """How many CPU threads of PNG decode + encode keep one GPU busy with the bundled model.

    Decode threads turn real PNG files into tensors and feed a queue; the main thread runs the model (at
    the best precision and batch measured) and hands outputs to encode threads. The GPU-busy fraction is
    the model's synchronised time over the wall time.
    """
    import queue
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    import numpy as np
    import torch

    from dgunet import create_model
    from dgunet.inference import InferenceOptions, restore_tensor

    size = "64x64" if kit.dry else "1920x1080"
    h, w = (64, 64) if kit.dry else (1080, 1920)
    best = best_forward(kit, "bundled/denoise_small", size)
    if best is None:
        kit.log("skip feeding: no forward number at this size")
        return
    photo = cv2.resize(cv2.imread(str(Path(__file__).resolve().parents[1] / "dgunet/samples/astronaut.png")), (w, h))
    noisy = np.clip(photo + np.random.default_rng(0).normal(0, 15, photo.shape), 0, 255).astype(np.uint8)
    png = cv2.imencode(".png", noisy, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
    t0 = time.perf_counter()
    for _ in range(5):
        cv2.imencode(
            ".png", cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED), [cv2.IMWRITE_PNG_COMPRESSION, 1]
        )
    cpu_s = (time.perf_counter() - t0) / 5
    feed = kit.results["measure"]["feeding"] = {
        "size": size,
        "precision": best["precision"],
        "batch": best["batch"],
        "cpu_seconds_per_image": cpu_s,
        "gpu_images_per_s": best["images_per_s"],
        "cores_per_gpu_estimate": cpu_s * best["images_per_s"],
        "runs": [],
    }
    model = create_model("denoise").to(kit.device, memory_format=torch.channels_last)
    opts = InferenceOptions(max_pixels=1 << 30, precision=best["precision"])
    n_images = 3 if kit.dry else 96
    threads = [1, 2] if kit.dry else [t for t in (1, 2, 4, 8, 12) if t <= (os.cpu_count() or 1)]
    for t in threads:
        if kit.left() < 60 and not kit.dry:
            break
        q: queue.Queue = queue.Queue(maxsize=4 * t)

        def decode(_: int, q: queue.Queue = q) -> None:
            arr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
            q.put(torch.from_numpy(arr).permute(2, 0, 1).float().div_(255))

        busy, wall0 = 0.0, time.perf_counter()
        with ThreadPoolExecutor(t) as pool, ThreadPoolExecutor(t) as encoder:
            threading.Thread(target=lambda: list(pool.map(decode, range(n_images))), daemon=True).start()
            done, encodes = 0, []
            while done < n_images:
                group = [q.get(timeout=60) for _ in range(min(best["batch"], n_images - done))]
                x = torch.stack(group).to(kit.device, non_blocking=True)
                b0 = time.perf_counter()
                y = restore_tensor(model, x, opts)
                sync(kit.device)
                busy += time.perf_counter() - b0
                out = (y.clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).cpu().numpy()
                encodes += [encoder.submit(cv2.imencode, ".png", o, [cv2.IMWRITE_PNG_COMPRESSION, 1]) for o in out]
                done += len(group)
            for f in encodes:
                f.result(timeout=60)
        wall = time.perf_counter() - wall0
        run = {"threads": t, "images_per_s": n_images / wall, "gpu_busy": busy / wall}
        feed["runs"].append(run)
        kit.log(f"feeding: {json.dumps(run)}")
        if run["gpu_busy"] > 0.95:
            break


# ----------------------------------------------------------------------------------------------- train


def train(kit: Kit, specs: list[str], data: str | None) -> None:
    """Each spec for an equal share of the time left, from its ``checkpoint.init`` or from scratch."""
    import torch

    from dgunet.checkpoint import extract_state_dict, parse_checkpoint, save_safetensors
    from pipeline.storage import read_bytes
    from pipeline.training.loop import fit
    from pipeline.training.spec import TrainSpec

    res = kit.results.setdefault("train", {})
    shares = [2.0] + [1.0] * (len(specs) - 1)  # the first spec (the shipped denoiser's) gets twice the time
    for i, path in enumerate(specs):
        name = Path(path).stem
        work = Path("/tmp/kit-train") / name
        overrides: dict[str, Any] = {"checkpoint.uri": str(work)}
        if data:
            overrides["data.train"] = data
        if kit.dry:  # tiny: the same code path in seconds
            tiny = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4, "depth": 1}
            overrides.update({f"model.{k}": v for k, v in tiny.items()})
            short = {"steps": 2, "batch_size": 2, "patch": 32, "progressive": (), "warmup_steps": 1}
            overrides.update({f"optim.{k}": v for k, v in short.items()})
            overrides.update({"checkpoint.every_steps": 1, "checkpoint.init": None})
            small = {"val_fraction": 0.5, "val_patch": 32, "val_per_image": 1, "max_side": 128}
            overrides.update({f"data.{k}": v for k, v in small.items()})
            overrides["resources.loader_threads"] = 1
        spec = TrainSpec.from_yaml(path, overrides)
        seconds = (kit.left() - 45) * shares[i] / sum(shares[i:])  # 45 s: loading data and the final saves
        if seconds < 40 and not kit.dry:
            kit.log(f"train {name}: skipped, {seconds:.0f} s is too little")
            res[name] = {"skipped": f"{seconds:.0f} s left"}
            continue
        seconds = max(seconds, 30.0) if kit.dry else seconds
        kit.log(f"train {name}: {seconds:.0f} s on {kit.device}")
        t0 = time.monotonic()
        metrics = fit(
            spec,
            device=str(kit.device),
            time_limit_s=seconds,
            save_every_s=60,
            loader_threads=spec.resources.loader_threads or max(1, (os.cpu_count() or 2) - 2),
            log=kit.log,
        )
        # The whole checkpoint comes back where it fits what a call returns (it holds the spec, steps and
        # Adam's state: resumable, and what jobs/export_weights.py reads); else the weights alone.
        last = work / "last.pth"
        if last.stat().st_size <= MAX_RETURNED:
            (kit.out / f"{name}.pth").write_bytes(last.read_bytes())
        else:
            state = extract_state_dict(parse_checkpoint(read_bytes(str(last)), name="last.pth"))
            save_safetensors(kit.out / f"{name}.safetensors", state, name=name, task=spec.task)
        (kit.out / f"{name}.history.jsonl").write_bytes((work / "history.jsonl").read_bytes())
        res[name] = {"metrics": metrics, "seconds": time.monotonic() - t0, "spec": spec.model_dump(mode="json")}
        kit.expect(bool(metrics) and metrics.get("val_psnr", 0) > 0, f"train {name}: {metrics.get('step')} steps")
        if kit.device.type == "cuda":
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------ pack


def pack(args) -> int:
    """Stage what the device lacks under ``.kit/``: training photos (lossless WebP) and pydantic wheels."""
    import subprocess

    from PIL import Image

    data = KIT / "data" / "train"
    data.mkdir(parents=True, exist_ok=True)
    for src in sorted(Path(args.photos).glob("*.png")):
        img = Image.open(src).convert("RGB")
        if max(img.size) > args.max_side:
            s = args.max_side / max(img.size)
            img = img.resize((round(img.width * s), round(img.height * s)), Image.Resampling.BOX)
        img.save(data / (src.stem + ".webp"), lossless=True, method=4)
    wheels = KIT / "wheels"
    wheels.mkdir(exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        "-d",
        str(wheels),
    ]
    for plat in ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64"):
        cmd += ["--platform", plat]
    from importlib.metadata import version

    pins = [f"{p}=={version(p)}" for p in ("pydantic", "pydantic-core", "annotated-types", "typing-inspection")]
    subprocess.run(cmd + pins, check=True)
    total = sum(f.stat().st_size for f in KIT.rglob("*") if f.is_file())
    print(f".kit: {total / 2**20:.1f} MiB ({len(list(data.iterdir()))} photos, wheels: {', '.join(pins)})")
    if total > 56 * 2**20:
        print(
            "Expected .kit under 56 MiB so that the call carries it with the tree; lower --max-side.", file=sys.stderr
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="stage photos and wheels under .kit/ (here, before the call)")
    p.add_argument("--photos", default="data/photos/train")
    p.add_argument("--max-side", type=int, default=1024)
    r = sub.add_parser("run", help="check, measure, train (on the device, or --dry-run here)")
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "results/device_kit")))
    r.add_argument("--budget", type=float, default=510, help="seconds for the whole kit")
    r.add_argument("--sections", default="check,measure,train")
    r.add_argument("--train-spec", action="append", help=f"training specs (default: {', '.join(TRAIN_SPECS)})")
    r.add_argument("--data", help="training photos (default: .kit/data/train if present, else the spec's)")
    r.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, one-step training: tests the kit")
    r.add_argument("--compile", action="store_true", help="also time torch.compile against eager (minutes)")
    r.add_argument("--measure-share", type=float, default=0.3, help="share of the time left for forward timing")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        return pack(args)

    if args.dry_run:
        import torch

        torch.set_num_threads(1)  # CI's small machine runs other things beside it
    deadline = time.monotonic() + args.budget
    kit = Kit(args.out, deadline, args.dry_run, compile=args.compile, measure_share=args.measure_share)
    kit.log(f"device kit on {kit.results['device']}")
    sections = args.sections.split(",")
    data = args.data or (str(KIT / "data" / "train") if (KIT / "data" / "train").is_dir() else None)
    if "check" in sections:
        kit.section("check", check)
    if "measure" in sections:
        kit.section("measure", measure)
    if "train" in sections:
        kit.section("train", lambda k: train(k, args.train_spec or list(TRAIN_SPECS), data))
    kit.log(f"done: {len(kit.results['failures'])} failures; results in {args.out}")
    return 1 if kit.results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
