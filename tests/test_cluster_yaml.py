"""cluster.yaml is checked offline against Ray's own cluster-launcher schema."""

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture()
def raw():
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_rays_schema(raw):
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["resources"]["GPU"] == 1 and workers["max_workers"] >= workers["min_workers"]
    assert any("pip install" in c and "distmeta" in c for c in config["setup_commands"])


def test_the_schema_check_rejects_a_broken_cluster_yaml(raw):
    raw["available_node_types"]["gpu_worker"]["min_workers"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(raw))
