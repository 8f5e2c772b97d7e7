"""Turn a training checkpoint into bundled weights: safetensors plus their metadata, declared once.

    python jobs/export_weights.py --checkpoint checkpoints/denoise_small/last.pth \
        --name dgunet.denoise_small --eval results/denoise_small/eval.json \
        --spec jobs/specs/train_denoise_small.yaml

Writes ``dgunet/weights/<name>.safetensors`` and replaces the entry of ``<name>`` in
``dgunet/weights/index.json`` (a :class:`dgunet.Weights`, written by its ``to_entry``) with: task, arch,
widths, parameter count, sha256, the default pass-through gate (the task's, ``dgunet.TASK_GATES``, with
the fields ``--gate`` gives: measure it with ``bench/gate.py``), how it was trained (the spec, the command,
steps, wall time and CPU time from the checkpoint's history, and what it started from: bundled weights, or
a checkpoint described the same way) and the measured quality.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import sys
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "dgunet" / "weights"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--name", required=True, help="<arch>.<tag>, e.g. dgunet.denoise_small")
    ap.add_argument("--spec", required=True, help="the training spec that produced the checkpoint")
    ap.add_argument("--eval", help="eval.json from jobs/evaluate.py")
    ap.add_argument("--eval-command", default="", help="the command that made --eval")
    ap.add_argument("--history", help="history.jsonl (default: beside the checkpoint)")
    ap.add_argument(
        "--machine",
        help="where it trained, e.g. '2-core x86_64 CPU, torch threads 2' (default: this machine, described; "
        "give it when the export runs elsewhere than the training did)",
    )
    ap.add_argument("--inference", default="{}", help='recommended InferenceOptions as JSON, e.g. {"tile": 192}')
    ap.add_argument(
        "--gate",
        default="{}",
        help='the default gate over the task\'s, as JSON fields, e.g. {"below": 4.5, "chosen_by": "bench/gate.py"}',
    )
    return ap.parse_args(argv)


def this_machine() -> str:
    """This machine as a recipe records it: ``"<n>-core <arch> CPU[, <GPU name>]"``."""
    import torch

    described = f"{os.cpu_count()}-core {platform.machine()} CPU"
    if torch.cuda.is_available():
        described += f", {torch.cuda.get_device_name(0)}"
    return described


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    from dgunet import TASK_GATES, Weights, create_model
    from dgunet.checkpoint import parse_checkpoint, read_bytes, save_safetensors

    data = read_bytes(args.checkpoint)
    ckpt = parse_checkpoint(data, name=args.checkpoint)
    task = ckpt["spec"]["task"]
    model = create_model(task, weights=data)  # the arch and widths the checkpoint records
    out = WEIGHTS_DIR / f"{args.name}.safetensors"
    save_safetensors(out, model.state_dict(), name=args.name, task=task)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()

    history_path = Path(args.history) if args.history else Path(args.checkpoint).with_name("history.jsonl")
    history = _history(history_path)
    recipe = {
        "command": f"python jobs/train.py --spec {args.spec}",
        "data": "python jobs/prepare_photos.py --debs DEBS --out data/photos (see the README's data credits)",
        "spec": _relative(ckpt["spec"]),
        "steps": ckpt["step"],
        **_hours(history),
        "machine": args.machine or this_machine(),
        "final_val_psnr": history[-1].get("val_psnr") if history else None,
        "val_sigma": ckpt["spec"]["data"]["val_sigma"],
    }
    index_path = WEIGHTS_DIR / "index.json"
    index = [Weights.from_entry(e) for e in json.loads(index_path.read_text())] if index_path.exists() else []
    init = ckpt["spec"].get("checkpoint", {}).get("init")
    if init:  # a fine-tune: keep the lineage of the weights it started from
        recipe["init"] = _lineage(init, index)
    metrics = {}
    if args.eval:
        metrics = {"command": args.eval_command, "mean": json.loads(Path(args.eval).read_text())["mean"]}
    weights = dataclasses.replace(
        model.weights,
        name=args.name,
        file=out.name,
        sha256=digest,
        gate=dataclasses.replace(TASK_GATES[task], **json.loads(args.gate)),
        recipe=recipe,
        metrics=metrics,
        inference=json.loads(args.inference),
    )
    index = [w for w in index if w.name != args.name] + [weights]
    index_path.write_text(json.dumps([w.to_entry() for w in index], indent=1) + "\n")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, sha256 {digest[:16]}...) and {index_path}")
    return 0


def _history(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _hours(history: list[dict]) -> dict:
    """Training time from a checkpoint's history: wall hours from the steps' times, and the process's CPU
    hours where the run recorded them (CPU runs trained to a budget)."""
    seconds = sum(
        h["seconds_per_step"] * (h["step"] - (history[i - 1]["step"] if i else 0)) for i, h in enumerate(history)
    )
    hours = {"train_hours": round(seconds / 3600, 2)}
    if history and "cpu_hours" in history[-1]:
        hours["cpu_hours"] = round(history[-1]["cpu_hours"], 2)
    return hours


def _lineage(init: str, index: list, depth: int = 0) -> dict:
    """What a fine-tune started from: bundled weights by name and sha256 with their recipe, or a checkpoint
    by its path, with its own spec, steps, hours and, in turn, what it started from."""
    from dgunet.checkpoint import parse_checkpoint, read_bytes

    base = next((w for w in index if Path(init).name == w.file), None)
    if base is not None:
        return {"name": base.name, "sha256": base.sha256, "recipe": base.recipe}
    path = Path(init)
    if not path.is_file() or depth >= 8:
        return {"checkpoint": _relative(init)}  # no longer here to describe
    ckpt = parse_checkpoint(read_bytes(init), name=init)
    spec = ckpt.get("spec") or {}
    lineage = {
        "checkpoint": _relative(str(path.resolve())),
        "spec": _relative(spec),
        "steps": ckpt.get("step"),
        **_hours(_history(path.with_name("history.jsonl"))),
    }
    parent = spec.get("checkpoint", {}).get("init")
    if parent:
        lineage["init"] = _lineage(parent, index, depth + 1)
    return lineage


def _relative(value):
    """The spec with paths of this checkout made relative to it (they were made absolute for Ray's workers)."""
    root = str(WEIGHTS_DIR.parents[1]) + "/"
    if isinstance(value, dict):
        return {k: _relative(v) for k, v in value.items()}
    if isinstance(value, str) and value.startswith(root):
        return value[len(root) :]
    return value


if __name__ == "__main__":
    sys.exit(main())
