"""`distgan submit` through the Ray Jobs API to a real two-node Ray cluster on this machine
(`ray start --head` + `ray start --address`), tracked in a real MLflow server."""

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

import nodes
from distgan import jobs, server, tracking
from distgan.cli import main

REPO = Path(__file__).resolve().parent.parent


def _ray_node(args: list[str], env: dict) -> subprocess.Popen:
    """`ray start --block` in its own process group: stopping the group stops that node only."""
    ray_bin = str(Path(sys.executable).parent / "ray")
    return subprocess.Popen([ray_bin, "start", "--block", "--disable-usage-stats", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _client_env() -> dict:
    """A user's shell: Ray's token authentication on (the token in ~/.ray/auth_token)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
            "RAY_ADDRESS": ""}


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """distgan as a user runs it, in its own process."""
    return subprocess.run([sys.executable, "-m", "distgan.cli", *args], env=_client_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def _alive_nodes(address: str) -> set[str]:
    out = subprocess.run([str(Path(sys.executable).parent / "ray"), "list", "nodes", "--address", address,
                          "--format", "json"], env=_client_env(), capture_output=True, text=True, timeout=60,
                         check=False)
    try:  # while the head starts, the State API answers with errors, not JSON
        return {n["node_id"] for n in json.loads(out.stdout) if n["state"] == "ALIVE"}
    except ValueError:
        return set()


@pytest.fixture(scope="module")
def two_nodes(s3):
    """Ray 2.60 turns token authentication on by default: the nodes and the client processes
    share the token in ~/.ray/auth_token (generated here if none exists). No other Ray may
    run meanwhile: Train's clean-up actors find Ray instances by looking for them on the
    machine, and two confuse them, so this module runs last and stops the session's Ray."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    if not (Path.home() / ".ray" / "auth_token").is_file():
        subprocess.run([str(Path(sys.executable).parent / "ray"), "get-auth-token", "--generate"], check=True,
                       capture_output=True)
    free = server.free_port
    gcs, dash = free(), free()
    temp = Path(f"/tmp/dg-{os.getpid()}")  # short: Ray's socket paths must fit in 107 bytes
    env = {**_client_env(), "RAY_ADDRESS": ""}
    head = _ray_node(["--head", f"--port={gcs}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
                      "--include-dashboard=true", "--num-cpus=2", f"--ray-client-server-port={free()}",
                      f"--dashboard-agent-listen-port={free()}", f"--runtime-env-agent-port={free()}",
                      f"--metrics-export-port={free()}", f"--temp-dir={temp}"], env)
    started = [head]
    try:
        address = f"http://127.0.0.1:{dash}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not _alive_nodes(address):
            time.sleep(1)
        started.append(_ray_node([f"--address=127.0.0.1:{gcs}", "--num-cpus=2", f"--dashboard-agent-listen-port={free()}",
                                f"--runtime-env-agent-port={free()}", f"--metrics-export-port={free()}"], env))
        while time.monotonic() < deadline + 60 and len(alive := _alive_nodes(address)) < 2:
            time.sleep(1)
        assert len(alive) == 2, "the second node did not join"
        yield address, alive
    finally:
        for proc in reversed(started):
            nodes.kill(proc)  # its process group: that node only
        shutil.rmtree(temp, ignore_errors=True)
        Path("/tmp/ray/ray_current_cluster").unlink(missing_ok=True)  # no later ray.init may join the dead head


def _submitted(out: str) -> str:
    job_id = out.split()[1]
    assert job_id.startswith("raysubmit_"), out
    return job_id


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.timeout(900)
def test_submitted_tuning_job_runs_on_both_nodes_with_object_storage_and_is_tracked(two_nodes, mlflow_server, s3):
    """The nodes share nothing but the bucket: checkpoints, data, statistics all live there."""
    address, node_ids = two_nodes
    tune = ["tune", "--preset", "mnist_smoke", "--space", "tune_spaces/dcgan-core.yaml", "--trials", "1",
            "--workers-per-trial", "2", "--scheduler", "none", "--name", "sjob", "--experiment", "submit-test",
            "--set", "scaling.placement_strategy=SPREAD"]
    r = _cli("submit", "--address", address, "--working-dir", str(REPO), "--mlflow-uri", mlflow_server,
             "--storage", s3.uri("submit"), "--", *tune)
    assert r.returncode == 0, r.stderr
    job_id = _submitted(r.stdout)
    r = _cli("jobs", "status", job_id, "--address", address, "--wait", "600", timeout=700)
    if r.returncode != 0 or r.stdout.strip().splitlines()[-1] != "SUCCEEDED":
        pytest.fail(_cli("jobs", "logs", job_id, "--address", address).stdout[-4000:])
    from distgan import storage

    job_dir = s3.uri("submit", "sjob")
    assert storage.exists(storage.join(job_dir, "trials.csv")) and storage.list_dir(storage.join(job_dir, "stats"))

    c = MlflowClient(mlflow_server)
    exp = c.get_experiment_by_name("submit-test").experiment_id
    (parent,) = c.search_runs([exp], f"tags.`{tracking.JOB}` = 'sjob'")
    assert parent.data.tags["ray_job_id"] == job_id and parent.info.status == "FINISHED"
    children = tracking.child_runs(c, exp, parent.info.run_id)
    (child,) = children
    assert child.info.status == "FINISHED" and math.isfinite(child.data.metrics["fd_best"])
    ranks = child.data.tags["worker_nodes"].split(",")
    assert len(ranks) == 2 and set(ranks) == node_ids  # SPREAD: one worker on each node


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_a_job_that_fails_on_the_cluster_exits_1_like_ray_job(two_nodes, tmp_path):
    address, _ = two_nodes
    # a local storage path on a two-node cluster, not marked shared: refused on the cluster
    tune = ["tune", "--preset", "mnist_smoke", "--space", "tune_spaces/dcgan-core.yaml", "--trials", "1",
            "--storage", str(tmp_path / "local"), "--mlflow-uri", f"sqlite:///{tmp_path}/m.db"]
    r = _cli("submit", "--address", address, "--working-dir", str(REPO), "--follow", "--", *tune, timeout=280)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]  # --follow streams the logs, then the verdict
    assert "a local path on a 2-node cluster" in r.stdout and r.stderr.strip().endswith("FAILED")
    job_id = _submitted(r.stdout)
    r = _cli("jobs", "status", job_id, "--address", address)
    assert r.returncode == 1 and r.stdout.strip().splitlines()[-1] == "FAILED"
    # $RAY_ADDRESS / $RAY_API_SERVER_ADDRESS pointing elsewhere do not redirect --address
    dead = f"http://127.0.0.1:{server.free_port()}"
    env = {**_client_env(), "RAY_ADDRESS": dead, "RAY_API_SERVER_ADDRESS": dead}
    r = subprocess.run([sys.executable, "-m", "distgan.cli", "jobs", "list", "--address", address], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and job_id in r.stdout and "FAILED" in r.stdout, r.stderr


def test_unreachable_address_fails_fast_with_one_line(capsys):
    port = server.free_port()  # nothing listens there
    t0 = time.monotonic()
    assert main(["jobs", "status", "raysubmit_x", "--address", f"http://127.0.0.1:{port}"]) == 2
    assert time.monotonic() - t0 < 15
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not reachable" in err


def test_working_dir_over_the_upload_limit_is_refused_before_upload(tmp_path, monkeypatch, capsys):
    (tmp_path / "distgan").mkdir()
    (tmp_path / "big.bin").write_bytes(b"x" * 4096)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "huge.bin").write_bytes(b"x" * 100_000)  # excluded: does not count
    monkeypatch.setattr(jobs, "UPLOAD_LIMIT", 2048)
    assert jobs.upload_size(tmp_path) == 4096
    args = ["submit", "--address", "http://127.0.0.1:9", "--working-dir", str(tmp_path), "--", "tune"]
    assert main(args) == 2
    assert "over Ray's 0 MiB limit" in capsys.readouterr().err


def test_secrets_never_travel_in_the_runtime_env(tmp_path, capsys):
    for pair in ("AWS_SECRET_ACCESS_KEY=abc", "MLFLOW_TRACKING_PASSWORD=pw", "HF_TOKEN=t",
                 "DB=postgresql://user:pw@db:5432/x"):
        assert main(["submit", "--address", "http://127.0.0.1:9", "--env", pair, "--", "tune"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "secret store" in err and pair.split("=")[0] in err
    (tmp_path / "distgan").mkdir()
    for secret in (".env", "id.pem", ".aws/credentials", ".ssh/id_rsa"):
        (tmp_path / secret).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / secret).write_bytes(b"x" * 1000)
    assert jobs.upload_size(tmp_path) == 0  # none of them is packaged
