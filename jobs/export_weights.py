"""Turn a training checkpoint into bundled weights: safetensors plus their metadata, declared once.

    python jobs/export_weights.py --checkpoint checkpoints/denoise_small/last.pth \
        --name dgunet.denoise_small --eval results/denoise_small/eval.json \
        --spec jobs/specs/train_denoise_small.yaml

Writes ``dgunet/weights/<name>.safetensors`` and replaces the entry of ``<name>`` in
``dgunet/weights/index.json`` with: task, arch, widths, parameter count, sha256, how it was trained (the
spec, the command, steps and wall time from the checkpoint's history) and the measured quality.
"""

from __future__ import annotations

import argparse
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

    from dgunet.checkpoint import load_weights, parse_checkpoint, read_bytes, save_safetensors
    from dgunet.model import DGUNetConfig
    from dgunet.registry import model_from_config, num_params

    ckpt = parse_checkpoint(read_bytes(args.checkpoint), name=args.checkpoint)
    cfg = DGUNetConfig(**ckpt["config"])
    model = model_from_config(cfg)
    load_weights(model, ckpt, name=args.checkpoint)
    out = WEIGHTS_DIR / f"{args.name}.safetensors"
    save_safetensors(out, model.state_dict(), name=args.name, task=ckpt["spec"]["task"])
    digest = hashlib.sha256(out.read_bytes()).hexdigest()

    history_path = Path(args.history) if args.history else Path(args.checkpoint).with_name("history.jsonl")
    history = [json.loads(line) for line in history_path.read_text().splitlines() if line.strip()]
    train_seconds = sum(
        h["seconds_per_step"] * (h["step"] - (history[i - 1]["step"] if i else 0)) for i, h in enumerate(history)
    )
    recipe = {
        "command": f"python jobs/train.py --spec {args.spec}",
        "data": "python jobs/prepare_photos.py --debs DEBS --out data/photos (see the README's data credits)",
        "spec": _relative(ckpt["spec"]),
        "steps": ckpt["step"],
        "train_hours": round(train_seconds / 3600, 2),
        "machine": args.machine or this_machine(),
        "final_val_psnr": history[-1].get("val_psnr") if history else None,
        "val_sigma": ckpt["spec"]["data"]["val_sigma"],
    }
    index_path = WEIGHTS_DIR / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else []
    init = ckpt["spec"].get("checkpoint", {}).get("init")
    base = next((e for e in index if init and Path(init).name == e["file"]), None)
    if base is not None:  # a fine-tune: keep the lineage of the weights it started from
        recipe["init"] = {k: base[k] for k in ("name", "sha256", "recipe")}
    metrics = {}
    if args.eval:
        metrics = {"command": args.eval_command, "mean": json.loads(Path(args.eval).read_text())["mean"]}
    entry = {
        "name": args.name,
        "file": out.name,
        "task": ckpt["spec"]["task"],
        "config": ckpt["config"],
        "num_params": num_params(model),
        "sha256": digest,
        "recipe": recipe,
        "metrics": metrics,
        "inference": json.loads(args.inference),
    }
    index = [e for e in index if e["name"] != args.name] + [entry]
    index_path.write_text(json.dumps(index, indent=1) + "\n")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, sha256 {digest[:16]}...) and {index_path}")
    return 0


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
