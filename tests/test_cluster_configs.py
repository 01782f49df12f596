"""The cluster configs in cluster/: launcher YAMLs against the schema inside the installed
ray package, KubeRay manifests for the fields the operator needs."""

import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"


@pytest.mark.parametrize("name", ["ray-cluster.aws.yaml", "ray-cluster.gcp.yaml"])
def test_launcher_configs_validate_against_rays_schema(name):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cfg = yaml.safe_load((CLUSTER / name).read_text())
    jsonschema.validate(cfg, schema)
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    workers = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert workers and all(t["max_workers"] > t["min_workers"] for t in workers)  # autoscaling
    setup = "\n".join(cfg["setup_commands"])
    assert "pip install -e" in setup and "distgan" in setup
    assert "DISTGAN_STORAGE=" in setup and "MLFLOW_TRACKING_URI=" in setup
    storage = next(c for c in cfg["setup_commands"] if "DISTGAN_STORAGE=" in c)
    assert "s3://" in storage or "gs://" in storage  # shared storage, not a node's disk
    assert all("--dashboard-host=127.0.0.1" in c for c in cfg["head_start_ray_commands"] if "--head" in c)


def test_launcher_schema_rejects_a_broken_config():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cfg = yaml.safe_load((CLUSTER / "ray-cluster.aws.yaml").read_text())
    cfg["max_workers"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cfg, schema)


def _gpu_limit(group: dict) -> str:
    return group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]


def test_kuberay_cluster_has_head_and_gpu_worker_groups():
    doc = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    spec = doc["spec"]
    assert spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"].startswith("rayproject/ray:")
    groups = spec["workerGroupSpecs"]
    assert groups and all(int(_gpu_limit(g)) >= 1 for g in groups)
    assert all(g["maxReplicas"] >= g["minReplicas"] for g in groups)


def test_kuberay_job_runs_distgan_tune_on_its_own_cluster():
    doc = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    spec = doc["spec"]
    assert spec["entrypoint"].startswith("python -m distgan.cli tune ") and "--space" in spec["entrypoint"]
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert "working_dir" in runtime_env and "MLFLOW_TRACKING_URI" in runtime_env["env_vars"]
    cluster = spec["rayClusterSpec"]
    assert "headGroupSpec" in cluster and all(int(_gpu_limit(g)) >= 1 for g in cluster["workerGroupSpecs"])
