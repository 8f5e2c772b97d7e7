"""cluster.yaml passes Ray's own cluster-config validation, and starts every node with Ray's token auth."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"
TOKEN = "/home/ubuntu/.ray/auth_token"


def _load() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def auth_problems(config: dict) -> list[str]:
    """What would start a node without token auth or open the dashboard beyond the head: each problem names
    its key. The token is a file the user provides (file_mounts), named to Ray by its path, never inline."""
    problems = []
    if not config.get("file_mounts", {}).get(TOKEN):
        problems.append(f"file_mounts.{TOKEN}: expected the user's token file, but got none instead")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [(i, c) for i, c in enumerate(config.get(key) or []) if "ray start" in c]
        if not starts:
            problems.append(f"{key}: expected a `ray start`, but got none instead")
        for i, command in starts:
            words = shlex.split(command.rsplit(";", 1)[-1])
            env = dict(w.split("=", 1) for w in words[: words.index("ray")])
            for name, expected in (("RAY_AUTH_MODE", "token"), ("RAY_AUTH_TOKEN_PATH", TOKEN)):
                if env.get(name) != expected:
                    problems.append(f"{key}[{i}]: {name}: expected {expected}, but got {env.get(name)!r} instead")
            if "RAY_AUTH_TOKEN=" in command:
                problems.append(f"{key}[{i}]: RAY_AUTH_TOKEN: a token on a command line ends up in logs")
            for word in words:
                if word.startswith("--dashboard-host") and word.rsplit("=", 1)[-1] != "127.0.0.1":
                    problems.append(f"{key}[{i}]: {word}: the dashboard and job API would listen beyond the head")
    return problems


def test_cluster_yaml_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load()
    validate_config(prepare_config(config))  # what `ray up` does: fill in defaults, then check the schema
    assert config["available_node_types"]["gpu_worker"]["min_workers"] == 0
    assert any("pip install -e" in c for c in config["setup_commands"])


def test_validation_catches_a_bad_key():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load()
    config["available_node_types"]["gpu_worker"]["min_worker"] = 1  # typo
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(config))


def test_every_node_starts_with_token_auth_and_the_dashboard_on_the_heads_loopback():
    assert auth_problems(_load()) == []


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (
            lambda c: c["worker_start_ray_commands"].__setitem__(1, "ray start --address=$RAY_HEAD_IP:6379"),
            "worker_start_ray_commands[1]: RAY_AUTH_MODE",
        ),
        (
            lambda c: c["head_start_ray_commands"].__setitem__(
                1, c["head_start_ray_commands"][1].replace("RAY_AUTH_MODE=token", "RAY_AUTH_MODE=disabled")
            ),
            "head_start_ray_commands[1]: RAY_AUTH_MODE",
        ),
        (
            lambda c: c["head_start_ray_commands"].__setitem__(
                1, c["head_start_ray_commands"][1] + " --dashboard-host=0.0.0.0"
            ),
            "head_start_ray_commands[1]: --dashboard-host=0.0.0.0",
        ),
        (lambda c: c["file_mounts"].pop(TOKEN), f"file_mounts.{TOKEN}"),
    ],
    ids=["worker-without-auth", "head-auth-disabled", "dashboard-on-all-interfaces", "no-token-file"],
)
def test_the_check_names_what_turns_auth_off_or_opens_the_dashboard(change, key):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load()
    change(config)
    validate_config(prepare_config(yaml.safe_load(yaml.safe_dump(config))))  # Ray itself would take it
    problems = auth_problems(config)
    where = key.split(": ")[0]  # every problem is of the changed place, the first the one expected
    assert problems and problems[0].startswith(key) and all(p.startswith(where) for p in problems), problems
