"""Build and fit the TorchTrainer for one run: resources checked first, Ray Data reads the
Parquet, real-data statistics are computed once on the driver and shared by reference."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import uuid
from pathlib import Path

import ray
import ray.data
import ray.train
from ray.train.torch import TorchTrainer

from distgan import checkpoint
from distgan.config import ConfigError, RunConfig
from distgan.data.schema import DatasetInfo, inspect
from distgan.local import CONFIG_FILE, RAY_SNAPSHOT, resolve_data
from distgan.loop import eval_context, format_eval
from distgan.metrics.evaluate import fid_name
from distgan.tracking import RunLog
from distgan.worker import TRAIN_DATASET, decode_batch, fault_from_env, train_loop_per_worker


STORAGE_ENV = "DISTGAN_STORAGE"  # the cluster's shared checkpoint store (cluster/*.yaml set it)


def connect() -> None:
    """Ray at RAY_ADDRESS, else a local instance whose workers inherit RAY_DATA_LOG_LEVEL:
    Ray Data's per-epoch INFO lines go to the logs, not to the console."""
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True)


def check_resources(cfg: RunConfig) -> None:
    """Fail before anything starts when the cluster cannot hold the workers."""
    s = cfg.scaling
    have = ray.cluster_resources()
    cpus, gpus = have.get("CPU", 0.0), have.get("GPU", 0.0)
    need_cpu = s.num_workers * s.cpus_per_worker
    if need_cpu > cpus:
        raise ConfigError(f"scaling.num_workers: {s.num_workers} workers x {s.cpus_per_worker} CPU need "
                          f"{need_cpu:g} CPUs, Ray has {cpus:g}")
    if need_cpu + s.data_cpus > cpus:
        raise ConfigError(f"scaling.cpus_per_worker: {s.num_workers} workers x {s.cpus_per_worker} CPU leave "
                          f"{cpus - need_cpu:g} of {cpus:g} CPUs for Ray Data, which needs scaling.data_cpus="
                          f"{s.data_cpus:g} (the run would hang)")
    if s.use_gpu:
        if gpus == 0:
            raise ConfigError("scaling.use_gpu: no GPU in the Ray cluster")
        if s.num_workers * s.gpus_per_worker > gpus:
            raise ConfigError(f"scaling.num_workers: {s.num_workers} workers x {s.gpus_per_worker} GPU need "
                              f"{s.num_workers * s.gpus_per_worker:g} GPUs, Ray has {gpus:g}")


def check_storage(storage: str) -> str:
    """Local storage must be writable; URIs (s3://, gs://, ...) are passed through to Ray."""
    if "://" in storage:
        return storage
    path = Path(storage).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--storage {storage}: cannot write there ({e.strerror})") from None
    return str(path)


