"""``task: auto``: the spec's keys, the router, the decode stage's one-pass estimate, the model stage
hosting every task's model (loaded only when an image needs it), and a whole run on a local Ray."""

from __future__ import annotations

import dataclasses
import io
import json
import re

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

from pipeline.routing import CLASSES, INPUTS, TASK_OF, Router, feature_vector
from pipeline.rows import FAILED, OK, PASSED, RESTORED
from pipeline.spec import SpecError, parse_spec
from pipeline.stages.decode import decode_batch
from pipeline.stages.measure import measure_batch
from pipeline.stages.model import RestoreModel
from pipeline.stages.model_set import resolve_auto


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _photo() -> np.ndarray:
    """A sharp photo (scikit-image's astronaut, centre): the bundled router calls it clean."""
    import skimage.data

    return skimage.data.astronaut()[128:384, 128:384].copy()


def _degraded(kind: str, clean: np.ndarray, seed: int = 0) -> np.ndarray:
    from pipeline.training.router import degrade_as

    rng = np.random.default_rng(seed)
    u = clean.astype(np.float32) / 255.0
    if kind == "noise":  # strong enough that no draw of the class's range is in doubt
        from dgunet.degrade import add_noise, to_uint8

        return to_uint8(add_noise(u, 25.0, rng))
    if kind == "rain":
        from dgunet.degrade import add_rain, to_uint8

        return to_uint8(add_rain(u, 0.015, 25, np.pi / 2, rng, width=1.5, brightness=1.0))
    return degrade_as(kind, u, rng)


def _batch(files: dict[str, bytes], router) -> dict[str, np.ndarray]:
    n = len(files)
    batch = {
        "input_uri": np.array(list(files), dtype=object),
        "status": np.array([OK] * n, dtype=object),
        "error": np.array([""] * n, dtype=object),
        "data": np.array(list(files.values()), dtype=object),
    }
    return measure_batch(decode_batch(batch, max_pixels=10**8), router=router)


BASE = {"input": {"uri": "/data/in"}, "output": {"uri": "/data/out"}}


@pytest.mark.parametrize(
    "given, key",
    [
        ({"task": "auto", "model": {"weights": "w.pth"}}, "model.weights"),
        ({"task": "auto", "model": {"n_feat": 16}}, "model.n_feat"),
        ({"task": "auto", "gate": {"noise_below": 3}}, "gate.noise_below"),
        ({"task": "denoise", "auto": {"deblur_weights": "w.pth"}}, "auto.deblur_weights"),
    ],
)
def test_a_spec_that_mixes_auto_with_single_task_keys_is_refused_with_the_key(given, key):
    with pytest.raises(SpecError, match=key.replace(".", r"\.")):
        parse_spec({**BASE, **given})


def test_auto_takes_weights_per_task_and_makes_their_paths_absolute():
    spec = parse_spec({**BASE, "task": "auto", "auto": {"derain_weights": "rel/derain.pth"}})
    assert spec.auto.weights("derain").startswith("/") and spec.auto.weights("derain").endswith("rel/derain.pth")
    assert spec.auto.weights("deblur") is None and spec.auto.router is None


def test_the_bundled_router_reads_back_and_routes_plain_cases():
    router = Router.load()
    assert router.classes == CLASSES and set(router.inputs) <= set(INPUTS) and len(router.sha256) == 64
    assert router.noise_floor is not None  # it was trained before noise_level: the floor is how it sees it
    assert Router.from_json(router.to_json()).to_json() == router.to_json()
    assert router.card["cross_validation"]["accuracy"] > 0.5  # its card says how it scored
    from pipeline.quality import degradation_features

    cat = _photo()
    assert router.classify(degradation_features(cat))[0] == "clean"
    assert router.classify(degradation_features(_degraded("noise", cat)))[0] == "noise"
    assert router.classify(degradation_features(_degraded("rain", cat)))[0] == "rain"
    assert router.classify(None) == ("clean", pytest.approx(float("nan"), nan_ok=True))


