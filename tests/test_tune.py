"""Tuning on a real local Ray with real Optuna: sampling, the watch scheduler, ASHA, stoppers, errors, the live
table and the study on disk, Ctrl-C and resume, exit codes."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from distgan import cluster, presets, sweep, tracking
from distgan.cli import main
from distgan.config import ConfigError
from distgan.report import trial_rows
from distgan.cluster import TRAIN_RUN
from distgan.trial import EVALS, TrialContext, lineage_file, read_lineage, settle_lineage
from distgan.rundir import RAY_SNAPSHOT
from distgan.study import STUDY_FILE
from distgan.tuning import JOB_FILE, build_scheduler

from consoles import INTERNALS, assert_only_distgans_lines

pytestmark = pytest.mark.slow

# ring8 trials short enough for CI: 4 evaluations of 100 steps each
BASE_SETS = ["data.num_points=8000", "stop.saturation_evals=0"]
GOOD = {"optim.lr_g": 1.0e-3, "optim.lr_d": 1.0e-3, "loss.kind": "ns", "train.batch_size": 128}
SLOW = {"optim.lr_g": 1.0e-6, "optim.lr_d": 1.0e-6, "loss.kind": "ns", "train.batch_size": 128}
DIVERGING = {"optim.lr_g": 50.0, "optim.lr_d": 50.0, "loss.kind": "wgan-gp", "train.batch_size": 128}
# a batch larger than the worker's 8,000 points: the trial fails with an error
CRASHING = {"optim.lr_g": 2.0e-3, "optim.lr_d": 2.0e-3, "loss.kind": "ns", "train.batch_size": 20000}
SPACE = {
    "params": {
        "optim.lr_g": {"dist": "loguniform", "low": 1.0e-6, "high": 100.0},
        "optim.lr_d": {"dist": "loguniform", "low": 1.0e-6, "high": 100.0},
        "loss.kind": {"dist": "choice", "values": ["ns", "hinge", "wgan-gp"]},
        "loss.gp_weight": {"dist": "uniform", "low": 1.0, "high": 20.0, "when": {"loss.kind": "wgan-gp"}},
        "train.batch_size": {"dist": "choice", "values": [128, 20000]},
    },
}
# the whole sweep in the file: the command line gives no trial count, steps or scheduler
BUDGET = {"budget": {"trials": 5, "steps": 400, "eval_every": 100},
          "scheduler": {"kind": "watch", "grace_period": 1, "reduction_factor": 2}}


def _space(tmp_path, start, **extra):
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump({**SPACE, "start": start, **extra}))
    return p


def _tune_args(space, storage, name, mlflow_uri, experiment, *extra):
    args = ["tune", "--preset", "ring8", "--space", str(space), "--workers-per-trial", "1", "--storage", str(storage),
            "--name", name, "--mlflow-uri", mlflow_uri, "--experiment", experiment, *extra]
    for s in BASE_SETS:
        args += ["--set", s]
    return args


@pytest.mark.timeout(900)
def test_tuning_job_samples_stops_early_and_survives_bad_trials(ray_session, mlflow_server, tmp_path, capsys):
    space = _space(tmp_path, [GOOD, SLOW, DIVERGING, CRASHING], **BUDGET)
    # one trial at a time: watch (as ASHA) judges each trial at a rung against the finished ones (with
    # trials side by side, the first to reach a rung always goes on), so the slow one meets the good one's numbers
    assert main(_tune_args(space, tmp_path, "job", mlflow_server, "tune-five", "--max-concurrent", "1")) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "job" / "trials.csv")
    assert len(table) == 5  # the file's budget
    by_lr = {round(row["optim.lr_g"], 9): row for _, row in table.iterrows()}
    good, slow, diverging = by_lr[1.0e-3], by_lr[1.0e-6], by_lr[50.0]
    crashed = table[table["stop_reason"] == "error"]
    assert 2.0e-3 in crashed["optim.lr_g"].round(9).tolist() and (crashed["train.batch_size"] == 20000).all()
    assert all(Path(f).is_file() for f in crashed["error_file"])
    assert "rows x 1 workers: more than the data set's 7600" in Path(crashed["error_file"].iloc[0]).read_text()
    assert diverging["stop_reason"] == "diverged" and diverging["evals"] == 1
    assert good["evals"] == 4 and math.isfinite(good["best"])  # the file's steps / eval_every
    # watch (the file's scheduler) stopped the slow-learning trial at a rung, before its budget, as
    # worse than the rung's cutoff by more than the noise of the two distances, and says so
    assert slow["stop_reason"] == "dominated" and slow["evals"] < 4
    assert "against the rung's top 1/2 cutoff" in slow["stop_why"] and "stopped at evaluation" in out
    assert good["stop_reason"] == "completed" and pd.isna(good["stop_why"])
    starts = (1e-3, 1e-6, 50.0, 2e-3)
    (row,) = [r for _, r in table.iterrows() if round(r["optim.lr_g"], 9) not in starts]
    # Optuna's TPE drew the fifth trial from the space, after the four starting points
    assert 1e-6 <= row["optim.lr_g"] <= 100 and 1e-6 <= row["optim.lr_d"] <= 100
    assert row["loss.kind"] in ("ns", "hinge", "wgan-gp")
    assert (row["loss.kind"] == "wgan-gp") == (not pd.isna(row["loss.gp_weight"]))
    assert table["best"].iloc[0] == table["best"].min()  # sorted by best distance
    assert str(good["checkpoint"]).startswith(str(tmp_path / "job" / "train"))
    for png in ("fd_curves.png", "param_importances.png", "parallel_coordinates.png"):
        assert (tmp_path / "job" / png).read_bytes()[:4] == b"\x89PNG"
    assert "best fd_coords2k" in out and "diverged" in out and "fid2k" not in out  # coordinates, not Inception
    # the live table, as plain lines (not a terminal), during the job: a trial still running, an ETA
    assert any(" RUNNING " in line for line in out.splitlines()) and "evaluations, ETA" in out
    # the study lives on disk: optuna (and optuna-dashboard) open it after the job
    study = optuna.load_study(study_name="job", storage=JournalStorage(JournalFileBackend(
        str(tmp_path / "job" / STUDY_FILE))))
    assert len(study.trials) == 5 and study.best_value == pytest.approx(table["best"].min())
    # `distgan tune status` reads the same table from the job's storage
    assert main(["tune", "status", str(tmp_path / "job")]) == 0
    status = capsys.readouterr().out
    assert "TERMINATED" in status and "ERROR" in status and "5 of 5 trials ended" in status
    # each trial's MLflow child run ended as the trial really did
    runs, parent = _child_runs(mlflow_server, "tune-five")
    assert len(runs) == 5
    assert parent.data.params["scheduler"] == "watch" and parent.data.params["trials"] == "5"
    assert parent.data.tags[tracking.STUDY].endswith(STUDY_FILE)
    status = {round(float(r.data.params["optim.lr_g"]), 9): r for r in runs}
    assert status[1e-6].info.status == "KILLED" and status[1e-6].data.tags["stop_reason"] == "dominated"
    assert status[1e-6].data.tags[tracking.STOP_WHY] == slow["stop_why"]
    # the signals of every evaluation are in MLflow: the distance's noise, r_t and D's held-out gap
    logged = set(status[1e-3].data.metrics)
    assert {"fd_coords2k_se", "r_t", "r_train", "r_held", "d_gap", "d_gap_se"} <= logged, logged
    assert status[2e-3].info.status == "FAILED" and status[2e-3].data.tags["stop_reason"] == "error"
    assert status[50.0].info.status == "FINISHED" and status[50.0].data.tags["stop_reason"] == "diverged"
    assert status[1e-3].info.status == "FINISHED" and status[1e-3].data.tags["stop_reason"] == "completed"
    assert status[1e-3].data.params["train.steps"] == "400"


def _child_runs(uri: str, experiment: str) -> tuple[list, object]:
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment).experiment_id
    (parent,) = c.search_runs([exp], f"tags.`{tracking.KIND}` = 'tuning-job'")
    assert parent.info.status == "FINISHED"
    return tracking.child_runs(c, exp, parent.info.run_id), parent


def _reported(exp: Path) -> dict[str, list[tuple]]:
    """Per trial directory, the (iteration, timestamp) of every result Tune wrote so far."""
    rows = {}
    for f in exp.glob("trial_driver_*/result.json"):
        lines = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        rows[f.parent.name] = [(r["training_iteration"], r["timestamp"]) for r in lines]
    return rows


@pytest.mark.timeout(900)
def test_interrupted_job_exits_130_and_resumes_without_rerunning_finished_trials(ray_session, mlflow_server, tmp_path):
    # evaluation windows long enough that Ctrl-C lands while the second trial trains: it is sent
    # at the second's first report, and that trial has three windows (~5 s each on 2 cores) to go
    space = _space(tmp_path, [GOOD, GOOD], budget={"steps": 1600, "eval_every": 400})
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    cmd = [sys.executable, "-m", "distgan.cli", *_tune_args(space, tmp_path, "job", mlflow_server, "tune-resume",
                                                             "--trials", "2", "--scheduler", "none",
                                                             "--max-concurrent", "1")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    exp = tmp_path / "job"
    deadline = time.time() + 600
    # one trial at a time: once the second has reported (and checkpointed) once, the first is over;
    # the driver prints each evaluation as Tune gets it (Tune's result files may be written later)
    lines, reporting = [], set()
    for line in proc.stdout:
        lines.append(line)
        found = re.match(r"^\[(\w+)\] step \d+ \|", line)
        if found:
            reporting.add(found.group(1))
        if len(reporting) == 2 or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    out = "".join(lines) + proc.communicate(timeout=300)[0]
    assert proc.returncode == 130, out[-3000:]
    assert "resume with  distgan tune --resume" in out, out[-3000:]
    first = {name: rows for name, rows in _reported(exp).items() if len(rows) == 4}
    assert len(first) == 1, _reported(exp)  # one trial finished, the other was cut off and must continue
    r = subprocess.run([sys.executable, "-m", "distgan.cli", "tune", "--resume", str(exp)], env=env,
                       capture_output=True, text=True, timeout=700)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert_only_distgans_lines(r.stdout, r.stderr)
    table = pd.read_csv(exp / "trials.csv")
    assert len(table) == 2 and (table["evals"] == 4).all()
    for name, rows in first.items():  # finished trials were not run again
        assert _reported(exp)[name] == rows
    runs, _ = _child_runs(mlflow_server, "tune-resume")  # one parent (asserted inside), continued
    assert len(runs) == 2 and len({r.data.tags[tracking.TRIAL] for r in runs}) == 2
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in runs:  # an interrupted trial continued its own run: one distance per evaluation, no repeats
        steps = [m.step for m in MlflowClient(mlflow_server).get_metric_history(run.info.run_id, "fd_coords2k")]
        assert len(steps) == len(set(steps)) == 4
    # the resumed job continued its study on disk
    study = optuna.load_study(study_name="job", storage=JournalStorage(JournalFileBackend(str(exp / STUDY_FILE))))
    assert len(study.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


@pytest.mark.timeout(600)
def test_a_job_whose_every_trial_fails_exits_1_and_says_why_in_one_line(ray_session, mlflow_server, tmp_path):
    space = _space(tmp_path, [CRASHING], budget={"trials": 1, "steps": 200, "eval_every": 100})
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    r = subprocess.run([sys.executable, "-m", "distgan.cli", *_tune_args(space, tmp_path, "failing", mlflow_server,
                                                                       "tune-fail", "--scheduler", "none")],
                       env=env, capture_output=True, text=True, timeout=500)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    # no traceback from Tune: the job's one line, and the trial's cause in one line beside its error file
    assert r.stderr.strip().splitlines() == ["distgan: failed: every one of the 1 trials failed: see their error "
                                             "files above"], r.stderr[-3000:]
    assert re.search(r"^trial \w+ failed: DataError: train.batch_size x train.n_d = 20000 rows x 1 workers: more than "
                     r"the data set's 7600 \(traceback: .*error.txt\)$", r.stdout, re.M), r.stdout[-3000:]
    assert not [line for line in r.stdout.splitlines() if INTERNALS.search(line)]
    # a batch the data cannot hold fails before any Train worker starts (each attempt would fail alike)
    assert not list((tmp_path / "failing" / "train").glob(f"*/{RAY_SNAPSHOT}"))
    assert pd.read_csv(tmp_path / "failing" / "trials.csv")["error"].iloc[0].startswith("DataError: train.batch_size")


ONE = {"train.n_d": {"dist": "choice", "values": [1]}}


@pytest.mark.parametrize("edit, message", [
    ({"params": {"optim.lr_gg": {"dist": "loguniform", "low": 1e-4, "high": 1e-3}}}, "params.optim.lr_gg: unknown config key"),
    ({"params": {"optim.lr_g": {"dist": "uniform", "low": 1e-3, "high": 1e-4}}}, "low 0.001 must be below high 0.0001"),
    ({"params": {"optim.lr_g": {"dist": "loguniform", "low": -1, "high": 1e-3}}}, "loguniform bounds must be positive"),
    ({"params": {"loss.gp_weight": {"dist": "uniform", "low": 1, "high": 5, "when": {"loss.kindd": "wgan-gp"}}}},
     "condition on a missing key 'loss.kindd'"),
    ({"params": {"train.n_d": {"dist": "choice", "values": [0, 1]}}}, "train.n_d: 0 is invalid"),
    ({"params": {}}, "the space is empty"),
    # a starting point's key that is not searched would be dropped by the searcher, not run
    ({"params": ONE, "start": [{"train.n_d": 1}, {"train.batch_size": 512}]}, "1].train.batch_size: not a key of params"),
    ({"metric": "fid", "params": {"train.n_d": {"dist": "choice", "values": [1]}}}, "metric: not a setting"),
    ({"budget": {"trials": 0}, "params": {"train.n_d": {"dist": "choice", "values": [1]}}}, "budget.trials: 0 is invalid"),
    ({"budget": {"epochs": 3}, "params": {"train.n_d": {"dist": "choice", "values": [1]}}}, "budget.epochs: unknown key"),
    ({"scheduler": {"kind": "bohb"}, "params": {"train.n_d": {"dist": "choice", "values": [1]}}}, "scheduler 'bohb'"),
    ({"scheduler": {"kind": "pbt", "quantile_fraction": 0.9}, "params": {"train.n_d": {"dist": "choice",
      "values": [1]}}}, "scheduler.quantile_fraction: 0.9 is invalid"),
    ({"scheduler": {"kind": "pbt", "synch": "yes"}, "params": {"train.n_d": {"dist": "choice", "values": [1]}}},
     "scheduler.synch: 'yes' is invalid"),
    ({"scheduler": {"kind": "watch", "patience": "abc"}, "params": ONE}, "scheduler.patience: 'abc' is invalid"),
    # a second objective names what the runs compute, after the distance, with a direction
    ({"objectives": {"info_rho": "max"}, "params": ONE}, "expected {fd: min} first"),
    ({"objectives": {"fd": "min", "loss_g": "min"}, "params": ONE}, "objectives.loss_g: not a metric to trade"),
    ({"objectives": {"fd": "min", "recall": "up"}, "params": ONE}, "objectives.recall: 'up' is invalid"),
    ({"objectives": {"fd": "min", "info_rho": "max"}, "params": ONE}, "measure no codes (set model.codes"),
    ({"objectives": {"fd": "min", "recall": "max"}, "params": ONE}, "add prdc to eval.metrics"),
    ({"objectives": {"fd": "min", "classes_covered": "max", "modes_covered": "max"}, "params": ONE},
     "at most one more"),
    ({"objectives": {"fd": "min", "modes_covered": "max"}, "scheduler": "pb2", "params": ONE}, "pb2 does not use"),
    ({"objectives": {"fd": "min", "classes_covered": "max"}, "scheduler": "pbt", "params": ONE},
     "pbt does not use"),
])
def test_bad_spaces_fail_before_ray_with_one_line(tmp_path, edit, message):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(edit, sort_keys=False))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sweep.load(p, presets.ring8())


def test_bad_cli_input_exits_2_before_ray_starts(tmp_path, capsys):
    assert main(["tune", "--preset", "ring8", "--space", "tune_spaces/ring8.yaml", "--trials", "0"]) == 2
    assert "--trials" in capsys.readouterr().err
    assert main(["tune", "--resume", str(tmp_path)]) == 2
    assert f"{JOB_FILE} missing" in capsys.readouterr().err


def test_default_scheduler_is_watch_and_pb2_refuses_a_space_of_choices_before_anything_is_written(tmp_path):
    from ray.tune.schedulers.pb2 import PB2

    from distgan import tuning
    from distgan.watch import WatchScheduler

    # the default (watch + TPE, on ASHA's rungs at rf 3: docs/benchmarks.md has the bench behind
    # it): a job that names no scheduler gets it, a space of choices too
    ring8 = sweep.load("tune_spaces/ring8.yaml", presets.ring8())
    assert ring8.scheduler is None and sweep.SchedulerSpec().kind == "watch"
    watch = build_scheduler(sweep.SchedulerSpec(), ring8, 27, "fd_coords2k", str(tmp_path / "w"))
    assert isinstance(watch, WatchScheduler) and watch.rungs_at == [1, 3, 9]
    assert isinstance(build_scheduler(sweep.SchedulerSpec(kind="pb2"), ring8, 8, "fd_coords2k"), PB2)
    assert set(ring8.bounds()) == {p.key for p in ring8.params if p.continuous}
    choices = tmp_path / "choices.yaml"
    choices.write_text(yaml.safe_dump({"params": {"train.n_d": {"dist": "choice", "values": [1, 2]}}}))
    job = tuning.new_job(presets.ring8(), str(choices), 2, str(tmp_path / "jobs"), "j", {}, 0, "ring8")
    assert job.schedule().kind == "watch"
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ConfigError, match=r"choices.yaml: pb2 needs at least one continuous .*--scheduler asha"):
        tuning.new_job(presets.ring8(), str(choices), 2, str(tmp_path / "jobs2"), "j2", {"kind": "pb2"}, 0, "ring8")
    assert sorted(tmp_path.rglob("*")) == before  # refused before the job directory or the data exist


def test_pb2_explores_a_loguniform_key_across_its_decades(recwarn):
    """PB2's GP bandit in log10 for loguniform keys: given the same history, its proposals of a
    learning rate in 5e-5..1e-3 reach its lowest decade fraction (below 1e-4: 5 % of the box
    linearly, 23 % of it in log space), where linear PB2 hardly ever goes."""
    import numpy as np
    from ray.tune.experiment import Trial
    from ray.tune.schedulers.pbt import _PBTTrialState

    from distgan.population import ResumablePB2

    core = sweep.load("tune_spaces/dcgan-core.yaml", presets.mnist())
    assert set(core.log_keys()) == {"optim.lr_g", "optim.lr_d"}
    assert build_scheduler(sweep.SchedulerSpec(kind="pb2"), core, 8, "fd_lenet2k")._log_keys == core.log_keys()

    def proposals(log_keys: tuple[str, ...]) -> np.ndarray:
        out = []
        for seed in range(12):
            rng = np.random.default_rng(seed)
            np.random.seed(seed)  # PB2's acquisition restarts draw from numpy's global generator
            pb2 = ResumablePB2(time_attr=EVALS, metric="fd", mode="min", perturbation_interval=1,
                               hyperparam_bounds={"lr": [5e-5, 1e-3]}, log_keys=log_keys)
            trials = [Trial("__fake", config={"lr": float(v)}, stub=True)
                      for v in 10 ** rng.uniform(math.log10(5e-5), -3, 4)]
            for t in trials:
                pb2._trial_state[t] = _PBTTrialState(t)
            for clock in (1, 2, 3):
                for t in trials:
                    pb2._save_trial_state(pb2._trial_state[t], clock, {EVALS: clock, "fd": float(rng.uniform(10, 100)),
                                                                       "training_iteration": clock}, t)
            if log_keys:  # the GP's history holds the logs of what the trials ran with
                assert np.allclose(10 ** pb2.data["lr"].to_numpy()[-4:], [t.config["lr"] for t in trials])
            before = dict(trials[1].config)
            new, _ = pb2._get_new_config(trials[0], trials[1])
            assert trials[1].config == before  # the donor's config is left as it was
            out.append(new["lr"])
        return np.array(out)

    in_log, linear = proposals(("lr",)), proposals(())
    assert ((5e-5 <= in_log) & (in_log <= 1e-3)).all()
    assert (in_log < 1e-4).mean() >= 0.15 and (linear < 1e-4).mean() <= 0.1, (in_log, linear)


def test_shipped_spaces_validate_and_concurrency_follows_resources():
    for name, preset in (("dcgan-core", "mnist"), ("dcgan-wide", "mnist"), ("ring8", "ring8"), ("demo", "mnist")):
        assert sweep.load(f"tune_spaces/{name}.yaml", presets.get(preset)).params
    coded = presets.mnist().with_overrides({"model.codes": 2})
    assert sweep.load("tune_spaces/latent-control.yaml", coded).objective == sweep.Objective("info_rho", "max")
    # the demo's population of two decides synchronously (asynchronously, the first trial to reach an
    # interval finds no score of the other's to rank against, and is never checkpointed for exploiting)
    demo = sweep.load("tune_spaces/demo.yaml", presets.mnist())
    assert build_scheduler(demo.scheduler, demo, 8, "fd_lenet2k")._synch is True
    assert build_scheduler(sweep.SchedulerSpec(kind="pbt"), demo, 8, "fd_lenet2k")._synch is False
    # a population ranks on the current evaluation (what an exploit's checkpoint holds), not on fd_best
    for kind in ("pbt", "pb2"):
        assert build_scheduler(sweep.SchedulerSpec(kind=kind), demo, 8, "fd_lenet2k")._metric == "fd_lenet2k"
    cfg = presets.mnist().with_overrides({"scaling.num_workers": 2})
    fixed = lambda have: cluster.Capacity(have, None, False)  # noqa: E731
    assert cluster.concurrency(cfg, fixed({"CPU": 2}), 16) == 1  # one CPU stays free for Ray Data
    assert cluster.concurrency(cfg, fixed({"CPU": 9}), 16) == 4
    assert cluster.concurrency(cfg, fixed({"CPU": 2}), 16, shared_data=True) == 2  # data read once by the job
    gpu = cfg.with_overrides({"scaling.use_gpu": True, "scaling.gpus_per_worker": 1.0})
    assert cluster.concurrency(gpu, fixed({"CPU": 64, "GPU": 8}), 16) == 4
    # an autoscaling cluster is sized by what it can grow to, not by what is up now
    growing = cluster.Capacity({"CPU": 0}, {"CPU": 64, "GPU": 16}, True)
    assert cluster.concurrency(gpu, growing, 16) == 8
    assert cluster.concurrency(gpu, cluster.Capacity({"CPU": 0}, None, True), 16) == 16  # max unknown: Tune queues


def test_trial_table_counts_a_replayed_evaluation_once():
    """A resumed trial reports its evaluations again (trial.replay); Tune keeps both copies."""
    df = pd.DataFrame({"step": [100, 200, 100, 200, 300], EVALS: [1, 2, 1, 2, 3], "fd_lenet2k": [5.0, 3.0, 5.0, 3.0, 4.0],
                       "stop_reason": [""] * 5, "checkpoint_uri": ["c1", "c2", "c1", "c2", "c3"],
                       "trial_id": ["t1"] * 5, "run_name": ["trial-t1"] * 5})
    result = SimpleNamespace(metrics_dataframe=df, error=None, metrics={"trial_id": "donor"},
                             path="/x/trial_driver_t1", config={"optim.lr_g": 1e-3})
    [row] = trial_rows([result], "fd_lenet2k", max_evals=3, experiment_dir="s3://b/job")
    assert row["curve"] == [[100, 5.0], [200, 3.0], [300, 4.0]]
    assert (row["evals"], row["best_step"], row["checkpoint"], row["stop_reason"]) == (3, 200, "c2", "completed")
    assert row["trial_id"] == "t1"  # Tune's own column, not a PBT donor's last result
    assert row["spools"] == ["s3://b/job/train/trial-t1/mlflow_spool"]


def test_a_trial_going_on_from_its_own_state_keeps_only_the_exploits_that_led_to_it(tmp_path):
    """An exploit recorded just before a kill, which the resumed job did not carry out, leaves
    the lineage; the exploits the trial's state descends from stay."""
    ctx = TrialContext(experiment_dir=str(tmp_path), data=None, stats="", mlflow_uri="", experiment_id="",
                       parent_run_id="", report_checkpoints=True, searched=())
    a, b = {"from_trial": "t2", "step": 100}, {"from_trial": "t3", "step": 200}
    path = Path(lineage_file(str(tmp_path), "t1"))
    for run, kept in [("trial-t1-from-t3-200", [a, b]), ("trial-t1-from-t2-100", [a]), ("trial-t1", [])]:
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps([a, b]))
        settle_lineage(ctx, "t1", run, None)
        assert read_lineage(str(tmp_path), "t1") == kept, run
    path.unlink()
    settle_lineage(ctx, "t1", "trial-t1", None)  # never exploited: nothing written
    assert not path.exists()


