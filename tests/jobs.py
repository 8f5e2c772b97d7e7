"""Inputs and specs of small restore jobs, for the tests that run the job as a user would."""

from __future__ import annotations

from pathlib import Path

import yaml
from PIL import Image

from tests.images import photo


def save_photos(folder: Path, count: int = 3, *, size: tuple[int, int] = (24, 32)) -> list[str]:
    """``count`` small noisy photos ``img<i>.png`` of ``size`` (height, width) in ``folder``; their names."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(photo(*size, seed=i)).save(folder / f"img{i}.png")
    return [f"img{i}.png" for i in range(count)]


def write_spec(
    path: Path,
    weights: tuple[str, dict],
    *,
    input_uri: str,
    output: dict,
    resources: dict,
    inference: dict | None = None,
    input_keys: dict | None = None,
) -> Path:
    """A denoising spec at ``path`` for the ``tiny_weights`` fixture's checkpoint and widths; ``input_keys``:
    more keys of its ``input`` section."""
    checkpoint, widths = weights
    spec = {
        "task": "denoise",
        "model": {"arch": "dgunet", "weights": checkpoint, **widths},
        "input": {"uri": input_uri, **(input_keys or {})},
        "output": output,
        "resources": resources,
        **({"inference": inference} if inference else {}),
    }
    path.write_text(yaml.safe_dump(spec))
    return path
