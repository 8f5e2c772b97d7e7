"""Make the demo's sample images: held-out test photos with Gaussian noise (sigma 25), in several layouts.

    python jobs/make_samples.py --photos data/photos --out dgunet/samples

Sources: scikit-image's astronaut (public domain, NASA) and KDE Plasma wallpapers Altai and Canopee
(Debian plasma-workspace-wallpapers; see its copyright file). The demo exercises RGB, grayscale, RGBA,
16-bit and JPEG input in a nested folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from dgunet.degrade import add_noise, to_uint8


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=Path("data/photos"))
    ap.add_argument("--out", type=Path, default=Path("dgunet/samples"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(25)
    test = args.photos / "test"

    def noisy(name: str, box: tuple[int, int, int, int]) -> np.ndarray:
        clean = np.asarray(Image.open(test / name).convert("RGB").crop(box), np.float32) / 255
        return add_noise(clean, 25.0, rng)

    (args.out / "landscapes").mkdir(parents=True, exist_ok=True)
    astro = noisy("skimage__astronaut__astronaut.png", (96, 0, 416, 256))
    Image.fromarray(to_uint8(astro)).save(args.out / "astronaut.png")
    altai = noisy("plasma__Altai__images.png", (0, 40, 384, 296))
    Image.fromarray(to_uint8(altai)).save(args.out / "landscapes" / "altai.jpg", quality=95)
    canopee = noisy("plasma__Canopee__images.png", (128, 52, 448, 308))
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
