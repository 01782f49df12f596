"""Build and fit the TorchTrainer of one run: Ray Data reads the Parquet (local or in an
object store), real-data statistics are computed once, on a worker's device, into storage
every node reads, and checkpoints go to the run's storage (a path or a URI)."""

from __future__ import annotations

import errno
import json
import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import ray
import ray.data
import ray.train
from ray.train.torch import TorchTrainer

from distgan import checkpoint, cluster, storage
from distgan.config import ConfigError, RunConfig, RunFailed
from distgan.data.schema import DatasetInfo, inspect
from distgan.local import ASIDE, CONFIG_FILE, RAY_SNAPSHOT, check_data_matches, check_resume, resolve_data, saved_config
from distgan.metrics import registry
from distgan.progress import format_eval
from distgan.tracking import RunLog
from distgan.worker import TRAIN_DATASET, WorkerSpec, decode_batch, fault_from_env, train_loop_per_worker

STORAGE_ENV = "DISTGAN_STORAGE"  # the cluster's shared checkpoint store (cluster/*.yaml set it)


def scaling_config(cfg: RunConfig) -> ray.train.ScalingConfig:
    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker} if s.use_gpu else {})}
    return ray.train.ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources,
                                   placement_strategy=s.placement_strategy)


class EvalPrinter(ray.train.UserCallback):
    """Prints one line per evaluation on the driver's console (runs in Train's controller)."""

    def __init__(self, fd_key: str, prefix: str = ""):
        self.fd_key, self.prefix = fd_key, prefix

    def after_report(self, run_context, metrics, checkpoint):
        print(self.prefix + format_eval(metrics[0], self.fd_key), flush=True)


class Track(ray.train.UserCallback):
    """Logs each evaluation to MLflow from Train's controller, once Train has its checkpoint:
    an evaluation a dying worker group never completed (and trains again after its restart)
    is never logged twice, and nothing is logged before it is in storage."""

    def __init__(self, run_log: RunLog):
        self.run_log = run_log

    def after_report(self, run_context, metrics, checkpoint):
        import tempfile

        m = metrics[0]
        with tempfile.TemporaryDirectory() as tmp:
            grid = None
            if checkpoint is not None:
                where = storage.join(storage.uri(checkpoint.filesystem, checkpoint.path), "samples.png")
                if storage.exists(where):
                    grid = storage.download(where, Path(tmp) / "samples.png")
            self.run_log.log(m, int(m["step"]), grid)


def fd_key(cfg: RunConfig) -> str:
    return registry.fd_name(checkpoint.detector_of(cfg), cfg.eval.num_samples)


def should_materialize(mode: str, info: DatasetInfo) -> bool:
    """Small sets are read many epochs over, and each streamed epoch starts new read and
    decode tasks (on 2 cores that starves the workers: 92% of a ring8 step spent waiting)."""
    if mode != "auto":
        return mode == "always"
    decoded = info.num_rows * math.prod(info.sample_shape)  # uint8 pixels (points: x4, still small)
    return decoded < ray.cluster_resources().get("object_store_memory", 0) / 4


def dataset(cfg: RunConfig, info: DatasetInfo, materialize: bool | None = None) -> ray.data.Dataset:
    """The Parquet shards through Ray Data: read and decoded on Ray Data's CPUs, as uint8;
    a small set read once into the object store (see should_materialize)."""
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # materialize() runs here, on the driver
    cpus = cfg.scaling.data_cpus_per_task
    ds = ray.data.read_parquet(list(info.files), filesystem=info.filesystem(), num_cpus=cpus).select_columns(
        ["image", "label"]).map_batches(decode_batch, fn_kwargs={"info": info}, batch_format="numpy", num_cpus=cpus)
    if should_materialize(cfg.data.materialize, info) if materialize is None else materialize:
        ds = ds.materialize()
    return ds.randomize_block_order(seed=cfg.train.seed)


def run_config(cfg: RunConfig, location: str, name: str, callbacks: list, prefix: str = "",
               echo: bool = True) -> ray.train.RunConfig:
    """Ray's storage from a location: a URI's filesystem is handed over as is (with its
    endpoint, e.g. MinIO's), and the path without its scheme."""
    fs, path = storage.resolve(location)
    uri = storage.is_uri(location)
    return ray.train.RunConfig(
        name=name, storage_path=path if uri else storage.normalize(location), storage_filesystem=fs if uri else None,
        callbacks=[*([EvalPrinter(fd_key(cfg), prefix)] if echo else []), *callbacks],
        logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        failure_config=ray.train.FailureConfig(max_failures=cfg.scaling.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints,
                                                     checkpoint_score_attribute=fd_key(cfg),
                                                     checkpoint_score_order="min"))


def build_trainer(spec: WorkerSpec, location: str, name: str, callbacks: list | None = None, prefix: str = "",
                  data: ray.data.Dataset | None = None, echo: bool = True,
                  run_log: RunLog | None = None) -> TorchTrainer:
    """The run `name` under the storage `location`; an existing run of that name is resumed by
    Ray. With a `run_log`, every evaluation Train registers is logged to MLflow."""
    cfg = spec.run
    callbacks = [*([Track(run_log)] if run_log is not None else []), *(callbacks or [])]
    return TorchTrainer(train_loop_per_worker, train_loop_config={"spec": spec}, scaling_config=scaling_config(cfg),
                        run_config=run_config(cfg, location, name, callbacks, prefix, echo),
                        datasets={TRAIN_DATASET: data if data is not None else dataset(cfg, spec.data)})


