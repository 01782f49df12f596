"""A tuning job whose storage, data and MLflow artifacts live in object storage: a real
S3-compatible server on 127.0.0.1 (moto's server mode), a real `mlflow server` whose artifacts
go to the same bucket, a real local Ray. Nothing lands in a local folder named `s3:`."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import optuna
import pandas as pd
import pytest
from PIL import Image

from distgan import server, storage, study

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def _keys(s3, prefix: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _cli(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distgan.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=env["PWD"])


def test_storage_locations_are_uris_never_paths(s3):
    assert storage.join("s3://b/x", "job", "f.json") == "s3://b/x/job/f.json"
    assert storage.normalize("s3://b/x/") == "s3://b/x"
    fs, path = storage.resolve(s3.uri("probe", "a.txt"))
    assert path == f"{s3.bucket}/probe/a.txt" and storage.uri(fs, path) == s3.uri("probe", "a.txt")
    storage.write_text(s3.uri("probe", "a.txt"), "hello")
    assert storage.read_text(s3.uri("probe", "a.txt")) == "hello" and storage.list_dir(s3.uri("probe")) == ["a.txt"]
    with pytest.raises(FileNotFoundError):
        storage.read_text(s3.uri("probe", "missing.txt"))
    with pytest.raises(storage.StorageError, match="no bucket"):
        storage.normalize("s3://")


@pytest.mark.timeout(1200)
def test_tuning_job_in_object_storage_resumes_promotes_and_samples(ray_session, s3, tmp_path):
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "PWD": str(cwd),
           "DISTGAN_CACHE": str(tmp_path / "cache")}
    db = tmp_path / "mlflow" / "mlflow.db"
    url, mlflow_proc = server.start(db, artifacts=s3.uri("mlartifacts"))
    try:
        data = s3.uri("data", "mnist")
        r = _cli("data", "prepare", "mnist-embedded", "--out", data, env=env)
        assert r.returncode == 0 and "wrote 4750 rows in 5 shards to s3://" in r.stdout, r.stderr
        tune = ["tune", "--preset", "mnist_smoke", "--space", str(REPO / "tune_spaces" / "dcgan-core.yaml"),
                "--trials", "2", "--workers", "1", "--scheduler", "none", "--storage", s3.uri("tune"), "--name", "s3job",
                "--mlflow-uri", url, "--experiment", "s3test", "--set", f"data.path={data}", "--set", "train.steps=30"]
        proc = subprocess.Popen([sys.executable, "-m", "distgan.cli", *tune], env=env, cwd=cwd, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = []
        deadline = time.time() + 600
        for line in proc.stdout:  # kill the job outright once a trial has made its first evaluation
            lines.append(line)
            if "] step 10 |" in line or time.time() > deadline:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        first = "".join(lines)
        assert "] step 10 |" in first, first[-3000:]
        assert first.count("real statistics: computed") == 1, first[-3000:]  # once for the job, not per trial
        job = s3.uri("tune", "s3job")
        assert "tune/s3job/optuna.journal" in _keys(s3, "tune/s3job/")  # the study was in storage before the kill
        Path(study.location(job, "s3job")).unlink()  # resumed as on another machine: no local copy
        r = _cli("tune", "--resume", job, env=env, timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "real statistics: computed" not in r.stdout and "real statistics: cache" in r.stdout
        keys = _keys(s3, "tune/s3job/")
        for name in ("distgan_job.json", "trials.csv", "fd_curves.png", "status.json", "optuna.journal"):
            assert f"tune/s3job/{name}" in keys, name
        assert len([k for k in keys if k.startswith("tune/s3job/stats/") and k.endswith(".npz")]) == 1
        table = pd.read_csv(storage.download(storage.join(job, "trials.csv"), tmp_path / "trials.csv"))
        assert len(table) == 2 and (table["evals"] == 3).all()
        journal = storage.download(storage.join(job, study.STUDY_FILE), tmp_path / "study" / study.STUDY_FILE)
        searched = study.load(str(tmp_path / "study"), "s3job")  # the one study, continued, both trials told
        assert [t.state for t in searched.trials] == [optuna.trial.TrialState.COMPLETE] * 2, journal
        for ckpt in table["checkpoint"]:  # every trial's best checkpoint, with its scheme, in the bucket
            assert ckpt.startswith(job + "/train/trial-") and f"{ckpt[len(s3.uri()) + 1:]}/state.pt" in keys
        r = _cli("promote", "--mlflow-uri", url, "--experiment", "s3test", "--eval-n", "1000", env=env)
        assert r.returncode == 0 and "registered as new version 1" in r.stdout, r.stderr
        grid = cwd / "grid.png"
        r = _cli("sample", "--mlflow-uri", url, "--n", "20", "--out", str(grid), env=env)
        assert r.returncode == 0, r.stderr
        with Image.open(grid) as im:
            assert im.size == (2 * 30 + 2, 10 * 30 + 2)
        artifacts = _keys(s3, "mlartifacts/")  # MLflow's artifacts went to the bucket: grids, plots, the model
        assert any(k.endswith("model.pt2") for k in artifacts)
        assert any("/images/" in k and k.endswith(".png") for k in artifacts)
        assert any(k.endswith("fd_curves.png") for k in artifacts)
        # no local folder named `s3:` anywhere the job could have written one
        for root in (cwd, tmp_path, REPO, Path.cwd()):
            assert not list(root.glob("s3:*")) and not list(root.glob("*/s3:*")), root
        assert json.loads(storage.read_text(storage.join(job, "distgan_job.json")))["storage"] == s3.uri("tune")
    finally:
        server.stop(mlflow_proc)


def test_a_jobs_study_copy_is_never_another_jobs(s3):
    """The local copy of a study in a bucket: a new job at a dead job's location starts
    clean; a resume takes the bucket's copy unless the local one continues it."""
    job = s3.uri("studies", "j")
    local = Path(study.location(job, "j"))
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(b"a dead job's trials")
    study.fetch(job, "j", resume=False)
    assert not local.exists()
    storage.write_bytes(storage.join(job, study.STUDY_FILE), b"ask 1\ntell 1\n")
    local.write_bytes(b"ask 1\ntell 1\nask 2\n")  # the driver died before it uploaded this
    study.fetch(job, "j", resume=True)
    assert local.read_bytes() == b"ask 1\ntell 1\nask 2\n"
    local.write_bytes(b"something else")  # another machine's, or another job's
    study.fetch(job, "j", resume=True)
    assert local.read_bytes() == b"ask 1\ntell 1\n"
    local.unlink()
