"""create_model: bundled defaults, checkpoints by path or bytes, and the arch and widths checked against
what the weights have."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import dgunet.registry
from dgunet import (
    TASK_GATES,
    WEIGHTS,
    CheckpointMismatchError,
    Gate,
    NoBundledModelError,
    create_model,
    num_params,
    save_checkpoint,
)
from dgunet.registry import TASKS, describe

TINY = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4, "depth": 1}


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        return torch.equal(a.eval()(x), b.eval()(x))


@pytest.fixture
def tiny(tmp_path):
    """An untrained tiny denoiser saved twice: as a bare official checkpoint, and as training saves one
    (with the config and spec it records)."""
    model = create_model("denoise", weights=False, **TINY)
    bare = tmp_path / "bare.pth"
    digest = save_checkpoint(bare, model, epoch=1)
    recorded = tmp_path / "recorded.pth"
    save_checkpoint(recorded, model, epoch=1, config=describe(model.cfg), spec={"task": "denoise"})
    return model, bare, recorded, digest


@pytest.mark.parametrize("task", TASKS)
def test_the_bundled_default_of_each_task_or_a_clear_error(task):
    shipped = [w for w in WEIGHTS.values() if w.task == task]
    if not shipped:
        with pytest.raises(NoBundledModelError, match=f"No trained default model for task '{task}'"):
            create_model(task)
        return
    model = create_model(task)
    assert model.weights is shipped[0] and model.cfg == shipped[0].config and not model.training
    assert model(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)


def test_no_bundled_weights_at_all(monkeypatch):
    monkeypatch.setattr(dgunet.registry, "WEIGHTS", {})
    with pytest.raises(NoBundledModelError, match="bundled tasks: none"):
        create_model("denoise")


def test_bundled_weights_by_name_or_entry_and_the_widths_they_have():
    w = dgunet.registry.default_weights("denoise")
    by_name = create_model("denoise", weights=w.name)
    given = {"arch": w.config.arch, "n_feat": w.config.n_feat, "depth": w.config.depth, "scale_unetfeats": None}
    by_entry = create_model("denoise", weights=w, **given)  # what the weights have: accepted; None: not given
    assert _same_outputs(by_name, by_entry) and by_entry.weights.sha256 == w.sha256


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        ({"arch": "dgunet_plus"}, "Expected arch 'dgunet', which dgunet.denoise_small has, but got 'dgunet_plus'"),
        ({"n_feat": 80}, "Expected n_feat 8, which dgunet.denoise_small has, but got 80 instead"),
        ({"depth": 5}, "Expected depth 1, which dgunet.denoise_small has, but got 5 instead"),
    ],
)
def test_an_arch_or_width_the_bundled_weights_do_not_have_is_refused_by_name(asked, expected):
    with pytest.raises(CheckpointMismatchError, match=expected):
        create_model("denoise", **asked)


def test_bundled_weights_of_another_task_are_refused():
    with pytest.raises(CheckpointMismatchError, match="Expected weights for task 'derain', but got dgunet.denoise"):
        create_model("derain", weights="dgunet.denoise_small")


def test_a_checkpoint_by_path_or_bytes(tiny):
    model, bare, _, digest = tiny
    for weights in (bare, str(bare), bare.read_bytes()):
        loaded = create_model("denoise", weights=weights, **TINY)
        assert _same_outputs(model, loaded) and not loaded.training
        w = loaded.weights
        assert (w.sha256, w.config, w.num_params) == (digest, model.cfg, num_params(model))
        assert w.gate == TASK_GATES["denoise"]  # a checkpoint has no gate of its own: the task's
    assert create_model("denoise", weights=bare.read_bytes(), **TINY).weights.name == "the checkpoint"


def test_a_checkpoint_without_a_record_is_checked_key_by_key(tiny):
    _, bare, _, _ = tiny
    with pytest.raises(CheckpointMismatchError, match=r"basic.shallow_feat2.0.weight: checkpoint \(8, 3, 3, 3\)"):
        create_model("denoise", weights=bare, **{**TINY, "n_feat": 16})
    with pytest.raises(CheckpointMismatchError, match="in the checkpoint, but got"):
        create_model("denoise", weights=bare.read_bytes())  # the task preset's widths: nothing fits


def test_a_checkpoint_that_records_its_network_decides_it(tiny):
    model, _, recorded, _ = tiny
    loaded = create_model("denoise", weights=recorded)  # no widths given: the recorded ones
    assert loaded.cfg == model.cfg and _same_outputs(model, loaded)
    # depth changes no key of DGUNet (its middle stages share one module): only the record can tell
    with pytest.raises(CheckpointMismatchError, match=f"Expected depth 1, which {recorded} has, but got 5 instead"):
        create_model("denoise", weights=recorded, depth=5)
    with pytest.raises(CheckpointMismatchError, match="which records task 'denoise'"):
        create_model("derain", weights=recorded)


def test_the_derain_fallback_gate_for_a_checkpoint(tmp_path):
    model = create_model("derain", weights=False, **TINY)
    path = tmp_path / "derain.pth"
    save_checkpoint(path, model, epoch=1, config=describe(model.cfg), spec={"task": "derain"})
    gate = create_model("derain", weights=path).weights.gate
    assert (gate.estimate, gate.below, gate.restore_lossy) == ("rain", 1.5, False)


def test_the_gate_comes_from_the_weights_metadata(monkeypatch):
    w = dgunet.registry.default_weights("denoise")
    assert (w.gate.estimate, w.gate.below, w.gate.restore_lossy) == ("noise", 4.5, False)
    own = dataclasses.replace(w, gate=Gate("noise", 2.0, True, "a test"))
    monkeypatch.setattr(dgunet.registry, "WEIGHTS", {w.name: own})
    assert create_model("denoise").weights.gate == Gate("noise", 2.0, True, "a test")


def test_untrained_models_take_the_preset_and_the_widths_given():
    model = create_model("derain", weights=False)
    assert model.training and model.weights is None
    assert (model.cfg.arch, model.cfg.n_feat, model.cfg.scale_unetfeats, model.cfg.depth) == ("dgunet", 40, 20, 5)
    plus = create_model("deblur", arch="dgunet_plus", weights=False, **TINY)
    assert plus.cfg == dataclasses.replace(plus.cfg, arch="dgunet_plus", **TINY)
    assert plus(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)


def test_meta_device_checks_without_loading(tiny):
    _, bare, recorded, digest = tiny
    model = create_model("denoise", weights=bare, device="meta", **TINY)
    assert next(model.parameters()).device.type == "meta" and model.weights.sha256 == digest
    with pytest.raises(CheckpointMismatchError, match="mis-shaped"):
        create_model("denoise", weights=bare, device="meta", **{**TINY, "n_feat": 16})
    with pytest.raises(CheckpointMismatchError, match="Expected n_feat 8"):
        create_model("denoise", weights=recorded, device="meta", n_feat=16)


def test_bad_names_are_named():
    with pytest.raises(TypeError, match="Expected widths among .*, but got n_feats instead"):
        create_model("denoise", weights=False, n_feats=8)
    with pytest.raises(ValueError, match="Expected task in"):
        create_model("dehaze")
    with pytest.raises(ValueError, match="Expected arch in"):
        create_model("denoise", arch="unet", weights=False)
    with pytest.raises(
        FileNotFoundError,
        match=r"Expected bundled weights \(dgunet.denoise_small, dgunet.derain_small, dgunet.deblur_small, "
        r"dgunet.dejpeg_small\) or a",
    ):
        create_model("denoise", weights="dgunet.denoise_tiny")
    with pytest.raises(TypeError, match="but got int instead"):
        create_model("denoise", weights=3)
