"""Make the demo's sample images: photos with Gaussian noise (sigma 25), in several layouts, one photo
through rain and one shaken.

    python jobs/make_samples.py --photos data/photos --out dgunet/samples

Sources: scikit-image's astronaut (public domain, NASA), coffee (CC0, Rachel Michetti) and motorcycle_left
(the Middlebury 2014 stereo benchmark, Scharstein et al.) and KDE Plasma wallpapers Altai and Canopee
(Debian plasma-workspace-wallpapers; see its copyright file), as 640 px downscales. The demo exercises
RGB, grayscale, RGBA, 16-bit and JPEG input in a nested folder, and ``task: auto``'s routes: the noisy
photos go to the denoiser, the rainy one to the deraining model, and the shaken one to the deblurring
model. All five photos are in today's training set
(data/photos/train): the demo shows the pipeline, not the models' accuracy (their cards do).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from dgunet.degrade import Degradation, add_noise, blur, rain, shake_kernel, to_uint8


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=Path("data/photos"))
    ap.add_argument("--out", type=Path, default=Path("dgunet/samples"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(25)

    def noisy(img: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
        return add_noise(_fit(img, box), 25.0, rng)

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
    # Rain as the deraining model's training renderer draws it, with a light veil; camera shake of 15 px
    # with sensor noise. Their own generators, so that the noisy samples above stay as they were.
    downpour = Degradation(
        kinds=("rain",),
        rain_density=(0.01, 0.01),
        rain_length=(20, 30),
        rain_width=(1.5, 2.0),
        rain_brightness=(0.6, 0.9),
        rain_angle=0.3,
        rain_haze=0.25,
    )
    coffee = _fit(photo("skimage-coffee.png"), (100, 80, 420, 336))
    Image.fromarray(to_uint8(rain(coffee, downpour, np.random.default_rng(7)))).save(args.out / "coffee_rain.png")
    moto = _fit(photo("skimage-motorcycle_left.png"), (100, 60, 420, 316))
    shaken = blur(moto, shake_kernel(15, np.random.default_rng(3)))
    Image.fromarray(to_uint8(add_noise(shaken, 2.0, np.random.default_rng(8)))).save(args.out / "motorcycle_shake.png")
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"samples in {args.out}: {total / 1e6:.2f} MB")
    return 0


def _fit(img: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    """The crop ``box`` of ``img`` at the scale the samples were cut at (640 px at most), as float RGB."""
    if max(img.size) > 640:
        factor = max(img.size) / 640
        img = img.resize((round(img.width / factor), round(img.height / factor)), Image.Resampling.BOX)
    return np.asarray(img.convert("RGB").crop(box), np.float32) / 255


if __name__ == "__main__":
    sys.exit(main())
