from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "reference"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_model():
    """A DGUNet at toy widths, in eval mode."""
    from dgunet import build_model

    return build_model("dgunet", n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4).eval()
