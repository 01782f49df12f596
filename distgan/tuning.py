"""`distgan tune`: Ray Tune + Optuna over a search space file, FID as the objective.

Each Tune trial is a driver function that builds and fits a TorchTrainer (Train V2 with
TuneReportCallback), so Tune sees every evaluation. The objective is `fid_best`, the
trial's best FID so far: ASHA-stopped trials reach Optuna with their last result, and a
trial is only as good as its best checkpoint. Early stopping: the scheduler (ASHA by
default) plus the plateau and divergence rules of distgan.stopping, whose reason each
trial reports as `stop_reason`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray
import ray.tune
import yaml
from ray.tune import PlacementGroupFactory
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, MedianStoppingRule
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch
from ray.tune.stopper import Stopper

from distgan import tracking
from distgan.config import ConfigError, RunConfig
from distgan.launch import STORAGE_ENV
from distgan.loop import EVALS, evals_at
from distgan.metrics.evaluate import fid_name

DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
OBJECTIVE = "fid_best"
JOB_FILE = "distgan_job.json"
SCHEDULERS = ("asha", "hyperband", "median", "none")
TRIAL_DRIVER_MEMORY = 512 * 1024 ** 2


@dataclass
class Param:
    key: str
    dist: str
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None
    when: dict[str, Any] = field(default_factory=dict)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.dist == "loguniform":
            return trial.suggest_float(self.key, self.low, self.high, log=True)
        if self.dist == "uniform":
            return trial.suggest_float(self.key, self.low, self.high)
        if self.dist == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_categorical(self.key, self.values)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.dist in ("loguniform", "uniform"):
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.dist == "loguniform")
        if self.dist == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high))
        return optuna.distributions.CategoricalDistribution(self.values)


@dataclass
class SearchSpace:
    path: str
    metric: str
    mode: str
    params: list[Param]
    start: list[dict[str, Any]]

    def sample(self, trial: optuna.Trial, base: dict[str, Any]) -> dict[str, Any]:
        """Define-by-run: a conditional parameter is drawn only when its condition holds."""
        out: dict[str, Any] = {}
        for p in self.params:
            if all(out.get(k, base.get(k)) == v for k, v in p.when.items()):
                out[p.key] = p.suggest(trial)
        return out


def load_space(path: str | Path, base: RunConfig) -> SearchSpace:
    """Parse and validate a space against the config schema; every error names file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--space {path}: no such file")
    raw = yaml.safe_load(path.read_text()) or {}

    def bad(msg: str) -> ConfigError:
        return ConfigError(f"space {path.name}: {msg}")

    unknown = set(raw) - {"metric", "mode", "params", "start"}
    if unknown:
        raise bad(f"unknown top-level key {sorted(unknown)[0]!r}")
    metric, mode = raw.get("metric", "fid"), raw.get("mode", "min")
    if metric != "fid" or mode != "min":
        raise bad(f"metric/mode {metric}/{mode}: distgan optimizes fid/min (the FID of the eval protocol)")
    flat = base.flat()
    params: list[Param] = []
    for key, spec in (raw.get("params") or {}).items():
        if key not in flat:
            raise bad(f"params.{key}: unknown config key")
        if not isinstance(spec, dict) or spec.get("dist") not in DISTRIBUTIONS:
            raise bad(f"params.{key}: dist must be one of {DISTRIBUTIONS}")
        extra = set(spec) - {"dist", "low", "high", "values", "when"}
        if extra:
            raise bad(f"params.{key}: unknown field {sorted(extra)[0]!r}")
        p = Param(key, spec["dist"], spec.get("low"), spec.get("high"), spec.get("values"), spec.get("when") or {})
        if p.dist == "choice":
            if not p.values:
                raise bad(f"params.{key}: choice needs a non-empty values list")
            candidates = p.values
        else:
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (p.low, p.high)):
                raise bad(f"params.{key}: {p.dist} needs numeric low and high")
            p.low, p.high = float(p.low), float(p.high)
            if p.low >= p.high:
                raise bad(f"params.{key}: low {p.low:g} must be below high {p.high:g}")
            if p.dist == "loguniform" and p.low <= 0:
                raise bad(f"params.{key}: loguniform bounds must be positive, got low {p.low:g}")
            candidates = [int(p.low), int(p.high)] if p.dist == "int" else [p.low, p.high]
        for cond in p.when:
            if cond not in flat:
                raise bad(f"params.{key}: condition on a missing key {cond!r}")
        for value in candidates:  # every value must make a valid config
            try:
                base.with_overrides({key: value})
            except ConfigError as e:
                raise bad(f"params.{key}: {e}") from None
        params.append(p)
    if not params:
        raise bad("params: the space is empty")
    start = raw.get("start") or []
    for point in start:
        try:
            base.with_overrides(point)
        except ConfigError as e:
            raise bad(f"start: {e}") from None
    return SearchSpace(str(path), metric, mode, params, start)


