"""Storage that cannot be used as the spec says: one line that says what to fix, exit 2, before any work.

On a SeaweedFS server of its own with two identities (an admin, and a reader that may only read and
list), so that a denied write is a real answer of an S3 server.
"""

from __future__ import annotations

import json

import pytest

from jobs.restore_bucket import main
from pipeline.run.preflight import StorageAccessError, check_storage
from pipeline.spec import RestoreSpec
from tests.jobs import save_photos, write_spec
from tests.servers import S3_ENV, SeaweedS3, free_ports

READER = {"AWS_ACCESS_KEY_ID": "reader-key", "AWS_SECRET_ACCESS_KEY": "reader-secret-not-a-secret"}


@pytest.fixture(scope="module")
def guarded_s3(tmp_path_factory):
    """A server whose admin holds the tests' usual keys and whose reader may not write; a bucket
    ``inbox`` with one image and an empty bucket ``outbox``."""
    import s3fs

    work = tmp_path_factory.mktemp("guarded-s3")
    admin = {"accessKey": S3_ENV["AWS_ACCESS_KEY_ID"], "secretKey": S3_ENV["AWS_SECRET_ACCESS_KEY"]}
    reader = {"accessKey": READER["AWS_ACCESS_KEY_ID"], "secretKey": READER["AWS_SECRET_ACCESS_KEY"]}
    identities = [
        {"name": "admin", "credentials": [admin], "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
        {"name": "reader", "credentials": [reader], "actions": ["Read", "List"]},
    ]
    (work / "s3.json").write_text(json.dumps({"identities": identities}))
    server = SeaweedS3(str(work / "data"), extra_args=(f"-s3.config={work / 's3.json'}",))
    fs = s3fs.S3FileSystem(endpoint_url=server.endpoint, key=admin["accessKey"], secret=admin["secretKey"])
    fs.mkdir("inbox")
    fs.pipe("inbox/a.png", b"not decoded here")
    fs.mkdir("outbox")
    yield server.endpoint
    server.stop()


def _spec(endpoint: str, input_uri: str = "s3://inbox/", output_uri: str = "s3://outbox/run") -> RestoreSpec:
    spec = {"task": "denoise", "input": {"uri": input_uri}, "output": {"uri": output_uri}}
    return RestoreSpec.model_validate({**spec, "storage": {"endpoint_url": endpoint}})


def _refusal(spec: RestoreSpec) -> str:
    with pytest.raises(StorageAccessError) as err:
        check_storage(spec)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture
def keys(monkeypatch):
    """Sets the process's credentials for one test (the session's are the admin's)."""

    def use(env: dict[str, str] | None) -> None:
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
            monkeypatch.delenv(k, raising=False)
        # No file or instance role to fall back on: the machine's own must not answer for the test.
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
        monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.setenv("AWS_REGION", S3_ENV["AWS_REGION"])
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)

    return use


def test_usable_storage_and_an_empty_prefix_pass(guarded_s3, keys):
    keys(S3_ENV)
    check_storage(_spec(guarded_s3))
    check_storage(_spec(guarded_s3, input_uri="s3://inbox/nothing-here/"))  # empty, not an error


def test_no_credentials_say_how_to_give_them(guarded_s3, keys):
    keys(None)
    message = _refusal(_spec(guarded_s3))
    assert message.startswith("input.uri: no credentials for s3://inbox/")
    assert "AWS_PROFILE" in message and "storage.anon: true" in message


def test_unknown_keys_are_refused(guarded_s3, keys):
    keys({"AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": "nothing"})
    assert _refusal(_spec(guarded_s3)).startswith("input.uri: the credentials for s3://inbox/ were refused")


def test_a_missing_bucket_is_named(guarded_s3, keys):
    keys(S3_ENV)
    message = _refusal(_spec(guarded_s3, input_uri="s3://no-such-bucket/photos/"))
    assert message == "input.uri: bucket 'no-such-bucket' does not exist (or is not visible to these credentials)"


def test_a_denied_write_on_the_output_is_said_before_any_work(guarded_s3, keys):
    keys(READER)
    message = _refusal(_spec(guarded_s3))
    assert message.startswith("output.uri: access denied to s3://outbox/run")


def test_an_endpoint_that_does_not_answer_is_said_in_seconds(keys):
    keys(S3_ENV)
    (port,) = free_ports(1)
    message = _refusal(_spec(f"http://127.0.0.1:{port}"))
    assert message.startswith(f"input.uri: cannot reach the store at http://127.0.0.1:{port}")
    assert "storage.endpoint_url" in message


def _local_job(tmp_path, weights, input_name: str) -> str:
    """A spec restoring ``tmp_path/input_name`` into ``tmp_path/out``."""
    spec = write_spec(
        tmp_path / "job.yaml",
        weights,
        input_uri=str(tmp_path / input_name),
        output={"uri": str(tmp_path / "out")},
        resources={"min_actors": 1, "max_actors": 1},
    )
    return str(spec)


def test_a_missing_local_input_exits_2_with_one_line(tmp_path, tiny_weights, capsys):
    assert main(["--spec", _local_job(tmp_path, tiny_weights, "typo")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"input.uri: {tmp_path / 'typo'} does not exist"
    assert not (tmp_path / "out" / "runs").exists()  # no summary, no report: nothing ran


def test_an_existing_empty_input_runs_and_says_so(ray_local, tmp_path, tiny_weights, capsys):
    (tmp_path / "empty").mkdir()
    save_photos(tmp_path / "other")  # images elsewhere do not count
    assert main(["--spec", _local_job(tmp_path, tiny_weights, "empty")]) == 0
    assert "(0 images listed)  NO IMAGES" in capsys.readouterr().out
