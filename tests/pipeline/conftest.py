from __future__ import annotations

import os
import tempfile

import pytest

from tests.servers import S3_ENV, SeaweedS3


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 server (SeaweedFS) on 127.0.0.1 for the whole session."""
    server = SeaweedS3(tempfile.mkdtemp(prefix="weed-"))
    yield server.endpoint
    server.stop()


@pytest.fixture(scope="session")
def s3_env():
    """Credentials of the test server, set before Ray starts so that its workers inherit them."""
    old = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    yield S3_ENV
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def ray_local(s3_env):
    """One local Ray for the session, started as the jobs start theirs (on 127.0.0.1 only, with the session's
    token), sized like this machine."""
    import ray

    from pipeline.run.ray_env import start_local_ray

    start_local_ray(num_cpus=2, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3fs_client(s3_endpoint, s3_env):
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A checkpoint of a toy-width DGUNet in the official format, and its widths."""
    import torch

    from dgunet import create_model, save_checkpoint

    torch.manual_seed(0)
    widths = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    save_checkpoint(path, create_model("denoise", weights=False, **widths), epoch=1)
    return str(path), widths
