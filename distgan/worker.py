"""`train_loop_per_worker`: what each Ray Train worker runs, from a typed `WorkerSpec`.

G and D are both wrapped for DDP; every rank draws the same latents and keeps its slice,
so N workers x batch B take the same steps as one process with batch N x B. DDP does not
broadcast buffers at each forward: spectral-norm vectors follow identical weights
identically on every rank, and G_ema's BatchNorm statistics are broadcast from rank 0
before each evaluation. Batch statistics stay per rank unless model.sync_bn.
"""

from __future__ import annotations

import inspect
import logging
import os
import posixpath
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
from torch import nn

from distgan import checkpoint, storage
from distgan.config import RunConfig
from distgan.data.prepare import mixture_modes
from distgan.data.reader import decode_raw
from distgan.data.schema import DataError, DatasetInfo
from distgan.distributed import all_gather_object
from distgan.engine import GANEngine
from distgan.loop import train
from distgan.metrics import detectors, registry, stats
from distgan.metrics.evaluate import Evaluator
from distgan.models import build_models
from distgan.plots import sample_grid

TRAIN_DATASET = "train"
# No buffer broadcast at each forward (identical weights give identical spectral-norm vectors on
# every rank; G_ema's BatchNorm statistics are broadcast before each evaluation); gradients
# reduced in place. torch >= 2.13 names the first option forward_sync_buffers.
DDP_OPTIONS = {("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(
    nn.parallel.DistributedDataParallel.__init__).parameters else "broadcast_buffers"): False,
    "gradient_as_bucket_view": True}
FAULT_STEP_ENV, FAULT_MARKER_ENV = "DISTGAN_FAULT_STEP", "DISTGAN_FAULT_MARKER"


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, typed, across the Ray boundary."""
    run: RunConfig
    data: DatasetInfo
    stats: str
    """Where the real statistics are (a path or URI every node reads); rank 0 loads them."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Travels in every report: trial id, run name, MLflow run id."""
    initial: str | None = None
    """A checkpoint to start from when the run has none of its own (a PBT exploit)."""
    fault: dict | None = None
    """Test-only: {'step', 'marker'} makes the last rank raise once at that step."""


def build_engine(cfg: RunConfig) -> GANEngine:
    """Models built identically on every rank (same seed), then DDP-wrapped by Ray Train."""
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.train.seed)
    G, D = build_models(cfg.model)
    if cfg.model.sync_bn and world > 1:
        G = nn.SyncBatchNorm.convert_sync_batchnorm(G)
    G = ray.train.torch.prepare_model(G, parallel_strategy_kwargs=DDP_OPTIONS)
    D = ray.train.torch.prepare_model(D, parallel_strategy_kwargs=DDP_OPTIONS)
    return GANEngine(cfg, G, D, ray.train.torch.get_device(), rank=rank, world_size=world)


