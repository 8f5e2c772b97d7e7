"""Forward time of our default inference path against plain eager float32, per preset, on this machine.

    python bench/forward.py                                   # every preset at 256x256
    python bench/forward.py --sizes 1280x720 --presets denoise/dgunet derain/dgunet derain/dgunet_plus

"Plain" is the network run as the official test does: contiguous float32 tensors under no_grad. "Ours"
is ``dgunet.restore_tensor`` with its default options (channels_last, inference_mode, whole image).
Runs alternate (plain, ours, plain, ours, ...) so that both see the same machine load, and the best of
``--repeats`` is kept. Outputs must agree within 1e-4. FLOPs are counted by torch's FlopCounterMode
(2 per multiply-add); the fraction is of ``--peak-gflops`` (about 310 GFLOP/s fp32 on this 2-core CPU).
Results are appended to bench/results/forward.jsonl and printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from dgunet import InferenceOptions, create_model, restore_tensor
from dgunet.registry import PRESETS

RESULTS = Path(__file__).parent / "results"


def count_flops(model, x) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def bench(task: str, arch: str, h: int, w: int, repeats: int, peak: float) -> dict:
    torch.manual_seed(0)
    model = create_model(task, arch=arch, weights=False).eval()
    x = torch.rand(1, 3, h, w)
    flops = count_flops(model, torch.rand(1, 3, 64, 64)) * (h * w) / (64 * 64)  # linear in pixels
    plain_t, ours_t = [], []
    for _ in range(repeats):
        model = model.to(memory_format=torch.contiguous_format)
        t0 = time.perf_counter()
        with torch.no_grad():
            plain = model(x).clamp(0, 1)
        plain_t.append(time.perf_counter() - t0)
        model = model.to(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        ours = restore_tensor(model, x, InferenceOptions())
        ours_t.append(time.perf_counter() - t0)
    diff = (plain - ours).abs().max().item()
    p, o = min(plain_t), min(ours_t)
    return {
        "preset": f"{task}/{arch}",
        "size": f"{w}x{h}",
        "gflop": flops / 1e9,
        "plain_s": p,
        "ours_s": o,
        "speedup": p / o,
        "ours_gflops": flops / o / 1e9,
        "fraction_of_peak": flops / o / 1e9 / peak,
        "max_abs_diff": diff,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=[f"{t}/{a}" for t, a in sorted(PRESETS)])
    ap.add_argument("--sizes", nargs="+", default=["256x256"], help="WxH")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peak-gflops", type=float, default=310.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(exist_ok=True)
    print("| preset | size | GFLOP | plain s | ours s | speedup | ours GFLOP/s | of peak | max diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        for preset in args.presets:
            task, arch = preset.split("/")
            r = bench(task, arch, h, w, args.repeats, args.peak_gflops)
            with open(RESULTS / "forward.jsonl", "a") as f:
                f.write(json.dumps(r) + "\n")
            print(
                f"| {r['preset']} | {r['size']} | {r['gflop']:.0f} | {r['plain_s']:.2f} | {r['ours_s']:.2f} | "
                f"{r['speedup']:.2f}x | {r['ours_gflops']:.0f} | {100 * r['fraction_of_peak']:.0f}% | "
                f"{r['max_abs_diff']:.1e} |",
                flush=True,
            )
            assert r["max_abs_diff"] < 1e-4, r
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
