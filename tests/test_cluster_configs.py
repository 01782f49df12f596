"""The cluster in cluster/: launcher YAMLs against the schema inside the installed ray
package and their commands through bash, the Dockerfile through hadolint, the KubeRay
manifests for what the operator needs, and one Ray version everywhere."""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"
LAUNCHERS = ["ray-cluster.aws.yaml", "ray-cluster.gcp.yaml"]
IMAGE = re.compile(r"distgan:[\w.]+-ray(\d+\.\d+\.\d+)$")


def _schema() -> dict:
    return json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def _commands(cfg: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    return [c for k in keys for c in cfg.get(k, [])]


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_configs_validate_boot_the_image_and_keep_the_cluster_private(name):
    cfg = yaml.safe_load((CLUSTER / name).read_text())
    jsonschema.validate(cfg, _schema())
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    workers = [t for n, t in types.items() if n != cfg["head_node_type"]]
    assert workers and all(t["min_workers"] == 0 < t["max_workers"] for t in workers)  # autoscaling from zero
    assert types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    assert IMAGE.search(cfg["docker"]["image"])  # every node runs the distgan image
    assert any("nofile=65536" in o for o in cfg["docker"]["run_options"])
    for t in types.values():  # an explicit boot image: no fallback to an old default one
        assert t["node_config"].get("ImageId") or t["node_config"]["disks"][0]["initializeParams"]["sourceImage"]
    setup = "\n".join(cfg["setup_commands"])
    storage = next(c for c in cfg["setup_commands"] if "DISTGAN_STORAGE=" in c)
    assert "s3://" in storage or "gs://" in storage  # shared storage, not a node's disk
    assert "MLFLOW_TRACKING_URI=" in setup and "RAY_AUTH_MODE=token" in setup
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c and "ulimit -n" in c for c in starts if "ray start" in c)
    assert all("--dashboard-host=127.0.0.1" in c for c in cfg["head_start_ray_commands"] if "--head" in c)
    assert "~/.ray/auth_token" in cfg["file_mounts"]  # the token travels as a file, never in the YAML


@pytest.mark.parametrize("name", LAUNCHERS)
def test_every_launcher_command_parses_in_bash_and_expands_its_tilde(name):
    cfg = yaml.safe_load((CLUSTER / name).read_text())
    for command in _commands(cfg):
        r = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
        assert r.returncode == 0, (command, r.stderr)
        assert not re.search(r"""["']~""", command), f"a quoted ~ is not expanded: {command}"


def test_launcher_schema_rejects_a_broken_config():
    cfg = yaml.safe_load((CLUSTER / "ray-cluster.aws.yaml").read_text())
    cfg["max_workers"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cfg, _schema())


def test_dockerfile_passes_hadolint_and_bakes_distgan_and_the_weights_in():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    r = subprocess.run([hadolint, str(CLUSTER / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"^FROM rayproject/ray:[\d.]+-py311-gpu$", text, re.M)
    assert "[inception" in text and "inception_weights_path" in text  # the FID weights are checked at build time


def _gpu_limit(group: dict) -> str:
    return group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]


def _kuberay_cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_manifests_use_the_image_token_auth_and_scale_gpus_from_zero(name):
    doc = yaml.safe_load((CLUSTER / "kuberay" / name).read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] in ("RayCluster", "RayJob")
    spec = _kuberay_cluster_spec(doc)
    assert spec["authOptions"] == {"mode": "token"} and spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"  # reached by port-forward, never exposed
    pods = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    assert all(IMAGE.search(p["template"]["spec"]["containers"][0]["image"]) for p in pods)
    for g in spec["workerGroupSpecs"]:
        assert int(_gpu_limit(g)) >= 1 and g["minReplicas"] == 0 and g["maxReplicas"] > 8
    text = (CLUSTER / "kuberay" / name).read_text()
    assert not re.search(r"(?i)(secret_access_key|password|token)\s*:\s*\S", text.replace("secretRef", ""))
    if doc["kind"] == "RayJob":
        assert doc["spec"]["entrypoint"].startswith("python -m distgan.cli tune ")
        assert "runtimeEnvYAML" not in doc["spec"]  # the image holds everything: nothing installed per job


def test_one_ray_version_everywhere():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (ray_dep,) = [d for d in pyproject["project"]["dependencies"] if d.startswith("ray[")]
    minor = re.search(r"==(\d+\.\d+)\.\*$", ray_dep).group(1)  # pinned to the tested minor
    versions = {"installed": ray.__version__,
                "constraints": re.search(r"^ray==([\d.]+)$", (CLUSTER / "constraints.txt").read_text(), re.M).group(1),
                "Dockerfile": re.search(r"rayproject/ray:([\d.]+)-", (CLUSTER / "Dockerfile").read_text()).group(1)}
    for name in LAUNCHERS:
        versions[name] = IMAGE.search(yaml.safe_load((CLUSTER / name).read_text())["docker"]["image"]).group(1)
    for name in ("raycluster.yaml", "rayjob.yaml"):
        spec = _kuberay_cluster_spec(yaml.safe_load((CLUSTER / "kuberay" / name).read_text()))
        versions[f"{name} rayVersion"] = spec["rayVersion"]
        versions[f"{name} image"] = IMAGE.search(spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]).group(1)
    assert len(set(versions.values())) == 1, versions
    assert next(iter(versions.values())).startswith(minor + ".")
