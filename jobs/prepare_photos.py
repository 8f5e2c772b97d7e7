"""Build the clean photo sets that the bundled models are trained, validated and tested on.

Sources (all redistributable; each package's licence is in ``/usr/share/doc/<package>/copyright`` and in
the README's data section):

* Debian ``mate-backgrounds``, ``plasma-workspace-wallpapers``, ``ukui-wallpapers``,
  ``gnome-backgrounds``, ``sway-backgrounds`` and ``desktop-base`` (``apt-get download <package>``);
* scikit-image's bundled colour photos.

Training takes every image of every source that is not held out, photographs and artwork alike, stored
with its longer side at most ``--max-side`` (an area filter, which also averages away the originals' own
noise and JPEG artefacts); the training sampler then draws crops at random downscale factors, so texture
is seen at many scales.

The **test set** is what the model cards report: photographs only, from sources that no bundled model
ever trained or validated on (:data:`TEST_SOURCES`, spread over three origins), cut into 384x384 crops at
close to native scale (after a 2x area downscale of the wallpapers, 1x for scikit-image's photo), the most
textured crops of a grid, so that the test has the texture of real photos rather than whole downscaled
wallpapers. The **routing set** (``routing/``) is every 256x256 cell of a grid over the same held-out
sources, flat ones included: what ``task: auto``'s router is judged on.

    python jobs/prepare_photos.py --debs DIR_WITH_DEBS --out data/photos
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

# Package -> licence of the images taken from it (its copyright file says more).
PACKAGES = {
    "mate-backgrounds": "GPL-2+ (per-file authors in the copyright file)",
    "plasma-workspace-wallpapers": "GPL-2+ / LGPL-3 (KDE artists)",
    "ukui-wallpapers": "CC-BY-SA-3.0 (Ubuntu Kylin community)",
    "gnome-backgrounds": "CC-BY-SA-3.0 (GNOME artists)",
    "sway-backgrounds": "Expat (sway authors)",
    "desktop-base": "GPL-2+ and others (Debian artwork teams)",
}
SKIMAGE = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
SKIMAGE_FILES = ("motorcycle_left.png",)  # shipped in the wheel without an accessor of its own

# Photographs held out of training and validation for every bundled model (the earlier default denoiser
# did not train on them either), with the downscale applied before cropping.
TEST_SOURCES = {
    "mate/RainDrops": 2,
    "plasma/summer_1am": 2,
    "plasma/ColorfulCups": 2,
    "skimage/astronaut": 1,
}
TEST_CROP, TEST_CROPS_PER_SOURCE = 384, 3
# The routing test (bench/auto_route.py): every cell of a grid over the same held-out sources, flat sky
# included, for a larger sample of what a router meets than the textured test crops.
ROUTING_CELL = 256
MIN_SIDE = 256  # smaller pictures (icons, logos) are left out


def source_of(pkg: str, path: Path) -> str:
    """A source groups the variants of one picture (light/dark, sizes)."""
    parts = path.parts
    short = pkg.split("-")[0]
    if "wallpapers" in parts and pkg == "plasma-workspace-wallpapers":  # wallpapers/<Name>/contents/images*/
        return "plasma/" + parts[parts.index("wallpapers") + 1]
    stem = path.stem
    for suffix in ("-l", "-d", "_3840x2160", "_5640x3172"):
        stem = stem.removesuffix(suffix)
    return f"{short}/{stem.split('_')[0] if pkg == 'sway-backgrounds' else stem}"


def collect_debs(debs: Path, workdir: Path) -> dict[str, Path]:
    """The largest image file of each source found in the packages."""
    files: dict[str, Path] = {}
    for pkg in PACKAGES:
        found = sorted(debs.glob(f"{pkg}_*.deb"))
        if not found:
            sys.exit(f"Expected {pkg}_*.deb in {debs} (apt-get download {pkg}), but found none.")
        dest = workdir / pkg
        subprocess.run(["dpkg", "-x", str(found[-1]), str(dest)], check=True)
        for p in sorted(dest.rglob("*")):
            if p.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp") or "/doc/" in str(p):
                continue
            if any(w in str(p).lower() for w in ("screenshot", "preview", "logo", "emblem", "grub", "plymouth")):
                continue
            with Image.open(p) as im:
                if min(im.size) < MIN_SIDE:
                    continue
                area = im.size[0] * im.size[1]
            key = source_of(pkg, p)
            if key in files:
                with Image.open(files[key]) as other:
                    if other.size[0] * other.size[1] >= area:
                        continue
            files[key] = p
    return files


def skimage_photos() -> dict[str, Image.Image]:
    import skimage.data

    out = {f"skimage/{n}": Image.fromarray(getattr(skimage.data, n)()[..., :3].astype(np.uint8)) for n in SKIMAGE}
    for fname in SKIMAGE_FILES:
        out[f"skimage/{fname.rsplit('.', 1)[0]}"] = Image.open(Path(skimage.data.data_dir) / fname).convert("RGB")
    return out


def downscale(img: Image.Image, factor: float) -> Image.Image:
    if factor <= 1:
        return img
    return img.resize((round(img.width / factor), round(img.height / factor)), Image.Resampling.BOX)


def textured_crops(img: np.ndarray, size: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners of the ``count`` most textured non-overlapping crops on a half-overlapping grid
    (variance of the Laplacian of the luma), so that the test is not dominated by flat sky."""
    import cv2

    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap = cv2.Laplacian(gray, cv2.CV_32F)
    cells = []
    for y in range(0, img.shape[0] - size + 1, size // 2):
        for x in range(0, img.shape[1] - size + 1, size // 2):
            cells.append((float(lap[y : y + size, x : x + size].var()), y, x))
    chosen: list[tuple[int, int]] = []
    for _, y, x in sorted(cells, reverse=True):
        if all(abs(y - cy) >= size or abs(x - cx) >= size for cy, cx in chosen):
            chosen.append((y, x))
    return chosen[:count]


def grid_cells(img: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Top-left corners of the non-overlapping ``size`` x ``size`` cells that tile ``img`` from its corner."""
    return [(y, x) for y in range(0, img.shape[0] - size + 1, size) for x in range(0, img.shape[1] - size + 1, size)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debs", type=Path, required=True, help="folder holding the packages' .deb files")
    ap.add_argument("--out", type=Path, default=Path("data/photos"))
    ap.add_argument("--max-side", type=int, default=1536, help="longer side of stored training images")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        images = {k: Image.open(p).convert("RGB") for k, p in collect_debs(args.debs, Path(tmp)).items()}
        for im in images.values():
            im.load()
    images.update(skimage_photos())
    missing = set(TEST_SOURCES) - set(images)
    if missing:
        sys.exit(f"Expected the test sources {sorted(missing)} in the packages, but they are missing.")

    manifest = []
    for key, img in sorted(images.items()):
        name = key.replace("/", "-").replace(" ", "_")  # "__" separates a source from its variants
        if key in TEST_SOURCES:
            arr = np.asarray(downscale(img, TEST_SOURCES[key]))
            for i, (y, x) in enumerate(textured_crops(arr, TEST_CROP, TEST_CROPS_PER_SOURCE)):
                dest = args.out / "test" / f"{name}__crop{i}.png"
                dest.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr[y : y + TEST_CROP, x : x + TEST_CROP]).save(dest)
                manifest.append({"file": str(dest.relative_to(args.out)), "source": key, "split": "test"})
            for i, (y, x) in enumerate(grid_cells(arr, ROUTING_CELL)):
                dest = args.out / "routing" / f"{name}__cell{i}.png"
                dest.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr[y : y + ROUTING_CELL, x : x + ROUTING_CELL]).save(dest)
                manifest.append({"file": str(dest.relative_to(args.out)), "source": key, "split": "routing"})
            continue
        out = downscale(img, max(img.size) / args.max_side)
        dest = args.out / "train" / f"{name}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        out.save(dest, compress_level=6)
        manifest.append({"file": str(dest.relative_to(args.out)), "source": key, "split": "train"})
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    n_test = sum(m["split"] == "test" for m in manifest)
    n_routing = sum(m["split"] == "routing" for m in manifest)
    print(
        f"{len(manifest) - n_test - n_routing} training images from {len(images) - len(TEST_SOURCES)} sources; "
        f"{n_test} test crops and {n_routing} routing cells from {len(TEST_SOURCES)} held-out sources; under {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
