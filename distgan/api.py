"""distgan from Python, for notebooks and pipelines: the same operations as the command line
(which is a thin layer over these functions), with typed results.

    import distgan
    result = distgan.tune("tune_spaces/dcgan-core.yaml", preset="mnist_smoke", trials=2)
    print(result.best, result.best_trial_id, result.best_checkpoint)
    result.trials  # a pandas DataFrame
    promoted = distgan.promote(parent_run=result.parent_run_id)
    distgan.sample("grid.png", model=promoted.model_uri)
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distgan import console
from distgan.config import ConfigError, RunConfig

if TYPE_CHECKING:  # the CLI imports this module before anything heavy
    from distgan.rundir import Best

DEFAULT_MODEL = "distgan-generator"
TRIAL_WORKERS = 2  # Ray Train workers of a trial whose config trains in one process (num_workers 0)


def config(preset: str | None = None, config_file: str | None = None,
           overrides: dict[str, Any] | list[str] | None = None) -> RunConfig:
    """A validated run configuration: a preset (default mnist) or a YAML file, then overrides
    ({dotted.key: value} or ["key=value", ...])."""
    from distgan import presets

    base = presets.load(preset, config_file)
    return base.with_overrides(_overrides(overrides))


def _overrides(overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    from distgan.config import parse_set

    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    return parse_set(list(overrides))


def tune(space: str, preset: str | None = None, config_file: str | None = None,
         overrides: dict[str, Any] | list[str] | None = None, trials: int | None = None,
         workers_per_trial: int | None = None,
         gpus_per_worker: float = 0.0, max_concurrent: int = 0, scheduler: str | None = None,
         grace_period: int | None = None, reduction_factor: int | None = None, perturbation_interval: int | None = None,
         seed: int = 0, storage: str | None = None, shared_storage: bool = False, name: str | None = None,
         mlflow_uri: str | None = None, experiment: str | None = None, say: Callable[[str], None] = print):
    """Start a tuning job and wait for it; returns a `distgan.tuning.TuneResult`. Options as
    `distgan tune`; the sweep file's budget and scheduler apply where these are None, the
    config's scaling.num_workers where workers_per_trial is (TRIAL_WORKERS where that is 0)."""
    console.quiet()  # before the libraries below are imported, as the command line does
    from distgan import presets, tuning

    if workers_per_trial is not None and workers_per_trial < 1:
        raise ConfigError(f"--workers-per-trial {workers_per_trial}: expected at least 1")
    if max_concurrent < 0:
        raise ConfigError(f"--max-concurrent {max_concurrent}: expected 0 (what the cluster allows) or more")
    base = presets.load(preset, config_file)
    sets = {**_overrides(overrides), **_run_sets(workers_per_trial or 0, gpus_per_worker, shared_storage, mlflow_uri,
                                                 experiment)}
    if not base.with_overrides(sets).scaling.num_workers:  # a one-process config: each trial gets Ray Train workers
        sets["scaling.num_workers"] = TRIAL_WORKERS
    schedule = {"kind": scheduler, "grace_period": grace_period, "reduction_factor": reduction_factor,
                "perturbation_interval": perturbation_interval}
    job = tuning.new_job(base, space, trials, storage, name, schedule, seed, preset or "", overrides=sets)
    return tuning.start(job, max_concurrent=max_concurrent, say=say)


def _run_sets(workers: int, gpus_per_worker: float, shared_storage: bool, mlflow_uri: str | None,
              experiment: str | None) -> dict[str, Any]:
    if gpus_per_worker < 0:
        raise ConfigError(f"--gpus-per-worker {gpus_per_worker}: expected 0 (CPU) or more")
    sets: dict[str, Any] = {"scaling.num_workers": workers} if workers else {}
    if gpus_per_worker:
        sets.update({"scaling.use_gpu": True, "scaling.gpus_per_worker": float(gpus_per_worker)})
    if shared_storage:
        sets["scaling.shared_storage"] = True
    if mlflow_uri:
        sets["tracking.mlflow_uri"] = mlflow_uri
    if experiment:
        sets["tracking.experiment"] = experiment
    return sets


def resume(experiment_dir: str, say: Callable[[str], None] = print):
    """Continue an interrupted (or finished) tuning job from its experiment directory."""
    console.quiet()  # before the libraries below are imported, as the command line does
    from distgan import tuning

    return tuning.start(tuning.JobSpec.load(experiment_dir), resume=True, say=say)


def status(experiment_dir: str) -> dict[str, Any]:
    """A job's trial table as status.json holds it (running or finished)."""
    from distgan.progress import read_status

    return read_status(experiment_dir)


