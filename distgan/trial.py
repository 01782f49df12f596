"""One Tune trial: a driver that fits a TorchTrainer and forwards each evaluation to Tune.

The trial's Train run is named for its lineage, so a resumed trial continues its own run and
its own MLflow child run. Under population-based training a trial may continue from another
trial's state: Tune hands it that trial's checkpoint, the driver starts a new Train run from
it (the step count goes on), and records the exploit (from which trial, at which step, the
donor's parameters and its own new ones) in its MLflow run and in the job's storage.

Train's reports reach Tune through a queue this driver drains (as Ray's TuneReportCallback
does), so the driver can add what only Tune needs: the `evals` clock of the schedulers, the
checkpoint's URI with its scheme, and for PBT the checkpoint itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray
import ray.train
import ray.tune

from distgan import checkpoint, ray_internals, storage, tracking
from distgan.config import RunConfig
from distgan.data.schema import DatasetInfo
from distgan.loop import evals_at
from distgan.progress import REPLAYED
from distgan.rundir import step_names

if TYPE_CHECKING:  # as in trial_driver, the worker module is imported only where it is used
    from distgan.worker import SharedArrays

EVALS = "evals"  # the schedulers' clock: evaluations by this step, so a resumed run keeps its rung
CHECKPOINT_URI = "checkpoint_uri"  # where an evaluation's checkpoint is, scheme included
LINEAGE_DIR = "lineage"


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a job shares, typed, across the Ray boundary."""
    experiment_dir: str
    data: DatasetInfo
    stats: str
    """Location of the job's real statistics (computed once for all trials)."""
    mlflow_uri: str
    experiment_id: str
    parent_run_id: str
    report_checkpoints: bool
    """PBT/PB2: each evaluation's state goes to Tune as a checkpoint, so exploit can copy it."""
    searched: tuple[str, ...]
    arrays: SharedArrays | None = None
    """The job's data read and decoded once into the object store by its driver (small sets),
    shared by every trial; None: each trial streams the Parquet itself."""


@dataclass(frozen=True)
class Origin:
    run_name: str
    initial: str | None = None
    """A checkpoint the new run starts from (another trial's state)."""
    exploit: dict[str, Any] | None = None


def origin(trial_id: str, tune_checkpoint: ray.tune.Checkpoint | None, searched: tuple[str, ...],
           params: dict[str, Any]) -> Origin:
    """Where this trial's state comes from: nothing (a fresh run), its own checkpoint (a
    resumed or paused trial: its own run), or another trial's (an exploit: a new run)."""
    if tune_checkpoint is None:
        return Origin(f"trial-{trial_id}")
    location = storage.uri(tune_checkpoint.filesystem, tune_checkpoint.path)
    meta = json.loads(storage.read_text(storage.join(location, checkpoint.METRICS)))
    if meta.get("trial_id") == trial_id:
        return Origin(meta.get("run_name") or f"trial-{trial_id}")
    donor_cfg = json.loads(storage.read_text(storage.join(location, checkpoint.CONFIG)))
    flat = RunConfig.from_dict(donor_cfg).flat()
    step = int(meta["step"])
    record = {"from_trial": meta["trial_id"], "step": step, "from_params": {k: flat[k] for k in searched},
              "params": {k: params[k] for k in searched if k in params}}
    return Origin(exploit_run(trial_id, record), location, record)


def exploit_run(trial_id: str, record: dict) -> str:
    """The Train run an exploit starts (named for the donor and its step)."""
    return f"trial-{trial_id}-from-{record['from_trial']}-{record['step']}"


def lineage_file(experiment_dir: str, trial_id: str) -> str:
    return storage.join(experiment_dir, LINEAGE_DIR, f"{trial_id}.json")


def read_lineage(experiment_dir: str, trial_id: str) -> list[dict]:
    try:
        return json.loads(storage.read_text(lineage_file(experiment_dir, trial_id)))
    except FileNotFoundError:
        return []


def record_exploit(ctx: TrialContext, trial_id: str, record: dict, run_id: str | None) -> None:
    """Once per exploit (a resumed trial meets the same one again): the job's storage keeps
    every trial's exploits for `distgan tune` to print the champion's lineage; MLflow shows
    them on the trial's run (logged again on the repeat, idempotently)."""
    records = read_lineage(ctx.experiment_dir, trial_id)
    if not any(r["from_trial"] == record["from_trial"] and r["step"] == record["step"] for r in records):
        records.append(record)
        storage.write_text(lineage_file(ctx.experiment_dir, trial_id), json.dumps(records, indent=2))
        print(f"[{trial_id}] continues from trial {record['from_trial']} at step {record['step']}: "
              f"{describe_change(record)}", flush=True)
    if run_id is not None:  # again on a resume: a kill may have cut the logging short
        tracking.log_lineage(ctx.mlflow_uri, run_id, records, exploit_step=record["step"])


