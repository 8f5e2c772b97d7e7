"""cluster.yaml passes Ray's own cluster-config validation, starts every node with Ray's token auth, copies
only what git tracks, and keeps the nodes' metadata service and SSH to their own."""

from __future__ import annotations

import shlex
import shutil
import subprocess
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
    assert any("pip install -c /home/ubuntu/dgunet-restore/constraints.txt -e" in c for c in config["setup_commands"])


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


def node_problems(config: dict) -> list[str]:
    """What would hand a node's role credentials to a container or a forwarded request (IMDSv1, or IMDSv2
    more than one hop away), or let Ray make a security group that opens SSH to 0.0.0.0/0 (it does, for every
    node type without SecurityGroupIds); each problem names its key."""
    problems = []
    for name, node_type in config["available_node_types"].items():
        key = f"available_node_types.{name}.node_config"
        node = node_type["node_config"]
        metadata = node.get("MetadataOptions") or {}
        for field, wanted in (("HttpTokens", "required"), ("HttpPutResponseHopLimit", 1)):
            if metadata.get(field) != wanted:
                got = metadata.get(field)
                problems.append(f"{key}.MetadataOptions.{field}: expected {wanted!r}, but got {got!r} instead")
        if not node.get("SecurityGroupIds"):
            problems.append(f"{key}.SecurityGroupIds: none, so Ray makes a group with SSH open to 0.0.0.0/0")
    for rule in (config["provider"].get("security_group") or {}).get("IpPermissions", []):
        if any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", [])):
            problems.append("provider.security_group.IpPermissions: a rule open to 0.0.0.0/0")
    return problems


def test_nodes_require_imdsv2_one_hop_and_a_security_group_of_the_users():
    config = _load()
    assert node_problems(config) == []
    comments = CLUSTER.read_text()
    assert "--port 22 --cidr 203.0.113.0/24" in comments and "the CIDR to set" in comments  # named, to be set


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda n: n["MetadataOptions"].update(HttpTokens="optional"), "MetadataOptions.HttpTokens"),
        (lambda n: n["MetadataOptions"].update(HttpPutResponseHopLimit=2), "MetadataOptions.HttpPutResponseHopLimit"),
        (lambda n: n.pop("MetadataOptions"), "MetadataOptions.HttpTokens"),
        (lambda n: n.pop("SecurityGroupIds"), "SecurityGroupIds"),
    ],
    ids=["imdsv1", "two-hops", "no-metadata-options", "rays-own-group"],
)
def test_the_node_check_names_what_opens_the_node(change, key):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load()
    change(config["available_node_types"]["gpu_worker"]["node_config"])
    validate_config(prepare_config(yaml.safe_load(yaml.safe_dump(config))))  # Ray itself would take it
    problems = node_problems(config)
    assert problems and problems[0].startswith(f"available_node_types.gpu_worker.node_config.{key}"), problems


@pytest.mark.skipif(shutil.which("rsync") is None or shutil.which("git") is None, reason="needs rsync and git")
def test_ray_up_copies_what_git_tracks_and_nothing_else(tmp_path):
    """rsync with the very arguments Ray's launcher gives it for this config's filters, over a checkout with
    this repository's .gitignore, a virtualenv, outputs, checkpoints (ignored and kept) and a .git: what arrives
    is what git tracks."""
    from ray.autoscaler._private.command_runner import SSHCommandRunner

    config = _load()
    src, dst = tmp_path / "checkout", tmp_path / "node"
    files = [
        "pipeline/run/job.py", ".venv/lib/site.py", "outputs/demo/a.png", "checkpoints/cpu/run/last.pth",
        "checkpoints/gpu/last.pth", "runs/r.json", "train.log", "pipeline/__pycache__/job.cpython-311.pyc",
        "jobs/specs/demo.yaml", "data/photos/a.png",
    ]  # fmt: skip
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(name)
    shutil.copy(CLUSTER.parent / ".gitignore", src / ".gitignore")
    git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    tracked = set(subprocess.run([*git, "ls-files"], capture_output=True, text=True, check=True).stdout.split())
    options = {"rsync_exclude": config.get("rsync_exclude"), "rsync_filter": config.get("rsync_filter")}
    runner = SSHCommandRunner.__new__(SSHCommandRunner)  # only its filter arguments: no node, no SSH
    args = runner._create_rsync_filter_args(options)
    project = "/home/ubuntu/dgunet-restore"
    for remote, local in config["file_mounts"].items():  # in order, as `ray up` syncs them
        if remote == project or remote.startswith(f"{project}/"):
            target = dst / remote[len(project) :].lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["rsync", "-a", *args, f"{src / local}/", f"{target}/"], check=True)
    copied = {str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()}
    assert copied == tracked and "checkpoints/cpu/run/last.pth" in copied and ".venv/lib/site.py" not in copied
