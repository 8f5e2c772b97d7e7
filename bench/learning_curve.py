"""What a DGUNet learns per CPU second: learning curves of cheap configurations, each task, one budget.

    python bench/learning_curve.py --task derain                  # every derain configuration
    python bench/learning_curve.py --task deblur --config w8-d1   # one
    python bench/learning_curve.py --table                        # the table from the results so far

Each configuration trains (:func:`pipeline.training.loop.fit`) until it has spent ``--budget-min`` minutes
of this process's own CPU time on training steps, validating every ``--every-min`` CPU-minutes on whole
sources held out of training (validation and saving are not counted). CPU time, not wall time, so that
other work on the machine does not bias the comparison; ``--threads 1`` by default, so two curves can run
side by side on two cores. Configurations differ in what costs CPU time: widths, depth (the network has
depth + 2 stages), patch and batch, a start from scratch or from the bundled denoiser's weights, and a
constant learning rate or a cosine over the budget.

Every evaluation is appended to ``results/learning_curve/<task>.jsonl``: the PSNR of the validation
patches before and after, the gain, steps and CPU-minutes. Checkpoints go to
``checkpoints/learning_curve/<task>/<config>/`` (out of git), so an interrupted study resumes where it
stopped, and a configuration whose budget is spent is skipped. ``--table`` writes
``results/learning_curve/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path("results/learning_curve")
CHECKPOINTS = Path("checkpoints/learning_curve")
DENOISER = "dgunet/weights/dgunet.denoise_small.safetensors"

# The degradations each task trains and validates on (the restore evaluation's cases draw from the same
# ranges: pipeline/training/evaluate.py).
DEGRADATIONS: dict[str, dict[str, Any]] = {
    "derain": {
        "kinds": ["rain"],
        "rain_renderer": "smear",
        "rain_density": [0.001, 0.03],
        "rain_length": [8, 40],
        "rain_width": [1, 3],
        "rain_brightness": [0.4, 1.0],
        "rain_angle": 0.5,
        "rain_haze": 0.35,
    },
    "deblur": {"kinds": ["blur"], "blur_size": [5, 31], "blur_motion_probability": 0.7, "blur_noise": [0, 5]},
    "denoise": {"kinds": ["noise"], "sigma": [0, 55]},
    # JPEG as archives hold it (dgunet/jpeg_damage.py), sometimes after a little camera or white noise
    "dejpeg": {
        "kinds": ["noise", "jpeg"],
        "clean_probability": 0.1,
        "noise_probability": 0.25,
        "sigma": [0, 5],
        "camera_probability": 0.5,
        "camera_shot": [1.0e-4, 1.0e-3],
        "jpeg_quality": [10, 95],
        "jpeg_444_probability": 0.3,
        "jpeg_twice_probability": 0.3,
        "jpeg_regrid_probability": 0.5,
    },
}


@dataclass(frozen=True)
class Config:
    """One configuration: widths ``(n_feat, scale_unetfeats, scale_orsnetfeats)``, depth, patch, batch,
    learning rate (``cosine``: from ``lr`` to ``lr / 100`` over the budget, else constant) and start."""

    name: str
    widths: tuple[int, int, int] = (8, 4, 4)
    depth: int = 1
    patch: int = 64
    batch: int = 8
    lr: float = 1e-3
    cosine: bool = False
    init: str | None = None
    tasks: tuple[str, ...] = field(default=("derain", "deblur"))


TASKS = ("derain", "deblur", "denoise", "dejpeg")
CAMERA_DENOISER = "checkpoints/cpu/denoise-camera/last.pth"  # 8/4/4, depth 1

CONFIGS = (
    Config("w8-d1"),  # the cheapest: 8/4/4, three stages, 64 px, constant 1e-3
    Config("w16-d1", widths=(16, 8, 8)),
    Config("w32-d1-p48", widths=(32, 16, 16), patch=48),
    Config("w8-d2-cos", depth=2, cosine=True, tasks=("derain", "deblur", "denoise")),
    Config("w8-d1-p96b4", patch=96, batch=4),
    # For the denoiser: its own bundled weights trained on, the candidate that starts where it stands.
    Config("w16-d5-init-cos", widths=(16, 8, 8), depth=5, lr=5e-4, cosine=True, init=DENOISER, tasks=TASKS),
    # The denoiser's study: the bundled recipe's network (16/8/8, depth 5) from scratch against cheap ones.
    Config("w8-d1", tasks=("denoise",)),
    Config("w16-d1-cos", widths=(16, 8, 8), cosine=True, tasks=("denoise",)),
    Config("w16-d5-cos", widths=(16, 8, 8), depth=5, lr=5e-4, cosine=True, tasks=("denoise",)),
    # JPEG-artifact removal: from scratch, or from the camera-noise denoiser's weights (and the bundled
    # denoiser's, above)
    Config("w8-d1", tasks=("dejpeg",)),
    Config("w8-d1-init-camera", lr=5e-4, init=CAMERA_DENOISER, tasks=("dejpeg",)),
)


def train_spec(task: str, cfg: Config, *, data: str):
    """The :class:`TrainSpec` of one configuration (validation on 128 px patches of held-out sources)."""
    from pipeline.training.spec import TrainSpec

    n_feat, unet, orsnet = cfg.widths
    return TrainSpec.model_validate(
        {
            "task": task,
            "model": {"n_feat": n_feat, "scale_unetfeats": unet, "scale_orsnetfeats": orsnet, "depth": cfg.depth},
            "data": {"train": data, "val_fraction": 0.1, "val_patch": 128, "val_per_image": 4, "scale": [1, 4]},
            "degradation": DEGRADATIONS[task],
            "optim": {
                "steps": 10**7,  # the CPU budget ends the run
                "batch_size": cfg.batch,
                "patch": cfg.patch,
                "lr": cfg.lr,
                "lr_min": cfg.lr / 100 if cfg.cosine else cfg.lr,
                "warmup_steps": 20,
                "edge_weight": 0.0 if task in ("denoise", "dejpeg") else 0.05,
            },
            "checkpoint": {"uri": str(CHECKPOINTS / task / cfg.name), "every_steps": 10**7, "init": cfg.init},
            "seed": 1,
        }
    )


# Gain (dB over the input, on the validation patches) that each task's targets ask for: the held-out
# targets for deraining and deblurring; for denoising, what the bundled denoiser scores on the same patches.
TARGETS = {"derain": 6.0, "deblur": 1.5, "dejpeg": 1.0}


def validation_psnr(spec, model=None) -> float:
    """Mean PSNR of the degraded validation patches (what a model that changes nothing scores), or of
    ``model``'s output on them."""
    import numpy as np
    import torch

    from pipeline.training.loop import load_training_data, psnr

    val = load_training_data(spec).val
    with torch.inference_mode():
        outs = [(model(d) if model is not None else d, c) for d, c in val]
    return float(np.mean([psnr(o[i : i + 1], c[i : i + 1]) for o, c in outs for i in range(len(o))]))