def check_multinode(cfg: RunConfig, storage: str, mlflow_uri: str = "") -> None:
    """What every node must reach on a multi-node cluster: checkpoints (a local path only when
    marked as mounted everywhere) and the MLflow store (a server, not this node's SQLite file)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    if "://" not in storage and not cfg.scaling.shared_storage:
        raise ConfigError(f"--storage {storage}: a local path on a {len(nodes)}-node cluster; use s3://, gs:// or "
                          "an NFS path every node mounts, marked with --shared-storage")
    if mlflow_uri.startswith("sqlite:"):
        raise ConfigError(f"--mlflow-uri {mlflow_uri}: a file on this node, out of reach of the other "
                          f"{len(nodes) - 1} node(s); give an http(s) MLflow server")


def scaling_config(cfg: RunConfig) -> ray.train.ScalingConfig:
    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker} if s.use_gpu else {})}
    return ray.train.ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources,
                                   placement_strategy=s.placement_strategy)


class EvalPrinter(ray.train.UserCallback):
    """Prints one line per evaluation on the driver's console (runs in Train's controller)."""

    def __init__(self, fid_key: str, prefix: str = ""):
        self.fid_key, self.prefix = fid_key, prefix

    def after_report(self, run_context, metrics, checkpoint):
        print(self.prefix + format_eval(metrics[0], self.fid_key), flush=True)


def should_materialize(mode: str, info: DatasetInfo) -> bool:
    """Small sets are read many epochs over, and each streamed epoch starts new read and
    decode tasks (on 2 cores that starves the workers: 92% of a ring8 step spent waiting)."""
    if mode != "auto":
        return mode == "always"
    decoded = info.num_rows * math.prod(info.sample_shape) * 4  # float32 samples
    return decoded < ray.cluster_resources().get("object_store_memory", 0) / 4


def best_checkpoint(result: ray.train.Result, fid_key: str) -> tuple[ray.train.Checkpoint, dict]:
    """The lowest-FID checkpoint Ray kept (best_checkpoints is in report order, not sorted)."""
    if not result.best_checkpoints:
        raise RuntimeError(f"run {result.path} reported no checkpoint")
    return min(result.best_checkpoints, key=lambda cm: cm[1][fid_key])


def build_trainer(cfg: RunConfig, data_dir: str | Path, storage: str, name: str, meta: dict | None = None,
                  callbacks: list | None = None, prefix: str = "", run_log: RunLog | None = None,
                  replay: bool = False) -> TorchTrainer:
    """replay: a resumed run reports its past evaluations again (for Tune, see worker.replay)."""
    info: DatasetInfo = inspect(data_dir)
    real = eval_context(cfg, data_dir, info, "cpu").real
    info_dict = dataclasses.asdict(info)
    ray.data.DataContext.get_current().enable_progress_bars = False
    task_cpus = cfg.scaling.data_cpus_per_task
    ds = ray.data.read_parquet(list(info.files), num_cpus=task_cpus).select_columns(["image", "label"]).map_batches(
        decode_batch, fn_kwargs={"info": info_dict}, batch_format="numpy", num_cpus=task_cpus)
    if should_materialize(cfg.data.materialize, info):
        ds = ds.materialize()
    ds = ds.randomize_block_order(seed=cfg.train.seed)
    fid_key = fid_name(cfg.eval.num_samples)
    run_config = ray.train.RunConfig(
        name=name, storage_path=storage, callbacks=[EvalPrinter(fid_key, prefix), *(callbacks or [])],
        logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        failure_config=ray.train.FailureConfig(max_failures=cfg.scaling.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints,
                                                     checkpoint_score_attribute=fid_key,
                                                     checkpoint_score_order="min"))
    config = {"run": cfg.to_dict(), "data_info": info_dict, "real_stats": ray.put(real), "fault": fault_from_env(),
              "meta": meta or {}, "run_log": dataclasses.asdict(run_log) if run_log else None,
              "replay": replay}
    return TorchTrainer(train_loop_per_worker, train_loop_config=config, scaling_config=scaling_config(cfg),
                        run_config=run_config, datasets={TRAIN_DATASET: ds})


def fit(cfg: RunConfig, data_dir: str | Path, storage: str, name: str, run_log: RunLog | None = None
        ) -> ray.train.Result:
    if cfg.scaling.num_workers < 1:
        raise ConfigError("scaling.num_workers: Ray Train needs at least 1 worker")
    storage = check_storage(storage)
    connect()
    check_resources(cfg)
    check_multinode(cfg, storage, cfg.tracking.mlflow_uri)
    return build_trainer(cfg, data_dir, storage, name, run_log=run_log).fit()


def run(cfg: RunConfig, out: str | Path, storage: str | None = None, resume: bool = False,
        force: bool = False, run_log: RunLog | None = None) -> dict:
    """The same run on cfg.scaling.num_workers Ray Train workers; Ray keeps the checkpoints
    (the best by FID) under storage/<out name>. An existing run there is resumed by Ray."""
    out = Path(out).resolve()
    if cfg.data.path:
        inspect(cfg.data.path)
    snapshot = out / RAY_SNAPSHOT
    if snapshot.exists() and not resume:
        if not force:
            raise FileExistsError(f"{out}: already holds a run (--resume {out} continues it, --force replaces it)")
        snapshot.unlink()
        for old in out.glob("step_*"):
            shutil.rmtree(old)
    elif resume and not snapshot.exists():
        raise checkpoint.CheckpointError(f"--resume {out}: no Ray Train run there ({RAY_SNAPSHOT} missing)")
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    data_dir = resolve_data(cfg, out)
    result = fit(cfg, data_dir, storage or os.environ.get(STORAGE_ENV) or str(out.parent), out.name, run_log)
    if result.error:
        raise result.error
    ckpt, metrics = best_checkpoint(result, fid_name(cfg.eval.num_samples))
    return {"checkpoint": ckpt.path, "metrics": metrics}