def test_a_train_runs_autoscaler_request_is_withdrawn_once_the_run_is_over(monkeypatch):
    """Tune kills a trial's Train controller before it withdraws its request: the job does,
    when the trial ends or goes on in a new Train run (a PBT exploit or pause), and at its end."""
    gone = []
    monkeypatch.setattr(cluster, "withdraw", gone.extend)
    w = cluster.Withdraw()
    t1, t2 = SimpleNamespace(trial_id="t1"), SimpleNamespace(trial_id="t2")
    for trial, result in [(t1, {TRAIN_RUN: "a"}), (t1, {TRAIN_RUN: "a"}), (t2, {TRAIN_RUN: "b"}), (t1, {"step": 1})]:
        w.on_trial_result(0, [], trial, result)
    assert gone == []  # both runs still train
    w.on_trial_result(0, [], t1, {TRAIN_RUN: "c"})
    assert gone == ["a"]  # t1 went on in a new run
    w.on_trial_complete(0, [], t2)
    w.on_trial_error(0, [], t1)
    assert gone == ["a", "b", "c"]
    w.done()  # the job's end: every run it saw, whatever happened to the callbacks
    assert sorted(gone[3:]) == ["a", "b", "c"]


def test_a_second_objective_resolves_to_its_logged_name_and_the_front_is_by_domination():
    from distgan.report import mark_pareto

    p = Path("tune_spaces/ring8.yaml")
    text = yaml.safe_dump({**yaml.safe_load(p.read_text()), "objectives": {"fd": "min", "recall": "max"}},
                          sort_keys=False)
    base = presets.ring8().with_overrides({"eval.metrics": ["fd", "prdc"]})
    assert sweep.load(p, base, text=text).objective == sweep.Objective("recall_coords2k", "max")
    rows = [{"best": fd, "second": r} for fd, r in [(10, 0.5), (12, 0.9), (11, 0.4), (9, 0.1), (math.inf, 1.0)]]
    mark_pareto(rows, sweep.Objective("recall_coords2k", "max"))
    assert [r["pareto"] for r in rows] == [True, True, False, True, False]  # (11, .4) is beaten by (10, .5)