def test_a_photo_the_router_calls_clean_goes_to_the_denoiser_where_its_noise_level_reaches_the_floor():
    from pipeline.quality import degradation_features

    router = Router.load()
    features = degradation_features(_photo())
    assert router.classify(features)[0] == "clean" and features["noise_level"] < router.noise_floor
    noisy = {**features, "noise_level": router.noise_floor + 0.5}  # a camera's noise, unseen by the white estimate
    assert router.classify(noisy)[0] == "noise"
    assert dataclasses.replace(router, noise_floor=None).classify(noisy)[0] == "clean"
    assert Router.from_json(router.to_json()).noise_floor == router.noise_floor


def _features(**given: float) -> dict[str, float]:
    from pipeline.quality import DEGRADATION_FEATURES

    return {**dict.fromkeys(DEGRADATION_FEATURES, 0.1), "blockiness": 1.0, "jpeg_step": 1.0, **given}


def test_a_tree_router_walks_its_thresholds():
    # root: log1p_noise <= 1.0 ? (leaf clean) : (leaf noise, 3 of 4)
    tree = {
        "left": [1, -1, -1],
        "right": [2, -1, -1],
        "feature": [0, -2, -2],
        "threshold": [1.0, -2.0, -2.0],
        "value": [[5, 4, 0, 0, 0], [5, 0, 0, 0, 0], [0, 3, 1, 0, 0]],
    }
    router = Router("tree", CLASSES, INPUTS, tree=tree)
    assert router.classify(_features(noise=0.5)) == ("clean", 1.0)
    assert router.classify(_features(noise=20.0)) == ("noise", 0.75)
    assert feature_vector(_features(noise=float("nan")))[0] == 0  # unknown noise


@pytest.mark.parametrize(
    ("left", "right", "says"),
    [
        ([1, 1, -1], [2, 2, -1], "a cycle, or a node reached twice"),  # node 1 leads back to itself
        ([1, -1, -1], [7, -1, -1], "children in 1..2"),
        ([1, 2, 3, -1], [3, 3, 3, -1], "a cycle, or a node reached twice"),  # shared, not a tree
        ([1, -1, -1], [0, -1, -1], "children in 1..2"),  # back to the root
    ],
)
def test_a_router_tree_that_would_not_end_in_a_leaf_is_refused_on_load(left, right, says):
    n = len(left)
    tree = {"left": left, "right": right, "feature": [0] * n, "threshold": [1.0] * n, "value": [[1, 0, 0, 0, 0]] * n}
    text = json.dumps({"kind": "tree", "classes": list(CLASSES), "inputs": list(INPUTS), "tree": tree, "card": {}})
    with pytest.raises(ValueError, match=re.escape(says)):
        Router.from_json(text)


def test_a_router_tree_deeper_than_the_bound_is_refused():
    from pipeline.routing import MAX_TREE_DEPTH

    d = MAX_TREE_DEPTH  # a chain of d nodes: node i's left child is i + 1 (node d a leaf), its right a leaf of its own
    left, right = [*range(1, d + 1), *[-1] * (d + 1)], [*range(d + 1, 2 * d + 1), *[-1] * (d + 1)]
    n = len(left)
    tree = {"left": left, "right": right, "feature": [0] * n, "threshold": [1.0] * n, "value": [[1, 0, 0, 0, 0]] * n}
    with pytest.raises(ValueError, match=f"more than {MAX_TREE_DEPTH} levels"):
        Router("tree", CLASSES, INPUTS, tree=tree)