def train(out: str, preset: str | None = None, config_file: str | None = None,
          overrides: dict[str, Any] | list[str] | None = None, workers: int = 0, gpus_per_worker: float = 0.0,
          storage: str | None = None, shared_storage: bool = False, resume: bool = False, force: bool = False,
          device: str | None = None, mlflow_uri: str | None = None, experiment: str | None = None,
          progress: bool = True) -> Best | None:
    """One run: in this process (workers=0) or on Ray Train workers; returns the best
    evaluation and its checkpoint (None when the run made no evaluation)."""
    console.quiet()  # before the libraries below are imported, as the command line does
    from distgan import presets, tracking
    from distgan.local import train_local
    from distgan.rundir import RunDir, run_root

    if workers < 0:
        raise ConfigError(f"--workers {workers}: expected 0 (this process) or more")
    if gpus_per_worker and not workers:
        raise ConfigError("--gpus-per-worker needs --workers N (a one-process run uses CUDA when present)")
    sets = _overrides(overrides)
    run_sets = _run_sets(workers, gpus_per_worker, shared_storage, mlflow_uri, experiment)
    if resume:
        if preset or config_file:
            raise ConfigError("--resume takes its config from the run; use --set to change keys")
        root = run_root(out, storage) if workers else str(Path(out).resolve())
        cfg = RunDir.at(root).saved_config().with_overrides({**sets, **run_sets})
    else:
        cfg = presets.load(preset, config_file).with_overrides({**sets, **run_sets})
    with tracking.train_run(cfg, out, resume=resume) as run_log:
        if cfg.scaling.num_workers:
            from distgan import launch

            return launch.run(cfg, out, storage, resume=resume, force=force, run_log=run_log)
        return train_local(cfg, out, resume=resume, force=force, progress=progress, device=device, run_log=run_log)


@dataclass
class Promotion:
    model_name: str
    version: str
    alias: str
    new: bool
    """False when this checkpoint was registered before (only the alias moved)."""
    metric: str
    value: float
    tags: dict[str, str]

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}@{self.alias}"


def promote(experiment: str | None = None, parent_run: str | None = None, model_name: str = DEFAULT_MODEL,
            alias: str = "champion", eval_n: int = 10000, mlflow_uri: str | None = None,
            device: str | None = None, pick: str = "best") -> Promotion:
    """Register a tuning job's best checkpoint (the newest job's unless parent_run), re-evaluated
    with eval_n samples, and point `alias` at it. `pick="pareto"` (a two-objective job): of the
    Pareto trials within 10 % of the best distance, the one best in the second objective."""
    console.quiet()  # before the libraries below are imported, as the command line does
    from distgan import model_registry, tracking

    if pick not in model_registry.PICKS:
        raise ConfigError(f"--pick {pick}: expected one of {model_registry.PICKS}")
    if eval_n < 6:
        raise ConfigError(f"--eval-n {eval_n}: expected at least 6 samples")
    if not alias.strip() or not model_name.strip():
        raise ConfigError("--alias/--model-name: expected non-empty names")
    with tracking.served(tracking.check_uri(mlflow_uri or tracking.default_uri())) as uri:
        v = model_registry.promote(uri, experiment or tracking.DEFAULT_EXPERIMENT, parent_run, model_name, alias, eval_n,
                                   device, pick)
    metric = v.get("promoted_metric", "")
    value = float(v[metric]) if metric in v else float("nan")
    tags = {k: str(val) for k, val in v.items() if k not in ("version", "new")}
    return Promotion(model_name, str(v["version"]), alias, bool(v["new"]), metric, value, tags)


def sample(out: str, model: str = f"models:/{DEFAULT_MODEL}@champion", n: int = 64, label: int | None = None,
           interpolate: tuple[int, int] | None = None, steps: int = 8, seed: int = 0, mlflow_uri: str | None = None,
           force: bool = False, truncation: float = 1.0, vary: str | None = None) -> Path:
    """A PNG grid from a registered generator (class rows, one label, or interpolations);
    `truncation` psi < 1 trades variety for fidelity (toward the mean W of a StyleGAN2-style
    G, else z resampled within 2 psi standard deviations). `vary="c1"`: InfoGAN code c1 swept
    from -2 to 2 along each row (`steps` columns; rows: one per class, else n // steps fixed z)."""
    console.quiet()  # before the libraries below are imported, as the command line does
    from distgan import model_registry, tracking

    code = None
    if vary is not None:
        m = re.fullmatch(r"c([1-9][0-9]*)", str(vary))
        if not m:
            raise ConfigError(f"--vary {vary}: expected a continuous code's name, c1, c2, ...")
        if interpolate:
            raise ConfigError("--vary: sweeps a code along each row; --interpolate too would fight for the columns")
        code = int(m.group(1))
    if n < 1:
        raise ConfigError(f"--n {n}: expected at least 1 image")
    if steps < 2:
        raise ConfigError(f"--steps {steps}: expected at least 2 interpolation steps")
    if not 0 < truncation <= 1:
        raise ConfigError(f"--truncation {truncation}: expected 0 < psi <= 1")
    if not str(out).lower().endswith(".png"):
        raise ConfigError(f"--out {out}: expected a .png file")
    if Path(out).exists() and not force:
        raise FileExistsError(errno.EEXIST, "exists (--force replaces it)", f"--out {out}")
    if ":/" not in model and not Path(model).is_dir():  # MLflow would call it a missing artifact
        raise ConfigError(f"--model {model}: no such model directory; a registered model is models:/NAME@ALIAS "
                          "or models:/NAME/VERSION")
    with tracking.served(tracking.check_uri(mlflow_uri or tracking.default_uri())) as uri:
        return model_registry.sample(uri, model, out, n=n, label=label, interpolate=interpolate, steps=steps, seed=seed,
                                     psi=truncation, vary=code)
