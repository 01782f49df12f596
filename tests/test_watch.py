"""The watch scheduler: its decisions on Tune's TrialScheduler API (real Tune trials), and a
real small-data job on a real local Ray in which D overfits, stopped as `d_overfit` with its
earlier best checkpoint kept and promoted to a real MLflow registry."""

import json

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from distgan import tracking
from distgan.cli import main
from distgan.data import prepare
from distgan.stopping import WatchRules
from distgan.trial import EVALS
from distgan.watch import WATCH_FILE, WatchScheduler, read_reasons


def _result(evals: int, fd: float, se: float = 1.0, **kw) -> dict:
    return {EVALS: evals, "fd_lenet2k": fd, "fd_lenet2k_se": se, "r_t": 0.5, "d_gap": 0.0, **kw}


def test_rungs_and_reasons_are_kept_beside_the_job_and_a_restored_scheduler_judges_alike(tmp_path):
    sched = WatchScheduler("fd_lenet2k", 8, str(tmp_path), WatchRules(patience=0), grace_period=1, reduction_factor=2)
    assert sched.rungs_at == [1, 2, 4]
    good, bad, late = (Trial("__fake", config={}, stub=True) for _ in range(3))
    assert sched.on_trial_result(None, good, _result(1, 40.0)) == TrialScheduler.CONTINUE  # first at its rung
    assert sched.on_trial_result(None, bad, _result(1, 41.0)) == TrialScheduler.CONTINUE  # within 2 x sqrt(2)
    assert sched.on_trial_result(None, good, _result(2, 30.0)) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, bad, _result(2, 50.0)) == TrialScheduler.STOP  # worse beyond the noise
    assert read_reasons(str(tmp_path))[bad.trial_id]["reason"] == "dominated"
    # a resumed job's scheduler is the one pickled when the job began: it reads watch.json first
    again = WatchScheduler("fd_lenet2k", 8, str(tmp_path), WatchRules(patience=0), grace_period=1, reduction_factor=2)
    assert again.on_trial_result(None, late, _result(2, 49.0)) == TrialScheduler.STOP  # the rung remembers good's 30
    assert again.on_trial_result(None, late, _result(2, 49.0)) == TrialScheduler.CONTINUE  # replayed: no new decision
    saved = json.loads((tmp_path / WATCH_FILE).read_text())
    assert set(saved["reasons"]) == {bad.trial_id, late.trial_id} and set(saved["rungs"]["2"]) == {
        good.trial_id, bad.trial_id, late.trial_id}
    # the budget's last evaluation ends a trial anyway: never a stop reason there
    assert again.on_trial_result(None, bad, _result(8, 99.0)) == TrialScheduler.CONTINUE


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_small_data_job_where_d_overfits_stops_as_d_overfit_and_promotes_its_earlier_best(
        ray_session, mlflow_server, tmp_path, capsys):
    """60 training digits and 40 held out: D learns to tell the digits it trains on from unseen
    ones (d_gap -> 0.9), and the distance climbs from its low as it does. watch stops the trial
    as d_overfit, the best checkpoint is the earlier one, and promotion takes it."""
    x, y = prepare.mnist_embedded_arrays()
    rows = prepare.shuffled_order(len(x))[:100]
    data = tmp_path / "digits"
    prepare.write_shards(str(data), "mnist-embedded", "uint8", 10, [im.tobytes() for im in x[rows]], y[rows],
                         (28, 28, 1), heldout=0.4)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"params": {"optim.beta1": {"dist": "choice", "values": [0.5]}},
                                     "budget": {"trials": 1, "steps": 1500, "eval_every": 100},
                                     "scheduler": {"kind": "watch", "patience": 0}}))
    args = ["tune", "--preset", "mnist_smoke", "--space", str(space), "--workers", "1", "--storage", str(tmp_path),
            "--name", "overfit", "--mlflow-uri", mlflow_server, "--experiment", "overfit",
            "--set", f"data.path={data}", "--set", "optim.lr_d=2e-3", "--set", "optim.lr_g=2e-3",
            "--set", "train.ema=0", "--set", "model.d_width=32", "--set", "stop.saturation_evals=0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    (row,) = pd.read_csv(tmp_path / "overfit" / "trials.csv").to_dict("records")
    assert row["stop_reason"] == "d_overfit" and row["evals"] < 15, row
    assert "stopped at evaluation" in out and "d_overfit (r_t" in out and row["stop_why"].startswith("r_t ")
    assert row["best_step"] < row["evals"] * 100  # the best came before the stop ...
    assert row["checkpoint"].endswith(f"step_{row['best_step']:07d}")  # ... and it is the checkpoint kept
    c = MlflowClient(mlflow_server)
    exp = c.get_experiment_by_name("overfit").experiment_id
    (child,) = [r for r in c.search_runs([exp]) if r.data.tags.get(tracking.KIND) != "tuning-job"]
    assert child.data.tags[tracking.STOP_REASON] == "d_overfit" and child.info.status == "FINISHED"
    gaps = [m.value for m in sorted(c.get_metric_history(child.info.run_id, "d_gap"), key=lambda m: m.step)]
    assert gaps[-1] > 0.5 and gaps[-1] > gaps[0] + 0.3  # D came to tell its training digits from unseen ones
    assert main(["promote", "--mlflow-uri", mlflow_server, "--experiment", "overfit", "--eval-n", "500",
                 "--model-name", "overfit-g"]) == 0
    version = c.get_model_version_by_alias("overfit-g", "champion")
    assert int(version.tags["step"]) == row["best_step"]  # the earlier best, not the last state
