"""Model workers that fail: out of memory, killed mid-run, or killed by one image every time."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pyarrow.dataset as pads
import pytest
import torch
from PIL import Image

from pipeline.rows import OK
from pipeline.run.job import run_restore
from pipeline.spec import parse_spec
from pipeline.stages.model import MIN_OOM_TILE, RestoreModel, gpu_tile_batch
from pipeline.stages.model_set import ModelSet, resolve_model
from tests.images import photo


def _batch(images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    obj = lambda values: np.array(values, dtype=object)  # noqa: E731
    return {
        "input_uri": obj(list(images)),
        "status": obj([OK] * len(images)),
        "error": obj([""] * len(images)),
        "shape": obj([img.shape for img in images.values()]),
        "dtype": obj([str(img.dtype) for img in images.values()]),
        "pixels": obj([img.tobytes() for img in images.values()]),
    }


@pytest.fixture
def actor(tiny_weights):
    path, widths = tiny_weights
    ref = resolve_model("denoise", arch="dgunet", weights=path, **widths)

    def make(failpoints=None, **inference):
        inference = {"tile": 32, "overlap": 8, "max_pixels": 64 * 64, **inference}
        return RestoreModel(
            models=ModelSet.one(ref), inference=inference, threads=1, use_gpu=False, failpoints=failpoints
        )

    return make


def test_tiles_per_forward_pass_fill_a_gpu_and_stay_one_on_cpus(actor):
    assert [gpu_tile_batch(t) for t in (128, 512, 2048)] == [128, 8, 1]  # about 2 megapixels of tiles
    assert actor()._model("denoise")[1].tile_batch == 1  # on CPUs one tile at a time keeps the peak memory low
    assert actor(tile_batch=6)._model("denoise")[1].tile_batch == 6  # the spec's inference.tile_batch wins


def test_out_of_memory_on_a_whole_image_is_retried_in_tiles(actor):
    images = {"s3://b/big.png": photo(48, 56, seed=1), "s3://b/small.png": photo(48, 56, seed=2)}
    out = actor(failpoints={"model.oom": "big"})(_batch(images))
    assert list(out["status"]) == [OK, OK], list(out["error"])
    plain = actor()(_batch(images))
    small = np.frombuffer(out["restored"][1], np.uint8)
    assert np.array_equal(small, np.frombuffer(plain["restored"][1], np.uint8))  # its neighbour is untouched
    assert len(out["restored"][0]) == 48 * 56 * 3


def test_an_image_that_always_runs_out_of_memory_fails_after_bounded_retries(actor, monkeypatch):
    import dgunet.inference

    calls = []

    def oom(model, x, opts):
        calls.append(opts.tile if x.shape[-2] * x.shape[-1] > opts.max_pixels else "whole")
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(dgunet.inference, "restore_tensor", oom)
    model = actor(tile=256, overlap=32, max_pixels=1 << 20)
    out = model(_batch({"s3://b/huge.png": photo(40, 40), "s3://b/ok-size.png": photo(40, 40, seed=3)}))
    assert list(out["status"]) == ["failed", "failed"]
    assert "OutOfMemoryError" in out["error"][0]
    # The group, then each image alone: whole, then tiles of 256, 128 and 64 px; then it gives up.
    assert calls == ["whole"] + ["whole", 256, 128, MIN_OOM_TILE] * 2
    calls.clear()
    out = model(_batch({"s3://b/alone.png": photo(40, 40)}))  # alone, it goes straight to tiles
    assert list(out["status"]) == ["failed"] and calls == ["whole", 256, 128, MIN_OOM_TILE]


def _local_spec(tmp_path, tiny_weights, **resources):
    path, widths = tiny_weights
    return parse_spec(
        {
            "model": {"arch": "dgunet", "weights": path, **widths},
            "input": {"uri": str(tmp_path / "in")},
            "output": {"uri": str(tmp_path / "out")},
            "resources": {"cpus_per_actor": 1, "batch_size": 4, "max_task_retries": 1, **resources},
            "inference": {"tile": 32, "overlap": 8, "max_pixels": 64 * 64},
            "allow_failed_fraction": 1.0,
        }
    )


def _inputs(tmp_path, n, size=(40, 48)):
    (tmp_path / "in").mkdir()
    for i in range(n):
        Image.fromarray(photo(*size, seed=i)).save(tmp_path / "in" / f"img{i:03d}.png")


def _rows(tmp_path):
    return pads.dataset(str(tmp_path / "out" / "stats"), format="parquet").to_table().to_pylist()


@pytest.mark.slow
def test_an_image_that_kills_its_worker_every_time_fails_alone(ray_local, tmp_path, tiny_weights, monkeypatch):
    _inputs(tmp_path, 7)
    Image.fromarray(photo(40, 48, seed=99)).save(tmp_path / "in" / "poison.png")
    monkeypatch.setenv("DGUNET_FAILPOINTS", "model.crash=poison")
    summary = run_restore(_local_spec(tmp_path, tiny_weights))
    rows = _rows(tmp_path)
    assert len(rows) == 8 and len({r["input_uri"] for r in rows}) == 8  # one row per input
    failed = [r for r in rows if r["status"] != OK]
    assert [os.path.basename(r["input_uri"]) for r in failed] == ["poison.png"]
    assert "worker died on every attempt" in failed[0]["error"]
    assert summary.ok == 7 and summary.failed == 1
    # The poison image's batch-mates were retried on their own and restored.
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == [f"img{i:03d}.png" for i in range(7)]


def _actor_pids() -> list[int]:
    """Model actors of this machine, by process title (Ray names them ``ray::MapWorker(...RestoreModel...)``)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read()
        except OSError:
            continue
        if title.startswith(b"ray::") and b"RestoreModel" in title:
            pids.append(int(entry))
    return pids


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_replaced_and_its_images_retried(ray_local, tmp_path, tiny_weights, monkeypatch):
    _inputs(tmp_path, 24, size=(96, 96))
    # The actor holds after 8 images (fail point model.hold) until the release file exists: the run cannot
    # end before the kill, however fast the machine; the replacement actor finds the file and goes on.
    release = tmp_path / "release"
    monkeypatch.setenv("DGUNET_FAILPOINTS", f"model.hold=8@{release}")
    killed, ended = [], threading.Event()

    def kill_once_outputs_appear():
        while not killed and not ended.is_set():
            images = tmp_path / "out" / "images"
            pids = _actor_pids()
            if pids and images.exists() and any(images.iterdir()):
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                release.touch()
            time.sleep(0.05)

    killer = threading.Thread(target=kill_once_outputs_appear)
    killer.start()
    try:
        summary = run_restore(_local_spec(tmp_path, tiny_weights, max_task_retries=2))
    finally:
        ended.set()
        killer.join()
    assert killed, "the actor was never killed: the run ended first"
    rows = _rows(tmp_path)
    assert summary.ok == 24 and summary.failed == 0
    assert len(rows) == 24 and {r["status"] for r in rows} == {OK}
    for r in rows:
        assert Image.open(r["output_uri"]).size == (96, 96)


