"""Tuning on a real local Ray with real Optuna: sampling, ASHA, stoppers, errors, resume."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from mlflow import MlflowClient

from distgan import presets, tracking
from distgan.cli import main
from distgan.config import ConfigError
from distgan.loop import EVALS
from distgan.report import trial_rows
from distgan.tune import JOB_FILE, load_space, max_concurrent_trials

pytestmark = pytest.mark.slow

# ring8 trials short enough for CI: 4 evaluations of 100 steps each
BASE_SETS = ["train.steps=400", "train.eval_every=100", "data.num_points=8000", "stop.saturation_evals=0"]
GOOD = {"optim.lr_g": 1.0e-3, "optim.lr_d": 1.0e-3, "loss.kind": "ns", "train.batch_size": 128}
SLOW = {"optim.lr_g": 1.0e-6, "optim.lr_d": 1.0e-6, "loss.kind": "ns", "train.batch_size": 128}
DIVERGING = {"optim.lr_g": 50.0, "optim.lr_d": 50.0, "loss.kind": "wgan-gp", "train.batch_size": 128}
# a batch larger than a worker's shard of the 8,000 points: the trial fails with an error
CRASHING = {"optim.lr_g": 2.0e-3, "optim.lr_d": 2.0e-3, "loss.kind": "ns", "train.batch_size": 20000}
SPACE = {
    "metric": "fid", "mode": "min",
    "params": {
        "optim.lr_g": {"dist": "loguniform", "low": 1.0e-6, "high": 100.0},
        "optim.lr_d": {"dist": "loguniform", "low": 1.0e-6, "high": 100.0},
        "loss.kind": {"dist": "choice", "values": ["ns", "hinge", "wgan-gp"]},
        "loss.gp_weight": {"dist": "uniform", "low": 1.0, "high": 20.0, "when": {"loss.kind": "wgan-gp"}},
        "train.batch_size": {"dist": "choice", "values": [128, 20000]},
    },
}


def _space(tmp_path, start):
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump({**SPACE, "start": start}))
    return p


def _tune_args(space, storage, name, trials, mlflow_uri, experiment):
    args = ["tune", "--preset", "ring8", "--space", str(space), "--trials", str(trials), "--workers-per-trial", "2",
            "--storage", str(storage), "--name", name, "--grace-period", "1", "--reduction-factor", "2",
            "--mlflow-uri", mlflow_uri, "--experiment", experiment]
    for s in BASE_SETS:
        args += ["--set", s]
    return args


@pytest.mark.timeout(900)
def test_tuning_job_samples_stops_early_and_survives_bad_trials(ray_session, mlflow_server, tmp_path, capsys):
    space = _space(tmp_path, [GOOD, SLOW, DIVERGING, CRASHING])
    assert main(_tune_args(space, tmp_path, "job", 5, mlflow_server, "tune-five")) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "job" / "trials.csv")
    assert len(table) == 5
    by_lr = {round(row["optim.lr_g"], 9): row for _, row in table.iterrows()}
    good, slow, diverging = by_lr[1.0e-3], by_lr[1.0e-6], by_lr[50.0]
    crashed = table[table["stop_reason"] == "error"]
    assert 2.0e-3 in crashed["optim.lr_g"].round(9).tolist() and (crashed["train.batch_size"] == 20000).all()
    assert all(Path(f).is_file() for f in crashed["error_file"])
    assert "rows: more than this worker's shard holds" in Path(crashed["error_file"].iloc[0]).read_text()
    assert diverging["stop_reason"] == "diverged" and diverging["evals"] == 1
    assert good["evals"] == 4 and math.isfinite(good["best_fid"])
    # ASHA stopped the slow-learning trial at a rung, before its budget of 4 evaluations
    assert slow["stop_reason"] == "scheduler" and slow["evals"] < 4
    starts = (1e-3, 1e-6, 50.0, 2e-3)
    (row,) = [r for _, r in table.iterrows() if round(r["optim.lr_g"], 9) not in starts]
    # Optuna's TPE drew the fifth trial from the space, after the four starting points
    assert 1e-6 <= row["optim.lr_g"] <= 100 and 1e-6 <= row["optim.lr_d"] <= 100
    assert row["loss.kind"] in ("ns", "hinge", "wgan-gp")
    assert (row["loss.kind"] == "wgan-gp") == (not pd.isna(row["loss.gp_weight"]))
    assert table["best_fid"].iloc[0] == table["best_fid"].min()  # sorted by best FID
    for png in ("fid_curves.png", "param_importances.png", "parallel_coordinates.png"):
        assert (tmp_path / "job" / png).read_bytes()[:4] == b"\x89PNG"
    assert "best fid2k" in out and "diverged" in out
    # each trial's MLflow child run ended as the trial really did
    runs = _child_runs(mlflow_server, "tune-five")
    assert len(runs) == 5
    status = {round(float(r.data.params["optim.lr_g"]), 9): r for r in runs}
    assert status[1e-6].info.status == "KILLED" and status[1e-6].data.tags["stop_reason"] == "scheduler"
    assert status[2e-3].info.status == "FAILED" and status[2e-3].data.tags["stop_reason"] == "error"
    assert status[50.0].info.status == "FINISHED" and status[50.0].data.tags["stop_reason"] == "diverged"
    assert status[1e-3].info.status == "FINISHED" and status[1e-3].data.tags["stop_reason"] == "completed"


def _child_runs(uri: str, experiment: str) -> list:
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment).experiment_id
    (parent,) = c.search_runs([exp], f"tags.`{tracking.KIND}` = 'tuning-job'")
    assert parent.info.status == "FINISHED"
    return tracking.child_runs(c, exp, parent.info.run_id)


def _reported(exp: Path) -> dict[str, list[tuple]]:
    """Per trial directory, the (iteration, timestamp) of every result Tune wrote so far."""
    rows = {}
    for f in exp.glob("trial_driver_*/result.json"):
        lines = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        rows[f.parent.name] = [(r["training_iteration"], r["timestamp"]) for r in lines]
    return rows


@pytest.mark.timeout(900)
def test_interrupted_job_resumes_without_rerunning_finished_trials(ray_session, mlflow_server, tmp_path):
    space = _space(tmp_path, [GOOD, GOOD])
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    cmd = [sys.executable, "-m", "distgan.cli", *_tune_args(space, tmp_path, "job", 2, mlflow_server, "tune-resume")]
    cmd[cmd.index("--grace-period") + 1] = "4"  # no early stopping: every trial runs its budget
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    exp = tmp_path / "job"
    deadline = time.time() + 600
    # one trial at a time: once the second has reported (and checkpointed) once, the first is over
    while (len([r for r in _reported(exp).values() if r]) < 2 and time.time() < deadline
           and proc.poll() is None):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert "resume with  distgan tune --resume" in out, out[-3000:]
    first = {name: rows for name, rows in _reported(exp).items() if len(rows) == 4}
    assert len(first) == 1, _reported(exp)  # one trial finished, the other was cut off and must continue
    r = subprocess.run([sys.executable, "-m", "distgan.cli", "tune", "--resume", str(exp)], env=env,
                       capture_output=True, text=True, timeout=700)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = pd.read_csv(exp / "trials.csv")
    assert len(table) == 2 and (table["evals"] == 4).all()
    for name, rows in first.items():  # finished trials were not run again
        assert _reported(exp)[name] == rows
    runs = _child_runs(mlflow_server, "tune-resume")  # one parent (asserted inside), continued
    assert len(runs) == 2 and len({r.data.tags[tracking.TRIAL] for r in runs}) == 2
    assert all(r.info.status == "FINISHED" for r in runs)
    for r in runs:  # an interrupted trial continued its own run: one FID per evaluation, no repeats
        steps = [m.step for m in MlflowClient(mlflow_server).get_metric_history(r.info.run_id, "fid2k")]
        assert len(steps) == len(set(steps)) == 4


@pytest.mark.parametrize("edit, message", [
    ({"params": {"optim.lr_gg": {"dist": "loguniform", "low": 1e-4, "high": 1e-3}}}, "params.optim.lr_gg: unknown config key"),
    ({"params": {"optim.lr_g": {"dist": "uniform", "low": 1e-3, "high": 1e-4}}}, "low 0.001 must be below high 0.0001"),
    ({"params": {"optim.lr_g": {"dist": "loguniform", "low": -1, "high": 1e-3}}}, "loguniform bounds must be positive"),
    ({"params": {"loss.gp_weight": {"dist": "uniform", "low": 1, "high": 5, "when": {"loss.kindd": "wgan-gp"}}}},
     "condition on a missing key 'loss.kindd'"),
    ({"params": {"train.n_d": {"dist": "choice", "values": [0, 1]}}}, "train.n_d: 0 is invalid"),
    ({"params": {}}, "the space is empty"),
])
def test_bad_spaces_fail_before_ray_with_one_line(tmp_path, edit, message):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"metric": "fid", "mode": "min", **edit}))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_space(p, presets.ring8())


def test_bad_cli_input_exits_2_before_ray_starts(tmp_path, capsys):
    assert main(["tune", "--preset", "ring8", "--space", "tune_spaces/ring8.yaml", "--trials", "0"]) == 2
    assert "--trials 0" in capsys.readouterr().err
    assert main(["tune", "--resume", str(tmp_path)]) == 2
    assert f"{JOB_FILE} missing" in capsys.readouterr().err


def test_shipped_spaces_validate_and_concurrency_follows_resources():
    for name, preset in (("dcgan-core", "mnist"), ("dcgan-wide", "mnist"), ("ring8", "ring8")):
        space = load_space(f"tune_spaces/{name}.yaml", presets.get(preset))
        assert space.params
    cfg = presets.mnist().with_overrides({"scaling.num_workers": 2})
    assert max_concurrent_trials(cfg, {"CPU": 2}) == 1  # one CPU stays free for Ray Data
    assert max_concurrent_trials(cfg, {"CPU": 9}) == 4
    gpu = cfg.with_overrides({"scaling.use_gpu": True, "scaling.gpus_per_worker": 1.0})
    assert max_concurrent_trials(gpu, {"CPU": 64, "GPU": 8}) == 4


def test_trial_table_counts_a_replayed_evaluation_once():
    """A resumed trial reports its evaluations again (worker.replay); Tune keeps both copies."""
    df = pd.DataFrame({"step": [100, 200, 100, 200, 300], EVALS: [1, 2, 1, 2, 3], "fid2k": [5.0, 3.0, 5.0, 3.0, 4.0],
                       "stop_reason": [""] * 5, "checkpoint_path": ["c1", "c2", "c1", "c2", "c3"]})
    result = SimpleNamespace(metrics_dataframe=df, error=None, metrics={"trial_id": "t1"}, path="/x/trial_driver_t1",
                             config={"optim.lr_g": 1e-3})
    [row] = trial_rows([result], "fid2k", max_evals=3)
    assert row["curve"] == [[100, 5.0], [200, 3.0], [300, 4.0]]
    assert (row["evals"], row["best_step"], row["checkpoint"], row["stop_reason"]) == (3, 200, "c2", "completed")
