"""A tuning job submitted to a cluster that starts with no CPU for work, under Ray's own
autoscaler (the fake_multinode provider: its "nodes" are local processes): the job is not
refused, the autoscaler adds nodes, the job succeeds, and the nodes go once idle."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nodes
from distgan import server, storage

REPO = Path(__file__).resolve().parent.parent
WORKER_CPUS = 2


def _config(gcs: str) -> dict:
    """The fake provider's cluster config (ray's fake_multi_node/example.yaml, which the wheel
    does not ship): a head with 0 CPUs for work, one worker type from 0 to 2 nodes."""
    return {"cluster_name": "fake-autoscaling", "max_workers": 2,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": gcs},
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
                "cpu_worker": {"resources": {"CPU": WORKER_CPUS}, "node_config": {}, "min_workers": 0,
                               "max_workers": 2}},
            "head_node_type": "ray.head.default", "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.2,
            "docker": {}, "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": []}


def _env() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
            "RAY_ADDRESS": "", "RAY_API_SERVER_ADDRESS": ""}


def _listed(address: str, what: str) -> list[dict] | None:
    """`ray list <what>` from the State API; None when it does not answer."""
    out = subprocess.run([str(Path(sys.executable).parent / "ray"), "list", what, "--address", address, "--format",
                          "json", "--detail"], env=_env(), capture_output=True, text=True, timeout=60, check=False)
    try:
        return json.loads(out.stdout)
    except ValueError:
        return None


def _worker_cpus(address: str) -> float:
    """CPUs the alive worker nodes hold (the head holds none); -1 when the State API does not answer."""
    nodes = _listed(address, "nodes")
    if nodes is None:
        return -1.0
    return sum(n.get("resources_total", {}).get("CPU", 0) for n in nodes if n["state"] == "ALIVE")


_HELD = """import json, time, ray
ray.init(address="{gcs}", log_to_driver=False)
a = ray.get_actor("AutoscalingCoordinator", namespace="AutoscalingCoordinator")
print(json.dumps(ray.get(a.__ray_call__.remote(lambda c: {{
    k: [r.requested_resources, round(r.expiration_time - time.time())] for k, r in c._ongoing_reqs.items()}}))))
"""


def _held(gcs: str) -> dict:
    """The requests Ray's autoscaling coordinator holds (Train's and Data's, the autoscaler
    sees their sum): requester -> [bundles, seconds to expiry]. Ray-internal state, read for
    what no API shows."""
    out = subprocess.run([sys.executable, "-c", _HELD.format(gcs=gcs)], env=_env(), capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ray_status(gcs: str, api: str) -> str:
    """What the autoscaler thinks of the cluster, and what still lives on it (an actor or a
    placement group keeps a node from being idle), for a failure's message."""
    out = subprocess.run([str(Path(sys.executable).parent / "ray"), "status", "-v", "--address", gcs], env=_env(),
                         capture_output=True, text=True, timeout=60, check=False)
    actors = [(a["class_name"], a["name"], a["node_id"]) for a in _listed(api, "actors") or [] if a["state"] == "ALIVE"]
    groups = [(g["placement_group_id"], g["bundles"]) for g in _listed(api, "placement-groups") or []
              if g["state"] == "CREATED"]
    return (out.stdout[-3000:] + out.stderr[-1000:] + f"\nalive actors: {actors}\ncreated placement groups: {groups}"
            f"\ncoordinator: {_held(gcs)}")


@pytest.fixture(scope="module")
def autoscaling_head(s3, tmp_path_factory):
    """`ray start --head --autoscaling-config` in a process group of its own: the autoscaler
    (and the fake nodes it launches) live inside it, so stopping the group stops them all."""
    import ray

    if ray.is_initialized():  # one Ray per machine: Train's clean-up actors look for Ray on it
        ray.shutdown()
    if not (Path.home() / ".ray" / "auth_token").is_file():
        subprocess.run([str(Path(sys.executable).parent / "ray"), "get-auth-token", "--generate"], check=True,
                       capture_output=True)
    tmp = tmp_path_factory.mktemp("autoscaling")
    gcs, dash = server.free_port(), server.free_port()
    config = tmp / "cluster.json"
    config.write_text(json.dumps(_config(f"127.0.0.1:{gcs}")))
    temp = Path(f"/tmp/dga-{os.getpid()}")  # short: Ray's socket paths must fit in 107 bytes
    env = {**_env(), "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1"}
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                             "--disable-usage-stats", f"--autoscaling-config={config}", "--num-cpus=0",
                             f"--port={gcs}", "--node-ip-address=127.0.0.1", f"--dashboard-port={dash}",
                             "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--temp-dir={temp}",
                             f"--ray-client-server-port={server.free_port()}",
                             f"--dashboard-agent-listen-port={server.free_port()}",
                             f"--runtime-env-agent-port={server.free_port()}",
                             f"--metrics-export-port={server.free_port()}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _worker_cpus(address) < 0:
            time.sleep(1)
        assert _worker_cpus(address) == 0, "the head did not start (or holds CPUs)"
        yield address, f"127.0.0.1:{gcs}"
    finally:
        nodes.kill(head)  # its process group: the autoscaler and the fake nodes it launched
        Path("/tmp/ray/ray_current_cluster").unlink(missing_ok=True)


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.timeout(900)
def test_a_job_on_a_cluster_at_zero_nodes_scales_it_up_and_back(autoscaling_head, mlflow_server, s3):
    address, gcs = autoscaling_head
    tune = ["tune", "--preset", "mnist_smoke", "--space", "tune_spaces/dcgan-core.yaml", "--trials", "2",
            "--workers", "1", "--scheduler", "none", "--name", "scaled", "--experiment", "autoscaling"]
    r = subprocess.run([sys.executable, "-m", "distgan.cli", "submit", "--address", address, "--working-dir", str(REPO),
                        "--mlflow-uri", mlflow_server, "--storage", s3.uri("autoscaling"), "--follow", "--", *tune],
                       env=_env(), capture_output=True, text=True, timeout=800)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    # not refused for resources the autoscaler could add: it waited for them, one line
    assert "waiting for the autoscaler: a trial needs" in r.stdout and "nodes are up" in r.stdout
    assert "SUCCEEDED" in r.stdout
    assert storage.exists(storage.join(s3.uri("autoscaling", "scaled"), "trials.csv"))
    # Tune ends a trial by killing it, Train's controller with it, before the controller withdraws
    # what it asked the autoscaler for (Ray would drop it after 180 s): the job withdrew it
    held = _held(gcs)
    assert not [k for k in held if k.startswith("train-")], held
    # Ray's coordinator (detached, bound to the node that made it) lives on the head: on a worker
    # node it would keep that node busy for ever
    (head,) = [n["node_id"] for n in _listed(address, "nodes") if n["is_head_node"]]
    homes = [a["node_id"] for a in _listed(address, "actors") if a["name"] == "AutoscalingCoordinator"
             and a["state"] == "ALIVE"]
    assert homes == [head], homes
    # the nodes the job asked for go once idle: the cluster is back at 0 CPUs for work
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and _worker_cpus(address) != 0:  # -1: the State API did not answer
        time.sleep(2)
    assert _worker_cpus(address) == 0, _ray_status(gcs, address)