def run(task: str, cfg: Config, args) -> None:
    import torch

    from pipeline.training.loop import fit

    torch.set_num_threads(args.threads)
    spec = train_spec(task, cfg, data=args.data)
    before = validation_psnr(spec)
    target = target_gain(task, spec, before)
    out = RESULTS / f"{task}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)

    def record(m: dict[str, Any]) -> None:
        row = {
            "task": task,
            "config": cfg.name,
            "step": m["step"],
            "cpu_min": round(m["cpu_s"] / 60, 3),
            "steps_per_cpu_s": round(m["step"] / m["cpu_s"], 4),
            "input_psnr": round(before, 3),
            "val_psnr": round(m["val_psnr"], 3),
            "gain_db": round(m["val_psnr"] - before, 3),
            "target_gain_db": round(target, 3),
            "threads": args.threads,
            "params": cfg.__dict__ | {"widths": list(cfg.widths), "tasks": None},
        }
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: row[k] for k in ("config", "step", "cpu_min", "val_psnr", "gain_db")}), flush=True)

    fit(
        spec,
        device="cpu",
        cpu_limit_s=args.budget_min * 60,
        save_every_cpu_s=args.every_min * 60,
        report=record,
        log=lambda msg: print(f"[{task}/{cfg.name}] {msg}", flush=True),
    )


