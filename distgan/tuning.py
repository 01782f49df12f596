"""`distgan tune` (and `distgan.tune()`): Ray Tune + Optuna over a sweep file, the Fréchet
distance of the run's evaluation protocol as the objective. Every job has an Optuna study:
it is the searcher (ASHA and the others), or it samples a PBT/PB2 population at the start
and is told each trial's best at the end.

Each Tune trial is a driver (distgan.trial) that fits a TorchTrainer, so Tune sees every
evaluation. The objective is `fd_best`, the trial's lowest distance so far: scheduler-stopped
trials reach Optuna with their best, and a trial is only as good as its best checkpoint.
When to stop: the scheduler (distgan's `watch` by default, ASHA and the others: weak trials
stop for good; or PBT/PB2: every trial keeps its compute, the worst continue from the best),
plus the plateau and divergence rules of distgan.stopping, whose reason each trial reports
as `stop_reason`.

Everything a job writes (its job file, the trials' checkpoints, trials.csv, plots, the
lineage of PBT exploits, real statistics) lives under its experiment directory, a local path
or an object-store URI; the Optuna study is a journal file every resume continues.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import math
import os
import posixpath
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import ray.tune
from ray.tune import PlacementGroupFactory
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, MedianStoppingRule
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.stopper import Stopper

from distgan import cluster, console, storage, study, sweep, tracking
from distgan.config import ConfigError, RunConfig, RunFailed, env_seconds
from distgan.data.schema import inspect
from distgan.launch import STORAGE_ENV, await_real_stats, fd_key, put_arrays, ready_cluster, real_stats
from distgan.loop import evals_at
from distgan.rundir import data_location
from distgan.trial import EVALS, TrialContext, read_lineage, trial_driver

OBJECTIVE = "fd_best"
JOB_FILE = "distgan_job.json"
TRIAL_DRIVER_MEMORY = 512 * 1024 ** 2
DEFAULT_TRIALS = 16


class JobInterrupted(Exception):
    """Tune stopped on Ctrl-C (it saves the job and returns instead of raising)."""


class JobFailed(RunFailed):
    """The job ran, and every trial erred."""


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
    scheduler: dict[str, Any]
    max_concurrent: int
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)
    mlflow_uri: str = ""
    experiment: str = ""

    @property
    def experiment_dir(self) -> str:
        return storage.join(self.storage, self.name)

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.base)

    def schedule(self) -> sweep.SchedulerSpec:
        return sweep.SchedulerSpec(**self.scheduler)

    def sweep(self) -> sweep.Sweep:
        return sweep.load(self.space_path, self.config, text=self.space_text)

    def save(self) -> None:
        storage.make_dirs(self.experiment_dir)
        storage.write_text(storage.join(self.experiment_dir, JOB_FILE), json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, experiment_dir: str) -> "JobSpec":
        where = storage.join(storage.normalize(experiment_dir), JOB_FILE)
        try:
            raw = json.loads(storage.read_text(where))
            job = cls(**raw)
        except FileNotFoundError:
            raise ConfigError(f"--resume {experiment_dir}: not a distgan tuning experiment ({JOB_FILE} missing)") from None
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where}: unreadable job file ({str(e).splitlines()[0]})") from None
        job.storage, job.name = posixpath.split(storage.normalize(experiment_dir))  # the job may have moved
        job.sweep()  # a stored space still validates, before Ray starts
        return job


@dataclass
class TuneResult:
    """What a finished tuning job gives back (the Python API's `tune` returns it)."""
    name: str
    experiment_dir: str
    metric: str
    """The distance every FD in this job is measured with, e.g. fd_lenet2k or fid10k."""
    best: float
    best_trial_id: str
    best_config: dict[str, Any]
    best_checkpoint: str
    parent_run_id: str
    trials: Any
    """pandas.DataFrame: one row per trial (trials.csv)."""
    study: str
    """The job's Optuna study (a journal file): the searcher's, or the population's (PBT, PB2)."""
    rows: list[dict[str, Any]] = field(repr=False, default_factory=list)


def new_job(base: RunConfig, space_path: str, trials: int | None, location: str | None, name: str | None,
            scheduler: dict[str, Any], seed: int, preset: str, overrides: dict[str, Any] | None = None) -> JobSpec:
    """Validate everything a job needs before Ray starts; the data is prepared into the job.
    Precedence: the command line (`overrides`, `trials`, `scheduler`) over the sweep file's
    budget and scheduler over the preset (`base`)."""
    overrides = overrides or {}
    found = sweep.load(space_path, base.with_overrides(overrides))
    b = found.budget
    budget = {k: v for k, v in (("train.steps", b.steps), ("train.eval_every", b.eval_every)) if v is not None}
    base = base.with_overrides({**budget, **overrides})
    sweep.load(space_path, base)  # the space against the final config
    trials = trials if trials is not None else (b.trials or DEFAULT_TRIALS)
    if trials < 1:
        raise ConfigError(f"--trials {trials}: need at least 1 trial")
    spec = dataclasses.asdict(found.scheduler) if found.scheduler else dataclasses.asdict(sweep.SchedulerSpec())
    spec.update({k: v for k, v in scheduler.items() if v is not None})
    kind = sweep.SchedulerSpec(**spec).validate("--").kind
    if kind == "pb2":
        found.bounds()
    if kind == "pbt":
        found.mutations()
    if found.objective is not None and kind in sweep.POPULATION:
        raise ConfigError(f"--scheduler {kind}: the space names two objectives, which need Optuna's search (asha, "
                          "hyperband, median or none)")
    cluster.check_address()
    location = storage.check_writable(location or os.environ.get(STORAGE_ENV) or "outputs/tune", "--storage")
    name = name or f"{Path(space_path).stem}-{preset or 'config'}-{time.strftime('%Y%m%d-%H%M%S')}"
    if storage.exists(storage.join(location, name, JOB_FILE)):
        raise FileExistsError(errno.EEXIST, "a tuning job exists there (use --resume)", storage.join(location, name))
    uri = tracking.check_uri(base.tracking.mlflow_uri or tracking.default_uri())
    tracking.check_reachable(uri)
    data_dir = data_location(base, storage.join(location, name))
    return JobSpec(name=name, storage=location, base=base.to_dict(), space_path=str(space_path),
                   space_text=Path(space_path).read_text(), data_dir=data_dir, trials=trials, scheduler=spec,
                   max_concurrent=0, seed=seed, meta={"preset": preset}, mlflow_uri=uri,
                   experiment=base.tracking.experiment or tracking.DEFAULT_EXPERIMENT)


def trial_resources() -> PlacementGroupFactory:
    """The trial driver only waits on its TorchTrainer: it holds memory, no CPU (Tune refuses
    an empty request), so CPUs go to the Train workers and, left free, to Ray Data, whose
    file-listing task needs a whole CPU and cannot run inside a fractional trial bundle."""
    return PlacementGroupFactory([{"memory": TRIAL_DRIVER_MEMORY}])


def evals_budget(cfg: RunConfig) -> int:
    return evals_at(cfg.train.steps, cfg.train.eval_every)


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
    """Tune's side of the plateau and divergence rules (the trial computed its reason), and the
    end of the budget: Tune asks stoppers before the scheduler, so PBT never exploits at a
    trial's last evaluation, which would restart it with nothing left to train."""

    def __init__(self, max_evals: int):
        self.max_evals = max_evals

    def __call__(self, trial_id: str, result: dict) -> bool:
        return bool(result.get("stop_reason")) or result.get(EVALS, 0) >= self.max_evals

    def stop_all(self) -> bool:
        return False


def _explore_within(params: list[sweep.Param]):
    """PBT's explore multiplies values by 0.8 or 1.2 without looking at bounds: clip them."""
    by_key = {p.key: p for p in params}

    def explore(config: dict) -> dict:
        return {k: (by_key[k].clip(v) if k in by_key else v) for k, v in config.items()}

    return explore


def build_scheduler(s: sweep.SchedulerSpec, found: sweep.Sweep, max_t: int, distance: str, experiment_dir: str = ""):
    """The job's scheduler. PBT and PB2 rank trials on `distance`, the current evaluation's
    (what the checkpoint an exploit copies holds), not on fd_best: a trial that peaked and
    decayed would keep its rank and hand out its worse state. watch keeps its decisions in
    `experiment_dir`."""
    if s.kind == "watch":
        from distgan.watch import WatchScheduler

        return WatchScheduler(distance, max_t, experiment_dir, s.rules(), s.grace_period, s.reduction_factor)
    if s.kind == "asha":
        return AsyncHyperBandScheduler(time_attr=EVALS, max_t=max_t, grace_period=s.grace_period,
                                       reduction_factor=s.reduction_factor)
    if s.kind == "hyperband":
        # Asynchronous HyperBand (several ASHA brackets): synchronous HyperBand pauses trials,
        # which a trial driving its own TorchTrainer cannot do cheaply.
        return AsyncHyperBandScheduler(time_attr=EVALS, max_t=max_t, brackets=3, grace_period=s.grace_period,
                                       reduction_factor=s.reduction_factor)
    if s.kind == "median":
        return MedianStoppingRule(time_attr=EVALS, grace_period=s.grace_period)
    if s.kind == "pbt":
        from distgan.population import ResumablePBT

        # keys that shape the model are drawn once and inherited with the donor's state
        return ResumablePBT(time_attr=EVALS, metric=distance, mode="min", perturbation_interval=s.perturbation_interval,
                            hyperparam_mutations=found.mutations(), quantile_fraction=s.quantile_fraction,
                            resample_probability=s.resample_probability, synch=s.synch,
                            custom_explore_fn=_explore_within(found.params))
    if s.kind == "pb2":
        from distgan.population import ResumablePB2  # imports scikit-learn: only when asked for

        return ResumablePB2(time_attr=EVALS, metric=distance, mode="min", perturbation_interval=s.perturbation_interval,
                            hyperparam_bounds=found.bounds(), log_keys=found.log_keys(),
                            quantile_fraction=s.quantile_fraction, synch=s.synch)
    return FIFOScheduler()


def build_tuner(job: JobSpec, found: sweep.Sweep, ctx: TrialContext, restore: bool = False,
                callbacks: list | None = None) -> ray.tune.Tuner:
    base = job.config
    s = job.schedule()
    trainable = ray.tune.with_resources(ray.tune.with_parameters(trial_driver, job=job, ctx=ctx), trial_resources())
    fs, path = storage.resolve(job.storage)
    remote = storage.is_uri(job.storage)
    if restore:
        return ray.tune.Tuner.restore(storage.join(path, job.name) if remote else job.experiment_dir,
                                      trainable=trainable, resume_unfinished=True, resume_errored=True,
                                      storage_filesystem=fs if remote else None)
    flat = base.flat()
    param_space = None
    if s.kind in sweep.POPULATION:
        # PBT and PB2 take no search algorithm: the job's Optuna study samples the population
        # (ask), and is told each trial's best at the end (tell)
        param_space = {p.key: p.tune_domain() for p in found.params}
        points = study.population(job.experiment_dir, job.name, found, flat, job.seed, job.trials)
        search = BasicVariantGenerator(points_to_evaluate=points, random_state=job.seed,
                                       max_concurrent=job.max_concurrent)
    else:
        from ray.tune.search.optuna import OptunaSearch

        console.quiet_loggers()  # optuna's first import set its own to INFO
        two = found.objective
        # two objectives: Optuna's TPE is multi-objective (MOTPE); the scheduler stops on the distance
        searcher = OptunaSearch(space=functools.partial(found.sample, base=flat),
                                metric=[OBJECTIVE, two.at_best] if two else OBJECTIVE,
                                mode=["min", two.mode] if two else "min",
                                sampler=study.sampler(job.seed, job.trials),
                                points_to_evaluate=found.start or None, study_name=job.name,
                                storage=study.journal(job.experiment_dir, job.name))
        search = ConcurrencyLimiter(searcher, job.max_concurrent)
    # PBT copies a donor's latest checkpoint when the exploiting trial restarts: keep a few, so
    # the donor's newer reports cannot delete it first (Ray warns about <= 2)
    keep = ray.tune.CheckpointConfig(num_to_keep=5) if s.kind in sweep.POPULATION else None
    return ray.tune.Tuner(
        trainable, param_space=param_space,
        # a population scheduler names its own metric (the current distance); Tune refuses a second
        tune_config=ray.tune.TuneConfig(**({} if s.kind in sweep.POPULATION else {"metric": OBJECTIVE, "mode": "min"}),
                                        num_samples=job.trials, search_alg=search,
                                        scheduler=build_scheduler(s, found, evals_budget(base), fd_key(base),
                                                                  job.experiment_dir)),
        run_config=ray.tune.RunConfig(name=job.name, storage_path=path if remote else job.storage,
                                      storage_filesystem=fs if remote else None, stop=StopReasonStopper(evals_budget(base)),
                                      failure_config=ray.tune.FailureConfig(max_failures=0), checkpoint_config=keep,
                                      callbacks=callbacks or [], verbose=0))


def start(job: JobSpec, resume: bool = False, max_concurrent: int = 0, say=print) -> TuneResult:
    """Connect to Ray (RAY_ADDRESS or a local instance), size concurrency from what the
    cluster can grow to, compute the real statistics once, run the job under its MLflow
    parent run (continued on resume)."""
    from distgan import live

    found = job.sweep()
    base = job.config
    scale_timeout = env_seconds(cluster.SCALE_TIMEOUT_ENV, cluster.SCALE_TIMEOUT_S)
    reconnect_timeout = env_seconds(tracking.RECONNECT_ENV, tracking.RECONNECT_S)
    tracking.check_reachable(job.mlflow_uri)
    info = inspect(job.data_dir)
    cap, shared = ready_cluster(base, job.storage, info, job.mlflow_uri)
    if not resume:
        job.max_concurrent = max_concurrent or cluster.concurrency(base, cap, job.trials, shared)
        job.save()
    # the statistics are computed on the cluster and the data read while the MLflow server starts
    pending = real_stats(base, info, base.eval.cache_dir or storage.join(job.experiment_dir, "stats"))
    arrays = put_arrays(info) if shared else None  # read once for every trial
    with tracking.served(job.mlflow_uri) as uri:
        c = tracking.client(uri)
        exp_id = tracking.experiment_id(c, job.experiment)
        parent = open_parent_run(c, exp_id, job, found)
        say(f"tuning job {job.name}: {job.trials} trials ({job.schedule().kind}), {base.scaling.num_workers} "
            f"worker(s) each, {job.max_concurrent} at a time, results in {job.experiment_dir}, MLflow "
            f"{tracking.redact(job.mlflow_uri)} (experiment {job.experiment!r}, parent run {parent})")
        requests = cluster.Withdraw()
        try:
            cluster.scale_up(base, min(job.max_concurrent, job.trials), scale_timeout, say, shared_data=shared)
            stats_at = await_real_stats(pending, say)
            table = live.TrialTable(job, fd_key(base), evals_budget(base))
            ctx = TrialContext(job.experiment_dir, info, stats_at, uri, exp_id, parent,
                               job.schedule().kind in sweep.POPULATION, tuple(p.key for p in found.params),
                               arrays=arrays)
            where = storage.join(job.experiment_dir, study.STUDY_FILE)
            c.set_tag(parent, tracking.STUDY, where)
            say(f"Optuna study: {where} (optuna-dashboard {study.location(job.experiment_dir, job.name)})")
            callbacks = [table, requests, study.Sync(job.experiment_dir, job.name)]
            study.fetch(job.experiment_dir, job.name, resume)
            with stable_cwd():
                results = build_tuner(job, found, ctx, restore=resume, callbacks=callbacks).fit()
            # Ctrl-C leaves the running trials TERMINATED in the ResultGrid (the state saved on disk
            # has them unfinished): a trial really ended only when its last result says done, or it erred.
            ended = sum(1 for r in results if r.error is not None or (r.metrics or {}).get("done"))
            if ended < job.trials:
                raise JobInterrupted(f"{ended} of {job.trials} trials ended")
            tracking.await_server(uri, reconnect_timeout, say=say)
            result = finish(job, found, results, c, exp_id, parent, say)
        except BaseException:
            with contextlib.suppress(Exception):
                tracking.kill_running_children(c, exp_id, parent)
                tracking.end_run(c, parent, "KILLED")
            raise
        finally:
            requests.done()
            cluster.release()
            study.push(job.experiment_dir, job.name)
    if all(r["stop_reason"] == "error" for r in result.rows):
        raise JobFailed(f"every one of the {len(result.rows)} trials failed: see their error files above")
    return result


def open_parent_run(c, exp_id: str, job: JobSpec, found: sweep.Sweep) -> str:
    tags = {tracking.KIND: "tuning-job", tracking.JOB: job.name}
    s = job.schedule()
    run_id = tracking.open_run(c, exp_id, tags, job.name, params={
        "space": Path(job.space_path).name, "trials": job.trials, "scheduler": s.kind, "grace_period": s.grace_period,
        "reduction_factor": s.reduction_factor, "perturbation_interval": s.perturbation_interval,
        "max_concurrent": job.max_concurrent, "seed": job.seed, "searched": ",".join(p.key for p in found.params)})
    for k, v in {"space_file": job.space_path, "preset": job.meta.get("preset", ""), "git_commit": tracking.git_commit(),
                 "storage": job.experiment_dir, tracking.DATA_DIR: job.data_dir, tracking.DISTANCE: fd_key(job.config),
                 "ray_job_id": os.environ.get(tracking.RAY_JOB_ENV, "")}.items():
        if v:
            c.set_tag(run_id, k, v)
    return run_id


def finish(job: JobSpec, found: sweep.Sweep, results, c, exp_id: str, parent: str, say) -> TuneResult:
    """The trial table, CSV and plots beside the job; every child run its final status and the
    parent run the job's summary; the champion's lineage under PBT."""
    import pandas as pd

    from distgan import report

    base = job.config
    key = fd_key(base)
    two = found.objective
    rows = report.trial_rows(results, key, evals_budget(base), job.experiment_dir, two)
    keys = [p.key for p in found.params]
    say(report.format_table(rows, key, keys, two))
    for row in rows:
        if row["error_file"]:
            say(f"trial {row['trial_id']} failed: {row['error']} (traceback: {row['error_file']})")
    lineage = {r["trial_id"]: read_lineage(job.experiment_dir, r["trial_id"]) for r in rows}
    if rows and any(lineage.values()):
        say(report.format_lineage(rows[0]["trial_id"], lineage))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if job.schedule().kind in sweep.POPULATION:  # the population's study hears how each trial ended
            outcomes = {report.trial_index(r["trial_id"]): r["best"] for r in rows}
            outcomes.pop(None, None)
            study.tell(job.experiment_dir, job.name, outcomes)
        searched = study.load(job.experiment_dir, job.name)
        searched = searched or report.optuna_study(rows, {p.key: p.distribution() for p in found.params})
        files = [report.write_csv(rows, out / "trials.csv", keys, two), report.plot_curves(rows, key, out / "fd_curves.png"),
                 *report.plot_optuna(searched, out, say)]
        for f in files:
            storage.upload(f, storage.join(job.experiment_dir, f.name))
        spools = {r["trial_id"]: r["spools"] for r in rows}
        tracking.close_job(c, exp_id, parent, rows, files, spools, f"{key}:min,{two.metric}:{two.mode}" if two else "")
        trials = pd.read_csv(out / "trials.csv")
    if two:
        front = [r["trial_id"] for r in rows if r["pareto"]]
        say(f"Pareto front of {key} (min) and {two.metric} (max): {', '.join(front)} (distgan promote --pick pareto)"
            if two.mode == "max" else f"Pareto front of {key} (min) and {two.metric} (min): {', '.join(front)}")
    say(f"results: {job.experiment_dir} (trials.csv, fd_curves.png, param_importances.png"
        f"{', pareto_front.png' if two else ''})")
    best = rows[0] if rows else None
    return TuneResult(name=job.name, experiment_dir=job.experiment_dir, metric=key,
                      best=best["best"] if best else math.inf, best_trial_id=best["trial_id"] if best else "",
                      best_config=base.with_overrides(best["params"]).to_dict() if best else {},
                      best_checkpoint=best["checkpoint"] if best else "", parent_run_id=parent, trials=trials,
                      study=storage.join(job.experiment_dir, study.STUDY_FILE), rows=rows)
