"""Transient S3 faults (503 SlowDown, connection resets, stalls) are retried and never fail a run.

The faults come from :class:`tests.faultproxy.FaultProxy`, a proxy in front of a real S3 server. That
server is a SeaweedFS of this module's own that checks SigV4 signatures (the session's accepts any), so
every request, retries included, also proves that signatures survive the proxy.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter

import numpy as np
import pyarrow.dataset as pads
import pytest
import s3fs
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import ReadTimeoutError

from pipeline.run.job import run_restore
from pipeline.run.lock import RunLock
from pipeline.spec import parse_spec
from pipeline.stages.decode import decode_image
from pipeline.storage import StorageOptions
from tests import servers
from tests.faultproxy import KINDS, FaultProxy
from tests.images import good_files

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def signed_s3(tmp_path_factory, s3_env):
    """A SeaweedFS S3 endpoint that accepts only requests signed with the test key pair."""
    workdir = tmp_path_factory.mktemp("weed-signed")
    config = workdir / "s3.json"
    identity = {"accessKey": s3_env["AWS_ACCESS_KEY_ID"], "secretKey": s3_env["AWS_SECRET_ACCESS_KEY"]}
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    config.write_text(json.dumps({"identities": [{"name": "tests", "credentials": [identity], "actions": actions}]}))
    server = servers.SeaweedS3(str(workdir / "data"), extra_args=(f"-s3.config={config}",))
    yield server.endpoint
    server.stop()


def _bucket(endpoint: str) -> tuple[s3fs.S3FileSystem, str]:
    """A client straight to ``endpoint`` (no faults) and a new bucket."""
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    bucket = f"faults-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    return fs, bucket


def test_signatures_are_checked_and_survive_the_proxy(signed_s3):
    direct, bucket = _bucket(signed_s3)
    with FaultProxy(signed_s3) as proxy:
        fs = s3fs.S3FileSystem(endpoint_url=proxy.endpoint, skip_instance_cache=True)
        fs.pipe(f"{bucket}/signed", b"through the proxy")
        assert fs.cat(f"{bucket}/signed") == direct.cat(f"{bucket}/signed") == b"through the proxy"
        for endpoint in (signed_s3, proxy.endpoint):  # the server does check: a wrong secret is refused
            wrong = s3fs.S3FileSystem(endpoint_url=endpoint, key="test-key", secret="wrong", skip_instance_cache=True)
            with pytest.raises(PermissionError):
                wrong.pipe(f"{bucket}/forged", b"x")
        assert proxy.counts["forwarded"] == proxy.counts["requests"] >= 4


def test_run_lock_whose_conditional_put_answer_is_lost(signed_s3):
    """The lock's ``If-None-Match: *`` PUT goes through but its answer is lost: botocore's retry then meets
    412 Precondition Failed, and the lock must still know that it is its own."""
    direct, bucket = _bucket(signed_s3)
    with FaultProxy(signed_s3) as proxy:
        proxy.force("reset", path_contains="/runs/LOCK", after=True)
        lock = RunLock(f"s3://{bucket}/out", "run-a", StorageOptions(endpoint_url=proxy.endpoint, read_timeout=2))
        with lock:
            assert json.loads(direct.cat(f"{bucket}/out/runs/LOCK"))["run_id"] == "run-a"
        assert proxy.faults == [("reset", "PUT", f"/{bucket}/out/runs/LOCK")]
        assert proxy.counts["upstream 412"] == 1  # the retried PUT found the lock that the first one made
    assert not direct.exists(f"{bucket}/out/runs/LOCK")  # released


def test_s3fs_retries_every_fault_kind_with_backoff(signed_s3, caplog):
    direct, bucket = _bucket(signed_s3)
    rng = np.random.default_rng(0)
    sizes = [0, 1, 100, 4096, 65_536, 250_000, 7, 2048]
    objects = {f"{bucket}/unit/dir{i % 3}/obj {i:02d}.bin": rng.bytes(n) for i, n in enumerate(sizes)}
    botocore_retried = []  # what each retried attempt met, as botocore's retry handler saw it

    def record(response=None, caught_exception=None, operation=None, **kw):
        if caught_exception is not None:
            botocore_retried.append((operation.name, caught_exception))
        elif response is not None and response[0].status_code >= 500:
            botocore_retried.append((operation.name, response[1].get("Error", {}).get("Code")))

    with FaultProxy(signed_s3, seed=1, slowdown=0.1, reset=0.25, stall=0.06, stall_seconds=1.5) as proxy:
        options = StorageOptions(endpoint_url=proxy.endpoint, connect_timeout=2, read_timeout=1)
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **options.fsspec_kwargs("s3"))
        fs.connect()
        fs.s3.meta.events.register("needs-retry.s3", record)
        with caplog.at_level(logging.DEBUG, logger="botocore.retries.standard"):
            fs.pipe(objects)  # concurrent PUTs
            assert sorted(fs.find(f"{bucket}/unit")) == sorted(objects)  # paginated listing
            assert fs.cat(list(objects)) == objects  # concurrent GETs
            for path, data in objects.items():
                assert fs.info(path)["size"] == len(data)  # HEADs, one by one
            fs.rm(list(objects)[:4])  # a DeleteObjects POST
            assert sorted(fs.find(f"{bucket}/unit")) == sorted(list(objects)[4:])
        proxy.faults_off()
        faults = {k: proxy.counts[k] for k in KINDS}

    print(f"\nproxy: {dict(proxy.counts)}; botocore retried: {len(botocore_retried)}")
    assert all(faults[k] >= 1 for k in KINDS), faults
    # Each kind reached botocore's retry handler as what it is, and was retried.
    seen = [err for _, err in botocore_retried]
    assert "SlowDown" in seen, seen
    assert any(isinstance(e, BotoConnectionError) for e in seen), seen  # reset: EndpointConnectionError
    assert any(isinstance(e, ReadTimeoutError) for e in seen), seen  # stall: the 1 s read timeout
    delays = [
        float(r.getMessage().rsplit(" ", 1)[1])
        for r in caplog.records
        if "retrying request after delay" in r.getMessage()
    ]
    assert len(delays) == len(botocore_retried) and sum(delays) > 0, delays  # each retried after a backoff
    # What the proxy let through is intact on the server.
    for path in list(objects)[4:]:
        assert direct.cat(path) == objects[path]


def test_restore_run_survives_s3_faults(ray_local, signed_s3, tiny_weights):
    """A whole run through the proxy: the driver (lock, plan, stats, summary) and the Ray workers (weights,
    reads, writes) all meet faults, and not one image fails."""
    direct, bucket = _bucket(signed_s3)
    # 12 files of most layouts (16-bit, alpha, gray, EXIF rotation); names with spaces, nesting, non-ASCII
    images = {k: v for k, v in good_files().items() if k not in ("16bit/gray16.png", "cmyk.jpg", "palette.png")}
    for name, data in images.items():
        direct.pipe(f"{bucket}/archive/{name}", data)
    path, widths = tiny_weights
    direct.put(path, f"{bucket}/models/tiny.pth")
    with FaultProxy(signed_s3, seed=7, slowdown=0.06, reset=0.14, stall=0.03, stall_seconds=3) as proxy:
        spec = parse_spec(
            {
                "task": "denoise",
                "model": {"arch": "dgunet", "weights": f"s3://{bucket}/models/tiny.pth", **widths},
                "input": {"uri": f"s3://{bucket}/archive"},
                "output": {"uri": f"s3://{bucket}/restored"},
                "storage": {"endpoint_url": proxy.endpoint, "connect_timeout": 2, "read_timeout": 2},
                "resources": {"cpus_per_actor": 1, "batch_size": 2, "min_actors": 1, "max_actors": 1},
                "inference": {"tile": 64, "overlap": 16, "max_pixels": 4096},
            }
        )
        # Besides the random faults, certain ones in requests that only the Ray workers make: the driver
        # lists archive/ and restored/images/ but reads or writes no file there before the workers do.
        proxy.force("slowdown", path_contains="/archive/")  # the first input read
        proxy.force("stall", path_contains="/restored/images/")  # the first image write...
        proxy.force("reset", path_contains="/restored/images/", after=True)  # ...and the next
        t0 = time.perf_counter()
        summary = run_restore(spec, run_id="faulty")
        seconds = time.perf_counter() - t0
        proxy.faults_off()
    print(f"\nproxy {dict(proxy.counts)}, faults {dict(Counter((k, m) for k, m, _ in proxy.faults))}")
    print(f"run {seconds:.1f} s (planning {summary.plan_seconds:.1f} s, images {summary.wall_seconds:.1f} s)")

    assert (summary.listed, summary.ok, summary.failed) == (len(images), len(images), 0), summary.failures
    direct.invalidate_cache()
    stats = [p for p in direct.find(f"{bucket}/restored/stats") if p.endswith(".parquet")]
    rows = pads.dataset(stats, filesystem=direct, format="parquet").to_table().to_pylist()
    assert sorted(r["input_uri"] for r in rows) == sorted(f"s3://{bucket}/archive/{n}" for n in images)
    for row in rows:
        assert row["status"] == "ok" and row["error"] is None, row
        name = row["input_uri"].split("/archive/", 1)[1]
        src = decode_image(images[name], max_pixels=10**8).pixels
        out = decode_image(direct.cat(row["output_uri"].removeprefix("s3://")), max_pixels=10**8).pixels
        assert out.shape == src.shape and out.dtype == src.dtype, name
    assert json.loads(direct.cat(f"{bucket}/restored/runs/faulty.json"))["ok"] == len(images)
    assert not direct.exists(f"{bucket}/restored/runs/LOCK")  # released through the faults too

    assert all(proxy.counts[k] > 1 for k in KINDS), dict(proxy.counts)  # random ones too, not just forced
    assert sum(proxy.counts[k] for k in KINDS) >= 0.15 * proxy.counts["requests"], dict(proxy.counts)
    assert [k for k, _, p in proxy.faults if "/archive/" in p][0] == "slowdown", proxy.faults  # forced ones
    assert [k for k, _, p in proxy.faults if "/restored/images/" in p][:2] == ["stall", "reset"], proxy.faults
