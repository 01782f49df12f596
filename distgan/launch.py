"""Build and fit the TorchTrainer of one run. A data set that fits the object store is read
once by the driver and indexed by every worker (the same stream as a one-process run, so a
resume continues it exactly); a larger one streams from Parquet through Ray Data. Real-data
statistics are computed once, on a worker's device, into storage every node reads; the run's
directory (distgan.rundir, a path or a URI) holds its checkpoints and files."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import ray.data
import ray.exceptions
import ray.train
from ray.train.torch import TorchTrainer
from ray.util.queue import Empty, Queue

from distgan import checkpoint, cluster, ray_internals, storage
from distgan.checkpoint import HISTORY
from distgan.config import ConfigError, RunConfig, RunFailed, env_seconds
from distgan.data.reader import check_batch, load_all
from distgan.data.schema import DatasetInfo, inspect
from distgan.metrics import registry
from distgan.progress import format_eval
from distgan.rundir import RAY_SNAPSHOT, SAMPLES, Best, RunDir, data_location
from distgan.tracking import RunLog
from distgan.worker import NOTES, TRAIN_DATASET, SharedArrays, WorkerSpec, decode_batch, train_loop_per_worker

STORAGE_ENV = "DISTGAN_STORAGE"  # the cluster's shared checkpoint store (cluster/*.yaml set it)
_DONE = "__distgan_fit_done__"


def scaling_config(cfg: RunConfig) -> ray.train.ScalingConfig:
    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker} if s.use_gpu else {})}
    return ray.train.ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources,
                                   placement_strategy=s.placement_strategy)


class Record(ray.train.UserCallback):
    """Each evaluation, in Train's controller once Train has its checkpoint, as a one-process
    run records it: the run directory's files and MLflow. An evaluation a dying worker group
    never completed (and trains again after its restart) is never recorded twice, and nothing
    is recorded before its checkpoint is in storage."""

    def __init__(self, run: RunDir, fd_key: str, run_log: RunLog | None = None, new_config: RunConfig | None = None):
        self.run, self.fd_key, self.run_log = run, fd_key, run_log
        self.new_config = new_config
        """A resumed run's changed settings, written once its first checkpoint is in."""

    def after_report(self, run_context, metrics, checkpoint):
        m = metrics[0]
        with tempfile.TemporaryDirectory() as tmp:
            grid = None
            if checkpoint is not None:
                where = storage.uri(checkpoint.filesystem, checkpoint.path)
                if self.new_config is not None:
                    self.run.write_config(self.new_config)
                    self.new_config = None
                self.run.record(json.loads(storage.read_text(storage.join(where, HISTORY))), self.fd_key)
                png = storage.join(where, "samples.png")
                if storage.exists(png):
                    grid = storage.download(png, Path(tmp) / "samples.png")
                    storage.upload(grid, self.run.path(SAMPLES, f"{storage.name(where)}.png"))
            if self.run_log is not None:
                self.run_log.log(m, int(m["step"]), grid)


class Forward(ray.train.UserCallback):
    """Each report (its checkpoint's URI, the Train run's id) onto the queue the run's driver
    drains; a full queue holds the run until the driver has the previous report."""

    def __init__(self, queue: Queue):
        self.queue = queue

    def after_report(self, run_context, metrics, checkpoint):
        where = storage.uri(checkpoint.filesystem, checkpoint.path) if checkpoint else None
        self.queue.put(({**metrics[0], cluster.TRAIN_RUN: run_context.run_id}, where))


def fd_key(cfg: RunConfig) -> str:
    return registry.fd_name(checkpoint.detector_of(cfg), cfg.eval.num_samples)


def in_memory(mode: str, info: DatasetInfo) -> bool:
    """Small sets are read many epochs over: read once into the object store (each streamed
    epoch starts new read and decode tasks; on 2 cores that starved the workers)."""
    if mode != "auto":
        return mode == "always"
    decoded = info.num_rows * math.prod(info.sample_shape)  # uint8 pixels (points: x4, still small)
    return decoded < ray.cluster_resources().get("object_store_memory", 0) / 4


def put_arrays(info: DatasetInfo) -> SharedArrays:
    """The whole set, decoded, into the object store once: every worker on a node maps the
    same memory (numpy arrays come back from it without a copy)."""
    x, y, _ = load_all(info.location, raw=True)
    return SharedArrays(ray.put(x.numpy()), ray.put(y.numpy()), len(x))


