"""MLflow tracking, promotion and sampling against a real `mlflow server` over HTTP, with
a real tuning job on a real local Ray."""

import math

import mlflow
import mlflow.pytorch
import pytest
import torch
import yaml
from mlflow import MlflowClient
from PIL import Image

from distgan import tracking
from distgan.cli import main

pytestmark = pytest.mark.slow

SPACE = {"metric": "fid", "mode": "min",
         "params": {"optim.lr_g": {"dist": "loguniform", "low": 1e-4, "high": 1e-3},
                    "train.n_d": {"dist": "choice", "values": [1, 2]}}}


@pytest.fixture(scope="module")
def tuned(ray_session, mlflow_server, tmp_path_factory):
    """A 2-trial mnist_smoke job (2 workers per trial) that logs to the server."""
    tmp = tmp_path_factory.mktemp("tracked")
    space = tmp / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    args = ["tune", "--preset", "mnist_smoke", "--space", str(space), "--trials", "2", "--workers-per-trial", "2",
            "--storage", str(tmp), "--name", "mjob", "--scheduler", "none", "--mlflow-uri", mlflow_server,
            "--experiment", "itest"]
    assert main(args) == 0
    c = MlflowClient(mlflow_server)
    return c, c.get_experiment_by_name("itest").experiment_id


def test_job_has_one_parent_and_a_child_per_trial_with_histories_and_images(tuned):
    c, exp = tuned
    parents = c.search_runs([exp], f"tags.`{tracking.KIND}` = 'tuning-job' and tags.`{tracking.JOB}` = 'mjob'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["preset"] == "mnist_smoke"
    assert parent.data.tags["space_file"].endswith("space.yaml") and parent.data.tags["distgan.version"]
    children = tracking.child_runs(c, exp, parent.info.run_id)
    assert len(children) == 2 and len({r.data.tags[tracking.TRIAL] for r in children}) == 2
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags[tracking.PARENT] == parent.info.run_id
        history = c.get_metric_history(run.info.run_id, "fid500")
        assert [m.step for m in history] == [10, 20] and all(math.isfinite(m.value) for m in history)
        assert 1e-4 <= float(run.data.params["optim.lr_g"]) <= 1e-3
        for key in ("d_real", "d_fake", "loss_d", "loss_g", "img_per_s", "classes_covered", "kid500", "precision", "recall"):
            assert len(c.get_metric_history(run.info.run_id, key)) == 2, key
        images = [a.path for a in c.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]
        assert len(images) == 2 and any("step+20" in p for p in images)
        assert run.data.tags["best_checkpoint"] and run.data.metrics["best_fid"] == min(m.value for m in history)
    assert parent.data.metrics["best_fid"] == min(r.data.metrics["best_fid"] for r in children)
    artifacts = {a.path for a in c.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "fid_curves.png"} <= artifacts


def test_promote_registers_once_and_the_champion_samples(tuned, mlflow_server, tmp_path, capsys):
    c, exp = tuned
    promote = ["promote", "--mlflow-uri", mlflow_server, "--experiment", "itest", "--eval-n", "1000"]
    assert main(promote) == 0
    assert "registered as new version 1" in capsys.readouterr().out
    assert main(promote) == 0  # the same checkpoint again: no second version
    assert "already registered as version 1" in capsys.readouterr().out
    versions = c.search_model_versions("name = 'distgan-generator'")
    assert len(versions) == 1
    v = c.get_model_version_by_alias("distgan-generator", "champion")
    assert v.version == "1" and float(v.tags["fid1k"]) > 0 and v.tags["detector"] == "lenet-mnist"
    assert v.tags["trial_id"] and v.tags["parent_run_id"] and len(v.tags["checkpoint_sha256"]) == 64
    mlflow.set_tracking_uri(mlflow_server)
    G = mlflow.pytorch.load_model("models:/distgan-generator@champion")
    zy = torch.cat([torch.randn(6, 32), torch.arange(6).float()[:, None]], 1)
    with torch.no_grad():
        x = G(zy)
    assert x.shape == (6, 1, 28, 28) and x.min() >= -1 and x.max() <= 1 and x.std() > 0
    out = tmp_path / "grid.png"
    assert main(["sample", "--mlflow-uri", mlflow_server, "--n", "20", "--out", str(out)]) == 0
    with Image.open(out) as im:  # 10 class rows of 2 digits (28 px + 2 px padding)
        assert im.size == (2 * 30 + 2, 10 * 30 + 2)
    out = tmp_path / "interp.png"
    assert main(["sample", "--mlflow-uri", mlflow_server, "--interpolate", "1", "2", "--steps", "5",
                 "--label", "3", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (5 * 30 + 2, 30 + 2)
    assert main(["sample", "--mlflow-uri", mlflow_server, "--label", "12", "--out", str(out)]) == 2
    assert "--label 12: the model has 10 classes" in capsys.readouterr().err


def test_promoting_a_job_without_a_finite_fid_fails_cleanly(mlflow_server, capsys):
    c = MlflowClient(mlflow_server)
    exp = c.create_experiment("empty-job")
    parent = c.create_run(exp, tags={tracking.KIND: "tuning-job", tracking.JOB: "empty"}).info.run_id
    child = c.create_run(exp, tags={tracking.PARENT: parent, tracking.TRIAL: "t0"}).info.run_id
    c.log_metric(child, "best_fid", 1e4)  # a diverged trial's stand-in FID
    assert main(["promote", "--mlflow-uri", mlflow_server, "--experiment", "empty-job",
                 "--model-name", "distgan-generator-empty"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no trial with a finite FID" in err
    assert not c.search_registered_models("name = 'distgan-generator-empty'")


def test_plain_train_logs_one_run_and_resume_continues_it(mlflow_server, mnist_dir, tmp_path):
    out = tmp_path / "run"
    tracked = ["--mlflow-uri", mlflow_server, "--experiment", "train-test", "--no-progress"]
    assert main(["train", "--preset", "mnist_smoke", "--out", str(out), "--set", f"data.path={mnist_dir}",
                 "--set", "train.steps=10", *tracked]) == 0
    assert main(["train", "--resume", str(out), "--set", "train.steps=20", *tracked]) == 0
    c = MlflowClient(mlflow_server)
    runs = c.search_runs([c.get_experiment_by_name("train-test").experiment_id])
    assert len(runs) == 1  # the resume continued the run
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags[tracking.RUN_DIR] == str(out.resolve())
    assert [m.step for m in c.get_metric_history(run.info.run_id, "fid500")] == [10, 20]
    assert run.data.params["train.batch_size"] == "32"
    assert len([a for a in c.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]) == 2