@pytest.mark.timeout(900)
def test_two_objective_job_keeps_its_pareto_front_and_promote_picks_from_it(ray_session, mlflow_server, tmp_path):
    from distgan import api

    space = tmp_path / "two.yaml"
    space.write_text(yaml.safe_dump({
        "params": {"loss.info_weight": {"dist": "uniform", "low": 0.0, "high": 1.0},
                   "optim.lr_g": {"dist": "loguniform", "low": 1e-4, "high": 2e-3}},
        "objectives": {"fd": "min", "info_rho": "max"},
        "budget": {"trials": 3, "steps": 20, "eval_every": 10}, "scheduler": "asha"}, sort_keys=False))
    args = ["tune", "--preset", "mnist_smoke", "--space", str(space), "--workers-per-trial", "1", "--storage",
            str(tmp_path), "--name", "two", "--mlflow-uri", mlflow_server, "--experiment", "two-objectives",
            "--set", "model.codes=2", "--set", "stop.saturation_evals=0"]
    assert main(args) == 0
    table = pd.read_csv(tmp_path / "two" / "trials.csv")
    assert len(table) == 3 and table["info_rho_at_best"].between(0, 1).all() and table["pareto"].any()
    points = list(zip(table["best"], table["info_rho_at_best"]))
    for (fd, rho), on in zip(points, table["pareto"]):  # the front, by hand
        assert on == (not any(f <= fd and r >= rho and (f < fd or r > rho) for f, r in points))
    study = optuna.load_study(study_name="two", storage=JournalStorage(JournalFileBackend(
        str(tmp_path / "two" / STUDY_FILE))))
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE, optuna.study.StudyDirection.MAXIMIZE]
    told = sorted(tuple(t.values) for t in study.trials)
    assert [v for t in told for v in t] == pytest.approx([v for p in sorted(points) for v in p])
    runs, parent = _child_runs(mlflow_server, "two-objectives")
    assert parent.data.tags[tracking.OBJECTIVES] == "fd_lenet500:min,info_rho:max"
    front = set(table[table["pareto"]]["trial_id"])
    assert set(parent.data.tags[tracking.PARETO].split(",")) == front
    artifacts = {a.path for a in MlflowClient(mlflow_server).list_artifacts(parent.info.run_id)}
    assert {"pareto_front.png", "trials.csv"} <= artifacts
    on_front = table[table["pareto"]]
    near = on_front[on_front["best"] <= on_front["best"].min() * 1.1]
    expected = near.sort_values(["info_rho_at_best", "best"], ascending=[False, True])["trial_id"].iloc[0]
    picked = api.promote("two-objectives", mlflow_uri=mlflow_server, eval_n=500, pick="pareto")
    assert picked.tags["trial_id"] == expected
    # the registered coded generator sweeps a code: one row per class, --steps columns
    from PIL import Image

    grid = api.sample(str(tmp_path / "vary.png"), model=picked.model_uri, vary="c2", steps=5, mlflow_uri=mlflow_server)
    assert Image.open(grid).size == (5 * 30 + 2, 10 * 30 + 2)
    with pytest.raises(ConfigError, match="--vary c3: the model has codes c1..c2"):
        api.sample(str(tmp_path / "c3.png"), model=picked.model_uri, vary="c3", mlflow_uri=mlflow_server)
    with pytest.raises(ConfigError, match="--vary slant: expected"):
        api.sample(str(tmp_path / "bad.png"), model=picked.model_uri, vary="slant", mlflow_uri=mlflow_server)
    with pytest.raises(ConfigError, match="--pick fastest"):
        api.promote("two-objectives", mlflow_uri=mlflow_server, pick="fastest")