def test_the_images_a_pass_lost_are_found_without_a_set_of_every_name(ray_local, tmp_path):
    """The plan's rows with no stats row yet: found on Ray Data by input_uri, from the stats parts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.planning.plan import Plan, unfinished_rows
    from pipeline.storage import StorageOptions

    rows = [
        {"input_uri": f"s3://b/img{i}.png", "size": i, "version": f"v{i}", "output_uri": f"s3://o/img{i}.png"}
        for i in range(40)
    ]
    rows = [{**r, "reference_uri": "", "output_present": False} for r in rows]
    plan = Plan(planned=40, skipped=0, still_bad=0, listed=40, blocks=[ray_local.put(pa.Table.from_pylist(rows))])
    parts = []
    for k, uris in enumerate(
        ([f"s3://b/img{i}.png" for i in range(0, 20)], [f"s3://b/img{i}.png" for i in range(21, 39)])
    ):
        parts.append(str(tmp_path / f"run-x-part-{k:05d}.parquet"))
        pq.write_table(pa.table({"input_uri": uris, "status": ["ok"] * len(uris)}), parts[-1])
    lost = unfinished_rows(plan, parts, StorageOptions())
    assert sorted(r["input_uri"] for r in lost) == ["s3://b/img20.png", "s3://b/img39.png"]
    assert {r["input_uri"]: r for r in lost}["s3://b/img20.png"] == rows[20]  # the whole planned row
    assert len(unfinished_rows(plan, [], StorageOptions())) == 40
