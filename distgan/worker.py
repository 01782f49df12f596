"""`train_loop_per_worker`: what each Ray Train worker runs, from a typed `WorkerSpec`.

G and D are both wrapped for DDP; every rank draws the same latents and keeps its slice,
so N workers x batch B take the same steps as one process with batch N x B. DDP does not
broadcast buffers at each forward: spectral-norm vectors follow identical weights
identically on every rank, and G_ema's BatchNorm statistics are broadcast from rank 0
before each evaluation. Batch statistics stay per rank unless model.sync_bn.
"""

from __future__ import annotations

import inspect
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

from distgan import checkpoint, ray_internals, storage
from distgan.config import RunConfig
from distgan.data.prepare import mixture_modes
from distgan.data.reader import decode_raw, epoch_batches
from distgan.data.schema import DataError, DatasetInfo, held_rows
from distgan.distributed import all_gather_object
from distgan.engine import GANEngine
from distgan.loop import train
from distgan.metrics import detectors, registry, stats
from distgan.metrics.evaluate import CriticProbe, Evaluator
from distgan.models import build_models
from distgan.plots import sample_grid
from distgan.rundir import latest_good

TRAIN_DATASET = "train"
# No buffer broadcast at each forward (identical weights give identical spectral-norm vectors on
# every rank; G_ema's BatchNorm statistics are broadcast before each evaluation); gradients
# reduced in place. torch >= 2.13 names the first option forward_sync_buffers.
DDP_OPTIONS = {("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(
    nn.parallel.DistributedDataParallel.__init__).parameters else "broadcast_buffers"): False,
    "gradient_as_bucket_view": True}
NOTES = "notes"  # lines for the driver's console, riding on a report


@dataclass(frozen=True)
class SharedArrays:
    """The whole set (uint8 images or float points, int64 labels) in the object store, read
    once by a driver: every rank indexes its slice of the same global batches."""
    x: Any
    y: Any
    rows: int
    """Training rows: the driver checks a batch fits before any worker starts."""


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
    arrays: SharedArrays | None = None
    """None: stream the Ray Data shard."""


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


def batches_for(spec: WorkerSpec, engine: GANEngine) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The rank's batches: from the set in memory, continuing exactly at the engine's step;
    streamed, a resumed run starts a new shuffle (Ray Data's order is not a function of it)."""
    rows = spec.run.train.batch_size * spec.run.train.n_d
    if spec.arrays is not None:
        x, y = ray.get([spec.arrays.x, spec.arrays.y])
        return epoch_batches(x, y, rows, spec.run.train.seed, start=engine.step_count, rank=engine.rank,
                             world_size=engine.world_size)
    seed = int(np.random.SeedSequence([spec.run.train.seed, engine.step_count, engine.rank]).generate_state(1)[0])
    return shard_batches(rows, seed, engine.device.type == "cuda")


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


def train_loop_per_worker(config: dict) -> None:
    ray_internals.quiet_train_reports()
    spec: WorkerSpec = config["spec"]
    cfg = spec.run
    engine = build_engine(cfg)
    history: list[dict] = []
    notes: list[str] = []  # for the driver's console, with the first report
    restored = ray.train.get_checkpoint()
    start = storage.uri(restored.filesystem, restored.path) if restored is not None else spec.initial
    if start is not None:
        parent, newest = posixpath.split(start.rstrip("/"))
        loaded = latest_good(parent, engine.device, newest=newest)
        notes += loaded.notes
        engine.load_state_dict(loaded.state)
        if restored is not None:  # another trial's state (PBT) holds evaluations that are not this run's
            history = loaded.history
    detector = detectors.build(cfg.eval.detector, spec.data.sample_shape, device=engine.device)
    real = probe = None
    if engine.rank == 0:  # rank 0 alone computes the metrics
        real = stats.read(spec.stats, "")
        if real is None:
            raise DataError(f"{spec.stats}: the real statistics are missing or damaged")
        real = real.to(engine.device)
        probe = CriticProbe.read(spec.data, engine.device)
    evaluator = Evaluator(detector, real, cfg.eval.num_samples, cfg.eval.batch_size,
                          registry.parse(cfg.eval.metrics), mixture_modes(spec.data.name), engine.device, engine.latent,
                          cfg.eval.fd_bootstrap, probe)
    batches = batches_for(spec, engine)
    # the node of every rank, in rank order: where the run really ran (multi-node checks, MLflow)
    worker_nodes = ",".join(all_gather_object(ray.get_runtime_context().get_node_id()))
    meta = {**spec.meta, "worker_nodes": worker_nodes, "world_size": engine.world_size,
            "torch_threads": torch.get_num_threads()}

    def on_eval(metrics: dict[str, float]) -> None:
        # the checkpoint (and its sample grid) goes to storage with the report; the run's files
        # and MLflow hear of it from Train's controller once Train has it (launch.Record)
        step = engine.step_count
        metrics = {**metrics, **meta, **({NOTES: "\n".join(notes)} if notes else {})}
        notes.clear()
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if engine.rank == 0:
                path = checkpoint.save(Path(tmp) / "ckpt", engine.state_dict(), cfg, metrics, history)
                sample_grid(engine.G_ema, cfg.model.arch, cfg.eval.grid_size, path / "samples.png", engine.device,
                            latent=engine.latent)
                ckpt = ray.train.Checkpoint.from_directory(str(path))
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=checkpoint.dir_name(step))

    train(engine, batches, cfg, evaluator, on_eval, progress=False, history=history)


def decode_batch(batch: dict[str, np.ndarray], info: DatasetInfo) -> dict[str, np.ndarray]:
    """Ray Data map_batches: Parquet `image` bytes -> uint8 NCHW pixels (or float32 points),
    `label` -> y; the rows a split at read time holds out never reach training. Normalization
    happens on the training device."""
    images, labels = list(batch["image"]), batch["label"]
    if info.held_at_read:
        keep = ~held_rows(images)
        images, labels = [b for b, k in zip(images, keep) if k], labels[keep]
    return {"x": decode_raw(images, info), "y": labels.astype(np.int64)}