def test_a_router_reads_only_its_own_inputs_so_one_trained_on_fewer_measures_still_loads():
    # a logistic router over the two JPEG measures alone: the weights pick jpeg_zeros for class jpeg
    inputs = ("jpeg_zeros", "log_jpeg_step")
    weight = [[0.0, 0.0, 40.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]]
    router = Router.from_json(
        json.dumps(
            {
                "kind": "mlp",
                "classes": list(CLASSES),
                "inputs": list(inputs),
                "mean": [0, 0],
                "scale": [1, 1],
                "layers": [{"weight": weight, "bias": [2.0, 0, 0, 0, 0]}],
            }
        )
    )
    assert router.classify(_features(jpeg_zeros=0.3))[0] == "jpeg"
    assert router.classify(_features(jpeg_zeros=0.0))[0] == "clean"
    with pytest.raises(ValueError, match="router inputs"):
        Router("mlp", CLASSES, ("log1p_noise", "sharpness"))


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_jpeg_quantization_finds_the_step_of_the_standard_tables_wherever_the_crop_starts():
    from pipeline.quality import _luma, _unit_color, jpeg_quantization

    photo = _photo()
    zeros, step = jpeg_quantization(_luma(_unit_color(photo)))
    assert abs(zeros) < 0.03 and step == 1  # never a JPEG
    steps, zeros = {}, {}
    for quality in (30, 60, 90):
        decoded = _jpeg(photo, quality)
        for start in (0, 3):  # the grid found wherever the crop starts
            zeros[quality, start], steps[quality, start] = jpeg_quantization(
                _luma(_unit_color(decoded[start:, start + 2 :]))
            )
    # the luma table's lowest AC steps (11, 12, 12, 14, 12 at quality 50), scaled: x1.4 at 30, x0.8 at 60
    assert all(16 <= steps[30, start] <= 20 and 9 <= steps[60, start] <= 11 for start in (0, 3)), steps
    assert all(steps[90, start] <= 3 for start in (0, 3)), steps
    assert all(zeros[q, start] > 0.1 for q in (30, 60) for start in (0, 3)), zeros
    noisy = _degraded("noise", photo)  # noise makes no grid
    assert jpeg_quantization(_luma(_unit_color(noisy)))[1] == 1


def test_jpeg_zeros_see_quantization_on_a_flat_sky_where_no_step_can_be_read():
    from pipeline.quality import _luma, _unit_color, jpeg_quantization

    rows = np.linspace(90, 150, 256)[:, None, None]  # a smooth gradient: every block's AC rounds to zero
    sky = np.clip(rows + np.linspace(0, 20, 256)[None, :, None] + np.zeros((1, 1, 3)), 0, 255).astype(np.uint8)
    zeros_clean, _ = jpeg_quantization(_luma(_unit_color(sky)))
    zeros_jpeg, step = jpeg_quantization(_luma(_unit_color(_jpeg(sky, 60))))
    assert abs(zeros_clean) < 0.05 and zeros_jpeg > 0.1 and step == 1


def test_streaks_along_the_fall_of_rain_and_across_it_score_the_same_level_and_opposite_excess():
    from pipeline.quality import streaks

    grey = np.full((128, 128), 0.5, np.float32)
    falling, lying = grey.copy(), grey.copy()
    falling[:, ::9] = 0.8  # thin bright lines along the fall: rain
    lying[::9, :] = 0.8  # the same lines across it: ripples, the light between reeds
    (level_falling, excess_falling), (level_lying, excess_lying) = streaks(falling), streaks(lying)
    assert level_falling == pytest.approx(level_lying, rel=1e-3) and level_falling > 5  # the level cannot tell
    assert excess_falling > 5 and excess_lying < -5  # the excess can
    assert streaks(grey) == (0.0, 0.0)
    from dgunet.degrade import add_noise

    noisy = add_noise(np.repeat(grey[..., None], 3, axis=2), 25.0, np.random.default_rng(0)).mean(axis=2)
    assert abs(streaks(noisy.astype(np.float32))[1]) < 0.5  # noise has no direction


def test_the_router_s_labels_keep_every_visible_damage_as_its_kind():
    from pipeline.training.router import CLEAN_DB, relabel

    drawn, db = np.array([0, 1, 2, 3, 4]), np.array([np.inf, 30.0, CLEAN_DB - 1, CLEAN_DB, 60.0])
    assert relabel(drawn, db).tolist() == [0, 1, 2, 0, 0]