def dataset(cfg: RunConfig, info: DatasetInfo) -> ray.data.Dataset:
    """A set too large for the object store, streamed: read and decoded on Ray Data's CPUs."""
    ray.data.DataContext.get_current().enable_progress_bars = False
    cpus = cfg.scaling.data_cpus_per_task
    ds = ray.data.read_parquet(list(info.files), filesystem=info.filesystem(), num_cpus=cpus).select_columns(
        ["image", "label"]).map_batches(decode_batch, fn_kwargs={"info": info}, batch_format="numpy", num_cpus=cpus)
    return ds.randomize_block_order(seed=cfg.train.seed)


def run_config(cfg: RunConfig, root: str, callbacks: list) -> ray.train.RunConfig:
    """Ray's storage for the run directory `root`: Train names the run for its last part and
    keeps its checkpoints in it; a URI's filesystem is handed over as is (with its endpoint,
    e.g. MinIO's), and the path without its scheme."""
    fs, path = storage.resolve(root)
    uri = storage.is_uri(root)
    parent, name = (path if uri else storage.normalize(root)).rstrip("/").rsplit("/", 1)
    return ray.train.RunConfig(
        name=name, storage_path=parent, storage_filesystem=fs if uri else None, callbacks=callbacks,
        logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        failure_config=ray.train.FailureConfig(max_failures=cfg.scaling.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints,
                                                     checkpoint_score_attribute=fd_key(cfg),
                                                     checkpoint_score_order="min"))


def build_trainer(spec: WorkerSpec, root: str, callbacks: list | None = None, run_log: RunLog | None = None,
                  new_config: RunConfig | None = None) -> TorchTrainer:
    """The run in directory `root` (a run already there is resumed by Ray); every evaluation
    is recorded there, and in MLflow with a `run_log`."""
    cfg = spec.run
    if spec.arrays is not None:  # a batch the data cannot hold fails every attempt: fail before any
        check_batch(cfg.train.batch_size * cfg.train.n_d, cfg.scaling.num_workers, spec.arrays.rows)
    record = Record(RunDir.at(root), fd_key(cfg), run_log, new_config)
    datasets = None if spec.arrays is not None else {TRAIN_DATASET: dataset(cfg, spec.data)}
    return TorchTrainer(train_loop_per_worker, train_loop_config={"spec": spec}, scaling_config=scaling_config(cfg),
                        run_config=run_config(cfg, root, [record, *(callbacks or [])]), datasets=datasets)


def drive(spec: WorkerSpec, root: str, on_report: Callable[[dict, str | None], None], run_log: RunLog | None = None,
          new_config: RunConfig | None = None) -> ray.train.Result:
    """The one driver of a Train run, for `distgan train --workers N` and for a Tune trial:
    fit() in a thread while this thread hands every report (metrics, checkpoint URI) to
    `on_report`, in this process (Ray's worker logs need not reach the console for it)."""
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = build_trainer(spec, root, [Forward(queue)], run_log, new_config)
    box: dict[str, Any] = {}

    def fit() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as e:  # handed to the driving thread
            box["error"] = e
        finally:
            try:
                queue.put(_DONE)
            except ray.exceptions.RayError:  # Tune already stopped the trial (its queue went with it)
                pass

    thread = threading.Thread(target=fit, name="distgan-fit", daemon=True)
    thread.start()
    while True:
        try:
            item = queue.get(timeout=5)
        except Empty:
            if not thread.is_alive() and queue.empty():
                break
            continue
        if item == _DONE:
            break
        on_report(*item)
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def _real_stats_task(cfg: RunConfig, info: DatasetInfo, cache_dir: str) -> tuple[str, str, float]:
    import time

    import torch

    from distgan.metrics import detectors, stats
    from distgan.metrics.evaluate import REAL_SEED

    t0 = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    det = detectors.build(cfg.eval.detector, info.sample_shape, device=device)
    # a run's reference: a set smaller than eval.num_samples is drawn with repeats
    s = stats.real_stats(info.location, det, cfg.eval.num_samples, cache_dir, allow_repeat=True,
                         batch=cfg.eval.batch_size, seed=REAL_SEED, device=device)
    return stats.location_of(cache_dir, s.key), s.source, time.perf_counter() - t0


def real_stats(cfg: RunConfig, info: DatasetInfo, cache_dir: str) -> ray.ObjectRef:
    """The run's real statistics in `cache_dir` (computed there once, on a worker's device, if
    missing), as a task: the caller goes on meanwhile (a job starts its MLflow server)."""
    s = cfg.scaling
    task = ray.remote(_real_stats_task).options(num_cpus=s.cpus_per_worker, num_gpus=s.gpus_per_worker if s.use_gpu else 0)
    return task.remote(cfg, info, cache_dir)