def test_pbt_never_moves_a_key_that_shapes_the_model_so_a_donors_state_always_fits(tmp_path):
    from ray.tune.schedulers.pbt import _explore

    core = sweep.load("tune_spaces/dcgan-core.yaml", presets.mnist())
    pbt = build_scheduler(sweep.SchedulerSpec(kind="pbt", resample_probability=1.0), core, 8, "fd_lenet2k")
    assert {"model.sn_d", "model.sn_g"} & set(pbt._hyperparam_mutations) == set()
    assert {"optim.lr_g", "optim.lr_d"} <= set(pbt._hyperparam_mutations)
    donor = {"optim.lr_g": 2e-4, "optim.lr_d": 2e-4, "train.n_d": 1, "model.sn_d": False, "model.sn_g": True}
    for _ in range(20):  # every key resampled where allowed: the model's shape is the donor's
        new, _ = _explore(donor, pbt._hyperparam_mutations, 1.0, (1.2, 0.8), pbt._custom_explore_fn)
        assert (new["model.sn_d"], new["model.sn_g"]) == (False, True)
    assert set(core.bounds()) == {"optim.lr_g", "optim.lr_d"}
    only = tmp_path / "only.yaml"
    only.write_text(yaml.safe_dump({"params": {"model.sn_d": {"dist": "choice", "values": [True, False]}}}))
    with pytest.raises(ConfigError, match="only.yaml: pbt has nothing to explore"):
        sweep.load(only, presets.mnist()).mutations()