def test_router_samples_depend_on_the_seed_and_the_processes_alone():
    from pipeline.training.router import make_samples

    photos = {"a.png": _photo(), "b.png": _chelsea()}
    one = make_samples(photos, 2, seed=3, log=lambda _: None, processes=2)  # one of each class per process
    again = make_samples(photos, 2, seed=3, log=lambda _: None, processes=2)
    assert all(np.array_equal(a, b) for a, b in zip(one, again))
    x, drawn, groups, db = one
    assert x.shape == (10, len(INPUTS)) and sorted(drawn.tolist()) == sorted(list(range(5)) * 2)
    assert np.isinf(db[drawn == 0]).any() or (db[drawn == 0] > 30).all()  # clean: untouched or nearly
    assert (db[drawn == 1] < 45).all()  # noise of sigma 3 or more is never invisible


def _chelsea() -> np.ndarray:
    import skimage.data

    return skimage.data.chelsea()[:300, :300].copy()


def test_decode_measures_every_feature_once_and_routes():
    router = Router.load()
    cat = _photo()
    out = _batch(
        {"clean.png": _png(cat), "noisy.png": _png(_degraded("noise", cat)), "tiny.png": _png(cat[:16, :16])}, router
    )
    assert list(out["route"]) == ["clean", "noise", "clean"]  # too small to tell: nothing worth restoring
    assert 0.5 < out["route_score"][1] <= 1 and np.isnan(out["route_score"][2])
    assert out["noise_before"][1] > 15 and np.isfinite(out["blur_before"][:2]).all()
    assert 0.9 < out["blockiness_before"][0] < 1.3 and np.isfinite(out["rain_before"][:2]).all()
    plain = measure_batch(
        decode_batch(_batch_inputs({"clean.png": _png(cat)}), max_pixels=10**8)
    )  # no router: no routing, and no blur or blockiness measured
    assert list(plain["route"]) == [""] and np.isnan(plain["blur_before"]).all()


def _batch_inputs(files: dict[str, bytes]) -> dict[str, np.ndarray]:
    n = len(files)
    return {
        "input_uri": np.array(list(files), dtype=object),
        "status": np.array([OK] * n, dtype=object),
        "error": np.array([""] * n, dtype=object),
        "data": np.array(list(files.values()), dtype=object),
    }


def _checkpoint(path, task: str) -> str:
    """A toy-width checkpoint of ``task`` that records its network, as training writes them (``auto.*``
    weights name no widths)."""
    from dgunet import create_model, save_checkpoint
    from dgunet.registry import describe

    model = create_model(task, weights=False, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, depth=1)
    save_checkpoint(path, model, epoch=1, config=describe(model.cfg), spec={"task": task})
    return str(path)


@pytest.fixture
def weights(tmp_path):
    return {task: _checkpoint(tmp_path / f"{task}.pth", task) for task in ("denoise", "derain")}


def test_the_model_stage_hosts_each_task_s_model_and_loads_it_only_when_needed(weights, monkeypatch):
    import dgunet.registry

    no_deblur = {k: w for k, w in dgunet.registry.WEIGHTS.items() if w.task not in ("deblur", "dejpeg")}
    monkeypatch.setattr(dgunet.registry, "WEIGHTS", no_deblur)  # whatever ships, no deblurring model here
    path = weights["denoise"]
    given = {"denoise": path, "deblur": None, "derain": weights["derain"], "dejpeg": None}
    ref = resolve_auto(given, Router.load())
    assert set(ref.models) == {"denoise", "derain"} and "auto.deblur_weights" in ref.missing["deblur"]
    assert ref.id.startswith("auto/auto@sha256:")
    other = resolve_auto({"denoise": path, "deblur": None, "derain": None}, Router.load())
    assert other.id != ref.id  # another combination of weights: another model id, so re-runs restore again
    stage = RestoreModel(models=ref, inference={}, threads=1, use_gpu=False)
    assert stage.loaded == {}  # nothing loads before an image needs it
    cat = _photo()[:64, :64]
    batch = _batch({f"{k}.png": _png(cat) for k in ("a", "b", "c", "d")}, router=None)
    batch["route"] = np.array(["clean", "blur", "clean", "clean"], dtype=object)
    out = stage(batch)
    assert list(out["action"]) == [PASSED] * 4 and stage.loaded == {}  # no task needed: no model loaded
    assert list(out["passed_because"]) == ["clean", ref.missing["deblur"], "clean", "clean"]
    assert all(out["restored"][i] == batch["pixels"][i] for i in range(4))
    batch["route"] = np.array(["noise", "rain", "noise", "jpeg"], dtype=object)
    out = stage(batch)
    assert list(out["action"]) == [RESTORED, RESTORED, RESTORED, PASSED]
    assert list(out["task"]) == ["denoise", "derain", "denoise", ""]
    assert out["passed_because"][3] == ref.missing["dejpeg"]  # JPEG damage goes to its own task, none here
    assert set(stage.loaded) == {"denoise", "derain"}
    assert out["restored"][0] == out["restored"][2] != out["restored"][1]  # same pixels, same model: equal


