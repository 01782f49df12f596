"""Population-based training on a real local Ray: exploits that continue another trial's
state (the step goes on), their lineage in MLflow and storage, and a job killed with SIGKILL
that resumes to the end, with its MLflow server gone with it and every run closed."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from distgan import report, rundir, server, tracking
from distgan.trial import LINEAGE_DIR, exploit_run

pytestmark = pytest.mark.slow

SPACE = {
    "params": {
        "optim.lr_g": {"dist": "loguniform", "low": 1.0e-6, "high": 3.0e-3},
        "optim.lr_d": {"dist": "loguniform", "low": 1.0e-6, "high": 3.0e-3},
        "train.n_d": {"dist": "choice", "values": [1, 2]},
    },
    # a poor start and a good one: at the first evaluation the poor one continues from the good one
    "start": [{"optim.lr_g": 1.0e-6, "optim.lr_d": 1.0e-6, "train.n_d": 1},
              {"optim.lr_g": 1.5e-3, "optim.lr_d": 1.0e-3, "train.n_d": 2}],
    "budget": {"trials": 2, "steps": 200, "eval_every": 100},
    # synchronous: every trial reaches each evaluation before anyone exploits, so the worse
    # trial exploits the better one at the first evaluation whatever the order trials ran in
    "scheduler": {"kind": "pbt", "perturbation_interval": 1, "synch": True},
}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _steps(exp, trial: str, rec: dict) -> list[int]:
    """The steps checkpointed by the Train run an exploit started."""
    return sorted(int(n.split("_")[1]) for n in rundir.step_names(str(exp / "train" / exploit_run(trial, rec))))


@pytest.mark.timeout(1200)
def test_pbt_exploits_continue_state_and_a_killed_job_resumes(ray_session, tmp_path):
    space = tmp_path / "pbt.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    db = tmp_path / "mlflow" / "mlflow.db"
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    cmd = [sys.executable, "-m", "distgan.cli", "tune", "--preset", "ring8", "--space", str(space), "--workers", "1",
           "--storage", str(tmp_path), "--name", "pbt", "--mlflow-uri", f"sqlite:///{db}", "--experiment", "pbt",
           "--set", "data.num_points=8000", "--set", "stop.saturation_evals=0"]
    exp = tmp_path / "pbt"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 600
    while not list((exp / LINEAGE_DIR).glob("*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert list((exp / LINEAGE_DIR).glob("*.json")), proc.communicate()[0][-4000:] if proc.poll() is not None else ""
    # the first exploit happened: kill the driver outright, mid-job
    serving = json.loads((db.parent / server.PID_FILE).read_text())["pid"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    for _ in range(40):  # the MLflow server the driver started goes with it (watchdog)
        if not _alive(serving):
            break
        time.sleep(0.5)
    assert not _alive(serving), "the MLflow server outlived the killed job"
    r = subprocess.run([sys.executable, "-m", "distgan.cli", "tune", "--resume", str(exp)], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    table = pd.read_csv(exp / "trials.csv")
    assert len(table) == 2 and set(table["stop_reason"]) == {"completed"}
    # every exploit in a lineage continued another trial's state: its run went on from the donor's
    # step (the exploit decided before the kill was saved with the decision, and carried out)
    lineage = {f.stem: json.loads(f.read_text()) for f in (exp / LINEAGE_DIR).glob("*.json")}
    assert any(lineage.values()), r.stdout[-4000:]
    for trial, records in lineage.items():
        for rec in records:
            assert rec["from_trial"] != trial and rec["from_trial"] in set(table["trial_id"])
            steps = _steps(exp, trial, rec)
            assert steps and min(steps) > rec["step"], (trial, rec, steps)  # went on, not restarted
    trial, (rec, *_) = next((t, r) for t, r in lineage.items() if r)
    assert int(table.set_index("trial_id").loc[trial, "evals"]) == 2
    assert set(rec["params"]) == {"optim.lr_g", "optim.lr_d", "train.n_d"}
    assert rec["params"] != rec["from_params"]  # explored
    for key in ("optim.lr_g", "optim.lr_d"):  # explore stays within the space's bounds
        assert 1.0e-6 <= rec["params"][key] <= 3.0e-3
    assert "lineage of the champion" in r.stdout
    # MLflow: one child per trial, none left RUNNING after the kill, the exploit on the trial's run
    with tracking.served(f"sqlite:///{db}") as url:
        _study_sampled_and_told(exp, "pbt", table, url, "pbt")
        c = MlflowClient(url)
        exp_id = c.get_experiment_by_name("pbt").experiment_id
        (parent,) = c.search_runs([exp_id], f"tags.`{tracking.KIND}` = 'tuning-job'")
        children = tracking.child_runs(c, exp_id, parent.info.run_id)
        assert parent.info.status == "FINISHED"
        assert len(children) == 2 and len({ch.data.tags[tracking.TRIAL] for ch in children}) == 2
        assert all(ch.info.status == "FINISHED" for ch in children)
        (exploited,) = [ch for ch in children if ch.data.tags[tracking.TRIAL] == trial]
        assert exploited.data.tags[tracking.LINEAGE].startswith(f"{rec['from_trial']}@{rec['step']}")
        assert rec["step"] in {m.step for m in c.get_metric_history(exploited.info.run_id, "exploit")}
        assert "lineage.json" in {a.path for a in c.list_artifacts(exploited.info.run_id)}


def test_pb2_exploits_with_the_donors_choices(ray_session, tmp_path, mlflow_server):
    """PB2: the worse trial continues from the better one's checkpoint and step, its learning
    rates within the bounds, its n_D the donor's (PB2 models only continuous keys; its bandit
    needs a change of the distance between two decisions before it moves them, so a first
    decision copies)."""
    space = tmp_path / "pb2.yaml"
    space.write_text(yaml.safe_dump({
        "params": SPACE["params"], "start": SPACE["start"], "budget": SPACE["budget"],
        "scheduler": {"kind": "pb2", "perturbation_interval": 1, "synch": True}}))
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    r = subprocess.run([sys.executable, "-m", "distgan.cli", "tune", "--preset", "ring8", "--space", str(space),
                        "--workers", "1", "--storage", str(tmp_path), "--name", "pb2", "--mlflow-uri", mlflow_server,
                        "--experiment", "pb2-default", "--set", "data.num_points=8000",
                        "--set", "stop.saturation_evals=0"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    exp = tmp_path / "pb2"
    assert json.loads((exp / "distgan_job.json").read_text())["scheduler"]["kind"] == "pb2"
    lineage = {f.stem: json.loads(f.read_text()) for f in (exp / LINEAGE_DIR).glob("*.json")}
    assert lineage, r.stdout[-4000:]
    trial, (rec, *_) = next(iter(lineage.items()))
    assert rec["from_trial"] != trial and rec["step"] == 100
    assert f"[{trial}] continues from trial {rec['from_trial']} at step 100: " in r.stdout  # the driver says so
    assert rec["params"]["train.n_d"] == rec["from_params"]["train.n_d"] == 2  # the better start's
    for key in ("optim.lr_g", "optim.lr_d"):
        assert 1.0e-6 <= rec["params"][key] <= 3.0e-3
    steps = _steps(exp, trial, rec)
    assert steps == [200]  # went on from the donor's step 100
    c = MlflowClient(mlflow_server)
    (parent,) = c.search_runs([c.get_experiment_by_name("pb2-default").experiment_id],
                              f"tags.`{tracking.KIND}` = 'tuning-job'")
    assert parent.data.params["scheduler"] == "pb2"
    assert parent.data.tags[tracking.STUDY].endswith("optuna.journal")
    _study_sampled_and_told(exp, "pb2", pd.read_csv(exp / "trials.csv"), mlflow_server, "pb2-default")


def _study_sampled_and_told(exp, name: str, table, mlflow_uri: str, experiment: str) -> None:
    """A population job's Optuna study: it drew each trial's starting point (the space's start
    points first) and was told each trial's best distance, also across a SIGKILL and resume."""
    study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(exp / "optuna.journal"))))
    assert len(study.trials) == len(table)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    best = {report.trial_index(t): b for t, b in zip(table["trial_id"], table["best"])}
    for t in study.trials:
        assert t.value == pytest.approx(best[t.number])
    # Tune's trial k started from Optuna's trial k: the params of its MLflow run are those it
    # started with (Ray's result.json is no record of that: a trial restored from a checkpoint
    # gets the driver's last synced copy of it, which may predate its first result)
    c = MlflowClient(mlflow_uri)
    exp_id = c.get_experiment_by_name(experiment).experiment_id
    runs = c.search_runs([exp_id], f"tags.`{tracking.KIND}` = 'trial'")
    assert len(runs) == len(study.trials)
    for run in runs:
        trial = study.trials[report.trial_index(run.data.tags[tracking.TRIAL])]
        started = {k: float(run.data.params[k]) for k in trial.params}
        assert started == pytest.approx(trial.params)
