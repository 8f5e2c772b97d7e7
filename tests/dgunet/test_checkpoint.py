"""Checkpoint formats, refusal of code-running pickles, and key mismatch reports."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from dgunet import (
    CheckpointMismatchError,
    UnsafeCheckpointError,
    create_model,
    load_checkpoint,
    save_checkpoint,
)
from tests.conftest import REFERENCE


@pytest.fixture
def reference():
    return torch.load(REFERENCE / "dgunet_small_reference.pth", weights_only=True)


def _check_outputs(model, ref):
    with torch.no_grad():
        out = model.eval()(ref["input"])
    assert (out - ref["outputs"][0]).abs().max().item() < 1e-4


def test_official_dict_with_module_prefix(tmp_path, reference):
    path = tmp_path / "DGUNet.pth"
    torch.save({"epoch": 80, "state_dict": reference["state_dict"], "optimizer": {}}, path)
    assert all(k.startswith("module.") for k in reference["state_dict"])
    model = create_model("denoise", arch="dgunet", weights=False, **reference["config"])
    info = load_checkpoint(model, path)
    assert info["epoch"] == 80 and len(info["sha256"]) == 64
    _check_outputs(model, reference)


@pytest.mark.parametrize("fmt", ["bare", "safetensors", "file_url"])
def test_bare_safetensors_and_urls(tmp_path, reference, fmt):
    sd = {k.removeprefix("module."): v.contiguous() for k, v in reference["state_dict"].items()}
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        # safetensors refuses shared storage; our state dict holds separate copies of the shared PReLU.
        save_file({k: v.clone() for k, v in sd.items()}, path)
        uri = str(path)
    else:
        path = tmp_path / "w.pth"
        torch.save(sd, path)
        uri = f"file://{path}" if fmt == "file_url" else str(path)
    model = create_model("denoise", arch="dgunet", weights=False, **reference["config"])
    load_checkpoint(model, uri)
    _check_outputs(model, reference)


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = _RunsCode()
    evil.marker = marker
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, "payload": evil}, f)
    model = create_model("denoise", weights=False, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4)
    with pytest.raises(UnsafeCheckpointError, match="Refusing to load"):
        load_checkpoint(model, path)
    assert not marker.exists()


def test_mismatch_names_missing_unexpected_and_misshaped(tmp_path, reference):
    sd = {k.removeprefix("module."): v for k, v in reference["state_dict"].items()}
    del sd["r0"]
    sd["extra.weight"] = torch.zeros(1)
    sd["tail.weight"] = torch.zeros(3, 5, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": sd}, path)
    model = create_model("denoise", arch="dgunet", weights=False, **reference["config"])
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(model, path)
    msg = str(err.value)
    assert "missing key(s): r0" in msg
    assert "unexpected key(s): extra.weight" in msg
    assert "tail.weight: checkpoint (3, 5, 3, 3), model (3, 12, 3, 3)" in msg


def test_save_then_load_round_trip(tmp_path):
    model = create_model("denoise", weights=False, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4)
    opt = torch.optim.Adam(model.parameters())
    digest = save_checkpoint(tmp_path / "c.pth", model, epoch=3, optimizer=opt, step=42)
    raw = torch.load(tmp_path / "c.pth", weights_only=True)
    assert set(raw) >= {"epoch", "state_dict", "optimizer", "step"}
    other = create_model("denoise", weights=False, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4)
    info = load_checkpoint(other, tmp_path / "c.pth")
    assert info["sha256"] == digest and info["epoch"] == 3
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
