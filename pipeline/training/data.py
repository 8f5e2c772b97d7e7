"""What a training run reads: its images, the validation set held out of them, and the batches drawn
from them.

:func:`load_training_data` reads the spec's images once per worker and holds out whole sources for
validation (:func:`split_sources`); :class:`Batches` draws each step's training batch ahead of the model,
on a few threads, the same batch for the same ``(seed, rank, step)`` however the run is resumed. The loop
that consumes them is :mod:`pipeline.training.loop`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .spec import TrainSpec


def source_of(uri: str) -> str:
    """Files of one source share the name part before the last ``__`` (``<source>__<variant>.png``);
    a name without ``__`` is a source of its own."""
    stem = os.path.basename(uri).rsplit(".", 1)[0]
    return stem.rsplit("__", 1)[0]


def split_sources(uris: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Hold out whole sources, chosen by a hash of their name (stable across machines)."""
    sources = sorted({source_of(u) for u in uris}, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    n_val = round(len(sources) * val_fraction)
    val = set(sources[:n_val])
    return [u for u in uris if source_of(u) not in val], [u for u in uris if source_of(u) in val]


def load_rgb(uri: str, *, max_side: int | None = None) -> np.ndarray:
    from PIL import Image, ImageOps

    from ..storage import read_bytes

    img = ImageOps.exif_transpose(Image.open(io.BytesIO(read_bytes(uri)))).convert("RGB")
    if max_side and max(img.size) > max_side:
        s = max_side / max(img.size)
        img = img.resize((round(img.width * s), round(img.height * s)), Image.Resampling.BOX)
    return np.asarray(img)


@dataclass
class TrainingData:
    """What a worker trains and validates on: clean images (and their real degraded pairs, if any)."""

    train: list[np.ndarray]
    pairs: list[np.ndarray] | None
    val: list[tuple]  # (degraded, clean) batches, one per validation image, fixed for the whole run


def load_training_data(spec: TrainSpec) -> TrainingData:
    """Read the spec's images; validation holds out whole sources (see :func:`split_sources`)."""
    from dgunet.patches import fixed_validation_set
    from dgunet.tasks import task

    from ..storage import join_uri, list_images

    d = spec.data
    if d.paired:
        targets = [u for u, _ in list_images(join_uri(d.train, "target"))]
        train_uris, val_uris = split_sources(targets, d.val_fraction)
        pairs = [load_rgb(u.replace("/target/", "/input/"), max_side=d.max_side) for u in train_uris]
    else:
        train_uris, val_uris = split_sources([u for u, _ in list_images(d.train)], d.val_fraction)
        pairs = None
    train = [load_rgb(u, max_side=d.max_side) for u in train_uris]
    # The task's fixed validation degradation (dgunet/tasks.py), so that runs compare; noise at val_sigma
    val_degradation = dataclasses.replace(spec.degradation, **task(spec.task).validation)
    if "noise" in val_degradation.kinds:
        val_degradation = dataclasses.replace(val_degradation, sigma=(d.val_sigma, d.val_sigma))
    val = fixed_validation_set(
        [load_rgb(u, max_side=d.max_side) for u in val_uris],
        patch=d.val_patch,
        per_image=d.val_per_image,
        degradation=val_degradation,
        seed=spec.seed,
    )
    return TrainingData(train, pairs, val)


class Batches:
    """Training batches drawn ahead of the model on a few threads (numpy, OpenCV and Pillow release the
    GIL). A generator per ``(seed, rank, step)``: a resumed run draws the batches an uninterrupted one
    would, whatever the number of threads."""

    def __init__(self, spec: TrainSpec, data: TrainingData, *, rank: int, threads: int):
        from concurrent.futures import ThreadPoolExecutor

        self.spec, self.data, self.rank = spec, data, rank
        self.samplers: dict[tuple[int, int], Any] = {}
        self.pool = ThreadPoolExecutor(max(1, threads)) if threads > 0 else None
        self.pending: dict[int, Any] = {}
        self.ahead = 2 * max(1, threads)

    def _sampler(self, step: int):
        from dgunet.patches import PatchSampler

        patch, batch = self.spec.optim.phase(step)
        if (patch, batch) not in self.samplers:
            self.samplers[(patch, batch)] = PatchSampler(
                self.data.train,
                patch=patch,
                batch=batch,
                degradation=self.spec.degradation,
                pairs=self.data.pairs,
                scale=self.spec.data.scale,
                device_ops=self.spec.data.device_degradations,
            )
        return self.samplers[(patch, batch)]

    def _draw(self, step: int):
        return self._sampler(step).sample(np.random.default_rng([self.spec.seed, self.rank, step]))

    def get(self, step: int):
        if self.pool is None:
            return self._draw(step)
        for s in range(step, min(step + self.ahead, self.spec.optim.steps)):
            if s not in self.pending:
                self._sampler(s)  # built here, not on two threads at once
                self.pending[s] = self.pool.submit(self._draw, s)
        return self.pending.pop(step).result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