def _real_stats_task(cfg: RunConfig, info: DatasetInfo, cache_dir: str) -> tuple[str, str, float]:
    import time

    import torch

    from distgan.metrics import detectors, stats
    from distgan.metrics.evaluate import REAL_SEED

    t0 = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    det = detectors.build(cfg.eval.detector, info.sample_shape, device=device)
    s = stats.real_stats(info.location, det, cfg.eval.num_samples, cache_dir, allow_repeat=info.num_rows < cfg.eval.num_samples,
                         batch=cfg.eval.batch_size, seed=REAL_SEED, device=device)
    return stats.location_of(cache_dir, s.key), s.source, time.perf_counter() - t0


def ensure_real_stats(cfg: RunConfig, info: DatasetInfo, cache_dir: str, say: Callable[[str], None] = print) -> str:
    """The run's real statistics in `cache_dir` (computed there once, on a worker's device,
    if missing); returns their location."""
    s = cfg.scaling
    task = ray.remote(_real_stats_task).options(num_cpus=s.cpus_per_worker, num_gpus=s.gpus_per_worker if s.use_gpu else 0)
    location, source, seconds = ray.get(task.remote(cfg, info, cache_dir))
    say(f"real statistics: {source} {location}" + (f" in {seconds:.1f} s" if source == "computed" else ""))
    return location


def best_checkpoint(result: ray.train.Result, key: str) -> tuple[ray.train.Checkpoint, dict]:
    """The lowest-distance checkpoint Ray kept (best_checkpoints is in report order, not sorted)."""
    if not result.best_checkpoints:
        raise RuntimeError(f"run {result.path} reported no checkpoint")
    return min(result.best_checkpoints, key=lambda cm: cm[1][key])


def prepare(cfg: RunConfig, location: str, mlflow_uri: str = "", trials: int = 1,
            say: Callable[[str], None] = print) -> int:
    """Connect, check the cluster can ever hold a run, wait for the autoscaler when it must
    grow; returns how many runs fit at once."""
    if cfg.scaling.num_workers < 1:
        raise ConfigError("scaling.num_workers: Ray Train needs at least 1 worker")
    cluster.connect()
    cap = cluster.capacity()
    cluster.check_fits(cfg, cap)
    cluster.multinode(cfg, location, mlflow_uri, cap)
    at_once = cluster.concurrency(cfg, cap, trials)
    cluster.scale_up(cfg, at_once, say)
    return at_once


def run(cfg: RunConfig, out: str | Path, location: str | None = None, resume: bool = False,
        force: bool = False, run_log: RunLog | None = None) -> dict:
    """The run on cfg.scaling.num_workers Ray Train workers; Ray keeps the checkpoints (the
    best by the Fréchet distance) under <storage>/<out name>, local or in a bucket; `out`
    keeps the config (and the built-in data). --force moves an old run aside until the new
    one has a checkpoint."""
    out = Path(out).resolve()
    location = storage.check_writable(location or str(out.parent), "--storage")
    run_dir = storage.join(location, out.name)
    exists = storage.exists(storage.join(run_dir, RAY_SNAPSHOT))
    if resume:
        if not exists:
            raise checkpoint.CheckpointError(f"--resume {out}: no Ray Train run in {run_dir} ({RAY_SNAPSHOT} missing)")
        check_resume(saved_config(out, remote=True), cfg)
    elif exists and not force:
        raise FileExistsError(errno.EEXIST, f"already holds a run (--resume {out} continues it, --force replaces it)", run_dir)
    elif exists and storage.is_uri(location):
        raise ConfigError(f"--force: the run in {run_dir} is in object storage, where it cannot be moved aside; "
                          "give another --out name (or delete it yourself)")
    cluster.check_address()
    data_dir = resolve_data(cfg, str(out))
    info = inspect(data_dir)
    check_data_matches(cfg, info)
    prepare(cfg, location, cfg.tracking.mlflow_uri)
    aside = None
    if force and exists and not resume:
        aside = out / ASIDE
        shutil.rmtree(aside, ignore_errors=True)
        aside.mkdir()
        for old in [out / RAY_SNAPSHOT, *checkpoint.step_dirs(out)]:
            old.rename(aside / old.name)
    out.mkdir(parents=True, exist_ok=True)
    storage.atomic_write_local(out / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2, sort_keys=True).encode())
    stats_at = ensure_real_stats(cfg, info, storage.join(run_dir, "stats"))
    spec = WorkerSpec(cfg, info, stats_at, fault=fault_from_env())
    result = build_trainer(spec, location, out.name, run_log=run_log).fit()
    if aside is not None:
        if result.best_checkpoints:
            shutil.rmtree(aside, ignore_errors=True)
        else:  # the new run made no checkpoint: the old one comes back
            for f in aside.iterdir():
                f.rename(out / f.name)
            aside.rmdir()
    if result.error:
        raise RunFailed(f"{run_dir}: the run failed ({type(result.error).__name__}: "
                        f"{str(result.error).strip().splitlines()[-1] if str(result.error).strip() else ''})")
    ckpt, metrics = best_checkpoint(result, fd_key(cfg))
    return {"checkpoint": storage.uri(ckpt.filesystem, ckpt.path), "metrics": metrics}