def settle_lineage(ctx: TrialContext, trial_id: str, run_name: str, run_id: str | None) -> None:
    """A trial that goes on with its own state keeps only the exploits that led to it: one
    recorded just before the job was killed, but which Tune resumed without (its experiment
    state was saved before the decision), is not the trial's history."""
    records = read_lineage(ctx.experiment_dir, trial_id)
    runs = [exploit_run(trial_id, r) for r in records]
    kept = records[:runs.index(run_name) + 1] if run_name in runs else []
    if kept != records:
        storage.write_text(lineage_file(ctx.experiment_dir, trial_id), json.dumps(kept, indent=2))
        gone = ", ".join(f"{r['from_trial']}@{r['step']}" for r in records[len(kept):])
        print(f"[{trial_id}] goes on from its own run {run_name}: not part of its lineage: {gone}", flush=True)
    if run_id is not None and records:  # again on a resume: a kill may have cut the logging short
        tracking.log_lineage(ctx.mlflow_uri, run_id, kept, exploit_step=None)


def describe_change(record: dict) -> str:
    parts = []
    for k, new in record["params"].items():
        old = record["from_params"].get(k)
        parts.append(f"{k} {_short(old)} -> {_short(new)}" if old != new else f"{k} {_short(new)}")
    return ", ".join(parts)


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def to_tune(metrics: dict, eval_every: int) -> dict:
    return {**metrics, EVALS: float(evals_at(int(metrics["step"]), eval_every))}


class AtBest:
    """A second objective's value at the trial's best-distance evaluation so far (what Optuna
    is told when the trial ends, beside fd_best). An evaluation that did not measure it (a
    diverged one) counts as the objective's worst."""

    def __init__(self, fd_key: str, objective):
        self.fd_key, self.objective = fd_key, objective
        self.best, self.value = float("inf"), objective.worst if objective else 0.0

    def __call__(self, metrics: dict) -> dict:
        if self.objective is None:
            return {}
        fd = metrics.get(self.fd_key, float("inf"))
        if fd < self.best:
            self.best, self.value = fd, float(metrics.get(self.objective.metric, self.objective.worst))
        return {self.objective.at_best: self.value}


def replay(run_dir: str, eval_every: int, meta: dict, at_best: AtBest) -> int:
    """Report a resumed run's past evaluations again, from its newest checkpoint's history.
    After Ctrl-C (or a killed driver) a Train run can get ahead of what Tune recorded; seen:
    a trial that finished all its steps then, resumed with nothing left to train, ended one
    evaluation short in Tune. Steps Tune already has come twice; the trial table keeps the
    first. Returns how many were replayed."""
    names = step_names(run_dir)
    for name in names:
        try:
            history = json.loads(storage.read_text(storage.join(run_dir, name, checkpoint.HISTORY)))
        except (FileNotFoundError, ValueError):
            continue
        kept = set(names)
        for h in history:
            step_dir = checkpoint.dir_name(int(h["step"]))
            where = {CHECKPOINT_URI: storage.join(run_dir, step_dir)} if step_dir in kept else {}
            ray.tune.report({**to_tune(h, eval_every), **meta, REPLAYED: 1.0, **where, **at_best(h)})
        return len(history)
    return 0


def to_tune_report(eval_every: int, report_checkpoints: bool, at_best: AtBest):
    """What the trial driver does with each report of its Train run: hand it to Tune, with
    the schedulers' clock, the checkpoint's URI, a second objective at the best distance and,
    for PBT, the checkpoint itself."""

    def report(metrics: dict, where: str | None) -> None:
        ckpt = None
        if where is not None and report_checkpoints:
            fs, path = storage.resolve(where)
            ckpt = ray.tune.Checkpoint(path=path, filesystem=fs)
        ray.tune.report({**to_tune(metrics, eval_every), **({CHECKPOINT_URI: where} if where else {}),
                         **at_best(metrics)}, checkpoint=ckpt)
    return report


def trial_driver(params: dict[str, Any], job, ctx: TrialContext) -> None:
    """One Tune trial (`job` is the tuning.JobSpec)."""
    from distgan.launch import drive, fd_key
    from distgan.worker import WorkerSpec

    cfg = RunConfig.from_dict(job.base).with_overrides(params)
    trial_id = ray.tune.get_context().get_trial_id()
    ray_internals.quiet_tune_storage()
    came_from = origin(trial_id, ray.tune.get_checkpoint(), ctx.searched, params)
    log = tracking.RunLog.for_trial(ctx.mlflow_uri, ctx.experiment_id, ctx.parent_run_id, trial_id, cfg.flat(),
                                    spool=storage.join(ctx.experiment_dir, "train", came_from.run_name, "mlflow_spool"))
    if came_from.exploit is not None:
        record_exploit(ctx, trial_id, came_from.exploit, log.run_id if log else None)
    else:
        settle_lineage(ctx, trial_id, came_from.run_name, log.run_id if log else None)
    meta = {"trial_id": trial_id, "run_name": came_from.run_name, "mlflow_run_id": log.run_id if log else ""}
    train_dir = storage.join(ctx.experiment_dir, "train")
    at_best = AtBest(fd_key(cfg), job.sweep().objective)
    replay(storage.join(train_dir, came_from.run_name), cfg.train.eval_every, meta, at_best)
    spec = WorkerSpec(cfg, ctx.data, ctx.stats, meta=meta, initial=came_from.initial, arrays=ctx.arrays)
    try:
        drive(spec, storage.join(train_dir, came_from.run_name),
              to_tune_report(cfg.train.eval_every, ctx.report_checkpoints, at_best), run_log=log)
    except BaseException:
        if log is not None:
            log.end("FAILED")
        raise
    if log is not None:
        log.end("FINISHED")
