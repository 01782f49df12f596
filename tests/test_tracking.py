"""MLflow tracking, promotion and sampling against a real `mlflow server` over HTTP, with
a real tuning job on a real local Ray."""

import contextlib
import io
import json
import math
import sys
from pathlib import Path

import mlflow
import mlflow.pytorch
import pytest
import ray.cloudpickle as cloudpickle
import torch
import yaml
from mlflow import MlflowClient
from PIL import Image

from distgan import tracking
from distgan.cli import main

pytestmark = pytest.mark.slow

SPACE = {"params": {"optim.lr_g": {"dist": "loguniform", "low": 1e-4, "high": 1e-3},
                    "train.n_d": {"dist": "choice", "values": [1, 2]}}}


@pytest.fixture(scope="module")
def tuned(ray_session, mlflow_server, tmp_path_factory):
    """A 2-trial mnist_smoke job (the two side by side, a worker each) that logs to the server."""
    tmp = tmp_path_factory.mktemp("tracked")
    space = tmp / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    args = ["tune", "--preset", "mnist_smoke", "--space", str(space), "--trials", "2", "--workers-per-trial", "1",
            "--storage", str(tmp), "--name", "mjob", "--scheduler", "none", "--mlflow-uri", mlflow_server,
            "--experiment", "itest", "--set", "eval.metrics=[fd, modes, kd, prdc]"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # not a terminal: the live table comes as plain lines
        assert main(args) == 0
    c = MlflowClient(mlflow_server)
    return c, c.get_experiment_by_name("itest").experiment_id, out.getvalue()


def test_the_live_table_prints_plain_lines_when_not_a_terminal(tuned):
    out = tuned[2]
    assert "F\x1b[J" not in out  # no redraw in place (Ray's own colored lines may hold other codes)
    tables = [line for line in out.splitlines() if line.startswith("trial ") and "best fd_lenet500" in line]
    assert len(tables) >= 2  # printed as the trials started and ended, not only at the end
    assert "mjob: 2 of 2 trials ended, 4 of 4 evaluations, ETA 0 s" in out


def test_job_has_one_parent_and_a_child_per_trial_with_histories_and_images(tuned):
    c, exp, _ = tuned
    parents = c.search_runs([exp], f"tags.`{tracking.KIND}` = 'tuning-job' and tags.`{tracking.JOB}` = 'mjob'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["preset"] == "mnist_smoke"
    assert parent.data.tags["space_file"].endswith("space.yaml") and parent.data.tags["distgan.version"]
    children = tracking.child_runs(c, exp, parent.info.run_id)
    assert len(children) == 2 and len({r.data.tags[tracking.TRIAL] for r in children}) == 2
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags[tracking.PARENT] == parent.info.run_id
        history = c.get_metric_history(run.info.run_id, "fd_lenet500")
        assert [m.step for m in history] == [10, 20] and all(math.isfinite(m.value) for m in history)
        assert 1e-4 <= float(run.data.params["optim.lr_g"]) <= 1e-3
        for key in ("d_real", "d_fake", "loss_d", "loss_g", "img_per_s", "eval_s", "classes_covered", "kd_lenet500",
                    "precision_lenet500", "recall_lenet500"):
            assert len(c.get_metric_history(run.info.run_id, key)) == 2, key
        assert not any(k.startswith(("fid", "kid")) for k in run.data.metrics)  # LeNet features, not Inception
        images = [a.path for a in c.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]
        assert len(images) == 2 and any("step+20" in p for p in images)
        assert run.data.tags["best_checkpoint"] and run.data.metrics["fd_best"] == min(m.value for m in history)
    assert parent.data.metrics["fd_best"] == min(r.data.metrics["fd_best"] for r in children)
    assert parent.data.tags[tracking.DISTANCE] == "fd_lenet500"
    artifacts = {a.path for a in c.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "fd_curves.png"} <= artifacts


def test_promote_registers_once_and_the_champion_samples(tuned, mlflow_server, tmp_path, capsys):
    c, exp, _ = tuned
    promote = ["promote", "--mlflow-uri", mlflow_server, "--experiment", "itest", "--eval-n", "1000"]
    assert main(promote) == 0
    assert "registered as new version 1" in capsys.readouterr().out
    assert main(promote) == 0  # the same checkpoint again: no second version
    assert "already registered as version 1" in capsys.readouterr().out
    versions = c.search_model_versions("name = 'distgan-generator'")
    assert len(versions) == 1
    v = c.get_model_version_by_alias("distgan-generator", "champion")
    assert v.version == "1" and float(v.tags["fd_lenet1k"]) > 0 and v.tags["detector"] == "lenet-mnist"
    assert v.tags["promoted_metric"] == "fd_lenet1k" and "fid1k" not in v.tags
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
    assert main(["sample", "--mlflow-uri", mlflow_server, "--label", "12", "--out", str(tmp_path / "twelve.png")]) == 2
    assert "--label 12: the model has 10 classes" in capsys.readouterr().err


def test_promoting_a_job_without_a_finite_fid_fails_cleanly(mlflow_server, capsys):
    c = MlflowClient(mlflow_server)
    exp = c.create_experiment("empty-job")
    parent = c.create_run(exp, tags={tracking.KIND: "tuning-job", tracking.JOB: "empty"}).info.run_id
    child = c.create_run(exp, tags={tracking.PARENT: parent, tracking.TRIAL: "t0"}).info.run_id
    c.log_metric(child, "fd_best", 1e4)  # a diverged trial's stand-in distance
    assert main(["promote", "--mlflow-uri", mlflow_server, "--experiment", "empty-job",
                 "--model-name", "distgan-generator-empty"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no trial with a finite distance" in err
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
    assert [m.step for m in c.get_metric_history(run.info.run_id, "fd_lenet500")] == [10, 20]
    assert run.data.params["train.batch_size"] == "32"
    assert len([a for a in c.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]) == 2


MARKER = Path("/tmp/distgan-code-ran")


class Booby(torch.nn.Module):
    """A model whose unpickling writes a marker file: loading it would run its author's code."""

    def forward(self, x):
        return x

    def __setstate__(self, state):
        MARKER.write_text("ran")
        super().__setstate__(state)


def test_a_pickled_model_is_refused_and_runs_nothing(mlflow_server, tmp_path, capsys):
    MARKER.unlink(missing_ok=True)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # by value: the class travels in the pickle
    mlflow.set_tracking_uri(mlflow_server)
    with mlflow.start_run():
        mlflow.pytorch.log_model(Booby(), name="m", serialization_format="pickle", registered_model_name="pickled")
    capsys.readouterr()  # MLflow's own warnings while logging it
    MARKER.unlink(missing_ok=True)  # log_model itself loads the model (to infer its requirements)
    out = tmp_path / "grid.png"
    assert main(["sample", "--mlflow-uri", mlflow_server, "--model", "models:/pickled/1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not in the pt2 format" in err and "refused" in err
    assert not MARKER.exists() and not out.exists()


def test_a_model_with_a_code_folder_is_refused_and_runs_nothing(mlflow_server, tmp_path, capsys):
    MARKER.unlink(missing_ok=True)
    evil = tmp_path / "booby_trap.py"
    evil.write_text(f"from pathlib import Path\nPath({str(MARKER)!r}).write_text('ran')\n")
    mlflow.set_tracking_uri(mlflow_server)
    example = torch.zeros(2, 3)
    with mlflow.start_run():
        mlflow.pytorch.log_model(torch.nn.Identity(), name="m", serialization_format="pt2", input_example=example.numpy(),
                                 code_paths=[str(evil)], registered_model_name="with-code")
    capsys.readouterr()  # MLflow's own lines while logging it
    MARKER.unlink(missing_ok=True)
    before = list(sys.path)
    out = tmp_path / "grid.png"
    assert main(["sample", "--mlflow-uri", mlflow_server, "--model", "models:/with-code/1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "code/ folder" in err and "refused" in err
    assert sys.path == before  # its code folder never reached the import path
    import importlib.util
    assert importlib.util.find_spec("booby_trap") is None and not MARKER.exists()


def test_job_names_with_quotes_find_their_own_runs(mlflow_server):
    c = MlflowClient(mlflow_server)
    exp_id = tracking.experiment_id(c, "quotes")
    names = ["it's", 'say "hi"', "both ' and \"", "its"]
    ids = {n: tracking.open_run(c, exp_id, {tracking.KIND: "tuning-job", tracking.JOB: n}, n) for n in names}
    assert len(set(ids.values())) == len(names)
    for n in names:  # each found again (reused), none mistaken for another
        assert tracking.find_run(c, exp_id, {tracking.KIND: "tuning-job", tracking.JOB: n}) == ids[n]


def test_a_replay_cut_before_it_deleted_its_entry_logs_nothing_twice(mlflow_server, tmp_path):
    c = MlflowClient(mlflow_server)
    run_id = c.create_run(tracking.experiment_id(c, "spool")).info.run_id
    grid = tmp_path / "grid.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(grid)
    log = tracking.RunLog(mlflow_server, run_id, str(tmp_path / "spool"))
    log._spool({"fd_lenet500": 12.5, "loss_d": 0.7}, 40, grid)
    entries = {p.name: p.read_bytes() for p in (tmp_path / "spool").iterdir()}
    assert log.replay(c) == 1 and not list((tmp_path / "spool").iterdir())
    for name, data in entries.items():  # as if the process died after logging, before deleting
        (tmp_path / "spool" / name).write_bytes(data)
    assert log.replay(c) == 1
    assert [m.value for m in c.get_metric_history(run_id, "fd_lenet500")] == [12.5]
    images = [f.path for f in c.list_artifacts(run_id, "images") if "step+40+" in f.path or "step%40%" in f.path]
    assert len([p for p in images if p.endswith(".png")]) == 1, images


def test_a_lineage_logged_again_on_a_resume_has_its_artifact_and_one_exploit_point(mlflow_server, tmp_path):
    c = MlflowClient(mlflow_server)
    run_id = c.create_run(tracking.experiment_id(c, "lineage")).info.run_id
    records = [{"from_trial": "b", "step": 100, "params": {}, "from_params": {}}]
    c.set_tag(run_id, tracking.LINEAGE, "b@100")  # a kill cut the first logging after its tag and point
    c.log_metric(run_id, "exploit", 1.0, step=100)
    tracking.log_lineage(mlflow_server, run_id, records, exploit_step=100)
    assert [m.step for m in c.get_metric_history(run_id, "exploit")] == [100]
    assert json.loads(Path(c.download_artifacts(run_id, "lineage.json", str(tmp_path))).read_text()) == records


@pytest.mark.timeout(900)
def test_two_jobs_on_one_store_both_finish_with_every_evaluation_in_mlflow(ray_session, tmp_path):
    """The first job starts the store's server and ends first; the second, which joined it,
    goes on logging to it until its own end."""
    import json
    import os
    import subprocess
    import time

    from distgan import server

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"params": {"optim.lr_g": {"dist": "loguniform", "low": 1e-4, "high": 1e-3}}}))
    db = tmp_path / "mlflow" / "mlflow.db"
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, server.LINGER_ENV: "2"}

    def job(name: str, steps: int, every: int) -> subprocess.Popen:
        args = ["tune", "--preset", "ring8", "--space", str(space), "--trials", "1", "--workers", "1",
                "--scheduler", "none", "--storage", str(tmp_path), "--name", name, "--mlflow-uri", f"sqlite:///{db}",
                "--experiment", "two", "--set", f"train.steps={steps}", "--set", f"train.eval_every={every}",
                "--set", "data.num_points=8000", "--set", "stop.saturation_evals=0"]
        return subprocess.Popen([sys.executable, "-m", "distgan.cli", *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    first = job("first", 200, 100)
    deadline = time.time() + 120
    while not (db.parent / server.PID_FILE).exists() and time.time() < deadline:
        time.sleep(0.2)
    second = job("second", 4000, 1000)  # long enough to outlive the first
    out_first, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out_first[-3000:]
    assert second.poll() is None, "the second job ended first: nothing was shared"
    out_second, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out_second[-3000:]
    assert "spooled" not in out_second and "unreachable" not in out_second, out_second[-3000:]
    deadline = time.time() + 30  # the last one out left it to its watchdog, which stops it after the linger
    while (db.parent / server.PID_FILE).exists() and time.time() < deadline:
        time.sleep(0.5)
    assert not (db.parent / server.PID_FILE).exists()
    c = MlflowClient(f"sqlite:///{db}")
    exp_id = c.get_experiment_by_name("two").experiment_id
    steps = {}
    for run in c.search_runs([exp_id], tracking.tag_filter({tracking.KIND: "trial"})[0]):
        parent = c.get_run(run.data.tags[tracking.PARENT])
        steps[parent.data.tags[tracking.JOB]] = [m.step for m in c.get_metric_history(run.info.run_id, "fd_coords2k")]
    assert steps == {"first": [100, 200], "second": [1000, 2000, 3000, 4000]}, json.dumps(steps)
