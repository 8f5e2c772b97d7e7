"""The network against the official release: keys, shapes, parameter counts and outputs."""

from __future__ import annotations

import json

import pytest
import torch

from dgunet import DGUNet, DGUNetConfig, DGUNetPlus, create_model, num_params
from dgunet.registry import PRESETS
from tests.conftest import REFERENCE

SUMMARY = json.loads((REFERENCE / "summary.json").read_text())


def official_keys(task: str, arch: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = (REFERENCE / f"{task}_{arch}.keys.tsv").read_text().splitlines()
    return [(k, tuple(int(d) for d in s.strip("()").split(",") if d.strip())) for k, s in (r.split("\t") for r in rows)]


OFFICIAL_TASKS = ("deblur", "denoise", "derain")  # the official release's task folders
OFFICIAL = sorted(k for k in PRESETS if k[0] in OFFICIAL_TASKS)


def test_every_official_folder_has_its_preset():
    assert len(OFFICIAL) == 6 == len(SUMMARY)  # three folders, two architectures each


@pytest.mark.parametrize(("task", "arch"), OFFICIAL)
def test_state_dict_and_parameter_count_equal_official(task, arch):
    model = create_model(task, arch=arch, weights=False)
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == official_keys(task, arch)  # same keys, shapes and order
    assert num_params(model) == SUMMARY[f"{task}_{arch}"]["params"]
    assert len(ours) == SUMMARY[f"{task}_{arch}"]["state_dict_entries"]


@pytest.mark.parametrize(
    ("arch", "fixture"), [("dgunet", "dgunet_small_reference.pth"), ("dgunet_plus", "dgunet_plus_small_reference.pth")]
)
def test_outputs_match_official_fixture(arch, fixture):
    ref = torch.load(REFERENCE / fixture, weights_only=True)
    model = create_model("denoise", arch=arch, weights=False, **ref["config"]).eval()
    model.load_state_dict({k.removeprefix("module."): v for k, v in ref["state_dict"].items()})
    with torch.no_grad():
        stages = model(ref["input"], return_stages=True)
        final = model(ref["input"])
    assert len(stages) == 7 == len(ref["outputs"])
    for ours, theirs in zip(stages, ref["outputs"]):
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max().item() < 1e-4
    assert torch.equal(final, stages[0])


def test_any_widths_and_depth():
    model = create_model("denoise", weights=False, n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, depth=2)
    x = torch.rand(1, 3, 16, 16)
    stages = model(x, return_stages=True)
    assert len(stages) == 4 and all(s.shape == x.shape for s in stages)
    plus = create_model("denoise", arch="dgunet_plus", weights=False, n_feat=8, scale_unetfeats=4, depth=3)
    assert len(plus(torch.rand(2, 3, 24, 32), return_stages=True)) == 5


def test_presets_and_classes():
    assert isinstance(create_model("deblur", arch="dgunet_plus", weights=False), DGUNetPlus)
    model = create_model("derain", arch="dgunet", weights=False)
    assert isinstance(model, DGUNet)
    assert (model.cfg.n_feat, model.cfg.scale_unetfeats, model.cfg.scale_orsnetfeats) == (40, 20, 16)


def test_shared_prelu_like_official():
    model = create_model("denoise", weights=False, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4)
    assert model.phi_0.body[1] is model.phit_6.body[1] is model.basic.phi_1.body[1]
    assert model.shallow_feat1[1].body[1] is model.shallow_feat7[1].body[1]


@pytest.mark.parametrize("bad", [{"arch": "unet"}, {"n_feat": 7}, {"depth": 0}])
def test_config_errors_name_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad)) if "arch" not in bad else "arch"):
        DGUNetConfig(**bad)


def test_training_step_reduces_loss():
    from dgunet.losses import StagesLoss

    model = create_model("denoise", weights=False, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    crit = StagesLoss(edge_weight=0.05)
    first = crit(model(x, return_stages=True), target)
    for _ in range(5):
        opt.zero_grad()
        loss = crit(model(x, return_stages=True), target)
        loss.backward()
        opt.step()
    assert loss.item() < first.item()