def shard_batches(rows: int, seed: int, cuda: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This worker's shard of the Ray Data set, epoch after epoch: block order shuffled per
    epoch by the dataset, rows through a local shuffle buffer (files are written shuffled).
    uint8 images travel to the GPU from pinned memory, prefetched ahead of the step."""
    shard = ray.train.get_dataset_shard(TRAIN_DATASET)
    epoch = 0
    while True:
        batches = 0
        for batch in shard.iter_torch_batches(batch_size=rows, drop_last=True, prefetch_batches=4 if cuda else 2,
                                              local_shuffle_buffer_size=2 * rows, local_shuffle_seed=seed + epoch,
                                              pin_memory=cuda):
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


def quiet_report_log() -> None:
    """Ray 2.60's Train V2 logs each report's whole metrics dict at INFO through a logger named
    by its file path, which LoggingConfig's level (set on 'ray.train') does not reach; the
    driver already prints one line per evaluation. (A private module: Ray is pinned to 2.60.)"""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def load_start(location: str, device: torch.device) -> tuple[dict, list[dict], str] | None:
    """The newest good checkpoint at or before `location` among its siblings: a damaged one
    (a cut upload, a flipped byte) is skipped with one line, and the one before it is used."""
    parent, own = posixpath.split(location.rstrip("/"))
    names = [n for n in storage.list_dir(parent) if checkpoint.NAME.match(n) and n <= own] or [own]
    for name in sorted(names, reverse=True):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                d = storage.download(storage.join(parent, name), Path(tmp) / name)
                state, _, _ = checkpoint.load(d, map_location=device)
                history = checkpoint.load_history(d)
            except (checkpoint.CheckpointError, OSError) as e:
                print(f"skipping a damaged checkpoint: {e}", flush=True)
                continue
        return state, history, name
    return None


def train_loop_per_worker(config: dict) -> None:
    quiet_report_log()
    spec: WorkerSpec = config["spec"]
    cfg = spec.run
    engine = build_engine(cfg)
    history: list[dict] = []
    restored = ray.train.get_checkpoint()
    start = storage.uri(restored.filesystem, restored.path) if restored is not None else spec.initial
    if start is not None:
        loaded = load_start(start, engine.device)
        if loaded is None:
            raise checkpoint.CheckpointError(f"{start}: no readable checkpoint there or before it")
        state, history, _ = loaded
        engine.load_state_dict(state)
        if restored is None:  # another trial's state (PBT): its evaluations are not this run's
            history = []
    detector = detectors.build(cfg.eval.detector, spec.data.sample_shape, device=engine.device)
    real = None
    if engine.rank == 0:  # rank 0 alone computes the metrics
        real = stats.read(spec.stats, "")
        if real is None:
            raise DataError(f"{spec.stats}: the real statistics are missing or damaged")
        real = real.to(engine.device)
    evaluator = Evaluator(detector, real, cfg.eval.num_samples, cfg.eval.batch_size,
                          registry.parse(cfg.eval.metrics), mixture_modes(spec.data.name), engine.device)
    rows = cfg.train.batch_size * cfg.train.n_d
    batches = _fault_injector(shard_batches(rows, cfg.train.seed + 1000 * engine.step_count + engine.rank,
                                            engine.device.type == "cuda"), engine, spec.fault)
    # the node of every rank, in rank order: where the run really ran (multi-node checks, MLflow)
    worker_nodes = ",".join(all_gather_object(ray.get_runtime_context().get_node_id()))
    meta = {**spec.meta, "worker_nodes": worker_nodes, "world_size": engine.world_size,
            "torch_threads": torch.get_num_threads()}

    def on_eval(metrics: dict[str, float]) -> None:
        # the checkpoint (and its sample grid) goes to storage with the report; MLflow hears of
        # it from Train's controller once Train has it (launch.Track)
        step = engine.step_count
        metrics = {**metrics, **meta}
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if engine.rank == 0:
                path = checkpoint.save(Path(tmp) / "ckpt", engine.state_dict(), cfg, metrics, history)
                sample_grid(engine.G_ema, cfg.model.arch, cfg.eval.grid_size, path / "samples.png", engine.device)
                ckpt = ray.train.Checkpoint.from_directory(str(path))
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=checkpoint.dir_name(step))

    train(engine, batches, cfg, evaluator, on_eval, progress=False, history=history)


def decode_batch(batch: dict[str, np.ndarray], info: DatasetInfo) -> dict[str, np.ndarray]:
    """Ray Data map_batches: Parquet `image` bytes -> uint8 NCHW pixels (or float32 points),
    `label` -> y. Normalization happens on the training device."""
    return {"x": decode_raw(list(batch["image"]), info), "y": batch["label"].astype(np.int64)}


def fault_from_env() -> dict | None:
    """The test-only fault hook, read on the driver and shipped to the workers."""
    if FAULT_STEP_ENV not in os.environ:
        return None
    return {"step": int(os.environ[FAULT_STEP_ENV]), "marker": os.environ[FAULT_MARKER_ENV]}
