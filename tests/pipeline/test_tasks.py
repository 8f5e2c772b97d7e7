"""The task table (dgunet/tasks.py) is what every part that differs by task reads: each row's names
exist where they are used, and the spec, router, report, evaluation and training derive from it."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest

from dgunet.tasks import ESTIMATES, NAMES, TABLE, Gate, task, task_of_route


def test_every_gate_estimate_is_measured_and_kept_in_a_stats_column():
    from pipeline.quality import DEGRADATION_FEATURES
    from pipeline.rows import STATS_SCHEMA
    from pipeline.stages.estimates import ESTIMATES as MEASURED

    for name, e in MEASURED.items():
        assert e.feature in DEGRADATION_FEATURES, name
        assert e.column == f"{name}_before" and e.column in STATS_SCHEMA.names
    assert set(ESTIMATES) <= set(MEASURED)
    for t in TABLE:
        assert t.gate.estimate in ESTIMATES


def test_the_spec_has_a_weights_field_per_task_and_a_level_per_estimate():
    from pipeline.spec import AutoSpec, GateSpec, RestoreTask, Task

    assert get_args(Task) == NAMES and get_args(RestoreTask) == (*NAMES, "auto")
    assert {f"{n}_weights" for n in NAMES} <= set(AutoSpec.model_fields)
    assert {f"{e}_below" for e in ESTIMATES} <= set(GateSpec.model_fields)
    gate = GateSpec(rain_below=2.0)
    assert gate.settings({"estimate": "rain", "below": 1.5, "restore_lossy": False})["pass_below"] == 2.0
    assert AutoSpec(derain_weights="x.pth").weights("derain") == "x.pth"


def test_the_router_s_classes_go_to_the_tasks_that_name_them():
    from pipeline.routing import CLASSES, TASK_OF

    for t in TABLE:
        assert set(t.routes) <= set(CLASSES), t.name
        assert all(TASK_OF[r] == t.name for r in t.routes)
    assert TASK_OF["clean"] is None and task_of_route("no such class") is None


def test_each_task_s_cases_baselines_ranking_and_validation_exist():
    from dgunet.degrade import Degradation
    from pipeline.run.report import RANKINGS, ranking_measure
    from pipeline.training import evaluate as ev

    fields = {f.name for f in dataclasses.fields(Degradation)}
    for t in TABLE:
        kinds = {ev.Case(c).kind for c in t.cases}  # parses every case name
        assert all(b in ev.METHODS and ev.KIND_OF[b] & kinds for b in t.baselines), t.name
        assert t.ranking in RANKINGS and ranking_measure(t.name, paired=False).column == t.ranking
        assert set(t.validation) <= fields, t.name
        Degradation(**dict(t.validation))  # a valid degradation on its own


def test_presets_cover_every_architecture_and_the_registry_reads_them():
    from dgunet.options import ARCHS
    from dgunet.registry import PRESETS, TASK_GATES

    for t in TABLE:
        assert set(t.presets) == set(ARCHS), t.name
        assert all(PRESETS[(t.name, a)] == w for a, w in t.presets.items())
        assert TASK_GATES[t.name] is t.gate


def test_a_wrong_name_is_named():
    with pytest.raises(ValueError, match=r"Expected a task in .*but got 'deblock' instead"):
        task("deblock")
    with pytest.raises(ValueError, match=r"Expected gate estimate in .*but got 'haze' instead"):
        Gate("haze", 1.0, False)


def test_decode_measures_the_estimates_asked_for_alone_or_from_the_features():
    import io

    import numpy as np
    from PIL import Image

    from pipeline.rows import Col
    from pipeline.stages.decode import decode_batch
    from pipeline.stages.measure import measure_batch

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:128, 0:128]
    img = np.stack([(x + y) % 256, (2 * x) % 256, (3 * y) % 256], -1) + rng.normal(0, 8, (128, 128, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=30)
    batch = {
        Col.INPUT_URI: np.array(["a.jpg"], dtype=object),
        Col.DATA: np.array([buf.getvalue()], dtype=object),
        Col.STATUS: np.array(["ok"], dtype=object),
        Col.ERROR: np.array([""], dtype=object),
    }
    decoded = decode_batch(dict(batch), max_pixels=10**6)
    out = measure_batch(decoded, estimates=("rain", "blockiness"))
    assert np.isfinite(out[Col.NOISE_BEFORE][0]) and np.isfinite(out[Col.RAIN_BEFORE][0])
    assert out[Col.BLOCKINESS_BEFORE][0] > 1.05  # a JPEG's grid, read from one features pass
    plain = measure_batch(decoded)
    assert np.isnan(plain[Col.RAIN_BEFORE][0]) and np.isnan(plain[Col.BLOCKINESS_BEFORE][0])
    assert plain[Col.NOISE_BEFORE][0] == out[Col.NOISE_BEFORE][0]