def await_real_stats(pending: ray.ObjectRef, say: Callable[[str], None] = print, notice_s: float = 30.0) -> str:
    """Their location, once the task is done. A task the cluster cannot place (its CPUs held
    by other work) would wait without a word: the wait is said, at doubling intervals."""
    waited = 0.0
    while not ray.wait([pending], timeout=notice_s)[0]:
        waited += notice_s
        notice_s *= 2
        free, total = ray.available_resources(), ray.cluster_resources()
        have = ", ".join(f"{free.get(k, 0.0):g} of {total[k]:g} {k}" for k in ("CPU", "GPU") if k in total)
        say(f"real statistics: not ready after {waited:g} s; the cluster has {have} free (`ray status` shows what "
            "holds them)")
    location, source, seconds = ray.get(pending)
    say(f"real statistics: {source} {location}" + (f" in {seconds:.1f} s" if source == "computed" else ""))
    return location


def best_checkpoint(result: ray.train.Result, key: str) -> Best:
    """The lowest-distance checkpoint Ray kept (best_checkpoints is in report order, not sorted)."""
    if not result.best_checkpoints:
        raise RunFailed(f"run {result.path} reported no checkpoint")
    ckpt, metrics = min(result.best_checkpoints, key=lambda cm: cm[1][key])
    return Best(storage.uri(ckpt.filesystem, ckpt.path), metrics)


def ready_cluster(cfg: RunConfig, location: str, info: DatasetInfo, mlflow_uri: str) -> tuple[cluster.Capacity, bool]:
    """Connect and check the cluster can ever hold a run (of a job or of `train --workers`);
    returns what it can grow to and whether the data goes in memory."""
    if cfg.scaling.num_workers < 1:
        raise ConfigError("scaling.num_workers: Ray Train needs at least 1 worker")
    cluster.connect()
    cap = cluster.capacity()
    shared = in_memory(cfg.data.materialize, info)
    cluster.check_fits(cfg, cap, shared)
    cluster.multinode(cfg, location, mlflow_uri, cap, info.location)
    if cap.autoscaling:
        ray_internals.home_autoscaling_coordinator()
    return cap, shared


def run(cfg: RunConfig, out: str | Path, location: str | None = None, resume: bool = False,
        force: bool = False, run_log: RunLog | None = None) -> Best:
    """The run on cfg.scaling.num_workers Ray Train workers, in the run directory named for
    `out` in the storage `location` (default: `out` itself), local or in a bucket. --force
    moves an old local run aside until the new one has a checkpoint."""
    out = Path(out).resolve()
    location = storage.check_writable(location or str(out.parent), "--storage")
    run = RunDir.at(storage.join(location, out.name))
    if resume:
        if not storage.exists(run.path(RAY_SNAPSHOT)):
            raise checkpoint.CheckpointError(f"--resume {out}: no Ray Train run in {run.root} ({RAY_SNAPSHOT} "
                                             "missing)")
        run.check_resume(cfg)
    else:
        run.check_new(force, str(out))
    cluster.check_address()
    info = inspect(data_location(cfg, run.root))
    info.check_model(cfg.model)
    scale_timeout = env_seconds(cluster.SCALE_TIMEOUT_ENV, cluster.SCALE_TIMEOUT_S)
    _, shared = ready_cluster(cfg, location, info, cfg.tracking.mlflow_uri)
    cluster.scale_up(cfg, 1, scale_timeout, shared_data=shared)
    aside = run.move_aside() if force and not resume else None
    storage.make_dirs(run.root)
    if not resume:
        run.write_config(cfg)
    stats_at = await_real_stats(real_stats(cfg, info, run.path("stats")))
    spec = WorkerSpec(cfg, info, stats_at, arrays=put_arrays(info) if shared else None)
    key = fd_key(cfg)

    def show(metrics: dict, where: str | None) -> None:
        for note in metrics.get(NOTES, "").split("\n") if metrics.get(NOTES) else []:
            print(note, flush=True)
        print(format_eval(metrics, key), flush=True)

    result = drive(spec, run.root, show, run_log, new_config=cfg if resume else None)
    if aside is not None:
        if result.best_checkpoints:
            shutil.rmtree(aside, ignore_errors=True)
        else:
            run.restore_aside(aside)
    if result.error:
        raise RunFailed(f"{run.root}: the run failed ({type(result.error).__name__}: "
                        f"{str(result.error).strip().splitlines()[-1] if str(result.error).strip() else ''})")
    return best_checkpoint(result, key)
