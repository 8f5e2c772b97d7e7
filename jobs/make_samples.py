"""Make the demo's sample images: photos with Gaussian noise (sigma 25), in several layouts.

    python jobs/make_samples.py --photos data/photos --out dgunet/samples

Sources: scikit-image's astronaut (public domain, NASA) and KDE Plasma wallpapers Altai and Canopee
(Debian plasma-workspace-wallpapers; see its copyright file), as 640 px downscales. The demo exercises
RGB, grayscale, RGBA, 16-bit and JPEG input in a nested folder. Altai and Canopee are in today's training
set (data/photos/train): the demo shows the pipeline, not the model's accuracy (the model card does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from dgunet.degrade import add_noise, to_uint8


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=Path("data/photos"))
    ap.add_argument("--out", type=Path, default=Path("dgunet/samples"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(25)

    def noisy(img: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
        if max(img.size) > 640:  # the scale the samples were cut at
            factor = max(img.size) / 640
            img = img.resize((round(img.width / factor), round(img.height / factor)), Image.Resampling.BOX)
        clean = np.asarray(img.convert("RGB").crop(box), np.float32) / 255
        return add_noise(clean, 25.0, rng)

    def photo(name: str) -> Image.Image:
        return Image.open(args.photos / "train" / name)

    (args.out / "landscapes").mkdir(parents=True, exist_ok=True)
    astro = noisy(Image.fromarray(skimage.data.astronaut()), (96, 0, 416, 256))
    Image.fromarray(to_uint8(astro)).save(args.out / "astronaut.png")
    altai = noisy(photo("plasma-Altai.png"), (0, 40, 384, 296))
    Image.fromarray(to_uint8(altai)).save(args.out / "landscapes" / "altai.jpg", quality=95)
    canopee = noisy(photo("plasma-Canopee.png"), (128, 52, 448, 308))
    gray16 = np.rint(canopee.mean(axis=2) * 65535).astype(np.uint16)
    Image.fromarray(gray16).save(args.out / "landscapes" / "canopee gray 16-bit.png")
    rgba = np.dstack([to_uint8(astro[:, :160]), np.full((256, 160), 255, np.uint8)])
    rgba[:40, :40, 3] = 0  # a transparent corner that must survive
    Image.fromarray(rgba, mode="RGBA").save(args.out / "astronaut_rgba.png")
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"samples in {args.out}: {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
