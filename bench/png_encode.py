"""PNG encoders and zlib levels on restored photos: encode speed against file size.

    python bench/png_encode.py

The pipeline writes every restored image as PNG, so the encoder must keep up with the model. This
restores a 1280x720 crop of a bundled photo with the default model (8-bit) and a 16-bit copy, then encodes
each with OpenCV (libpng) and Pillow at several zlib levels, single-threaded, best of 3. Printed: MB/s of
raw pixels, output size relative to level 1, and the ratio of encode time to the model's time on the same
image (the share of an actor's time that encoding would cost if it ran inline). Results are appended to
bench/results/png_encode.jsonl.
"""

from __future__ import annotations

import functools
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(ROOT))


def best_of(fn, n=3) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    import cv2
    import torch
    from PIL import Image

    from dgunet import load_pretrained, restore

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    photo = np.asarray(Image.open(ROOT / "dgunet" / "samples" / "landscapes" / "altai.jpg").convert("RGB"))
    reps = (-(-720 // photo.shape[0]), -(-1280 // photo.shape[1]), 1)
    img = np.tile(photo, reps)[:720, :1280]
    model = load_pretrained("denoise")
    t0 = time.perf_counter()
    restored = restore(model, img)
    model_s = time.perf_counter() - t0
    images = {"8-bit": restored, "16-bit": restored.astype(np.uint16) * 257}

    def cv2_png(a, level):
        return cv2.imencode(".png", a[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, level])[1].tobytes()

    def pil_png(a, level):
        buf = io.BytesIO()
        if a.dtype == np.uint16:  # Pillow writes 16-bit PNG only for one channel
            return b""
        Image.fromarray(a).save(buf, format="PNG", compress_level=level)
        return buf.getvalue()

    rows = []
    for name, a in images.items():
        base = len(cv2_png(a, 1))
        for encoder, fn in (("opencv", cv2_png), ("pillow", pil_png)):
            for level in (0, 1, 3, 6, 9):
                size = len(fn(a, level))
                if not size:
                    continue
                s = best_of(functools.partial(fn, a, level))
                rows.append(
                    {
                        "image": name,
                        "encoder": encoder,
                        "level": level,
                        "mb_per_s": a.nbytes / s / 1e6,
                        "size_vs_level1": size / base,
                        "encode_vs_model": s / model_s,
                        "encode_s": s,
                        "bytes": size,
                    }
                )
    print(f"model (default denoiser, 1 thread) on 1280x720: {model_s:.2f} s")
    print(f"{'image':7} {'encoder':7} {'level':>5} {'MB/s':>7} {'size/L1':>8} {'encode/model':>13}")
    for r in rows:
        print(
            f"{r['image']:7} {r['encoder']:7} {r['level']:5d} {r['mb_per_s']:7.1f} {r['size_vs_level1']:8.3f} "
            f"{r['encode_vs_model']:13.4f}"
        )
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "png_encode.jsonl", "a") as f:
        f.write(json.dumps({"model_s": model_s, "rows": rows}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