def test_a_trials_row_shows_the_config_that_made_its_best_checkpoint(tmp_path):
    """Under PBT a trial's final config may have come after its best (an exploit moved it)."""
    ckpt = tmp_path / "step_0000200"
    ckpt.mkdir()
    made = presets.ring8().with_overrides({"optim.lr_g": 4e-4, "train.n_d": 2})
    (ckpt / "config.json").write_text(json.dumps(made.to_dict()))
    df = pd.DataFrame({"step": [100, 200, 300], EVALS: [1, 2, 3], "fd_coords2k": [5.0, 3.0, 4.0],
                       "stop_reason": [""] * 3, "checkpoint_uri": ["gone", str(ckpt), "gone"],
                       "trial_id": ["t1"] * 3, "run_name": ["trial-t1"] * 3})
    final = {"optim.lr_g": 9e-4, "train.n_d": 1}
    result = SimpleNamespace(metrics_dataframe=df, error=None, metrics={}, path="/x/trial_driver_t1", config=final)
    [row] = trial_rows([result], "fd_coords2k", max_evals=3)
    assert row["params"] == {"optim.lr_g": 4e-4, "train.n_d": 2}
    df["checkpoint_uri"] = ["gone"] * 3  # unreadable: the trial's last config, not nothing
    [row] = trial_rows([result], "fd_coords2k", max_evals=3)
    assert row["params"] == final