@pytest.mark.slow
def test_an_auto_run_routes_each_image_and_counts_the_routes(ray_local, tmp_path, weights):
    import yaml

    from jobs.restore_bucket import main

    cat = _photo()
    inputs = {
        "clean.png": _png(cat),
        "noisy.png": _png(_degraded("noise", cat, 1)),
        "rainy.png": _png(_degraded("rain", cat, 2)),
        "broken.png": b"\x89PNG\r\n\x1a\n not an image",
    }
    (tmp_path / "in").mkdir()
    for name, data in inputs.items():
        (tmp_path / "in" / name).write_bytes(data)
    spec = {
        "task": "auto",
        "auto": {"denoise_weights": weights["denoise"], "derain_weights": weights["derain"]},
        "input": {"uri": str(tmp_path / "in")},
        "output": {"uri": str(tmp_path / "out")},
        "resources": {"batch_size": 4},
        "allow_failed_fraction": 0.5,
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["--spec", str(tmp_path / "spec.yaml"), "--run-id", "auto"]) == 0
    rows = {
        r["input_uri"].rsplit("/", 1)[-1]: r
        for r in pads.dataset(str(tmp_path / "out" / "stats")).to_table().to_pylist()
    }
    assert {n: (r["status"], r["action"], r["task"]) for n, r in rows.items()} == {
        "clean.png": (OK, PASSED, None),
        "noisy.png": (OK, RESTORED, "denoise"),
        "rainy.png": (OK, RESTORED, "derain"),
        "broken.png": (FAILED, None, None),
    }
    assert rows["clean.png"]["passed_because"] == "clean" and rows["clean.png"]["degradation"].startswith("clean ")
    assert rows["noisy.png"]["degradation"].startswith("noise ") and rows["noisy.png"]["noise_before"] > 15
    assert rows["rainy.png"]["blur_before"] is not None and rows["rainy.png"]["blockiness_before"] is not None
    assert rows["broken.png"]["error"].startswith("decode:")
    assert len({r["model"] for r in rows.values()}) == 1 and rows["clean.png"]["model"].startswith("auto/auto@")
    written = np.asarray(Image.open(tmp_path / "out" / "images" / "clean.png"))
    assert np.array_equal(written, cat)  # passed: the input's pixels
    metrics = json.loads((tmp_path / "out" / "runs" / "auto.json").read_text())["metrics"]
    assert metrics["routes"] == {"denoise": 1, "derain": 1, "passed": 1}
    assert metrics["detected"] == {"clean": 1, "noise": 1, "rain": 1}
    # A second run skips all three: the same router and weights are the same model
    assert main(["--spec", str(tmp_path / "spec.yaml"), "--run-id", "again"]) == 0
    again = json.loads((tmp_path / "out" / "runs" / "again.json").read_text())
    assert again["ok"] == 0 and again["skipped"] == 3


def test_every_route_s_task_is_a_task():
    from typing import get_args

    from pipeline.spec import Task

    assert set(TASK_OF) == set(CLASSES) and set(TASK_OF.values()) - {None} == set(get_args(Task))


def test_weights_that_do_not_fit_their_task_are_named_by_their_key(weights):
    from dgunet.checkpoint import CheckpointMismatchError

    with pytest.raises(CheckpointMismatchError, match=r"^auto\.derain_weights: "):
        resolve_auto({"denoise": None, "derain": weights["denoise"]}, Router.load())  # a denoiser's file