def trial_resources() -> PlacementGroupFactory:
    """The trial driver only waits on its TorchTrainer: it holds memory, no CPU (Tune refuses
    an empty request), so CPUs go to the Train workers and, left free, to Ray Data, whose
    file-listing task needs a whole CPU and cannot run inside a fractional trial bundle."""
    return PlacementGroupFactory([{"memory": TRIAL_DRIVER_MEMORY}])


def max_concurrent_trials(cfg: RunConfig, resources: dict[str, float]) -> int:
    """How many trials fit at once: GPUs // GPUs per trial, and CPUs // CPUs per trial
    (its workers plus what it leaves free for Ray Data)."""
    s = cfg.scaling
    per_trial_cpu = s.num_workers * s.cpus_per_worker + s.data_cpus
    fit = int(resources.get("CPU", 0) // per_trial_cpu)
    if s.use_gpu:
        fit = min(fit, int(resources.get("GPU", 0) // (s.num_workers * s.gpus_per_worker)))
    return max(1, fit)


def evals_budget(cfg: RunConfig) -> int:
    return evals_at(cfg.train.steps, cfg.train.eval_every)


@dataclass
class JobSpec:
    """What a tuning job needs to run and to resume: stored as distgan_job.json."""
    name: str
    storage: str
    base: dict[str, Any]
    space_path: str
    space_text: str
    data_dir: str
    trials: int
    scheduler: str
    grace_period: int
    reduction_factor: int
    max_concurrent: int
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)
    mlflow_uri: str = ""
    experiment: str = ""

    @property
    def experiment_dir(self) -> Path:
        return Path(self.storage) / self.name

    def save(self) -> None:
        self.experiment_dir.mkdir(parents=True, exist_ok=True)
        (self.experiment_dir / JOB_FILE).write_text(json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, experiment_dir: str | Path) -> "JobSpec":
        f = Path(experiment_dir) / JOB_FILE
        if not f.is_file():
            raise ConfigError(f"--resume {experiment_dir}: not a distgan tuning experiment ({JOB_FILE} missing)")
        return cls(**json.loads(f.read_text()))

    def space(self) -> SearchSpace:
        tmp = self.experiment_dir / "space.yaml"
        tmp.write_text(self.space_text)
        space = load_space(tmp, RunConfig.from_dict(self.base))
        space.path = self.space_path
        return space


def trial_driver(params: dict[str, Any], job: dict[str, Any], parent: dict[str, str]) -> None:
    """One Tune trial: a TorchTrainer run named for the trial id (stable across resume, so an
    interrupted trial continues from its own checkpoints and its own MLflow child run)."""
    from distgan.launch import build_trainer

    cfg = RunConfig.from_dict(job["base"]).with_overrides(params)
    trial_id = ray.tune.get_context().get_trial_id()
    c = tracking.client(parent["uri"])
    run_id = tracking.open_run(c, parent["experiment_id"], {tracking.PARENT: parent["run_id"],
                               tracking.KIND: "trial", tracking.TRIAL: trial_id}, f"trial-{trial_id}", cfg.flat())
    trainer = build_trainer(cfg, job["data_dir"], str(Path(job["storage"]) / job["name"] / "train"),
                            f"trial-{trial_id}", meta={"trial_id": trial_id, "mlflow_run_id": run_id},
                            callbacks=[TuneReportCallback()], prefix=f"[{trial_id}] ",
                            run_log=tracking.RunLog(parent["uri"], run_id), replay=True)
    try:
        with stable_cwd():
            trainer.fit()
    except BaseException:
        tracking.end_run(c, run_id, "FAILED")
        raise
    tracking.end_run(c, run_id, "FINISHED")


@contextlib.contextmanager
def stable_cwd():
    """Run Tune and Train from a directory nothing deletes, then return by path. Seen with
    Ray 2.60: in a job submitted with a working_dir, each new runtime env on a node
    re-extracts the job's package over the old copy, so a process whose cwd is that copy
    finds it gone and Ray's own path handling (os.path.abspath) raises FileNotFoundError."""
    try:
        old = os.getcwd()
    except FileNotFoundError:  # already re-extracted under us
        old = None
    os.chdir(tempfile.gettempdir())
    try:
        yield
    finally:
        if old is not None:
            with contextlib.suppress(OSError):
                os.chdir(old)


class StopReasonStopper(Stopper):
    """Tune's side of the plateau and divergence rules: the trial computed its reason."""

    def __call__(self, trial_id: str, result: dict) -> bool:
        return bool(result.get("stop_reason"))

    def stop_all(self) -> bool:
        return False


def build_scheduler(job: JobSpec, max_t: int):
    if job.scheduler == "asha":
        return AsyncHyperBandScheduler(time_attr=EVALS, max_t=max_t,
                                       grace_period=job.grace_period, reduction_factor=job.reduction_factor)
    if job.scheduler == "hyperband":
        # Asynchronous HyperBand (several ASHA brackets): synchronous HyperBand pauses trials,
        # which a trial driving its own TorchTrainer cannot do.
        return AsyncHyperBandScheduler(time_attr=EVALS, max_t=max_t, brackets=3,
                                       grace_period=job.grace_period, reduction_factor=job.reduction_factor)
    if job.scheduler == "median":
        return MedianStoppingRule(time_attr=EVALS, grace_period=job.grace_period)
    return FIFOScheduler()


def build_tuner(job: JobSpec, space: SearchSpace, parent: dict[str, str], restore: bool = False) -> ray.tune.Tuner:
    base = RunConfig.from_dict(job.base)
    trainable = ray.tune.with_resources(ray.tune.with_parameters(trial_driver, job=job.__dict__, parent=parent),
                                        trial_resources())
    if restore:
        return ray.tune.Tuner.restore(str(job.experiment_dir), trainable=trainable, resume_unfinished=True,
                                      resume_errored=True)
    flat = base.flat()
    searcher = OptunaSearch(space=functools.partial(space.sample, base=flat), metric=OBJECTIVE, mode="min",
                            sampler=optuna.samplers.TPESampler(seed=job.seed, n_startup_trials=min(4, job.trials)),
                            points_to_evaluate=space.start or None)
    return ray.tune.Tuner(
        trainable,
        tune_config=ray.tune.TuneConfig(metric=OBJECTIVE, mode="min", num_samples=job.trials,
                                        search_alg=ConcurrencyLimiter(searcher, job.max_concurrent),
                                        scheduler=build_scheduler(job, evals_budget(base))),
        run_config=ray.tune.RunConfig(name=job.name, storage_path=job.storage, stop=StopReasonStopper(),
                                      failure_config=ray.tune.FailureConfig(max_failures=0), verbose=0))


class JobInterrupted(Exception):
    """Tune stopped on Ctrl-C (it saves the job and returns instead of raising)."""


def new_job(base: RunConfig, space_path: str, trials: int, storage: str | None, name: str | None, scheduler: str,
            grace_period: int, reduction_factor: int, seed: int, preset: str) -> JobSpec:
    """Validate everything a job needs before Ray starts; the data is prepared into the job."""
    from distgan.local import resolve_data

    if trials < 1:
        raise ConfigError(f"--trials {trials}: need at least 1 trial")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler {scheduler}: expected one of {SCHEDULERS}")
    load_space(space_path, base)
    storage = storage or os.environ.get(STORAGE_ENV) or "outputs/tune"
    storage = storage if "://" in storage else str(Path(storage).resolve())
    name = name or f"{Path(space_path).stem}-{preset or 'config'}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (Path(storage) / name / JOB_FILE).exists():
        raise FileExistsError(f"{Path(storage) / name}: a tuning job exists there (use --resume)")
    uri = tracking.check_uri(base.tracking.mlflow_uri or tracking.default_uri())
    data_dir = resolve_data(base, Path(storage) / name)
    return JobSpec(name=name, storage=storage, base=base.to_dict(), space_path=str(space_path),
                   space_text=Path(space_path).read_text(), data_dir=str(data_dir), trials=trials,
                   scheduler=scheduler, grace_period=grace_period, reduction_factor=reduction_factor,
                   max_concurrent=0, seed=seed, meta={"preset": preset}, mlflow_uri=uri,
                   experiment=base.tracking.experiment or tracking.DEFAULT_EXPERIMENT)


def start(job: JobSpec, resume: bool = False, max_concurrent: int = 0) -> list[dict[str, Any]]:
    """Connect to Ray (RAY_ADDRESS or a local instance), size concurrency, run the job under
    its MLflow parent run (continued on resume)."""
    from distgan.launch import check_multinode, check_resources, connect

    space = job.space()  # a resumed job's stored space still validates, before Ray starts
    base = RunConfig.from_dict(job.base)
    connect()
    check_resources(base)
    check_multinode(base, job.storage, job.mlflow_uri)
    if not resume:
        job.max_concurrent = max_concurrent or max_concurrent_trials(base, ray.cluster_resources())
        job.save()
    with tracking.served(job.mlflow_uri) as uri:
        c = tracking.client(uri)
        exp_id = tracking.experiment_id(c, job.experiment)
        parent = {"uri": uri, "experiment_id": exp_id, "run_id": open_parent_run(c, exp_id, job, space)}
        print(f"tuning job {job.name}: {job.trials} trials, {base.scaling.num_workers} workers each, "
              f"{job.max_concurrent} at a time, results in {job.experiment_dir}, MLflow {job.mlflow_uri} "
              f"(experiment {job.experiment!r}, parent run {parent['run_id']})", flush=True)
        try:
            rows = run_job(job, space, parent, restore=resume)
        except BaseException:
            tracking.kill_running_children(c, exp_id, parent["run_id"])
            tracking.end_run(c, parent["run_id"], "KILLED")
            raise
    print(f"results: {job.experiment_dir} (trials.csv, fid_curves.png, param_importances.png)")
    return rows


def open_parent_run(c, exp_id: str, job: JobSpec, space: SearchSpace) -> str:
    tags = {tracking.KIND: "tuning-job", tracking.JOB: job.name}
    run_id = tracking.open_run(c, exp_id, tags, job.name, params={
        "space": Path(job.space_path).name, "trials": job.trials, "scheduler": job.scheduler,
        "grace_period": job.grace_period, "reduction_factor": job.reduction_factor,
        "max_concurrent": job.max_concurrent, "seed": job.seed, "searched": ",".join(p.key for p in space.params)})
    for k, v in {"space_file": job.space_path, "preset": job.meta.get("preset", ""), "git_commit": tracking.git_commit(),
                 "storage": str(job.experiment_dir), "data_dir": job.data_dir,
                 "ray_job_id": os.environ.get(tracking.RAY_JOB_ENV, "")}.items():
        if v:
            c.set_tag(run_id, k, v)
    return run_id


def run_job(job: JobSpec, space: SearchSpace, parent: dict[str, str], restore: bool = False) -> list[dict[str, Any]]:
    """Fit (or resume) the job, then print the trial table, write CSV and plots beside it, and
    give every child run its final status and the parent run the job's summary."""
    from distgan import report

    base = RunConfig.from_dict(job.base)
    with stable_cwd():
        results = build_tuner(job, space, parent, restore).fit()
    # Ctrl-C leaves the running trials TERMINATED in the ResultGrid (the state saved on disk
    # has them unfinished): a trial really ended only when its last result says done, or it erred.
    ended = sum(1 for r in results if r.error is not None or (r.metrics or {}).get("done"))
    if ended < job.trials:
        raise JobInterrupted(f"{ended} of {job.trials} trials ended")
    fid_key = fid_name(base.eval.num_samples)
    rows = report.trial_rows(results, fid_key, evals_budget(base))
    keys = [p.key for p in space.params]
    out = job.experiment_dir
    print(report.format_table(rows, fid_key, keys))
    files = [report.write_csv(rows, out / "trials.csv", keys), report.plot_fid_curves(rows, fid_key, out / "fid_curves.png"),
             *report.plot_optuna(report.optuna_study(rows, {p.key: p.distribution() for p in space.params}), out)]
    for row in rows:
        if row["error_file"]:
            print(f"trial {row['trial_id']} failed: see {row['error_file']}")
    tracking.close_job(tracking.client(parent["uri"]), parent["experiment_id"], parent["run_id"], rows, files)
    return rows
