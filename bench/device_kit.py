"""The device kit: one command that checks, measures and trains on a lent GPU, then brings results back.

A GPU is lent only to some sessions, for minutes, on a bare machine without Ray or network; this script
is ready before it is. Three sections run in order under one deadline, each recorded even when another
fails (the exit code is 1 when any check failed):

1. **check**: ``restore`` on CUDA for every input kind the CPU tests cover (8/16-bit, gray, gray+alpha,
   RGBA, odd sizes, tiled), float32 against bfloat16 and float16 autocast, channels_last, the mergeblock
   solve kept in float32, no NaN; :class:`pipeline.stages.model.RestoreModel` on CUDA with a batch of mixed
   sizes; a real ``torch.OutOfMemoryError`` under a memory cap, recovered in tiles.
2. **measure**, in about a minute: forward throughput of the official 17M network (``deblur/dgunet``) and
   of DGUNet+ (``deblur/dgunet_plus``) at 1280x720, 1920x1080 and 3840x2160 in bfloat16 and float16 at
   batch 1 and 4, and of the bundled model: images/s, megapixels/s, TFLOP/s and its fraction of the card's
   peak, peak memory; the bundled model at batch 64, eager against a CUDA graph; the cost of a million
   12-megapixel photos per model at ``--price`` dollars an hour; how many CPU threads of PNG decode and
   encode keep the GPU busy, and the busy fraction reached (``--compile`` adds ``torch.compile``).
3. **train**: every training spec at once, each in a process of its own on the one GPU
   (``train-one``): it times a few steps at batch 32, 64, 128 and 256 and keeps the fastest in images per
   second, starts from the newest weights of its task (a checkpoint an earlier run brought back, carried
   in ``.kit/init/<spec name>.pth``, else the spec's ``checkpoint.init``: the shipped weights), and trains
   with CUDA graphs (``optim.compile: reduce-overhead``) where they capture, eagerly where they do not (the
   log and ``forward`` say which), checkpointing every minute until the deadline.

Prepare here, then run there (the device tool's ``run``, carrying ``.kit``)::

    python bench/device_kit.py pack                       # .kit/: training photos and pydantic wheels
    bash bench/device_kit.sh                              # on the device: installs .kit/wheels, runs all
    python bench/device_kit.py run --dry-run --out /tmp/kit   # the same code on this CPU, tiny sizes (CI)

Results: ``$OUT/kit.json`` (every number), ``$OUT/kit.log``, and per training spec
``$OUT/<spec name>.pth`` (the whole checkpoint; ``.safetensors``, the weights alone, where it is too big
to come back), ``$OUT/<spec name>.history.jsonl``, ``$OUT/<spec name>.train.json`` (its batch probe,
start and forward mode) and ``$OUT/<spec name>.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
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
MEASURE_SECONDS = 60  # forward timing on a GPU: the minutes are for training
# Dense peak TFLOP/s by card and dtype (vendor figures, without sparsity); float32 runs on TF32 tensor
# cores when torch allows it, so both are given.
PEAKS = {
    "H100": {"bfloat16": 989.0, "float16": 989.0, "tf32": 494.0, "float32": 67.0},
    "H200": {"bfloat16": 989.0, "float16": 989.0, "tf32": 494.0, "float32": 67.0},
}


class Kit:
    """Collects results and failures; every section writes into ``self.results[section]``."""

    def __init__(self, out: Path, deadline: float, dry_run: bool, compile: bool = False, price: float = 3.5):
        import torch

        self.out, self.deadline, self.dry, self.compile = out, deadline, dry_run, compile
        self.price = price  # the card's dollars an hour, for the cost per million photos
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
    from pipeline.stages.model import RestoreModel
    from pipeline.stages.model_set import ModelSet, resolve_model

    return RestoreModel(
        models=ModelSet.one(resolve_model("denoise", arch="dgunet", weights=None)),
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
        # The bundled model where it is launch-bound and at a photo's size; the official 17M network
        # (deblur/dgunet) and DGUNet+ at the sizes archives hold, in the half precisions a GPU runs them at.
        big = {"1280x720": (720, 1280, (1, 4)), "1920x1080": (1080, 1920, (1, 4)), "3840x2160": (2160, 3840, (1, 4))}
        models = {m: models[m] for m in ("bundled/denoise_small", "preset/deblur/dgunet", "preset/deblur/dgunet_plus")}
        grids = {m: (big, ("bfloat16", "float16")) for m in models}
        grids["bundled/denoise_small"] = (
            {"256x256": (256, 256, (16, 64)), "1920x1080": big["1920x1080"]},
            ("bfloat16",),
        )
    name = kit.results["device"].get("name", "")
    peaks = next((v for k, v in PEAKS.items() if k in name), None)
    budget = MEASURE_SECONDS if not kit.dry else kit.left()  # the rest of the minutes train
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
                        s = time_forward(
                            model, x, precision, dev, min_iters=2, min_seconds=0.2 if not kit.dry else 0, max_seconds=3
                        )
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
    measure_graphs(kit)
    measure_cost(kit)
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


def measure_graphs(kit: Kit) -> None:
    """The bundled model at batch 64 of 256 px (the dry run: 2 of 32 px), eager against a CUDA graph of its
    forward pass (``torch.cuda.CUDAGraph``: one launch for every kernel, no compiler needed). Where the
    capture fails (or there is no CUDA), the result says so and the kit goes on."""
    import torch

    from dgunet import create_model

    batch, side = (2, 32) if kit.dry else (64, 256)
    model = create_model("denoise").eval().to(kit.device, memory_format=torch.channels_last)
    x = torch.rand(batch, 3, side, side, device=kit.device).contiguous(memory_format=torch.channels_last)
    eager = time_forward(model, x, "bfloat16", kit.device, min_iters=3, min_seconds=0 if kit.dry else 0.5)
    row: dict[str, Any] = {"batch": batch, "size": f"{side}x{side}", "precision": "bfloat16", "eager_s": eager}
    try:
        if kit.device.type != "cuda":
            raise RuntimeError("no CUDA device: nothing to capture")
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm-up on a side stream, as capture requires
                    model(x)
            torch.cuda.current_stream().wait_stream(stream)
            with torch.cuda.graph(graph):
                model(x)
        graph.replay()
        sync(kit.device)
        n, t0 = 0, time.perf_counter()
        while n < 5 or time.perf_counter() - t0 < 0.5:
            graph.replay()
            n += 1
        sync(kit.device)
        row.update(graph_s=(time.perf_counter() - t0) / n, speedup=eager / ((time.perf_counter() - t0) / n))
        kit.log(f"CUDA graph: {row['speedup']:.2f}x eager at batch {batch}")
    except Exception as exc:  # eager stands; the reason is kept
        row["fallback"] = f"eager: {type(exc).__name__}: {str(exc)[:300]}"
        kit.log(f"CUDA graph not captured, eager stands: {row['fallback']}")
    kit.results["measure"]["graphs"] = row


def measure_cost(kit: Kit) -> None:
    """Per model, its fastest measured forward setting, and what restoring a million 12-megapixel photos
    costs at it on this card at ``kit.price`` dollars an hour (model time only: feeding measured apart)."""
    best: dict[str, dict[str, Any]] = {}
    for row in kit.results["measure"]["forward"]:
        if "megapixels_per_s" in row and row["megapixels_per_s"] > best.get(row["model"], {}).get(
            "megapixels_per_s", 0
        ):
            best[row["model"]] = row
    cost = {}
    for model, row in best.items():
        hours = 1e6 * 12 / row["megapixels_per_s"] / 3600
        cost[model] = {
            "setting": {k: row[k] for k in ("size", "precision", "batch")},
            "megapixels_per_s": row["megapixels_per_s"],
            "gpu_hours_per_million_12mp": hours,
            "dollars_per_million_12mp": hours * kit.price,
            "dollars_per_hour": kit.price,
        }
        kit.log(f"cost {model}: {hours:.1f} GPU-hours, ${hours * kit.price:,.0f} per million 12-MP photos")
    kit.results["measure"]["cost"] = cost


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


BATCHES = (32, 64, 128, 256)  # probed at the start of each training process; the dry run probes (1, 2)
INIT = KIT / "init"  # <spec name>.pth: a checkpoint an earlier run brought back, carried to start from


def train(kit: Kit, specs: list[str], data: str | None) -> None:
    """Every spec at once, each in a process of its own on the one GPU (:func:`train_one`): the small
    networks leave most of the card idle, so three of them fill more of it than one at a time. Each gets
    the time left and a share of the CPUs for drawing its batches; their results come back into
    ``kit.results["train"]``, their logs into ``<spec name>.log``."""
    import subprocess

    res = kit.results.setdefault("train", {})
    seconds = max(30.0, kit.left() - 60) if kit.dry else kit.left() - 60  # 60 s: data, final saves, collecting
    if seconds < 60 and not kit.dry:
        kit.log(f"train: skipped, {seconds:.0f} s is too little")
        res["skipped"] = f"{seconds:.0f} s left"
        return
    threads = max(1, ((os.cpu_count() or 2) - 1) // len(specs))
    procs = {}
    for path in specs:
        name = Path(path).stem
        cmd = [sys.executable, __file__, "train-one", path, "--seconds", f"{seconds:.0f}", "--out", str(kit.out)]
        cmd += ["--threads", str(threads)] + (["--data", data] if data else []) + (["--dry-run"] if kit.dry else [])
        env = dict(os.environ)
        if kit.dry:  # no compiler in CI: a refused capture, forced, proves the eager fallback instead
            env["DGUNET_FAILPOINTS"] = "train.compile=" + spec_task(path)
        log = open(kit.out / f"{name}.log", "w")  # noqa: SIM115 (closed when the process is collected)
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
        kit.log(f"train {name}: started, {seconds:.0f} s, {threads} loader threads")
    for name, (proc, log) in procs.items():
        try:
            code = proc.wait(timeout=max(10.0, kit.left()))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log.close()
        result = kit.out / f"{name}.train.json"
        res[name] = json.loads(result.read_text()) if result.exists() else {"exit_code": code}
        metrics = res[name].get("metrics") or {}
        kit.expect(
            code == 0 and metrics.get("val_psnr", 0) > 0, f"train {name}: exit {code}, {metrics.get('step')} steps"
        )
        kit.log(f"train {name}: {res[name].get('forward', '?')}, batch {res[name].get('batch_size')}")


def spec_task(path: str) -> str:
    """The task a training spec names."""
    import yaml

    return yaml.safe_load(Path(path).read_text()).get("task", "denoise")


def _spec_for_kit(path: str, data: str | None, dry: bool, work: Path):
    from pipeline.training.spec import TrainSpec

    overrides: dict[str, Any] = {"checkpoint.uri": str(work), "optim.compile": "reduce-overhead"}
    if data:
        overrides["data.train"] = data
    init = INIT / f"{Path(path).stem}.pth"
    if init.exists():  # newer than the shipped weights: what an earlier run brought back
        overrides["checkpoint.init"] = str(init)
    if dry:  # tiny: the same code path in seconds
        tiny = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4, "depth": 1}
        overrides.update({f"model.{k}": v for k, v in tiny.items()})
        short = {"steps": 2, "batch_size": 2, "patch": 32, "progressive": (), "warmup_steps": 1}
        overrides.update({f"optim.{k}": v for k, v in short.items()})
        overrides.update({"checkpoint.every_steps": 1, "checkpoint.init": None})
        small = {"val_fraction": 0.5, "val_patch": 32, "val_per_image": 1, "max_side": 128}
        overrides.update({f"data.{k}": v for k, v in small.items()})
    return TrainSpec.from_yaml(path, overrides)


def pick_batch(spec, device, candidates: tuple[int, ...], log) -> tuple[int, list[dict[str, Any]]]:
    """The batch with the most training images per second on ``device``, from a few timed steps of each
    candidate (smallest first; out of memory ends the probe): ``(batch, the probe's rows)``."""
    import torch

    from dgunet import create_model
    from dgunet.losses import StagesLoss

    widths = spec.model.model_dump(exclude={"arch"})
    model = create_model(spec.task, arch=spec.model.arch, weights=False, **widths).to(
        device, memory_format=torch.channels_last
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = StagesLoss(edge_weight=spec.optim.edge_weight).to(device)
    rows: list[dict[str, Any]] = []
    for batch in candidates:
        x = torch.rand(batch, 3, spec.optim.patch, spec.optim.patch, device=device).to(
            memory_format=torch.channels_last
        )
        try:
            _train_step(model, opt, loss_fn, x, torch.autocast(device.type, enabled=False))  # warm-up
            sync(device)
            t0, n = time.perf_counter(), 3
            for _ in range(n):
                _train_step(model, opt, loss_fn, x, torch.autocast(device.type, enabled=False))
            sync(device)
        except torch.OutOfMemoryError:
            log(f"batch {batch}: out of memory")
            break
        step_s = (time.perf_counter() - t0) / n
        rows.append({"batch": batch, "step_s": step_s, "images_per_s": batch / step_s})
        log(f"batch {batch}: {step_s * 1000:.0f} ms per step, {batch / step_s:.0f} images/s")
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    best = max(rows, key=lambda r: r["images_per_s"]) if rows else {"batch": spec.optim.batch_size}
    return int(best["batch"]), rows


def train_one(args) -> int:
    """One training spec, in this process: pick its batch, then :func:`pipeline.training.loop.fit` with
    CUDA graphs where they capture (``optim.compile: reduce-overhead``; where they do not, eager, logged),
    from the newest weights of its task (a carried checkpoint, else the spec's ``checkpoint.init``), for
    ``--seconds``; the checkpoint, history and ``<name>.train.json`` go to ``--out``."""
    import torch

    from dgunet.checkpoint import extract_state_dict, parse_checkpoint, save_safetensors
    from pipeline.storage import read_bytes
    from pipeline.training.loop import fit

    t0, started_at = time.monotonic(), time.time()
    if args.dry_run:
        torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    name = Path(args.spec).stem
    # A fresh folder each run: a leftover one would make fit() resume a finished run and train nothing.
    work = Path(tempfile.mkdtemp(prefix=f"kit-train-{name}-"))
    spec = _spec_for_kit(args.spec, args.data, args.dry_run, work)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {msg}", flush=True)

    batch, probe = pick_batch(spec, device, (1, 2) if args.dry_run else BATCHES, log)
    spec = spec.model_copy(update={"optim": spec.optim.model_copy(update={"batch_size": batch})})
    log(f"batch {batch}; from {spec.checkpoint.init or 'scratch'}; {args.seconds - (time.monotonic() - t0):.0f} s left")
    metrics = fit(
        spec,
        device=str(device),
        time_limit_s=max(5.0, args.seconds - (time.monotonic() - t0)),
        save_every_s=60,
        loader_threads=args.threads,
        log=log,
    )
    # The whole checkpoint comes back where it fits what a call returns (it holds the spec, steps and
    # Adam's state: resumable, and what jobs/export_weights.py reads); else the weights alone.
    last = work / "last.pth"
    if last.stat().st_size <= MAX_RETURNED:
        (args.out / f"{name}.pth").write_bytes(last.read_bytes())
    else:
        state = extract_state_dict(parse_checkpoint(read_bytes(str(last)), name="last.pth"))
        save_safetensors(args.out / f"{name}.safetensors", state, name=name, task=spec.task)
    (args.out / f"{name}.history.jsonl").write_bytes((work / "history.jsonl").read_bytes())
    shutil.rmtree(work, ignore_errors=True)
    result = {
        "metrics": metrics,
        "seconds": time.monotonic() - t0,
        "started_at": started_at,
        "ended_at": time.time(),
        "batch_size": batch,
        "batch_probe": probe,
        "init": spec.checkpoint.init,
        "forward": metrics.get("forward"),
        "spec": spec.model_dump(mode="json"),
    }
    (args.out / f"{name}.train.json").write_text(json.dumps(result, indent=1, default=str))
    return 0 if metrics.get("val_psnr", 0) > 0 else 1


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
    r.add_argument("--price", type=float, default=3.5, help="the GPU's dollars an hour (cost per million photos)")
    t = sub.add_parser("train-one", help="one training spec in this process (the train section starts these)")
    t.add_argument("spec")
    t.add_argument("--seconds", type=float, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--threads", type=int, default=1, help="threads drawing batches")
    t.add_argument("--data")
    t.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        return pack(args)
    if args.cmd == "train-one":
        return train_one(args)

    if args.dry_run:
        import torch

        torch.set_num_threads(1)  # CI's small machine runs other things beside it
    deadline = time.monotonic() + args.budget
    kit = Kit(args.out, deadline, args.dry_run, compile=args.compile, price=args.price)
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
