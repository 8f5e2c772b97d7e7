from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "reference"
_SESSION_ENV: dict[str, str | None] = {}


def pytest_configure(config):
    """Every Ray the tests start is a local one on 127.0.0.1 with token auth: its environment is set here,
    before any test module imports Ray (which reads it then), with one token for the session in a file of
    its own (``RAY_AUTH_TOKEN_PATH``, which every Ray process and ``ray job submit`` inherit)."""
    from pipeline.run.ray_env import TOKEN_PATH_ENV, local_ray_env
    from tests.servers import write_token

    folder = tempfile.mkdtemp(prefix="ray-token-")
    env = {**local_ray_env(), TOKEN_PATH_ENV: write_token(Path(folder) / "auth_token")}
    _SESSION_ENV.update({k: os.environ.get(k) for k in env})
    _SESSION_ENV["_folder"] = folder
    os.environ.update(env)


def pytest_unconfigure(config):
    folder = _SESSION_ENV.pop("_folder", None)
    for key, value in _SESSION_ENV.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_model():
    """A DGUNet at toy widths, in eval mode."""
    from dgunet import create_model

    return create_model("denoise", weights=False, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4).eval()
