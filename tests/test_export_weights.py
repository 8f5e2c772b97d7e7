"""jobs/export_weights.py writes an index.json entry through the weights' schema, gate included."""

from __future__ import annotations

import json

from dgunet import Gate, Weights, create_model, num_params, save_checkpoint
from dgunet.registry import describe


def test_an_exported_entry_reads_back_and_loads(tmp_path, monkeypatch):
    import jobs.export_weights as export

    model = create_model("derain", weights=False, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, depth=1)
    spec = {"task": "derain", "data": {"val_sigma": 25.0}, "checkpoint": {"uri": str(tmp_path / "ckpt")}}
    (tmp_path / "ckpt").mkdir()
    save_checkpoint(tmp_path / "ckpt" / "last.pth", model, epoch=1, step=4, config=describe(model.cfg), spec=spec)
    (tmp_path / "ckpt" / "history.jsonl").write_text(json.dumps({"step": 4, "seconds_per_step": 9.0}) + "\n")
    monkeypatch.setattr(export, "WEIGHTS_DIR", tmp_path / "weights")
    (tmp_path / "weights").mkdir()
    argv = ["--checkpoint", str(tmp_path / "ckpt" / "last.pth"), "--name", "dgunet.derain_tiny", "--spec", "t.yaml"]
    assert export.main([*argv, "--machine", "a test", "--gate", '{"below": 2.0, "chosen_by": "a test"}']) == 0

    [entry] = json.loads((tmp_path / "weights" / "index.json").read_text())
    weights = Weights.from_entry(entry)
    assert weights.to_entry() == entry and weights.config == model.cfg and weights.task == "derain"
    assert weights.gate == Gate("rain", 2.0, False, "a test")  # the task's gate, with the level given
    assert weights.num_params == num_params(model) and weights.recipe["steps"] == 4
    monkeypatch.setattr(Weights, "path", lambda w: tmp_path / "weights" / w.file)  # as if bundled
    loaded = create_model("derain", weights=weights)  # the file's sha256 is the entry's
    assert loaded.weights is weights and loaded.cfg == model.cfg


def test_a_fine_tune_of_a_checkpoint_records_the_whole_lineage(tmp_path, monkeypatch):
    import jobs.export_weights as export

    model = create_model("derain", weights=False, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, depth=1)
    first, second = tmp_path / "first", tmp_path / "second"
    specs = {
        first: {"task": "derain", "data": {"val_sigma": 25.0}, "checkpoint": {"uri": str(first)}},
        second: {
            "task": "derain",
            "data": {"val_sigma": 25.0},
            "checkpoint": {"uri": str(second), "init": str(first / "last.pth")},
        },
    }
    for folder, steps, cpu_hours in ((first, 100, 1.0), (second, 40, 0.5)):
        folder.mkdir()
        save_checkpoint(folder / "last.pth", model, epoch=1, step=steps, config=describe(model.cfg), spec=specs[folder])
        row = {"step": steps, "seconds_per_step": 36.0, "cpu_hours": cpu_hours}
        (folder / "history.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.setattr(export, "WEIGHTS_DIR", tmp_path / "weights")
    (tmp_path / "weights").mkdir()
    argv = ["--checkpoint", str(second / "last.pth"), "--name", "dgunet.derain_tiny", "--spec", "t.yaml"]
    assert export.main([*argv, "--machine", "a test"]) == 0

    [entry] = json.loads((tmp_path / "weights" / "index.json").read_text())
    recipe = entry["recipe"]
    assert (recipe["steps"], recipe["train_hours"], recipe["cpu_hours"]) == (40, 0.4, 0.5)
    # Paths inside the checkout are kept relative to it (here the weights folder's parent's parent).
    assert recipe["init"]["checkpoint"] == f"{tmp_path.name}/first/last.pth"
    assert (recipe["init"]["steps"], recipe["init"]["train_hours"], recipe["init"]["cpu_hours"]) == (100, 1.0, 1.0)
    assert "init" not in recipe["init"]  # the first run started from scratch
