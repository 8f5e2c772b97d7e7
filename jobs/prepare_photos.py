"""Build the clean photo set that the default denoiser is trained and evaluated on.

Sources (all redistributable; see each package's copyright file):

* Debian ``mate-backgrounds`` (GPL-2+, /usr/share/doc/mate-backgrounds/copyright),
* Debian ``plasma-workspace-wallpapers`` (LGPL-3 / CC-BY-SA, /usr/share/doc/plasma-workspace-wallpapers/copyright),
* scikit-image's bundled colour photos (public domain / CC0, see skimage/data/README.txt).

Every image is downscaled so its longer side is at most ``--max-side`` (area filter, which also averages
away sensor noise and JPEG artefacts of the originals) and written as an 8-bit RGB PNG. Images are grouped
by source (a wallpaper's light/dark and size variants are one source), and whole sources are held out for
testing, so no test photo's content is seen in training. Test images are further reduced to a longer
side of ``--test-side`` so that the classical baselines finish in minutes.

    python jobs/prepare_photos.py --debs DIR_WITH_DEBS --out data/photos
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

PACKAGES = ("mate-backgrounds", "plasma-workspace-wallpapers")
SKIMAGE = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
SKIMAGE_FILES = ("motorcycle_left.png",)  # shipped in the wheel without an accessor of its own


def _source_of(path: Path) -> str:
    parts = path.parts
    if "wallpapers" in parts:  # plasma: usr/share/wallpapers/<Name>/contents/images[_dark]/<size>.png
        return "plasma/" + parts[parts.index("wallpapers") + 1]
    return "mate/" + path.stem.split("_")[0]


def _collect_debs(debs: Path, workdir: Path) -> dict[str, Path]:
    """One (the largest) file per variant folder, keyed by a stable name."""
    for pkg in PACKAGES:
        found = sorted(debs.glob(f"{pkg}_*.deb"))
        if not found:
            sys.exit(f"Expected {pkg}_*.deb in {debs} (apt-get download {pkg}), but found none.")
        subprocess.run(["dpkg", "-x", str(found[-1]), str(workdir)], check=True)
    files: dict[str, Path] = {}
    for p in sorted(workdir.rglob("*")):
        if p.suffix.lower() not in (".png", ".jpg", ".jpeg") or "/doc/" in str(p) or "screenshot" in p.name:
            continue
        if "wallpapers" in p.parts:
            key = f"{_source_of(p)}/{p.parent.name}"
            if key in files and files[key].stat().st_size >= p.stat().st_size:
                continue
        else:
            key = f"{_source_of(p)}/{p.stem}"
            if _source_of(p) == "mate/Elephants" and p.stem != "Elephants_3840x2160":
                continue  # three sizes of one picture: keep one
        files[key] = p
    return files


def _resize(img: Image.Image, max_side: int) -> Image.Image:
    scale = max_side / max(img.size)
    if scale >= 1:
        return img
    return img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BOX)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debs", type=Path, required=True, help="folder holding the two .deb files")
    ap.add_argument("--out", type=Path, default=Path("data/photos"))
    ap.add_argument("--max-side", type=int, default=1536)
    ap.add_argument("--test-side", type=int, default=640)
    ap.add_argument("--test-fraction", type=float, default=0.15)
    args = ap.parse_args(argv)

    import skimage.data

    images: dict[str, Image.Image] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, path in _collect_debs(args.debs, Path(tmp)).items():
            images[key] = Image.open(path).convert("RGB")
            images[key].load()
    for name in SKIMAGE:
        arr = getattr(skimage.data, name)()
        images[f"skimage/{name}/{name}"] = Image.fromarray(arr[..., :3].astype(np.uint8))
    for fname in SKIMAGE_FILES:
        stem = fname.rsplit(".", 1)[0]
        images[f"skimage/{stem}/{stem}"] = Image.open(Path(skimage.data.data_dir) / fname).convert("RGB")

    # Hold out whole sources, chosen by a hash of the name so the split is stable across machines.
    sources = sorted({k.rsplit("/", 1)[0] for k in images})
    ranked = sorted(sources, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    test_sources = set(ranked[: max(1, round(len(sources) * args.test_fraction))])
    manifest = []
    for key, img in sorted(images.items()):
        source = key.rsplit("/", 1)[0]
        split = "test" if source in test_sources else "train"
        out = _resize(img, args.test_side if split == "test" else args.max_side)
        name = key.replace("/", "__").replace(" ", "_") + ".png"
        dest = args.out / split / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        out.save(dest)
        manifest.append({"file": f"{split}/{name}", "source": source, "split": split, "size": list(out.size)})
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    n_test = sum(m["split"] == "test" for m in manifest)
    print(
        f"{len(manifest)} images from {len(sources)} sources: {len(manifest) - n_test} train, {n_test} test "
        f"({len(test_sources)} held-out sources) under {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
