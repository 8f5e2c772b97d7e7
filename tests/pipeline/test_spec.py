"""Job specs: every shipped spec validates; unknown keys, bad values and secrets are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dgunet.tasks import NAMES
from pipeline.spec import SpecError, load_spec, parse_spec

SPECS = sorted((Path(__file__).parents[2] / "jobs" / "specs").glob("*.yaml"))
BASE = {"input": {"uri": "s3://archive/in"}, "output": {"uri": "s3://archive/out"}}


@pytest.mark.parametrize("path", [p for p in SPECS if not p.name.startswith("train_")], ids=lambda p: p.name)
def test_shipped_restore_specs_validate(path):
    spec = load_spec(path)
    assert spec.task in (*NAMES, "auto")


def test_shipped_training_specs_validate():
    from pipeline.training.spec import TrainSpec

    for path in SPECS:
        if path.name.startswith("train_"):
            assert TrainSpec.from_yaml(path).optim.steps > 0


def _train_yaml(tmp_path, **extra) -> Path:
    spec = {"data": {"train": "photos/train"}, "checkpoint": {"uri": "ckpt"}, **extra}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_training_spec_shares_the_loader_overrides_paths_and_named_errors(tmp_path, monkeypatch):
    from pipeline.training.spec import TrainSpec

    monkeypatch.chdir(tmp_path)
    spec = TrainSpec.from_yaml(_train_yaml(tmp_path), {"optim.steps": 7, "degradation.rain_length": (5, 9)})
    assert spec.optim.steps == 7 and spec.degradation.rain_length == (5, 9)
    # Local paths are absolute (Ray Train's workers run elsewhere); URLs are left alone.
    assert spec.data.train == str(tmp_path / "photos" / "train") and spec.checkpoint.uri == str(tmp_path / "ckpt")
    assert TrainSpec.from_yaml(_train_yaml(tmp_path), {"checkpoint.uri": "s3://b/ckpt"}).checkpoint.uri == "s3://b/ckpt"
    with pytest.raises(SpecError, match=r"optim\.stpes: unknown key"):
        TrainSpec.from_yaml(_train_yaml(tmp_path), {"optim.stpes": 7})
    with pytest.raises(SpecError, match=r"model\.n_feat: Input should be greater than or equal to 2"):
        TrainSpec.from_yaml(_train_yaml(tmp_path), {"model.n_feat": 1})
    with pytest.raises(SpecError, match=r"refusing credentials in a job spec \(storage\.secret_key\)"):
        TrainSpec.from_yaml(_train_yaml(tmp_path, storage={"secret_key": "x"}))


def test_train_job_exits_2_on_a_bad_spec(tmp_path, capsys):
    import importlib.util

    path = Path(__file__).parents[2] / "jobs" / "train.py"
    module = importlib.util.spec_from_file_location("train_job", path)
    job = importlib.util.module_from_spec(module)
    module.loader.exec_module(job)
    assert job.main(["--spec", str(_train_yaml(tmp_path, optim={"lr": -1}))]) == 2
    assert "optim.lr: Input should be greater than 0" in capsys.readouterr().err


def test_unknown_key_is_named():
    with pytest.raises(SpecError, match=r"resources\.gpu_per_actor: unknown key"):
        parse_spec({**BASE, "resources": {"gpu_per_actor": 1}})


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"task": "sharpen"}, "task"),
        ({"resources": {"min_actors": 3, "max_actors": 2}}, "resources"),
        ({"resources": {"gpus_per_actor": -1}}, "resources.gpus_per_actor"),
        ({"inference": {"precision": "fp8"}}, "inference.precision"),
        ({"inference": {"tile": 100}}, "inference"),
        ({"output": {"uri": "s3://archive/in/restored"}}, "(top level)"),
    ],
)
def test_bad_values_are_named(patch, key):
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, **patch})
    assert f"  {key}:" in str(err.value)


def test_output_inside_input_is_refused():
    with pytest.raises(SpecError, match="must not be inside input.uri"):
        parse_spec({"input": {"uri": "s3://a/photos"}, "output": {"uri": "s3://a/photos/out"}})
    parse_spec({"input": {"uri": "s3://a/photos"}, "output": {"uri": "s3://a/photos-restored"}})  # a sibling is fine


@pytest.mark.parametrize("key", ["aws_secret_access_key", "password", "session_token"])
def test_spec_with_credentials_is_refused_without_echoing_it(key):
    value = "hunter2-do-not-print"
    with pytest.raises(SpecError, match="refusing credentials") as err:
        parse_spec({**BASE, "storage": {"endpoint_url": "http://127.0.0.1:1", key: value}})
    assert f"storage.{key}" in str(err.value) and value not in str(err.value)


def test_overrides_and_local_paths(tmp_path, monkeypatch):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**BASE, "resources": {"max_actors": 2}}))
    monkeypatch.chdir(tmp_path)
    spec = load_spec(path, {"input.uri": "photos", "resources.max_actors": 4, "model.weights": "w.pth"})
    assert spec.input.uri == str(tmp_path / "photos") and spec.model.weights == str(tmp_path / "w.pth")
    assert spec.resources.max_actors == 4 and spec.output.uri == "s3://archive/out"


@pytest.mark.parametrize(
    ("output", "key"),
    [
        ({"format": "png", "quality": 80}, "output.quality"),
        ({"format": "tiff", "quality": 95}, "output.quality"),
        ({"format": "webp", "jpeg_subsampling": "4:2:0"}, "output.jpeg_subsampling"),
        ({"format": "gif"}, "output.format"),
        ({"format": "jpeg", "quality": 101}, "output.quality"),
    ],
)
def test_output_format_settings_that_cannot_apply_are_refused(output, key):
    with pytest.raises(SpecError, match=key.replace(".", r"\.")):
        parse_spec({"input": {"uri": "/data/in"}, "output": {"uri": "/data/out", **output}})


def test_format_flags_override_the_spec(capsys):
    from jobs.restore_bucket import DEMO_SPEC, FLAGS, main, parse_args
    from pipeline.spec import flag_overrides

    args = parse_args(["--format", "webp", "--quality", "85"])
    overrides = flag_overrides(args, FLAGS)
    spec = load_spec(DEMO_SPEC, overrides)
    assert (spec.output.format, spec.output.quality) == ("webp", 85)
    assert spec.output.encode_options().quality == 85
    assert main(["--format", "png", "--quality", "80"]) == 2  # refused before Ray starts
    assert "output.quality" in capsys.readouterr().err


def test_flags_take_their_type_choices_and_help_from_the_spec_schema(capsys):
    from jobs.restore_bucket import FLAGS, parse_args
    from pipeline.spec import flag_overrides

    args = parse_args(["--batch-size", "3", "--ensemble", "--precision", "bfloat16", "--gpus-per-actor", "0.5"])
    assert flag_overrides(args, FLAGS) == {
        "resources.batch_size": 3,
        "inference.ensemble": True,
        "inference.precision": "bfloat16",
        "resources.gpus_per_actor": 0.5,
    }
    with pytest.raises(SystemExit):
        parse_args(["--task", "sharpen"])  # the schema's Literal is the flag's choices
    assert "invalid choice: 'sharpen'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert "model actors the pool may grow to (spec: resources.max_actors)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        (
            {"model": {"weights": "http://169.254.169.254/latest/meta-data/iam/security-credentials/role"}},
            "model.weights",
        ),
        ({"model": {"weights": "http://2852039166/latest/api/token"}}, "model.weights"),  # 169.254.169.254 as a number
        ({"model": {"weights": "http://[fd00:ec2::254]/latest/meta-data/"}}, "model.weights"),
        ({"storage": {"endpoint_url": "http://metadata.google.internal"}}, "storage.endpoint_url"),
        ({"input": {"uri": "s3://a/in", "manifest": "http://169.254.169.254/x"}}, "input.manifest"),
    ],
)
def test_a_uri_on_a_cloud_metadata_service_is_refused_with_its_key(patch, key):
    """A spec could otherwise make the driver fetch the machine's own credentials (as "weights") and carry
    them into its errors and logs."""
    with pytest.raises(SpecError, match="cloud metadata service") as err:
        parse_spec({**BASE, **patch})
    assert f"{key}: refusing" in str(err.value)
    parse_spec({**BASE, "model": {"weights": "https://example.com/dgunet.pth"}})  # any other URL is fine


def test_the_names_a_spec_may_give_are_the_library_s():
    from typing import get_args

    from dgunet.inference import PRECISIONS
    from dgunet.model import ARCHS
    from dgunet.registry import TASKS
    from pipeline import spec

    assert get_args(spec.Arch) == ARCHS and get_args(spec.Task) == TASKS
    assert get_args(spec.Precision) == tuple(PRECISIONS)
