"""Output encoders on restored photos: PNG encoders and zlib levels, then every output format and setting.

    python bench/png_encode.py                  # both parts
    python bench/png_encode.py --part formats   # only the output formats (docs/performance.md, "Output formats")

The pipeline writes every restored image as PNG, so the encoder must keep up with the model. This
restores a 1280x720 crop of a bundled photo with the default model (8-bit) and a 16-bit copy, then encodes
each with OpenCV (libpng) and Pillow at several zlib levels, single-threaded, best of 3. Printed: MB/s of
raw pixels, output size relative to level 1, and the ratio of encode time to the model's time on the same
image (the share of an actor's time that encoding would cost if it ran inline). Results are appended to
bench/results/png_encode.jsonl.

The formats part restores the real photos in data/photos/test with the default denoiser and encodes each
with the pipeline's own encoder (pipeline.stages.encode.encode_image, no metadata) in every output format and
setting, single-threaded, best of 3. Printed per setting, over all photos: bytes out / bytes in (the
input files), bytes out / a JPEG at quality 92 of the same pixels (the archive most users hold), encode
seconds per megapixel, and encode time relative to PNG level 1 measured in the same run. Results are
appended to bench/results/output_formats.jsonl.
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


def levels() -> int:
    import cv2
    import torch
    from PIL import Image

    from dgunet import create_model, restore

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    photo = np.asarray(Image.open(ROOT / "dgunet" / "samples" / "landscapes" / "altai.jpg").convert("RGB"))
    reps = (-(-720 // photo.shape[0]), -(-1280 // photo.shape[1]), 1)
    img = np.tile(photo, reps)[:720, :1280]
    model = create_model("denoise")
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


# (name, format, options, bit depth): what an archivist chooses between.
SETTINGS = [
    ("png level 1 (default)", "png", {"compress_level": 1}, 8),
    ("png level 6", "png", {"compress_level": 6}, 8),
    ("webp lossless", "webp", {}, 8),
    ("webp quality 90", "webp", {"quality": 90}, 8),
    ("webp quality 80", "webp", {"quality": 80}, 8),
    ("jpeg quality 95, 4:4:4", "jpeg", {"quality": 95}, 8),
    ("jpeg quality 92, 4:4:4 (default)", "jpeg", {}, 8),
    ("jpeg quality 92, 4:2:0", "jpeg", {"subsampling": "4:2:0"}, 8),
    ("jpeg quality 85, 4:4:4", "jpeg", {"quality": 85}, 8),
    ("tiff deflate", "tiff", {}, 8),
    ("png level 1, 16-bit", "png", {"compress_level": 1}, 16),
    ("tiff deflate, 16-bit", "tiff", {}, 16),
]


def formats() -> int:
    import cv2
    import torch
    from PIL import Image

    from dgunet import create_model, restore
    from pipeline.stages.encode import EncodeOptions, encode_image

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    paths = sorted((ROOT / "data" / "photos" / "test").glob("*.png"))
    if not paths:
        print("no photos in data/photos/test (python jobs/prepare_photos.py makes them)", file=sys.stderr)
        return 1
    model = create_model("denoise")
    photos = []
    for p in paths:
        restored = restore(model, np.asarray(Image.open(p).convert("RGB")))
        photos.append((p.stat().st_size, restored))
    megapixels = sum(a.shape[0] * a.shape[1] for _, a in photos) / 1e6
    bytes_in = sum(n for n, _ in photos)
    jpeg92 = sum(len(encode_image(a, "jpeg", EncodeOptions())) for _, a in photos)
    rows = []
    for name, fmt, kw, bits in SETTINGS:
        options = EncodeOptions(**kw)
        images = [a.astype(np.uint16) * 257 if bits == 16 else a for _, a in photos]
        out = sum(len(encode_image(a, fmt, options)) for a in images)
        seconds = sum(best_of(functools.partial(encode_image, a, fmt, options)) for a in images)
        rows.append(
            {
                "setting": name,
                "format": fmt,
                "options": kw,
                "bits": bits,
                "bytes_out": out,
                "out_vs_in": out / bytes_in,
                "out_vs_jpeg92": out / jpeg92,
                "s_per_mp": seconds / megapixels,
            }
        )
    png1 = rows[0]["s_per_mp"]
    for r in rows:
        r["time_vs_png1"] = r["s_per_mp"] / png1
    print(f"{len(photos)} photos from data/photos/test, {megapixels:.2f} MP, {bytes_in / 1e6:.2f} MB in (PNG)")
    print(f"{'setting':34} {'out/in':>7} {'out/JPEG92':>10} {'s/MP':>7} {'time/PNG1':>9}")
    for r in rows:
        print(
            f"{r['setting']:34} {r['out_vs_in']:7.3f} {r['out_vs_jpeg92']:10.2f} {r['s_per_mp']:7.3f} "
            f"{r['time_vs_png1']:9.2f}"
        )
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "output_formats.jsonl", "a") as f:
        run = {"photos": len(photos), "megapixels": megapixels, "bytes_in": bytes_in, "jpeg92_bytes": jpeg92}
        f.write(json.dumps({**run, "rows": rows}) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("levels", "formats", "all"), default="all")
    args = ap.parse_args(argv)
    if args.part in ("levels", "all") and levels():
        return 1
    return formats() if args.part in ("formats", "all") else 0


if __name__ == "__main__":
    raise SystemExit(main())
