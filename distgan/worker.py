"""`train_loop_per_worker`: what each Ray Train worker runs.

G and D are both wrapped for DDP; every rank draws the same latents and keeps its slice,
so N workers x batch B take the same steps as one process with batch N x B. DDP
broadcasts rank 0's buffers (BatchNorm running statistics, spectral-norm u/v vectors)
at each forward; BatchNorm batch statistics stay per rank unless model.sync_bn.
"""

from __future__ import annotations

import logging
import os
import posixpath
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.fs
import ray.train
import ray.train.torch
import torch
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY
from torch import nn

from distgan import checkpoint
from distgan.config import RunConfig
from distgan.data.schema import DataError, DatasetInfo
from distgan.distributed import all_gather_object, all_gather_rows
from distgan.engine import GANEngine
from distgan.loop import REPLAYED, eval_context, save_samples, train
from distgan.models import build_models
from distgan.tracking import RunLog

TRAIN_DATASET = "train"
FAULT_STEP_ENV, FAULT_MARKER_ENV = "DISTGAN_FAULT_STEP", "DISTGAN_FAULT_MARKER"


def build_engine(cfg: RunConfig) -> GANEngine:
    """Models built identically on every rank (same seed), then DDP-wrapped by Ray Train."""
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.train.seed)
    G, D = build_models(cfg.model)
    if cfg.model.sync_bn and world > 1:
        G = nn.SyncBatchNorm.convert_sync_batchnorm(G)
    G = ray.train.torch.prepare_model(G)
    D = ray.train.torch.prepare_model(D)
    return GANEngine(cfg, G, D, ray.train.torch.get_device(), rank=rank, world_size=world)


def shard_batches(rows: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This worker's shard of the Ray Data set, epoch after epoch: block order shuffled per
    epoch by the dataset, rows through a local shuffle buffer (files are written shuffled)."""
    shard = ray.train.get_dataset_shard(TRAIN_DATASET)
    epoch = 0
    while True:
        batches = 0
        for batch in shard.iter_torch_batches(batch_size=rows, drop_last=True, prefetch_batches=2,
                                              local_shuffle_buffer_size=2 * rows,
                                              local_shuffle_seed=seed + epoch):
            batches += 1
            yield batch["x"], batch["y"]
        if batches == 0:  # else this loop would spin forever on an empty epoch
            raise DataError(f"train.batch_size x train.n_d = {rows} rows: more than this worker's shard holds")
        epoch += 1


def _fault_injector(batches: Iterator, engine: GANEngine, fault: dict | None) -> Iterator:
    """Test-only: the last rank raises once, when reaching fault['step'] (marker file = once)."""
    for item in batches:
        if fault and engine.step_count == fault["step"] and engine.rank == engine.world_size - 1:
            marker = Path(fault["marker"])
            if not marker.exists():
                marker.write_text("raised")
                raise RuntimeError(f"injected fault at step {engine.step_count}")
        yield item


def replay(history: list[dict], restored: ray.train.Checkpoint, meta: dict) -> None:
    """Report a resumed run's past evaluations again. After Ctrl-C the Train run goes on while
    Tune shuts down, so its checkpoint can be ahead of what Tune recorded (seen: a trial that
    finished all its steps then, resumed with nothing left to train, ended one evaluation
    short in Tune). Steps Tune already has come twice; the trial table keeps the first."""
    for h in history:
        path = posixpath.join(posixpath.dirname(restored.path), checkpoint.dir_name(int(h["step"])))
        kept = restored.filesystem.get_file_info(path).type != pyarrow.fs.FileType.NotFound
        ray.train.report({**h, **meta, REPLAYED: 1.0, **({CHECKPOINT_PATH_KEY: path} if kept else {})})


def quiet_report_log() -> None:
    """Ray 2.60's Train V2 logs each report's whole metrics dict at INFO through a logger named
    by its file path, which LoggingConfig's level (set on 'ray.train') does not reach; the
    driver already prints one line per evaluation."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict) -> None:
    quiet_report_log()
    cfg = RunConfig.from_dict(config["run"])
    info = DatasetInfo(**config["data_info"])
    engine = build_engine(cfg)
    restored, history = ray.train.get_checkpoint(), []
    if restored is not None:
        with restored.as_directory() as d:
            state, _, last = checkpoint.load(d, map_location=engine.device)
            history = checkpoint.load_history(d) or [last]
        engine.load_state_dict(state)
    ctx = eval_context(cfg, "", info, engine.device, real=ray.get(config["real_stats"]))
    rows = cfg.train.batch_size * cfg.train.n_d
    batches = _fault_injector(shard_batches(rows, cfg.train.seed + 1000 * engine.step_count + engine.rank),
                              engine, config.get("fault"))
    # the node of every rank, in rank order: where the run really ran (multi-node checks, MLflow)
    worker_nodes = ",".join(all_gather_object(ray.get_runtime_context().get_node_id()))
    meta = {**config.get("meta", {}), "worker_nodes": worker_nodes, "world_size": engine.world_size,
            "torch_threads": torch.get_num_threads()}
    run_log = RunLog(**config["run_log"]) if config.get("run_log") and engine.rank == 0 else None
    if restored is not None and config.get("replay"):
        replay(history, restored, meta)

    def on_eval(metrics: dict[str, float]) -> None:
        step = engine.step_count
        metrics = {**metrics, **meta}
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if engine.rank == 0:
                path = checkpoint.save(Path(tmp) / "ckpt", engine.state_dict(), cfg, metrics, history)
                grid = save_samples(engine, cfg, path / "samples.png")
                if run_log is not None:
                    run_log.log(metrics, step, grid)
                ckpt = ray.train.Checkpoint.from_directory(str(path))
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=checkpoint.dir_name(step))

    train(engine, batches, cfg, ctx, on_eval, gather=all_gather_rows, progress=False, history=history)


def decode_batch(batch: dict[str, np.ndarray], info: dict) -> dict[str, np.ndarray]:
    """Ray Data map_batches: Parquet `image` bytes -> float32 samples, `label` -> y."""
    from distgan.data.reader import decode

    x = decode(list(batch["image"]), DatasetInfo(**info))
    return {"x": x.numpy(), "y": batch["label"].astype(np.int64)}


def fault_from_env() -> dict | None:
    """The test-only fault hook, read on the driver and shipped to the workers."""
    if FAULT_STEP_ENV not in os.environ:
        return None
    return {"step": int(os.environ[FAULT_STEP_ENV]), "marker": os.environ[FAULT_MARKER_ENV]}
