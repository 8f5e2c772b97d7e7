"""A few very large images through the whole pipeline: peak memory by process, and object-store spilling.

    python bench/large_images.py                     # 3 images of 6000x4000
    python bench/large_images.py --images 2 --width 8000 --height 6000

The images (a bundled photo tiled to size, with noise) go to a SeaweedFS S3 server on 127.0.0.1, and
``restore_bucket`` restores them S3 to S3 in a fresh process with its own local Ray. The network is
DGUNet at toy widths (n_feat 8, random weights): this measures the pipeline's memory, not restoration,
and the bundled model would take about 9 minutes per 24-megapixel image on 2 CPU cores. Tiled inference
(512 px tiles) bounds the model's own memory, so what remains is the pipeline's: the decoded and restored
pixels travel through Ray's object store between stages. Printed: peak RSS by process role, whether the
object store spilled (from Ray Data's stats), and throughput. Appended to bench/results/large_images.jsonl.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from jobrun import run_job  # noqa: E402


def large_png(width: int, height: int, seed: int) -> bytes:
    from PIL import Image

    photo = np.asarray(Image.open(ROOT / "dgunet" / "samples" / "astronaut.png").convert("RGB"))
    img = np.tile(photo, (-(-height // photo.shape[0]), -(-width // photo.shape[1]), 1))[:height, :width]
    rng = np.random.default_rng(seed)
    noisy = np.clip(img + rng.normal(0, 15, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--width", type=int, default=6000)
    ap.add_argument("--height", type=int, default=4000)
    args = ap.parse_args(argv)

    import torch

    from dgunet import create_model, save_checkpoint
    from tests.servers import S3_ENV, SeaweedS3

    work = Path(tempfile.mkdtemp(prefix="bench-large-"))
    torch.manual_seed(0)
    widths = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}
    save_checkpoint(work / "toy.pth", create_model("denoise", weights=False, **widths), epoch=0)
    server = SeaweedS3(str(work / "weed"))
    try:
        os.environ.update(S3_ENV)
        env = {**os.environ, "AWS_ENDPOINT_URL": server.endpoint}
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=server.endpoint)
        fs.mkdir("large")
        for i in range(args.images):
            fs.pipe(f"large/in/big{i}.png", large_png(args.width, args.height, i))
        spec = work / "spec.yaml"
        spec.write_text(
            json.dumps(
                {
                    "model": {"arch": "dgunet", "weights": str(work / "toy.pth"), **widths},
                    "input": {"uri": "s3://large/in"},
                    "output": {"uri": "s3://large/out"},
                    "resources": {"cpus_per_actor": 1, "batch_size": 1},
                    "inference": {"tile": 512, "overlap": 32, "max_pixels": 512 * 512},
                }
            )
        )
        job = run_job(["--spec", str(spec)], env=env, fs=fs, output="s3://large/out", run_id="large")
    finally:
        server.stop()
    s = job["summary"]
    mp = args.images * args.width * args.height / 1e6
    r = {
        "images": args.images,
        "size": f"{args.width}x{args.height}",
        "ok": s["ok"],
        "wall_s": job["wall_s"],
        "megapixels_per_s": mp / job["wall_s"],
        "image_mb_raw": args.width * args.height * 3 / 1e6,
        "peak_rss_mb": job["peak_rss_mb"],
        "object_store_spilled_mb": job["spilled_mb"],
        "ray_data_operator_s": job["operator_s"],
    }
    print(json.dumps(r, indent=1))
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "large_images.jsonl", "a") as f:
        f.write(json.dumps(r) + "\n")
    return 0 if s["ok"] == args.images else 1


if __name__ == "__main__":
    raise SystemExit(main())
