"""cluster.yaml passes Ray's own cluster-config validation."""

from __future__ import annotations

from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_cluster_yaml_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CLUSTER.read_text())
    validate_config(prepare_config(config))  # what `ray up` does: fill in defaults, then check the schema
    assert config["available_node_types"]["gpu_worker"]["min_workers"] == 0
    assert any("pip install -e" in c for c in config["setup_commands"])


def test_validation_catches_a_bad_key():
    import pytest
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CLUSTER.read_text())
    config["available_node_types"]["gpu_worker"]["min_worker"] = 1  # typo
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(config))
