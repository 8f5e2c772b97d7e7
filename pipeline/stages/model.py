"""The model stage: a callable class that Ray Data runs on a pool of actors, one model per actor."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..rows import OK, PASSED, RESTORED, STOPPED, Col, fail, pixels_of
from .model_set import ModelSet, load_model
from .stop import stopped

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

MIN_OOM_TILE = 64  # out of memory, tiles are halved down to this side before the image fails


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, (torch.OutOfMemoryError, MemoryError))


def _released(exc: BaseException) -> BaseException:
    """``exc`` without the local variables of its traceback's frames, which hold the tensors of the attempt
    that failed: out of memory, a retry must not find that memory still taken."""
    import traceback

    traceback.clear_frames(exc.__traceback__)
    return exc


def _smaller_tiles(options, pixels: int):
    """The next inference options to try after running out of memory, or None when none are left."""
    if pixels <= options.max_pixels:  # it ran whole: tile it, at most at the configured tile side
        tile = options.tile
    elif options.tile // 2 >= MIN_OOM_TILE:
        tile = options.tile // 2 // 8 * 8
    else:
        return None
    return dataclasses.replace(options, max_pixels=0, tile=tile, overlap=min(options.overlap, tile // 4), tile_batch=1)


TILE_BATCH_PIXELS = 1 << 21


def gpu_tile_batch(tile: int) -> int:
    """Tiles per forward pass on a GPU: about 2 megapixels of them. One small tile at a time leaves a GPU
    waiting on kernel launches (the bundled model ran 4.7x more 256x256 images per second at batch 16 than
    at batch 1 on an H100), and 2 megapixels keep its activations near 2 GiB."""
    return max(1, TILE_BATCH_PIXELS // (tile * tile))


class RestoreModel:
    """Ray Data stage (``map_batches`` on an ``ActorPoolStrategy``): ``pixels`` to ``restored``.

    The model loads once per actor. Images of equal size in a batch run as one tensor batch; images above
    the whole-image budget go through tiled inference one at a time. An image that fails fails its own
    row, after a retry on its own when it was part of a group. Out of memory, an image is retried in
    tiles, halving the tile side down to :data:`MIN_OOM_TILE`, before it fails.

    Which model restores an image is the :class:`~pipeline.stages.model_set.ModelSet`'s to say
    (:meth:`~pipeline.stages.model_set.ModelSet.task_of`): its gate, or its router. An image that passes is not
    run through a model: its pixels go on unchanged, its ``action`` is ``"passed"`` and the reason is in
    ``passed_because``. Every model of the set is hosted by this one actor; a model loads the first time an
    image needs it (a single model at once, so that bad weights fail the actor, not every batch), and a task
    that no image needs costs nothing.

    The stop flag: with ``stop`` (the run's :class:`~pipeline.stages.stop.StopFlag`, handed down by the
    driver), no new batch starts once the flag is raised: the batch's rows are marked
    :data:`~pipeline.rows.STOPPED` and pass through untouched, and the next run plans them again.
    """

    def __init__(
        self,
        *,
        models: ModelSet,
        inference: dict,
        threads: int,
        use_gpu: bool,
        storage=None,
        failpoints: dict[str, str] | None = None,
        stop=None,
    ):
        """``models``: the run's models and the rule between them. ``inference``: the spec's
        :class:`InferenceOptions` fields, over the weights' recommendation. ``failpoints``: see
        :mod:`pipeline.faults` (tests only). ``stop``: the run's stop flag (None: never stops)."""
        import torch

        torch.set_num_threads(max(1, threads))
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.inference, self.storage, self.models = inference, storage, models
        self.loaded: dict[str, tuple[Any, Any]] = {}  # task -> (model, inference options)
        if len(models.models) == 1 and models.router is None:
            self._model(next(iter(models.models)))
        self.failpoints = failpoints or {}
        self.stop = stop
        self.seen = 0  # images this actor has been given to restore (fail point model.hold counts them)

    def _model(self, task: str):
        """The model of ``task`` and its inference options, loaded on first use."""
        if task not in self.loaded:
            import torch

            from dgunet.inference import recommended_options

            model = load_model(self.models.models[task], self.storage).to(self.device)
            options = dataclasses.replace(recommended_options(model), **self.inference)
            if self.device.type == "cuda" and "tile_batch" not in self.inference:
                options = dataclasses.replace(options, tile_batch=gpu_tile_batch(options.tile))
            if options.channels_last:
                model = model.to(memory_format=torch.channels_last)
            self.loaded[task] = (model, options)
        return self.loaded[task]

    def _run(self, task: str, images: list[np.ndarray], uris: list[str], options=None) -> list[np.ndarray]:
        import torch

        from dgunet.inference import from_model_output, restore_tensor, to_model_input

        from ..faults import fires

        model, default = self._model(task)
        options = options or default
        inputs = [to_model_input(img) for img in images]
        x = torch.stack([t for t, _ in inputs])
        whole = x.shape[-2] * x.shape[-1] <= options.max_pixels
        for uri in uris:
            if fires(self.failpoints, "model.crash", uri):
                os._exit(70)
            if whole and fires(self.failpoints, "model.oom", uri):
                raise torch.OutOfMemoryError(f"fail point model.oom: {uri}")
        if self.device.type == "cuda" and whole:
            x = x.pin_memory()
        y = restore_tensor(model, x, options)
        return [from_model_output(y[i], layout, img) for i, ((_, layout), img) in enumerate(zip(inputs, images))]

    def _hold(self) -> None:
        """Fail point ``model.hold=k[@file]``: past ``k`` images, wait here until the run is stopped (or
        the file exists)."""
        point = self.failpoints.get("model.hold")
        if point is None:
            return
        k, _, release = point.partition("@")
        if self.seen < int(k) or (release and os.path.exists(release)):
            return
        print(f"fail point model.hold: {self.seen} images given, holding until the run stops", file=sys.stderr)
        sys.stderr.flush()
        while not stopped(self.stop) and not (release and os.path.exists(release)):
            time.sleep(0.05)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._hold()
        self.seen += int(np.sum(batch[Col.STATUS] == OK))
        if stopped(self.stop):
            # Marked rather than dropped: the batch keeps its columns and their types for the next stage.
            batch = {**batch, Col.STATUS: np.full(len(batch[Col.STATUS]), STOPPED, dtype=object)}
        n = len(batch[Col.INPUT_URI])
        status, error = list(batch[Col.STATUS]), list(batch[Col.ERROR])
        restored, seconds, action = [b""] * n, np.zeros(n), [""] * n
        tasks, because = [""] * n, [""] * n
        groups: dict[tuple, list[int]] = {}
        for i in range(n):
            if status[i] != OK:
                continue
            task, reason = self.models.task_of(batch, i)
            if task is None:
                restored[i], action[i], because[i] = batch[Col.PIXELS][i], PASSED, reason
                continue
            action[i], tasks[i] = RESTORED, task
            h, w, _ = batch[Col.SHAPE][i]
            whole = h * w <= self._model(task)[1].max_pixels
            # Equal sizes of one task run as one tensor batch (every layout becomes RGB float); tiled alone.
            key = (task, int(h), int(w)) if whole else (task, "tiled", i)
            groups.setdefault(key, []).append(i)
        for (task, *_), idx in groups.items():
            self._restore_group(task, idx, batch, status, error, restored, seconds)
        out = dict(batch)
        out.update(
            {
                Col.RESTORED: np.array(restored, dtype=object),
                Col.ACTION: np.array(action, dtype=object),
                Col.TASK: np.array(tasks, dtype=object),
                Col.PASSED_BECAUSE: np.array(because, dtype=object),
                Col.STATUS: np.array(status, dtype=object),
                Col.ERROR: np.array(error, dtype=object),
                Col.SECONDS: seconds,
            }
        )
        return out

    def _restore_group(self, task: str, idx: list[int], batch, status, error, restored, seconds) -> None:
        """Rows ``idx`` through ``task``'s model as one tensor batch; their outputs or failures in place."""
        images = [pixels_of(batch[Col.PIXELS][i], batch[Col.SHAPE][i], batch[Col.DTYPE][i]) for i in idx]
        uris = [str(batch[Col.INPUT_URI][i]) for i in idx]
        t0 = time.perf_counter()
        failure = None
        try:
            outs = self._run(task, images, uris)
        except Exception as exc:
            failure = _released(exc)
        if failure is not None:  # retried outside the except block, so the failed attempt's memory is free
            self._free()
            if len(idx) > 1:  # retry each image on its own, so that only the one at fault fails
                outs = [self._run_or_error(task, img, uri) for img, uri in zip(images, uris)]
            elif _is_oom(failure):
                outs = [self._run_or_error(task, images[0], uris[0], oom=failure)]
            else:
                outs = [failure]
        per_image = (time.perf_counter() - t0) / len(idx)
        for i, out in zip(idx, outs):
            if isinstance(out, Exception):
                status[i], error[i] = fail(f"model: {type(out).__name__}: {out}")
            else:
                restored[i], seconds[i] = out.tobytes(), per_image

    def _run_or_error(
        self, task: str, image: np.ndarray, uri: str, oom: Exception | None = None
    ) -> np.ndarray | Exception:
        """One image alone; out of memory, again in ever smaller tiles. ``oom``: it has just run out of
        memory with the actor's options, so start with smaller tiles."""
        pixels = image.shape[0] * image.shape[1]
        default = self._model(task)[1]
        options = default if oom is None else _smaller_tiles(default, pixels)
        while options is not None:
            if oom is not None:
                log.warning("Out of memory on %s; retrying in %d px tiles.", uri, options.tile)
            try:
                return self._run(task, [image], [uri], options)[0]
            except Exception as exc:
                failure = _released(exc)
            self._free()
            if not _is_oom(failure):
                return failure
            oom, options = failure, _smaller_tiles(options, pixels)
        return oom

    def _free(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def restore_alone(batch: dict[str, np.ndarray], **model) -> dict[str, np.ndarray]:
    """Ray Data task: ``batch`` through a model loaded for it alone. The retry pass of images that were
    lost with workers that died runs this, one image per task; ``model``: :class:`RestoreModel`'s
    arguments."""
    return RestoreModel(**model)(batch)