def target_gain(task: str, spec, before: float) -> float:
    """The gain a configuration of ``task`` is aiming at (see :data:`TARGETS`)."""
    if task in TARGETS:
        return TARGETS[task]
    from dgunet import create_model

    return validation_psnr(spec, create_model(task)) - before


def hours_to(rows: list[dict], target: float) -> float | None:
    """CPU-hours at which ``gain = a + b ln(cpu_min)``, fitted to the evaluations from 2 CPU-minutes on,
    reaches ``target``; None when the fit does not rise (or has too few points)."""
    import numpy as np

    pts = [(r["cpu_min"], r["gain_db"]) for r in rows if r["cpu_min"] >= 1.9]
    if len(pts) < 2:
        return None
    b, a = np.polyfit(np.log([t for t, _ in pts]), [g for _, g in pts], 1)
    if b <= 0:
        return None
    return float(np.exp((target - a) / b)) / 60


def runs_of(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by run: a configuration trained again (its CPU-minutes start over) is a run of its own,
    named ``<config> (run 2)`` and so on, so a longer study of a configuration does not mix with a shorter
    one before it."""
    runs: dict[str, list[dict]] = {}
    current: dict[str, str] = {}  # config -> the name of its latest run
    for r in rows:
        config, name = r["config"], current.get(r["config"])
        if name is None or r["cpu_min"] <= runs[name][-1]["cpu_min"]:
            n = sum(1 for run in runs.values() if run[0]["config"] == config) + 1
            name = current[config] = config if n == 1 else f"{config} (run {n})"
            runs[name] = []
        runs[name].append(r)
    return runs


def table(data: str) -> str:
    """Markdown: per task, each configuration's gain (dB) at each evaluation, its steps per CPU-second, and
    the CPU-hours at which its log-linear fit reaches the task's target gain."""
    lines = ["# Learning curves on the CPU", ""]
    lines.append("Gain in dB of validation PSNR over the degraded input, on held-out sources, against the")
    lines.append("CPU-minutes of training spent (`python bench/learning_curve.py`). *To target*: CPU-hours at")
    lines.append("which `gain = a + b ln(minutes)`, fitted from 2 minutes on, reaches the target gain (an")
    lines.append("extrapolation, often far beyond the measured range).")
    for path in sorted(RESULTS.glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line]
        by_config = runs_of(rows)
        marks = sorted({round(r["cpu_min"]) for r in rows})
        target = rows[-1].get("target_gain_db")
        if target is None:  # rows from before targets were recorded
            spec = train_spec(path.stem, CONFIGS[0], data=data)
            target = target_gain(path.stem, spec, validation_psnr(spec))
        lines += [
            "",
            f"## {path.stem}",
            "",
            f"Input PSNR {rows[0]['input_psnr']:.2f} dB; target gain {target:+.2f} dB.",
        ]
        lines += ["", "| config | " + " | ".join(f"~{m} min" for m in marks) + " | best | steps/CPU-s | to target |"]
        lines.append("|" + "---|" * (len(marks) + 4))
        for name, rs in by_config.items():
            at = {round(r["cpu_min"]): r["gain_db"] for r in rs}
            cells = [f"{at[m]:+.2f}" if m in at else "" for m in marks]
            best = max(r["gain_db"] for r in rs)
            hours = hours_to(rs, target) if target is not None else None
            reach = "" if hours is None else f"{hours:.2g} h"
            lines.append(
                f"| {name} | " + " | ".join(cells) + f" | {best:+.2f} | {rs[-1]['steps_per_cpu_s']:.2f} | {reach} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=TASKS, action="append")
    ap.add_argument("--config", action="append", help="configuration names (default: all of the task's)")
    ap.add_argument("--data", default="data/photos/train")
    ap.add_argument("--budget-min", type=float, default=8.0, help="CPU-minutes of training per configuration")
    ap.add_argument("--every-min", type=float, default=2.0, help="validate every this many CPU-minutes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", action="store_true", help="only write results/learning_curve/README.md")
    args = ap.parse_args(argv)
    if not args.table:
        for task in args.task or TASKS:
            for cfg in CONFIGS:
                if task in cfg.tasks and (not args.config or cfg.name in args.config):
                    run(task, cfg, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "README.md").write_text(table(args.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
